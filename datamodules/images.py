"""Static-image datasets of the paper's experiments: CIFAR-10/100 (also read column by column) and ImageNet.

CIFAR is read from its *binary* release (fixed-size records, no pickle): ``<data_dir>/cifar-10-batches-bin/
{data_batch_1..5,test_batch}.bin`` or ``<data_dir>/cifar-100-binary/{train,test}.bin``, downloaded from
cs.toronto.edu with an md5 check when absent. Images are ``[B, 3, 32, 32]`` floats normalised with the paper's
mean/std; the model repeats them over ``T`` steps (direct encoding), ``T`` being the DataModule's (the CLI gives the
model the data's T, class count and channels). ``SequentialCIFAR*`` turns each
image into 32 column steps ``[B, T=32, 3, 32]``, the paper's sequential-CIFAR protocol.

Augmentation ``"paper"`` is the paper's CIFAR recipe: random horizontal flip, TrivialAugmentWide, random
erasing (p = 0.1); it uses torchvision (``pip install "psn-zoo[vision]"``), imported only when asked for.
Mixup / CutMix are batch-level and live in the training module.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .base import at_fit_epoch, default_data_dir, eval_shards, network_timeout, seeded_loader, stratified_split
from .errors import DatasetNotFoundError, require_samples
from .transforms import MapDataset

Augment = Literal["none", "flip", "paper"]


def _vision_transforms():
    try:
        from torchvision.transforms import v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "augment='paper' (TrivialAugmentWide, RandomErasing) and ImageNet need torchvision: "
            'pip install "psn-zoo[vision]" (in a checkout: pip install -e ".[vision]")'
        ) from err
    return v2


class _ImageTransform:
    """uint8 ``[3, H, W]`` -> normalised float ``[3, H, W]``, with the chosen training augmentation."""

    def __init__(self, augment: Augment, mean: tuple[float, ...], std: tuple[float, ...], train: bool) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)
        self.augment = augment if train else "none"
        self.policy = self.erase = None
        if self.augment == "paper":
            v2 = _vision_transforms()
            self.policy = v2.TrivialAugmentWide(interpolation=v2.InterpolationMode.BILINEAR)
            self.erase = v2.RandomErasing(p=0.1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.augment in ("flip", "paper") and torch.rand(()) < 0.5:
            image = image.flip(-1)
        if self.policy is not None:
            image = self.policy(image)
        out = (image.float() / 255 - self.mean) / self.std
        return self.erase(out) if self.erase is not None else out


class _ColumnsAsTime:
    """``[C, H, W]`` image -> ``[T=W, C, H]``: column ``t`` of the image is time step ``t``."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner(image).permute(2, 0, 1).contiguous()


class _SplitLoaders:
    """The loaders of a DataModule whose ``setup`` fills ``self.datasets`` (``train``/``val``/``test``); a subclass
    maps a stage to the split it reads with ``_split``. Loaders come from :func:`seeded_loader`."""

    datasets: dict[str, Dataset]

    def _split(self, stage: str) -> str:
        return stage

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        dataset = require_samples(self, self._split(stage), self.datasets[self._split(stage)])
        pin = torch.cuda.is_available()
        return seeded_loader(dataset, self.batch_size, shuffle, self.num_workers, self.seed, pin, eval_shards(self))

    def train_dataloader(self) -> DataLoader:
        return at_fit_epoch(self, self._loader("train", True))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)


