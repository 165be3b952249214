"""Sequential digits: the paper's sequential-CIFAR protocol in miniature, for long-dependency experiments.

Each scikit-learn digit, upscaled MNIST-style to 28×28, is read one column per time step: a sample is
``[T=28, C=1, L=28]`` (the intensities of one column), so a classifier must integrate over 28 steps, as the
paper's sequential CIFAR (32 columns of 3×32 pixels) does. Train/test split by image, stratified and seeded —
the same split as N-Digits.

``permute_pixels=True`` is the harder, permuted variant (the permuted sequential MNIST protocol): the 784 pixels
are read in one fixed random order, 28 per step, so no single step shows a recognisable part of the digit and a
classifier must relate steps far apart — and know which step it is at — to recognise it.
"""

from __future__ import annotations

import hashlib

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .base import ValSplit, at_fit_epoch, eval_shards, seeded_loader, stratified_split
from .errors import require_samples
from .ndigits import mnist_style_digits
from .transforms import MapDataset, RandomTranslateFrames


def pixel_permutation(seed: int, size: int = 28) -> torch.Tensor:
    """The fixed reading order of the permuted variant: a permutation of the ``size²`` pixel indices (row-major)."""
    return torch.randperm(size * size, generator=torch.Generator().manual_seed(seed))


class _ColumnsAsTime:
    """``[28, 28]`` image -> ``[T=28, C=1, L=28]`` sequence (with an optional random shift of the image first).

    Step t holds column t of the image or, with ``order`` (a permutation of the 784 row-major pixel indices), the
    pixels ``order[28·t : 28·t + 28]``.
    """

    def __init__(self, translate: int, order: torch.Tensor | None = None) -> None:
        self.shift = RandomTranslateFrames(translate) if translate else None
        self.random = self.shift is not None
        self.order = order

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.shift is not None:
            image = self.shift(image, generator)
        if self.order is not None:
            return image.reshape(-1)[self.order].view(image.shape[1], 1, image.shape[0])
        return image.t().unsqueeze(1)


class SequentialDigitsDataModule(L.LightningDataModule):
    """Digits as 28-step column sequences ``[B, 28, 1, 28]`` + labels; everything in memory, no download.

    Args:
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        val_fraction: share of each class of the training images held out for validation.
        test_fraction: share of each class of the images in the test set (by image, as N-Digits).
        random_translate: shift training images by up to this many pixels.
        seed: seed of the splits.
        images_per_class: use only the first n images of each digit (quick tests); None: all 1797.
        val_split: ``validate`` on the ``"holdout"`` part of the training images or on the ``"test"`` split.
        permute_pixels: read the pixels in one fixed random order (:func:`pixel_permutation`) instead of by columns.
        permutation_seed: seed of that order; the same for every split and every ``seed``.
    """

    name = "SequentialDigits"
    classes = tuple(str(i) for i in range(10))
    T = 28

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        random_translate: int = 2,
        seed: int = 0,
        images_per_class: int | None = None,
        val_split: ValSplit = "holdout",
        permute_pixels: bool = False,
        permutation_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.random_translate = random_translate
        self.seed = seed
        self.images_per_class = images_per_class
        self.val_split = val_split
        self.permute_pixels = permute_pixels
        self.permutation_seed = permutation_seed
        self.datasets: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def in_channels(self) -> int:
        return 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.T, 1, 28

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        images, labels = mnist_style_digits(self.images_per_class)
        train_ids, test_ids = stratified_split(labels.tolist(), self.test_fraction, self.seed)
        keep, held = stratified_split(labels[train_ids].tolist(), self.val_fraction, self.seed)
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        order = pixel_permutation(self.permutation_seed, x.shape[-1]) if self.permute_pixels else None

        def part(ids: list[int], translate: int) -> Dataset:
            return MapDataset(TensorDataset(x[ids], y[ids]), _ColumnsAsTime(translate, order), self.seed)

        self.datasets = {
            "train": part([train_ids[i] for i in keep], self.random_translate),
            "val": part([train_ids[i] for i in held], 0),
            "test": part(test_ids, 0),
        }

    def fingerprint(self, split: str = "test") -> str:
        """The sha256 fingerprint of ``split`` (``"train"``, ``"val"``, ``"test"``) as this DataModule holds it
        before any augmentation: the sha256 of its images ``[N, 28, 28]`` (float32, little-endian, row-major), then
        its labels ``[N]`` (int64), then, with ``permute_pixels``, the reading order ``[784]`` (int64)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if not self.datasets:
            self.setup()
        images, labels = self.datasets[split].dataset.tensors
        digest = hashlib.sha256(np.ascontiguousarray(images.numpy(), dtype="<f4").tobytes())
        digest.update(np.ascontiguousarray(labels.numpy(), dtype="<i8").tobytes())
        if self.permute_pixels:
            order = pixel_permutation(self.permutation_seed, images.shape[-1])
            digest.update(np.ascontiguousarray(order.numpy(), dtype="<i8").tobytes())
        return digest.hexdigest()

    def set_epoch(self, epoch: int) -> None:
        if "train" in self.datasets:
            self.datasets["train"].set_epoch(epoch)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        require_samples(self, split, self.datasets[split])
        dataset, shards = self.datasets[split], eval_shards(self)
        return seeded_loader(dataset, self.batch_size, shuffle, self.num_workers, self.seed, shards=shards)

    def train_dataloader(self) -> DataLoader:
        return at_fit_epoch(self, self._loader("train", True))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val" if self.val_split == "holdout" else "test", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)
