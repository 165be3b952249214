"""N-Caltech101 (Orchard et al., 2015): Caltech101 images recorded with saccades by an ATIS sensor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tonic

from .base import EventDataModule, LocalCopy, Split
from .errors import DatasetNotFoundError


class NCaltech101DataModule(EventDataModule):
    """N-Caltech101 through ``tonic.datasets.NCALTECH101``.

    Tonic returns the category *name* as target and lists files unsorted; we sort the files and map the names
    to integers in sorted category order (``classes``). Recordings vary in size (up to 240×180); events are
    framed on a 240×180 sensor. There is no official split; ours is documented and deterministic: per
    category, files sorted by name, the first ``1 - test_fraction`` are training and the rest test.

    Args:
        test_fraction: share of each category (its last files) in the test set.
        **kwargs: the shared arguments of :class:`psn_zoo.datamodules.base.EventDataModule`.
    """

    name = "NCALTECH101"
    tonic_dataset = tonic.datasets.NCALTECH101
    sensor_size = (240, 180, 2)

    def __init__(self, test_fraction: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test_fraction = test_fraction
        self._classes: list[str] | None = None

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        """The category folders, sorted (read once they exist; Tonic ships no list of them)."""
        if self._classes is None:
            folder = self.tonic_root() / self.name / tonic.datasets.NCALTECH101.folder_name
            dirs = folder.iterdir() if folder.is_dir() else []
            listed = sorted(p.name for p in dirs if p.is_dir() and not p.name.startswith("."))
            if not listed:
                raise DatasetNotFoundError(
                    f"{self.name}: the classes are the category folders of {folder}, which holds none yet: download "
                    f"the dataset first (NCaltech101DataModule(data_dir=...).prepare_data()).\n{self.download_help()}"
                )
            self._classes = listed
        return self._classes

    def open_split(self, split: Split, transform: Callable | None) -> Any:
        ds = tonic.datasets.NCALTECH101(save_to=str(self.tonic_root()), transform=transform)
        order = np.argsort(ds.data, kind="stable")
        ds.data = [ds.data[i] for i in order]
        index = {name: i for i, name in enumerate(self.classes)}
        ds.targets = [index[Path(ds.data[i]).parent.name] for i in range(len(ds.data))]
        return ds

    def split_indices(self, split: str, dataset: Any) -> list[int]:
        labels = np.asarray(dataset.targets)
        picked = []
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)
            n_train = len(idx) - round(len(idx) * self.test_fraction)
            picked += (idx[:n_train] if split == "train" else idx[n_train:]).tolist()
        return sorted(picked)

    def local_copy(self, split: Split) -> LocalCopy:
        cls, location = tonic.datasets.NCALTECH101, self.tonic_root() / self.tonic_folder()
        return LocalCopy(location / cls.folder_name, ".bin", 8709, location / cls.filename)

    def download_help(self) -> str:
        cls = tonic.datasets.NCALTECH101
        return self.archive_help(
            [(cls.filename, cls.url, cls.file_md5)],
            "Caltech101/<category>/image_NNNN.bin (if the archive holds only Caltech101.zip, unzip that too)",
        )