class CIFAR10DataModule(_SplitLoaders, L.LightningDataModule):
    """CIFAR-10 (binary release): the official 50k / 10k split; images ``[B, 3, 32, 32]``.

    Args:
        data_dir: folder holding (or receiving) ``cifar-10-batches-bin/``.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        val_fraction: stratified, seeded share of the training images held out for validation (0: none; the
            paper reports the test accuracy).
        augment: ``"none"``, ``"flip"`` or ``"paper"`` (flip + TrivialAugmentWide + RandomErasing, torchvision).
        seed: seed of the validation split and of the epoch shuffles.
        download_timeout_s: socket timeout of the download.
        T: time steps the model shows each image for (it repeats the image: direct encoding; the paper's 4).
    """

    name: ClassVar[str] = "CIFAR10"
    url: ClassVar[str] = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    md5: ClassVar[str] = "c32a1d4ab5d03f1284b67883e8d87530"
    folder: ClassVar[str] = "cifar-10-batches-bin"
    files: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        "test": ("test_batch.bin",),
    }
    label_bytes: ClassVar[int] = 1  # CIFAR-100 records carry (coarse, fine)
    n_classes: ClassVar[int] = 10
    mean: ClassVar[tuple[float, ...]] = (0.4914, 0.4822, 0.4465)
    std: ClassVar[tuple[float, ...]] = (0.2023, 0.1994, 0.2010)

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.0,
        augment: Augment = "flip",
        seed: int = 0,
        download_timeout_s: float = 60.0,
        T: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive integer (time steps per image), got {T!r}")
        if augment not in ("none", "flip", "paper"):
            raise ValueError(f"augment must be 'none', 'flip' or 'paper', got {augment!r}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        self.batch_size, self.num_workers, self.val_fraction = batch_size, num_workers, val_fraction
        self.augment, self.seed, self.download_timeout_s = augment, seed, download_timeout_s
        self.T = T
        self.datasets: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        return self.n_classes

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def input_shape(self) -> tuple[int, ...]:
        return 3, 32, 32

    # ------------------------------------------------------------------ files
    def _paths(self, split: str) -> list[Path]:
        return [self.data_dir / self.folder / f for f in self.files[split]]

    def prepare_data(self) -> None:
        if all(p.exists() for s in self.files for p in self._paths(s)):
            return
        from tonic.download_utils import download_url

        archive = self.data_dir / Path(self.url).name
        try:
            with network_timeout(self.download_timeout_s):
                download_url(self.url, str(self.data_dir), archive.name, self.md5)
        except (OSError, RuntimeError) as err:
            if archive.exists() and archive.stat().st_size == 0:
                archive.unlink()
            raise DatasetNotFoundError(
                f"{self.name} is not under {self.data_dir / self.folder} and could not be downloaded "
                f"({type(err).__name__}: {err}).\nPut {archive.name} (md5 {self.md5}, from {self.url}) into "
                f"{self.data_dir}/ or extract it there so that {self.folder}/ holds "
                f"{', '.join(self.files['train'] + self.files['test'])}"
            ) from None
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name.endswith((".bin", ".txt"))]
            tar.extractall(self.data_dir, members=members, filter="data")

    def read_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``[N, 3, 32, 32]`` and int64 labels of the ``"train"`` or ``"test"`` split."""
        record = self.label_bytes + 3072
        images, labels = [], []
        for path in self._paths(split):
            raw = np.fromfile(path, dtype=np.uint8)
            if raw.size == 0 or raw.size % record:
                raise DatasetNotFoundError(
                    f"{path} is truncated or not a {self.name} binary batch ({raw.size} bytes, not a multiple of "
                    f"{record}); delete it and run prepare_data() again"
                )
            rows = raw.reshape(-1, record)
            labels.append(rows[:, self.label_bytes - 1].astype(np.int64))
            images.append(rows[:, self.label_bytes :].reshape(-1, 3, 32, 32))
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))

    # ------------------------------------------------------------------ datasets
    def sample_transform(self, train: bool):
        return _ImageTransform(self.augment, self.mean, self.std, train)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        missing = [str(p) for s in self.files for p in self._paths(s) if not p.exists()]
        if missing:
            self.prepare_data()
        x, y = self.read_split("train")
        keep, held = stratified_split(y.tolist(), self.val_fraction, self.seed)
        x_test, y_test = self.read_split("test")
        self.datasets = {
            "train": MapDataset(TensorDataset(x[keep], y[keep]), self.sample_transform(True)),
            "val": MapDataset(TensorDataset(x[held], y[held]), self.sample_transform(False)),
            "test": MapDataset(TensorDataset(x_test, y_test), self.sample_transform(False)),
        }

    def _split(self, stage: str) -> str:
        """Validation reads the held-out part of the training split, or the test split when ``val_fraction == 0``."""
        return "test" if stage == "val" and not len(self.datasets["val"]) else stage


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (binary release, fine labels): 50k / 10k, 100 classes."""

    name = "CIFAR100"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
    md5 = "03b5dce01913d631647c71ecec9e9cb8"
    folder = "cifar-100-binary"
    files: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("train.bin",), "test": ("test.bin",)}
    label_bytes = 2
    n_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)


