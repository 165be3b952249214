"""The shared base of the event-camera DataModules: Tonic datasets -> ``[B, T, C, H, W]`` float frames + int labels.

Pipeline per sample::

    Tonic dataset (native files, Tonic's reader)
      -> preprocessing (deterministic: ValidEvents, the one check every recording passes, then Tonic's Denoise,
         Downsample, ToFrame(n_time_bins=T))
      -> cache (Tonic's MemoryCachedDataset filled once, in parallel, before the first epoch; or a disk cache of
         Tonic's HDF5 files, written atomically, in a folder keyed by a hash of every preprocessing parameter and
         reader option, with a sub-folder per list of member files, so a changed transform or split never reads
         a stale cache)
      -> per-access transforms (float tensor, random flip / translation for training)

``prepare_data`` downloads or verifies once (rank 0); ``setup`` opens the splits in every process. A missing
dataset that cannot be downloaded raises :class:`DatasetNotFoundError` within seconds, saying which files to
put where; an unreadable sample, or one whose events make no sense (outside the sensor, a polarity the format
does not have, decreasing timestamps, no duration, NaN), raises :class:`CorruptSampleError` naming the file and
the problem; a recording missing from the local copy raises :class:`MissingSampleError` (a subclass of both).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import socket
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import tonic
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from tonic.cached_dataset import load_from_disk_cache, save_to_disk_cache
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, Subset
from tqdm.auto import tqdm

from .errors import DatasetNotFoundError, MissingSampleError, NamedErrors, require_samples
from .transforms import Compose, MapDataset, RandomFlipFrames, RandomTranslateFrames, ToFloatFrames
from .validation import ValidEvents, widened

Split = Literal["train", "test"]
CacheMode = Literal["none", "memory", "disk"]
Slicing = Literal["time", "count"]
ValSplit = Literal["holdout", "test"]

#: Bumped whenever the meaning of cached frames changes.
CACHE_FORMAT = 2
#: Arguments that never change what is read or framed from a file (loading, splitting, augmentation): the disk
#: cache's key leaves them out; every other constructor argument (e.g. ``first_saccade_only``) is part of it.
NOT_FRAMING = frozenset({"data_dir", "batch_size", "num_workers", "val_fraction", "seed", "random_flip",
                         "random_translate", "cache", "download_timeout_s", "pin_memory", "val_split"})  # fmt: skip


def downsampled(size: int, factor: float) -> int:
    """Pixels along an axis of ``size`` after Tonic's ``Downsample(spatial_factor=factor)``: it maps the last
    pixel, ``size - 1``, to ``int((size - 1) * factor)`` (a float product cast back to the integer field)."""
    return int((size - 1) * factor) + 1


def default_data_dir() -> Path:
    """``$PSN_ZOO_DATA``, else ``~/.cache/psn_zoo/datasets``."""
    return Path(os.environ.get("PSN_ZOO_DATA", Path.home() / ".cache" / "psn_zoo" / "datasets")).expanduser()


@contextlib.contextmanager
def network_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket operation (Tonic's downloads use urllib without a timeout)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


class EpochShuffle(RandomSampler):
    """A random order that depends only on ``(seed, epoch)``, so a resumed run sees the same batches.

    Lightning calls :meth:`set_epoch` before every epoch; under DDP it replaces this sampler (a
    ``RandomSampler``) with a ``DistributedSampler``, which is seeded by epoch as well.
    """

    def __init__(self, data_source: Dataset, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


#: the evaluation loader a trainer stage asks for (Lightning's ``RunningStage`` values)
_EVAL_LOADERS = {"sanity_check": "validation split (val_dataloader)", "validate": "validation split (val_dataloader)",
                 "test": "test split (test_dataloader)", "predict": "predicted split (predict_dataloader)"}  # fmt: skip


def eval_shards(datamodule: Any) -> dict[str, Any] | None:
    """``num_replicas`` and ``rank`` of the distributed trainer ``datamodule`` is attached to (None: not sharded),
    and ``split``, the evaluation data the trainer is asking for (for :func:`seeded_loader`'s errors)."""
    trainer = getattr(datamodule, "trainer", None)
    kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
    connector = getattr(trainer, "_accelerator_connector", None)
    if not kwargs or kwargs.get("num_replicas", 1) <= 1 or not getattr(connector, "use_distributed_sampler", True):
        return None
    stage = getattr(getattr(trainer, "state", None), "stage", None)
    split = _EVAL_LOADERS.get(str(getattr(stage, "value", stage)), "evaluation split")
    return {"num_replicas": int(kwargs["num_replicas"]), "rank": int(kwargs["rank"]), "split": split}


def at_fit_epoch(datamodule: Any, loader: DataLoader) -> DataLoader:
    """``loader`` (a training loader of ``datamodule``) set to the epoch its trainer's fit is about to run. A resumed
    fit makes its first iterator, and with workers their copies of the dataset, before Lightning and the classifier
    set the epoch: without this it replayed epoch 0's order and augmentation. The epoch is Lightning's count of
    finished epochs, the value it hands to ``set_epoch``; 0 (nothing to do) without a trainer or on a fresh fit."""
    loop = getattr(getattr(datamodule, "trainer", None), "fit_loop", None)
    epoch = int(loop.epoch_progress.current.processed) if loop is not None else 0
    if epoch:
        if hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
    return loader


def seeded_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
    shards: dict[str, Any] | None = None,
) -> DataLoader:
    """A DataLoader that never touches the global random state: its order comes from :class:`EpochShuffle`,
    its workers' seeds from its own generator. Workers are not persistent, so each epoch's workers see the
    epoch set on the dataset.

    An evaluation loader (``shuffle=False``) with ``shards`` (:func:`eval_shards`) reads every sample exactly once
    over the ranks (Lightning keeps this sampler; its own pads the shards with repeated samples). Every rank must
    get at least one sample (a rank without a batch would leave the others waiting in DDP's first forward and in
    the metrics' sync), so a split smaller than the number of processes is refused, naming both and the fix."""
    sampler: Sampler | None = EpochShuffle(dataset, seed) if shuffle else None
    if not shuffle and shards is not None:
        shards = dict(shards)
        split = shards.pop("split", "evaluation split")
        size, processes = len(dataset), shards["num_replicas"]
        if 0 < size < processes:
            raise ValueError(
                f"the {split} has {size} sample{'s' if size != 1 else ''} but the run has {processes} processes "
                f"(devices x nodes): under DDP every process evaluates a disjoint shard of at least one sample, so "
                f"{processes - size} process{'es' if processes - size != 1 else ''} would have none. Evaluate on at "
                f"most {size} device{'s' if size != 1 else ''} (--trainer.devices {size}), or give the split at least "
                f"{processes} samples"
            )
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False, **shards)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )


