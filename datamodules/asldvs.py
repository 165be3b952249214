"""ASL-DVS (Bi et al., 2019): 24 American Sign Language letters (no J, Z) recorded with a DAVIS240, 240×180."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tonic

from .base import EventDataModule, LocalCopy, Split, stratified_split


class FlattenEvents:
    """Tonic 1.7.0 returns ASL-DVS events with shape ``(N, 1)`` (MATLAB column vectors); frames need ``(N,)``."""

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return events.reshape(-1)

    def __repr__(self) -> str:
        return "FlattenEvents()"


class ASLDVSDataModule(EventDataModule):
    """ASL-DVS through ``tonic.datasets.ASLDVS`` (labels 0–25 for a–z as Tonic numbers them; j and z do not
    occur). No official split: a stratified, seeded ``test_fraction`` of each letter is the test set.
    """

    name = "ASLDVS"
    tonic_dataset = tonic.datasets.ASLDVS
    widen_reader = True  # Tonic casts the .mat values (doubles possible) to int
    sensor_size = tonic.datasets.ASLDVS.sensor_size
    classes = tuple(tonic.datasets.ASLDVS.classes)

    def __init__(self, test_fraction: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test_fraction = test_fraction

    def event_fixes(self) -> list[Callable]:
        return [FlattenEvents()]

    def open_split(self, split: Split, transform: Callable | None) -> Any:
        return tonic.datasets.ASLDVS(save_to=str(self.tonic_root()), transform=transform)

    def split_indices(self, split: str, dataset: Any) -> list[int]:
        train, test = stratified_split(self.labels_of(dataset), self.test_fraction, self.seed)
        return train if split == "train" else test

    def local_copy(self, split: Split) -> LocalCopy:
        location = self.tonic_root() / self.tonic_folder()
        return LocalCopy(location, ".mat", 100_800, location / tonic.datasets.ASLDVS.filename)

    def download_help(self) -> str:
        cls = tonic.datasets.ASLDVS
        return self.archive_help([(cls.filename, cls.url, cls.file_md5)], "<letter>/<letter>_NNNN.mat")
