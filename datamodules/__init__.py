"""Lightning DataModules for event-camera datasets (Tonic), the embedded offline N-Digits set and sequential digits.

Every event DataModule yields ``[B, T, C, H, W]`` float frames (event counts) and integer labels; see
:class:`psn_zoo.datamodules.base.EventDataModule` for the shared arguments (``data_dir``, ``T``, ``batch_size``,
``num_workers``, ``val_fraction``, ``seed``, augmentation switches, ``cache``).
"""

from .asldvs import ASLDVSDataModule
from .base import EventDataModule, default_data_dir
from .cifar10dvs import CIFAR10DVSDataModule
from .dvsgesture import DVSGestureDataModule
from .errors import CorruptSampleError, DatasetNotFoundError, EmptySplitError, EmptySplitWarning, MissingSampleError
from .images import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    ImageNetDataModule,
    SequentialCIFAR10DataModule,
    SequentialCIFAR100DataModule,
)
from .ncaltech101 import NCaltech101DataModule
from .ndigits import NDigitsDataModule, generate_ndigits
from .nmnist import NMNISTDataModule
from .pretrained import datamodule_for, transform_for
from .seqdigits import SequentialDigitsDataModule
from .shd import SHDDataModule
from .transform_spec import build_transform, transform_spec
from .visualize import save_frames

__all__ = [
    "ASLDVSDataModule",
    "CIFAR10DVSDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CorruptSampleError",
    "DVSGestureDataModule",
    "DatasetNotFoundError",
    "EmptySplitError",
    "EmptySplitWarning",
    "EventDataModule",
    "ImageNetDataModule",
    "MissingSampleError",
    "NCaltech101DataModule",
    "NDigitsDataModule",
    "NMNISTDataModule",
    "SHDDataModule",
    "SequentialCIFAR10DataModule",
    "SequentialCIFAR100DataModule",
    "SequentialDigitsDataModule",
    "build_transform",
    "datamodule_for",
    "default_data_dir",
    "generate_ndigits",
    "save_frames",
    "transform_for",
    "transform_spec",
]
