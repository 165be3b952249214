"""Stateless layers that accept time-first sequences ``[T, B, C, ...]`` as well as single steps ``[B, C, ...]``.

A multi-step input has ``T`` and ``B`` merged for the wrapped ANN layer and split again afterwards, so
batch norm statistics are taken over ``T·B`` (as in SpikingJelly's multi-step layers). Parameter names are
those of the torch layers, so state dicts line up with SpikingJelly's and torchvision's models.
"""

from __future__ import annotations

import torch
from torch import nn


class _TimeMerged:
    """Mixin: run the wrapped layer on ``x.flatten(0, 1)`` when ``x`` carries a leading time axis."""

    #: Number of spatial dims of one sample (2 for images, 1 for sequences); a step is [B, C, *spatial].
    spatial_dims: int = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.spatial_dims + 3:
            T, B = x.shape[:2]
            y = super().forward(x.flatten(0, 1))  # type: ignore[misc]
            return y.reshape(T, B, *y.shape[1:])
        return super().forward(x)  # type: ignore[misc]


class Conv2d(_TimeMerged, nn.Conv2d):
    """``nn.Conv2d`` on ``[T, B, C, H, W]`` or ``[B, C, H, W]``."""


class BatchNorm2d(_TimeMerged, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with statistics over ``T·B`` for ``[T, B, C, H, W]``."""


class MaxPool2d(_TimeMerged, nn.MaxPool2d):
    pass


class AvgPool2d(_TimeMerged, nn.AvgPool2d):
    pass


class AdaptiveAvgPool2d(_TimeMerged, nn.AdaptiveAvgPool2d):
    pass


class Conv1d(_TimeMerged, nn.Conv1d):
    """``nn.Conv1d`` on ``[T, B, C, L]`` or ``[B, C, L]``."""

    spatial_dims = 1


class BatchNorm1d(_TimeMerged, nn.BatchNorm1d):
    spatial_dims = 1


class AvgPool1d(_TimeMerged, nn.AvgPool1d):
    spatial_dims = 1


class FlattenFeatures(nn.Module):
    """Flatten the per-sample feature map: ``[T, B, C, *spatial] -> [T, B, C·prod(spatial)]`` (or without T)."""

    def __init__(self, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(-(self.spatial_dims + 1))
