"""Frame-level transforms applied after caching: conversion to float tensors and random augmentation.

Event-level preprocessing (``Denoise``, ``Downsample``, ``ToFrame``) is Tonic's and deterministic, so its
output can be cached; these run on every access. Augmentations move all time steps of a sample together.
They are frozen dataclasses: hashable, with a readable ``repr`` (like Tonic's transforms).

Random steps (``random = True``) draw from a generator that :class:`MapDataset` seeds from
``(seed, epoch, sample index)``: a sample's augmentation does not depend on the global random state, the
loading order, the number of workers or on whether the run was resumed.
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
    random = True

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return frames.flip(-1) if torch.rand((), generator=generator) < self.p else frames


@dataclass(frozen=True)
class RandomTranslateFrames:
    """Shift by up to ``max_shift`` pixels in x and y, filling with zeros (a pad-and-crop)."""

    max_shift: int = 2
    random = True

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.max_shift <= 0:
            return frames
        dx, dy = (int(v) for v in torch.randint(-self.max_shift, self.max_shift + 1, (2,), generator=generator))
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


def is_random(step: Callable) -> bool:
    return bool(getattr(step, "random", False))


@dataclass(frozen=True)
class Compose:
    steps: Sequence[Callable]

    @property
    def random(self) -> bool:
        return any(is_random(step) for step in self.steps)

    def __call__(self, x, generator: torch.Generator | None = None):
        for step in self.steps:
            x = step(x, generator) if is_random(step) else step(x)
        return x


class MapDataset(torch.utils.data.Dataset):
    """``(x, y) -> (transform(x), int(y))`` over a dataset of pairs.

    A random ``transform`` gets a generator seeded from ``(seed, epoch, index)``; the DataModule sets
    :attr:`epoch` at the start of every training epoch (:meth:`set_epoch`).
    """

    def __init__(self, dataset, transform: Callable | None = None, seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        if self.transform is None:
            return x, int(y)
        if is_random(self.transform):
            # modulo 2^64 (manual_seed's range): any seed works, and every seed that fitted keeps its numbers
            stream = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
            generator = torch.Generator().manual_seed(stream % 2**64)
            return self.transform(x, generator), int(y)
        return self.transform(x), int(y)