def stratified_split(
    labels: list[int], fraction: float, seed: int, groups: list[int] | None = None
) -> tuple[list[int], list[int]]:
    """Indices ``(keep, held_out)``: ``fraction`` of every class held out, chosen by a seeded permutation.

    With ``groups`` (e.g. the source image of each recording) whole groups are held out, so no group straddles
    the two parts.
    """
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    groups_arr = np.arange(len(labels)) if groups is None else np.asarray(groups)
    keep, held = [], []
    for cls in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == cls)
        units = np.unique(groups_arr[members])
        units = units[rng.permutation(len(units))]
        held_units = set(units[: round(len(units) * fraction)].tolist())
        for i in members:
            (held if groups_arr[i] in held_units else keep).append(int(i))
    return sorted(keep), sorted(held)


class OnDemandMemoryCache(Dataset):
    """Tonic's ``MemoryCachedDataset``, filled by the DataModule before a loader reads it, by ``num_workers``
    processes in parallel, and only with the samples that loader needs.

    A lazily filled MemoryCachedDataset stays empty with (non-persistent) workers: each worker fills its own copy
    and throws it away. Filled here, in the main process, the cache is complete; warm epochs are then served
    in-process (see :meth:`EventDataModule._loader`), where a dictionary lookup beats shipping batches between
    processes.
    """

    def __init__(self, dataset: Dataset, label: str, num_workers: int) -> None:
        self.cache = tonic.MemoryCachedDataset(dataset)
        self.label = label
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.cache.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.cache[index]  # a miss (a sample no loader asked for yet) is read and kept

    def fill(self, indices: Sequence[int] | None = None) -> None:
        """Read every sample of ``indices`` (default: all) that is not cached yet."""
        wanted = range(len(self)) if indices is None else indices
        missing = [i for i in wanted if i not in self.cache.samples_dict]
        if not missing:
            return
        filler = DataLoader(Subset(self.cache.dataset, missing), batch_size=64, num_workers=self.num_workers,
                            collate_fn=list)  # fmt: skip
        position = iter(missing)
        with tqdm(total=len(missing), desc=f"caching {self.label} frames", leave=False) as bar:
            for batch in filler:
                for sample in batch:
                    self.cache.samples_dict[next(position)] = sample
                bar.update(len(batch))


