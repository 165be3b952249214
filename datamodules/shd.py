"""Spiking Heidelberg Digits (Cramer et al., 2020): spoken digits 0-9 in English and German as spikes of
700 cochlea channels; 20 classes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import tonic
from tonic.download_utils import download_and_extract_archive

from .base import EventDataModule, Split, downsampled
from .transforms import AsSequence


class SHDDataModule(EventDataModule):
    """SHD through ``tonic.datasets.SHD``: the official train/test files; samples are sequences
    ``[B, T, 1, 700·f]`` (T time bins of the 700 channels), the layout of the sequence models
    (e.g. ``create_model("paper_seq_cnn", in_channels=1, length=700, num_classes=20)``).

    Tonic's existence check accepts *any* ``.h5`` in the folder, so with only the training file present it
    would try to open a missing test file; we check for each split's own file and download it if absent.
    """

    name = "SHD"
    tonic_dataset = tonic.datasets.SHD
    widen_reader = True  # Tonic casts float seconds to int µs
    polarities = (1,)  # Tonic gives every spike polarity 1
    sensor_size = tonic.datasets.SHD.sensor_size
    classes = tuple(str(i) for i in range(20))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.random_flip or self.random_translate:  # they move pixels of a 2-D sensor: SHD's frames are 1 × 700
            raise ValueError(
                f"SHDDataModule: random_flip={self.random_flip!r}, random_translate={self.random_translate!r} mirror "
                "or shift a camera's pixels, but SHD's frames are one row of 700 cochlear channels (a vertical shift "
                "blanks the whole sample, a flip reverses the frequencies): leave both off"
            )

    @property
    def frame_sensor_size(self) -> tuple[int, int, int]:
        return downsampled(self.sensor_size[0], self.spatial_factor), 1, 1

    @property
    def input_shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        return self.T, 1, self.frame_sensor_size[0]

    def _h5(self, split: Split) -> Path:
        return self.tonic_root() / self.name / f"shd_{split}.h5"

    def open_split(self, split: Split, transform: Callable | None) -> Any:
        cls = tonic.datasets.SHD
        if not self._h5(split).exists():
            name = f"shd_{split}.h5.zip"
            md5 = cls.train_md5 if split == "train" else cls.test_md5
            download_and_extract_archive(cls.base_url + name, str(self._h5(split).parent), filename=name, md5=md5)
        return cls(save_to=str(self.tonic_root()), train=split == "train", transform=transform)

    def labels_of(self, dataset: Any) -> list[int]:
        with h5py.File(Path(dataset.location_on_system) / dataset.data_filename, "r") as f:
            return [int(v) for v in f["labels"][()]]

    def describe_sample(self, dataset: Any, index: int) -> str:
        return f"{Path(dataset.location_on_system) / dataset.data_filename} (sample {index})"

    def access_steps(self, train: bool) -> list[Callable]:
        return [*super().access_steps(train), AsSequence()]

    def download_help(self) -> str:
        cls = tonic.datasets.SHD
        return self.archive_help(
            [
                (cls.train_zip, cls.base_url + cls.train_zip, cls.train_md5),
                (cls.test_zip, cls.base_url + cls.test_zip, cls.test_md5),
            ],
            "shd_train.h5 and shd_test.h5",
        )
