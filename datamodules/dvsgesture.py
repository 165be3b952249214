"""DVS128 Gesture (Amir et al., 2017): 11 hand gestures by 29 people under 5 lighting conditions, 128×128."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tonic

from .base import EventDataModule, LocalCopy, Split


class DVSGestureDataModule(EventDataModule):
    """DVS128 Gesture through ``tonic.datasets.DVSGesture`` (Tonic's preprocessed release): the official split
    by person (users 1–23 train, 24–29 test). Tonic lists files in file-system order; we sort them (with their
    user and lighting tags) so splits and seeds are reproducible. Frames ``[B, T, 2, 128·f, 128·f]``.
    """

    name = "DVSGesture"
    tonic_dataset = tonic.datasets.DVSGesture
    widen_reader = True  # Tonic casts bool polarity and int16 pixels
    sensor_size = tonic.datasets.DVSGesture.sensor_size
    classes = tuple(tonic.datasets.DVSGesture.classes)

    def open_split(self, split: Split, transform: Callable | None) -> Any:
        ds = tonic.datasets.DVSGesture(save_to=str(self.tonic_root()), train=split == "train", transform=transform)
        order = np.argsort(ds.data, kind="stable")
        ds.data = [ds.data[i] for i in order]
        ds.targets = [int(ds.targets[i]) for i in order]
        ds.users = [ds.users[i] for i in order]
        ds.lighting = [ds.lighting[i] for i in order]
        return ds

    def local_copy(self, split: Split) -> LocalCopy:
        cls, location = tonic.datasets.DVSGesture, self.tonic_root() / self.tonic_folder()
        train = split == "train"
        folder, archive = ("ibmGestureTrain", cls.train_filename) if train else ("ibmGestureTest", cls.test_filename)
        return LocalCopy(location / folder, ".npy", 100, location / archive)

    def download_help(self) -> str:
        cls = tonic.datasets.DVSGesture
        return self.archive_help(
            [(cls.train_filename, cls.train_url, cls.train_md5), (cls.test_filename, cls.test_url, cls.test_md5)],
            "ibmGestureTrain/user<NN>_<lighting>/<label>.npy and ibmGestureTest/... (Tonic's figshare release)",
        )