def member_sources(dataset: Dataset) -> list[str]:
    """Where each sample of ``dataset`` (a :class:`NamedErrors`, a ``Subset`` of one, or a cache of either) comes
    from, in order."""
    if isinstance(dataset, Subset):
        inner = member_sources(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if isinstance(dataset, NamedErrors):
        return [dataset.describe(i) for i in range(len(dataset))]
    inner = getattr(dataset, "dataset", None)
    if inner is None:
        raise TypeError(f"cannot tell which files {type(dataset).__name__} reads (expected NamedErrors or a Subset)")
    return member_sources(inner)


class DiskCache(Dataset):
    """The frames of ``dataset`` in ``folder``, one HDF5 file per sample (Tonic's format, ``<index>_0.hdf5``).

    An entry is written under a temporary name and renamed into place, so a killed writer never leaves a partial
    entry under the real name; an entry that cannot be read (e.g. left by an older writer) is made again.
    """

    def __init__(self, dataset: Dataset, folder: Path) -> None:
        self.dataset = dataset
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        path = self.folder / f"{index}_0.hdf5"
        try:
            return load_from_disk_cache(path)
        except FileNotFoundError:
            pass
        except Exception as err:  # a damaged entry: drop it and make it again
            try:
                path.unlink(missing_ok=True)
            except OSError as unlink_err:
                raise OSError(
                    f"the disk-cache entry {path} is unreadable ({type(err).__name__}: {err}) and cannot be removed "
                    f"({unlink_err.strerror}): delete {self.folder}"
                ) from err
        data, target = self.dataset[index]
        self._write(path, data, target)
        return load_from_disk_cache(path)

    def _write(self, path: Path, data: Any, target: Any) -> None:
        """Write to a new temporary file (``mkstemp``: never an existing file or link), then rename it to ``path``."""
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "w+b") as handle:
                save_to_disk_cache(data, target, file_path=handle)  # h5py writes through the open file
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


@dataclasses.dataclass(frozen=True)
class LocalCopy:
    """Where a split's extracted recordings live: ``count`` files ``*<extension>`` under ``folder`` at least
    (Tonic's existence check), extracted from ``archive`` (a zip lists them by name)."""

    folder: Path
    extension: str
    count: int
    archive: Path