class _ColumnSequences:
    """Mixin: each image as 32 column steps ``[B, T=32, 3, 32]`` (the paper's sequential-CIFAR protocol): T is the
    image width, not an argument."""

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.0,
        augment: Augment = "flip",
        seed: int = 0,
        download_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, val_fraction, augment, seed, download_timeout_s, T=32)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return 32, 3, 32

    def sample_transform(self, train: bool):
        return _ColumnsAsTime(super().sample_transform(train))  # type: ignore[misc]


class SequentialCIFAR10DataModule(_ColumnSequences, CIFAR10DataModule):
    """Sequential CIFAR-10: each image as 32 column steps ``[B, T=32, 3, 32]`` (the paper's protocol)."""

    name = "SequentialCIFAR10"


class SequentialCIFAR100DataModule(_ColumnSequences, CIFAR100DataModule):
    """Sequential CIFAR-100: each image as 32 column steps ``[B, T=32, 3, 32]``."""

    name = "SequentialCIFAR100"


class ImageNetDataModule(_SplitLoaders, L.LightningDataModule):
    """ImageNet-1k from an ``ImageFolder`` layout ``<data_dir>/{train,val}/<wnid>/*.JPEG`` (no download: the
    licence requires fetching it yourself). Training: RandomResizedCrop(224) + flip; evaluation: Resize(256) +
    CenterCrop(224); ImageNet mean/std. Needs torchvision.

    Args:
        data_dir: folder with ``train/`` and ``val/``.
        batch_size: samples per batch (per process under DDP; the paper used 64 × 8 GPUs for SEW-ResNet-18).
        num_workers: DataLoader workers.
        seed: seed of the epoch shuffles.
        T: time steps the model shows each image for (it repeats the image: direct encoding; the paper's 4).
    """

    name = "ImageNet"
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    crop = 224  # the side of the training and evaluation crops

    def __init__(
        self, data_dir: str | None = None, batch_size: int = 64, num_workers: int = 8, seed: int = 0, T: int = 4
    ) -> None:
        super().__init__()
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive integer (time steps per image), got {T!r}")
        self.save_hyperparameters()
        self.T = T
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir() / "imagenet"
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.datasets: dict[str, Any] = {}

    @property
    def num_classes(self) -> int:
        return 1000

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One image ``[C, H, W]`` (the model repeats it over T)."""
        return 3, self.crop, self.crop

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for split in ("train", "val"):
            if not (self.data_dir / split).is_dir():
                raise DatasetNotFoundError(
                    f"ImageNet needs {self.data_dir / split}/<class>/<image>.JPEG (ImageFolder layout); download it "
                    "from image-net.org (registration required) and point data_dir at its parent folder"
                )
        from torchvision import datasets

        v2 = _vision_transforms()
        norm = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        train_tf = v2.Compose([v2.RandomResizedCrop(self.crop), v2.RandomHorizontalFlip(), *norm])
        eval_tf = v2.Compose([v2.Resize(256), v2.CenterCrop(self.crop), *norm])
        self.datasets = {
            "train": datasets.ImageFolder(str(self.data_dir / "train"), transform=train_tf),
            "val": datasets.ImageFolder(str(self.data_dir / "val"), transform=eval_tf),
        }

    def _split(self, stage: str) -> str:
        """ImageNet's labelled evaluation split is ``val``: test and predict read it too."""
        return "val" if stage == "test" else stage
