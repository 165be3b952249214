"""Frame-level transforms applied after caching: conversion to float tensors and random augmentation.

Event-level preprocessing (``Denoise``, ``Downsample``, ``ToFrame``) is Tonic's and deterministic, so its
output can be cached; these run on every access. Augmentations move all time steps of a sample together.
They are frozen dataclasses: hashable, with a readable ``repr`` (like Tonic's transforms).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ToFloatFrames:
    """Tonic frames ``(T, P, H, W)`` (event counts, int16) -> ``torch.float32`` tensor of the same shape."""

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(frames), dtype=torch.float32)


@dataclass(frozen=True)
class RandomFlipFrames:
    """Mirror left-right with probability ``p`` (every time step of the sample alike)."""

    p: float = 0.5

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.flip(-1) if torch.rand(()) < self.p else frames


@dataclass(frozen=True)
class RandomTranslateFrames:
    """Shift by up to ``max_shift`` pixels in x and y, filling with zeros (a pad-and-crop)."""

    max_shift: int = 2

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.max_shift <= 0:
            return frames
        dx, dy = (int(v) for v in torch.randint(-self.max_shift, self.max_shift + 1, (2,)))
        out = torch.zeros_like(frames)
        H, W = frames.shape[-2:]
        out[..., max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = frames[
            ..., max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)
        ]
        return out


@dataclass(frozen=True)
class AsSequence:
    """Frames of a one-row sensor (audio channels) -> a sequence sample ``[T, P, L]``."""

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.reshape(frames.shape[0], frames.shape[1], -1)


@dataclass(frozen=True)
class Compose:
    steps: Sequence[Callable]

    def __call__(self, x):
        for step in self.steps:
            x = step(x)
        return x


class MapDataset(torch.utils.data.Dataset):
    """``(x, y) -> (transform(x), int(y))`` over a dataset of pairs."""

    def __init__(self, dataset, transform: Callable | None = None) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return (self.transform(x) if self.transform is not None else x), int(y)
