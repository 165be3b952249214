"""Layers that accept time-first sequences ``[T, B, C, ...]`` as well as single steps ``[B, C, ...]`` (stateless, but
for the time-shared dropout mask of a stream).

A multi-step input has ``T`` and ``B`` merged for the wrapped ANN layer and split again afterwards, so
batch norm statistics are taken over ``T·B`` (as in SpikingJelly's multi-step layers). Parameter names are
those of the torch layers, so state dicts line up with SpikingJelly's and torchvision's models.
"""

from __future__ import annotations

import torch
from torch import nn

from ..neurons import StatefulModule


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


class TEBN(nn.Module):
    """Temporal effective batch norm (Duan et al., NeurIPS 2022; the PSN code's CIFAR10-DVS ``VGGSNN`` baseline):
    one ``BatchNorm2d`` over ``T·B`` (as :class:`BatchNorm2d`), then each step scaled by its own learnable ``p[t]``.

    ``[T, B, C, H, W] -> [T, B, C, H, W]``; ``p: [T, 1, 1, 1, 1]`` (init 1), so the input must have exactly ``T``
    steps. A single step is refused (which ``p[t]`` applies would depend on a stream position it does not keep).
    """

    def __init__(self, num_features: int, T: int) -> None:
        super().__init__()
        self.bn = BatchNorm2d(num_features)
        self.p = nn.Parameter(torch.ones(T, 1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[0] != self.p.shape[0]:
            raise ValueError(
                f"TEBN scales each of T={self.p.shape[0]} steps by its own factor: it takes [T, B, C, H, W] with "
                f"T={self.p.shape[0]}, got shape {tuple(x.shape)}; run the model multi-step with that T"
            )
        return self.bn(x) * self.p


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


class Dropout(StatefulModule):
    """Dropout with one mask for all time steps of a sample (SpikingJelly's ``layer.Dropout``; Lee et al. 2020):
    a unit dropped at one step stays dropped for the whole sequence, so dropout does not average out over T.

    ``[T, B, *feature]`` (multi-step) draws the mask for ``[B, *feature]`` once per call; a single step ``[B,
    *feature]`` (streaming) keeps its mask until :meth:`reset` (``psn_zoo.neurons.reset_states`` calls it), so streamed
    steps see the mask the multi-step pass would. ``feature_dims`` is the number of dims of one sample's features
    (1 for a classifier's ``[F]``). In eval mode it is the identity.
    """

    def __init__(self, p: float = 0.5, feature_dims: int = 1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.feature_dims = feature_dims
        self.mask: torch.Tensor | None = None

    def _new_mask(self, like: torch.Tensor) -> torch.Tensor:
        # SJ's arithmetic: 0 or 1/(1 - p), drawn like F.dropout (so the same seed gives SJ's mask)
        return nn.functional.dropout(torch.ones_like(like), self.p, training=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.dim() == self.feature_dims + 2:  # [T, B, *feature]
            return x * self._new_mask(x[0])
        if self.mask is None or self.mask.shape != x.shape:
            self.mask = self._new_mask(x)
        return x * self.mask

    def reset(self) -> None:
        """Forget the streaming mask (the next step draws a new one)."""
        self.mask = None

    def extra_repr(self) -> str:
        return f"p={self.p}, mask shared over time"


class FlattenFeatures(nn.Module):
    """Flatten the per-sample feature map: ``[T, B, C, *spatial] -> [T, B, C·prod(spatial)]`` (or without T)."""

    def __init__(self, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(-(self.spatial_dims + 1))
