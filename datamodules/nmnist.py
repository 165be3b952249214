"""N-MNIST (Orchard et al., 2015): MNIST digits recorded by an ATIS sensor making three saccades, 34×34, 10 classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tonic

from .base import EventDataModule, LocalCopy, Split


class NMNISTDataModule(EventDataModule):
    """N-MNIST through ``tonic.datasets.NMNIST``: the official 60k/10k split, frames ``[B, T, 2, 34, 34]``.

    Args:
        first_saccade_only: keep only the first 100 ms (one saccade) of each recording.
        **kwargs: the shared arguments of :class:`psn_zoo.datamodules.base.EventDataModule`.
    """

    name = "NMNIST"
    tonic_dataset = tonic.datasets.NMNIST
    sensor_size = tonic.datasets.NMNIST.sensor_size
    classes = tuple(str(i) for i in range(10))

    def __init__(self, first_saccade_only: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_saccade_only = first_saccade_only

    def open_split(self, split: Split, transform: Callable | None) -> Any:
        return tonic.datasets.NMNIST(
            save_to=str(self.tonic_root()),
            train=split == "train",
            first_saccade_only=self.first_saccade_only,
            transform=transform,
        )

    def local_copy(self, split: Split) -> LocalCopy:
        cls, location = tonic.datasets.NMNIST, self.tonic_root() / self.tonic_folder()
        folder, archive = ("Train", cls.train_filename) if split == "train" else ("Test", cls.test_filename)
        return LocalCopy(location / folder, ".bin", 10_000, location / archive)

    def download_help(self) -> str:
        cls = tonic.datasets.NMNIST
        return self.archive_help(
            [(cls.train_filename, cls.train_url, cls.train_md5), (cls.test_filename, cls.test_url, cls.test_md5)],
            "Train/<digit>/NNNNN.bin and Test/<digit>/NNNNN.bin (https://www.garrickorchard.com/datasets/n-mnist)",
        )
