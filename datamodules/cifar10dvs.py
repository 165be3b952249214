"""CIFAR10-DVS (Li et al., 2017): CIFAR-10 images moved on a monitor in front of a DVS128, 10k recordings."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tonic

from .base import EventDataModule, LocalCopy, Split
from .errors import EmptySplitError


def recording_key(path: str) -> tuple[str, int, str]:
    """Sort key of a CIFAR10-DVS file ``.../cifar10_<class>_<n>.aedat4``: its folder and name stem without the number,
    then the number ``n`` as an integer (a name without one sorts by its text after the numbered ones)."""
    parent, stem = os.path.split(os.path.splitext(path)[0])
    prefix, _, number = stem.rpartition("_")
    return (os.path.join(parent, prefix), int(number), "") if number.isdigit() else (path, 1 << 62, stem)

class CIFAR10DVSDataModule(EventDataModule):
    """CIFAR10-DVS through ``tonic.datasets.CIFAR10DVS`` (AEDAT 4 files, read with the ``aedat`` package).

    The dataset has no official split. We use the paper's (TEBN protocol, SpikingJelly's
    ``CIFAR10DVSTEBNSplit``): per class, files sorted by name, the first ``test_per_class`` (100) are the test
    set and the rest (900) the training set. The paper slices each recording into T frames of equal event
    count: pass ``slicing="count"`` to reproduce it.

    Args:
        test_per_class: recordings per class (first in sorted order) that form the test set.
        **kwargs: the shared arguments of :class:`psn_zoo.datamodules.base.EventDataModule`.
    """

    name = "CIFAR10DVS"
    tonic_dataset = tonic.datasets.CIFAR10DVS
    sensor_size = tonic.datasets.CIFAR10DVS.sensor_size
    classes = tuple(sorted(tonic.datasets.CIFAR10DVS.classes, key=tonic.datasets.CIFAR10DVS.classes.get))

    def __init__(self, test_per_class: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test_per_class = test_per_class

    def open_split(self, split: Split, transform: Callable | None) -> Any:
        ds = tonic.datasets.CIFAR10DVS(save_to=str(self.tonic_root()), transform=transform)
        # Tonic lists files in file-system order: sort by class and recording number (cifar10_airplane_7 before
        # _10), as the paper's split script names them (test: numbers 0..99 of each class); text order put 89 of
        # the paper's 100 test recordings per class into our training split
        order = sorted(range(len(ds.data)), key=lambda i: recording_key(ds.data[i]))
        ds.data = [ds.data[i] for i in order]
        ds.targets = [int(ds.targets[i]) for i in order]
        return ds

    def split_indices(self, split: str, dataset: Any) -> list[int]:
        """The paper's split (``cifar10dvs/move_data.py``): the recordings numbered ``0 … test_per_class − 1`` of every
        class are the test split, the rest the training split."""
        labels = np.asarray(dataset.targets)
        self._check_split_fits(labels)
        picked = []
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)  # already in recording-number order
            picked += (idx[: self.test_per_class] if split == "test" else idx[self.test_per_class :]).tolist()
        return sorted(picked)

    def _check_split_fits(self, labels: np.ndarray) -> None:
        """The paper's split needs more than ``test_per_class`` recordings in every class (a complete copy has
        1000): a smaller copy would leave a class, or the whole training split, empty."""
        counts = {self.classes[int(c)]: int((labels == c).sum()) for c in range(len(self.classes))}
        short = {name: n for name, n in counts.items() if n <= self.test_per_class}
        if not short:
            return
        fewest = min(counts.values())
        shown = ", ".join(f"{name}: {n}" for name, n in list(short.items())[:5]) + (" ..." if len(short) > 5 else "")
        lower = f" or lower --data.init_args.test_per_class below {fewest} (e.g. {max(fewest // 10, 1)})"
        lower = lower if fewest > 1 else ""
        raise EmptySplitError(
            f"{self.name} under {self.tonic_root() / self.tonic_folder()} is too small for the paper's split: it "
            f"puts the first test_per_class={self.test_per_class} recordings of every class in the test set and "
            f"the rest in the training set, but these classes have only {shown} recordings (a complete copy has "
            f"1000 per class), leaving nothing to train on. Use the complete dataset{lower}."
        )

    def empty_split_help(self, split: str) -> str:
        return f"test_per_class={self.test_per_class} leaves it empty: use the complete dataset (1000 per class)"

    def local_copy(self, split: Split) -> LocalCopy:
        location = self.tonic_root() / self.tonic_folder()
        return LocalCopy(location, ".aedat4", 1000, location / tonic.datasets.CIFAR10DVS.filename)

    def download_help(self) -> str:
        cls = tonic.datasets.CIFAR10DVS
        return self.archive_help(
            [(cls.filename, cls.url, cls.file_md5)],
            "<class>/<name>.aedat4 (airplane, automobile, ..., truck; Tonic's figshare release). Reading the "
            "files needs the `aedat` package (a psn-zoo dependency)",
        )