class EventDataModule(L.LightningDataModule):
    """Base class. Subclasses set ``name``, ``sensor_size`` and ``num_classes`` and implement
    :meth:`open_split` (build the Tonic dataset of ``"train"`` or ``"test"``) and :meth:`download_help`.

    Args:
        data_dir: folder that holds (or receives) the dataset; Tonic appends the class name.
        T: number of frames per sample (``ToFrame(n_time_bins=T)``); PSN models need a fixed T.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (persistent when > 0).
        val_fraction: share of every class of the training split held out for validation (seeded).
        seed: seed of the validation split.
        random_flip: mirror training samples left-right with probability 0.5.
        random_translate: shift training samples by up to this many pixels.
        denoise_us: apply Tonic's ``Denoise(filter_time)`` (µs) before framing; None to skip.
        spatial_factor: Tonic ``Downsample`` factor (1 keeps the sensor size).
        slicing: ``"time"``: T frames of equal duration (``n_time_bins``); ``"count"``: T frames with equal
            event counts (``n_event_bins``, SpikingJelly's ``split_by="number"``, the paper's CIFAR10-DVS frames).
        cache: ``"memory"`` (Tonic's MemoryCachedDataset, filled once before the first epoch by ``num_workers``
            processes, then served in-process), ``"disk"`` (:class:`DiskCache` under ``data_dir/cache/<name>-<split>-
            <hash of the preprocessing and reader options>/members-<hash of the split's files>``) or ``"none"``.
        download_timeout_s: socket timeout of download attempts.
        pin_memory: DataLoader ``pin_memory``.
        val_split: what ``validate`` runs on: the ``"holdout"`` part of the training split, or the ``"test"``
            split (the paper reports test accuracy; published checkpoints' top-1 is measured this way).
    """

    name: ClassVar[str]
    sensor_size: ClassVar[tuple[int, int, int]]
    classes: ClassVar[tuple[str, ...]]
    #: The Tonic dataset class read (its ``dtype`` is what :class:`ValidEvents` hands on).
    tonic_dataset: ClassVar[type]
    #: The polarity values the native format allows.
    polarities: ClassVar[tuple[int, ...]] = (0, 1)
    #: Tonic's reader casts stored values to a narrower ``dtype`` (bool polarity, int16 pixels, float times to
    #: int): read float64 instead, so :class:`ValidEvents` sees what the file holds (then casts back).
    widen_reader: ClassVar[bool] = False

    def __init__(
        self,
        data_dir: str | None = None,
        T: int = 10,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        random_flip: bool = False,
        random_translate: int = 0,
        denoise_us: int | None = None,
        spatial_factor: float = 1.0,
        slicing: Slicing = "time",
        cache: CacheMode = "memory",
        download_timeout_s: float = 30.0,
        pin_memory: bool = False,
        val_split: ValSplit = "holdout",
    ) -> None:
        super().__init__()
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive integer (frames per sample), got {T!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if val_split not in ("holdout", "test"):
            raise ValueError(f"val_split must be 'holdout' or 'test', got {val_split!r}")
        if cache not in ("none", "memory", "disk"):
            raise ValueError(f"cache must be 'none', 'memory' or 'disk', got {cache!r}")
        if not 0.0 < spatial_factor <= 1.0:
            raise ValueError(f"spatial_factor must be in (0, 1], got {spatial_factor}")
        if slicing not in ("time", "count"):
            raise ValueError(f"slicing must be 'time' (n_time_bins) or 'count' (n_event_bins), got {slicing!r}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        self.T = T
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.random_flip = random_flip
        self.random_translate = random_translate
        self.denoise_us = denoise_us
        self.spatial_factor = spatial_factor
        self.slicing = slicing
        self.cache = cache
        self.download_timeout_s = download_timeout_s
        self.pin_memory = pin_memory
        self.val_split = val_split
        self.datasets: dict[str, Dataset] = {}

    # ---------------------------------------------------------------------------------- to implement
    def open_split(self, split: Split, transform: Callable | None) -> Any:
        """The Tonic dataset of ``split`` (it downloads when absent); ``data`` sorted, targets ints."""
        raise NotImplementedError

    def download_help(self) -> str:
        """Which files to put where when the dataset cannot be downloaded."""
        raise NotImplementedError

    def describe_sample(self, dataset: Any, index: int) -> str:
        return str(dataset.data[index])

    def local_copy(self, split: Split) -> LocalCopy | None:
        """Where ``split``'s recordings are extracted (None: no per-recording check before opening)."""
        return None

    def split_indices(self, split: str, train_set: Any) -> list[int] | None:
        """Hook for datasets without an official split (see CIFAR10-DVS, N-Caltech101)."""
        return None

    # ---------------------------------------------------------------------------------- properties
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Channels of a frame (the polarities; 1 for SHD's channel rows)."""
        return self.input_shape[1]

    @property
    def frame_sensor_size(self) -> tuple[int, int, int]:
        """``(W, H, P)`` after downsampling."""
        W, H, P = self.sensor_size
        return downsampled(W, self.spatial_factor), downsampled(H, self.spatial_factor), P

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """One sample: ``(T, C, H, W)``; a batch adds the leading ``B``."""
        W, H, P = self.frame_sensor_size
        return self.T, P, H, W

    # ---------------------------------------------------------------------------------- transforms
    def preprocessing(self) -> Compose:
        """Deterministic event -> frame steps (cached). Our ``Compose``, not Tonic's: Tonic's silently skips
        every step for an empty recording and returns the raw events instead of frames."""
        steps: list[Callable] = [*self.event_fixes(), self.event_check()]
        if self.denoise_us:
            steps.append(tonic.transforms.Denoise(filter_time=self.denoise_us))
        if self.spatial_factor != 1.0:
            steps.append(tonic.transforms.Downsample(spatial_factor=self.spatial_factor))
        bins = {"n_time_bins": self.T} if self.slicing == "time" else {"n_event_bins": self.T}
        steps.append(tonic.transforms.ToFrame(sensor_size=self.frame_sensor_size, **bins))
        return Compose(steps)

    def event_check(self) -> ValidEvents:
        """The check of every recording's raw events (see :mod:`psn_zoo.datamodules.validation`)."""
        W, H, _ = self.sensor_size
        time_bins = self.slicing == "time"
        return ValidEvents(W, H, self.polarities, time_bins=time_bins, dtype=self.tonic_dataset.dtype, bins=self.T)

    def event_fixes(self) -> list[Callable]:
        """Per-dataset corrections applied to raw events before anything else (none by default)."""
        return []

    def access_steps(self, train: bool) -> list[Callable]:
        """Applied after the cache: float conversion, then (training only) random augmentation."""
        steps: list[Callable] = [ToFloatFrames()]
        if train and self.random_flip:
            steps.append(RandomFlipFrames(0.5))
        if train and self.random_translate:
            steps.append(RandomTranslateFrames(self.random_translate))
        return steps

    def per_access(self, train: bool) -> Compose:
        return Compose(self.access_steps(train))

    def cache_key(self, split: str) -> str:
        """Hash of everything that determines the frames cached for each file of ``split``: the preprocessing and
        every constructor argument that may change what is read (all but :data:`NOT_FRAMING`). Which files the
        split holds, in which order, names a sub-folder (:meth:`_cached`)."""
        options = {k: getattr(self, k, v) for k, v in self.hparams.items() if k not in NOT_FRAMING}
        identity = {
            "dataset": self.name,
            "split": split,
            "root": str(self.tonic_root().resolve()),  # e.g. each N-Digits configuration has its own root
            "preprocessing": repr(self.preprocessing()),
            "options": options,
            "tonic": tonic.__version__,
            "format": CACHE_FORMAT,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()[:16]

    # ---------------------------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Download (or verify) every split once; in DDP only on local rank 0."""
        for split in ("train", "test"):
            self._open(split, transform=None)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        train_set = self._open("train", self.preprocessing())
        test_set = self._open("test", self.preprocessing())
        train_idx = self.split_indices("train", train_set)
        test_idx = self.split_indices("test", test_set)
        # partials, not lambdas: workers started by spawn/forkserver (macOS, Windows, Python 3.14) pickle the dataset
        train: Dataset = NamedErrors(train_set, functools.partial(self.describe_sample, train_set))
        test: Dataset = NamedErrors(test_set, functools.partial(self.describe_sample, test_set))
        if train_idx is not None:
            train, test = Subset(train, train_idx), Subset(test, test_idx)
        keep, held = stratified_split(
            self._labels(train_set, train_idx), self.val_fraction, self.seed, self.groups_of(train_set, train_idx)
        )
        train_members = train_idx if train_idx is not None else list(range(len(train_set)))
        test_members = test_idx if test_idx is not None else list(range(len(test_set)))
        self._members = {
            "train": (train_set, [train_members[i] for i in keep]),
            "val": (train_set, [train_members[i] for i in held]),
            "test": (test_set, test_members),
        }
        train, test = self._cached(train, "train"), self._cached(test, "test")
        self._fill_plan = {"train": (train, keep), "val": (train, held), "test": (test, None)}
        self.datasets = {
            "train": MapDataset(Subset(train, keep), self.per_access(train=True), self.seed),
            "val": MapDataset(Subset(train, held), self.per_access(train=False), self.seed),
            "test": MapDataset(test, self.per_access(train=False), self.seed),
        }

    def set_epoch(self, epoch: int) -> None:
        """Tell the training set the epoch (its augmentation draws depend on it); the classifier calls this."""
        if "train" in self.datasets:
            self.datasets["train"].set_epoch(epoch)

    def sample_sources(self, split: str) -> list[str]:
        """Where each sample of ``split`` (``"train"``, ``"val"``, ``"test"``) comes from, in loader order."""
        if not self.datasets:
            self.setup()
        dataset, members = self._members[split]
        return [self.describe_sample(dataset, i) for i in members]

    def groups_of(self, dataset: Any, indices: list[int] | None) -> list[int] | None:
        """Samples that must stay on the same side of the validation split (None: every sample alone)."""
        return None

    def labels_of(self, dataset: Any) -> list[int]:
        """Integer labels of every sample of a Tonic dataset, without reading the events."""
        return [int(t) for t in dataset.targets]

    def _labels(self, dataset: Any, indices: list[int] | None) -> list[int]:
        targets = self.labels_of(dataset)
        return [targets[i] for i in indices] if indices is not None else targets

    def tonic_root(self) -> Path:
        """The ``save_to`` folder given to Tonic (it appends its class name)."""
        return self.data_dir

    def archive_help(self, entries: list[tuple[str, str, str]], layout: str) -> str:
        """Instructions from ``(file name, url, md5)`` triples and the extracted ``layout``."""
        location = self.tonic_root() / self.tonic_folder()
        lines = [f"To use {self.name} offline, put these archives into {location}/ (Tonic extracts them):"]
        lines += [f"  {location / name}   (md5 {md5})\n      from {url}" for name, url, md5 in entries]
        lines.append(f"They extract to {layout}.")
        lines.append(f"Or pass data_dir= pointing at a folder that already holds {self.tonic_folder()}/.")
        return "\n".join(lines)

    def _open(self, split: Split, transform: Callable | None) -> Any:
        location = self.tonic_root() / self.tonic_folder()
        self._check_local_copy(split, location)
        before = set(location.rglob("*")) if location.exists() else set()
        try:
            with network_timeout(self.download_timeout_s):
                dataset = self.open_split(split, transform)
        except (OSError, RuntimeError, zipfile.BadZipFile, tarfile.TarError) as err:
            self._remove_partial_downloads(location, before)
            incomplete = self._incomplete_copy(split, err)
            if incomplete is not None:
                raise incomplete from None
            raise DatasetNotFoundError(
                f"{self.name} ({split} split) is not under {location} and could not be downloaded "
                f"({type(err).__name__}: {err}).\n{self.download_help()}"
            ) from None
        if len(dataset) == 0:
            raise DatasetNotFoundError(
                f"{self.name} ({split} split): no samples found under {location}.\n{self.download_help()}"
            )
        if self.widen_reader and isinstance(getattr(dataset, "dtype", None), np.dtype) and dataset.dtype.names:
            dataset.dtype = widened(dataset.dtype)  # the reader keeps every stored value for ValidEvents to see
        return dataset

    def _check_local_copy(self, split: Split, location: Path) -> None:
        """Before Tonic opens ``split``: a recording that its zip archive lists but the extracted copy lacks is
        reported by name (Tonic would read the split without it, or try a download), never silently dropped."""
        copy = self.local_copy(split)
        if copy is None or not copy.folder.is_dir() or not zipfile.is_zipfile(copy.archive):
            return
        with zipfile.ZipFile(copy.archive) as archive:
            listed = {n for n in archive.namelist() if n.endswith(copy.extension)}
        present = {p.relative_to(location).as_posix() for p in copy.folder.glob(f"**/*{copy.extension}")}
        missing = sorted(listed - present)
        if not missing or not listed & present:  # complete, or extracted by hand into another layout
            return
        shown = ", ".join(str(location / name) for name in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MissingSampleError(
            f"{self.name} ({split} split): {len(missing)} recording(s) listed in {copy.archive} are missing from "
            f"the local copy: {shown}{more}. Extract them from the archive again, or delete {location} and "
            f"download {self.name} again."
        )

    def _incomplete_copy(self, split: Split, error: Exception) -> MissingSampleError | None:
        """After Tonic's existence check failed and its download did too: if recordings are extracted, the local
        copy is incomplete (a recording deleted), which is what the error must say, not "could not be
        downloaded"."""
        copy = self.local_copy(split)
        if copy is None or not copy.folder.is_dir():
            return None
        counted = list(copy.folder.glob(f"**/*{copy.extension}"))  # what Tonic's check counts
        if not any(path.is_file() for path in counted) or len(counted) >= copy.count:
            return None  # nothing extracted yet (a plain missing dataset), or not the count that failed
        return MissingSampleError(
            f"{self.name} ({split} split): recordings are missing from the local copy: {copy.folder} holds "
            f"{len(counted)} *{copy.extension} files where a complete copy holds at least {copy.count} (Tonic's "
            f"check), so a recording was deleted or not extracted. Restore it, or delete "
            f"{self.tonic_root() / self.tonic_folder()} and download {self.name} again (the download attempt "
            f"failed: {type(error).__name__}: {error})."
        )

    @staticmethod
    def _remove_partial_downloads(location: Path, before: set[Path]) -> None:
        """Tonic opens the archive for writing before the download succeeds: drop files this attempt created."""
        if not location.exists():
            return
        for path in sorted(set(location.rglob("*")) - before, reverse=True):
            if path.is_file() or path.is_symlink():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def tonic_folder(self) -> str:
        """The sub-folder of ``data_dir`` Tonic uses (its class name)."""
        return self.name

    def _cached(self, dataset: Dataset, split: str) -> Dataset:
        if self.cache == "disk":  # entry i is sample i of these files in this order: their list names the folder
            members = hashlib.sha256(json.dumps(member_sources(dataset)).encode()).hexdigest()[:16]
            path = self.data_dir / "cache" / f"{self.name}-{split}-{self.cache_key(split)}" / f"members-{members}"
            return DiskCache(dataset, path)
        if self.cache == "memory":
            return OnDemandMemoryCache(dataset, f"{self.name} {split}", self.num_workers)
        return dataset

    # ---------------------------------------------------------------------------------- loaders
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        require_samples(self, split, self.datasets[split])
        source, members = self._fill_plan[split]
        if isinstance(source, OnDemandMemoryCache):
            source.fill(members)  # only what this loader reads: a test run never frames the training set
        workers = 0 if self.cache == "memory" else self.num_workers  # a filled memory cache needs no workers
        dataset, shards = self.datasets[split], eval_shards(self)
        return seeded_loader(dataset, self.batch_size, shuffle, workers, self.seed, self.pin_memory, shards)

    def train_dataloader(self) -> DataLoader:
        return at_fit_epoch(self, self._loader("train", shuffle=True))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val" if self.val_split == "holdout" else "test", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def teardown(self, stage: str | None = None) -> None:
        """Keep the datasets (and warm caches) across fit/validate/test within one process."""
