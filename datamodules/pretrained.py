"""The data a published checkpoint expects, rebuilt from its metadata as runnable objects.

::

    dm = datamodule_for("paper_cifar10dvs_vgg.ndigits_psn_t4", data_dir="data")  # the entry's DataModule and args
    transform = transform_for("paper_cifar10dvs_vgg.ndigits_psn_t4")  # events -> frames [T, C, H, W], as evaluated

The manifest stores the DataModule as a name and its arguments (``dataset.datamodule``, ``dataset.init_args``) and
an event entry's evaluation transform as plain steps (``input.transform.steps``, see
:mod:`psn_zoo.datamodules.transform_spec`); nothing is imported by a path read from metadata.
"""

from __future__ import annotations

import difflib
from typing import Any

import lightning as L

from ..hub import CheckpointInfo, get_pretrained_info
from .transform_spec import build_transform, transform_spec
from .transforms import Compose

#: Arguments that say where and how to load, not which data: never taken from an entry (``publish`` drops them).
RUNTIME_ARGS = ("data_dir", "num_workers", "batch_size", "pin_memory", "download_timeout_s", "cache")


def datamodule_names() -> list[str]:
    """The DataModules a checkpoint can name (``psn_zoo.datamodules``'s public DataModule classes)."""
    from .. import datamodules

    return sorted(n for n in datamodules.__all__ if n.endswith("DataModule") and n != "EventDataModule")


def datamodule_class(name: str) -> type[L.LightningDataModule]:
    """The class a manifest's ``dataset.datamodule`` names: ``"NDigitsDataModule"`` (format 2) or the dotted paths
    of format 1 (``"datamodules.NDigitsDataModule"``, ``"psn_zoo.datamodules.NDigitsDataModule"``)."""
    from .. import datamodules

    module, _, short = str(name).rpartition(".")
    names = datamodule_names()
    if module not in ("", "datamodules", "psn_zoo.datamodules") or short not in names:
        close = difflib.get_close_matches(short, names, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown DataModule {name!r}: a checkpoint can name only psn_zoo's DataModules ({', '.join(names)}).{hint}"
        )
    return getattr(datamodules, short)


def _info(entry: str | CheckpointInfo) -> CheckpointInfo:
    return entry if isinstance(entry, CheckpointInfo) else get_pretrained_info(entry)


def datamodule_for(entry: str | CheckpointInfo, **overrides: Any) -> L.LightningDataModule:
    """The DataModule ``entry`` was evaluated with, built with the entry's arguments; ``overrides`` adds the
    runtime ones (``data_dir``, ``batch_size``, ``num_workers``, ...) or replaces any of them."""
    info = _info(entry)
    cls = datamodule_class(info.dataset["datamodule"])
    kwargs = {k: v for k, v in dict(info.dataset.get("init_args", {})).items() if not k.startswith("_")}
    kwargs = {k: v for k, v in kwargs.items() if k not in RUNTIME_ARGS}
    return cls(**{**kwargs, **overrides})


def transform_for(entry: str | CheckpointInfo) -> Compose:
    """The evaluation transform of an event entry: raw events (Tonic's structured array) -> float frames
    ``[T, C, H, W]``, the exact steps the published metrics were measured with."""
    info = _info(entry)
    if info.input.kind != "event_frames" and not hasattr(datamodule_class(info.dataset["datamodule"]), "preprocessing"):
        raise ValueError(
            f"{info.name} reads {info.input.kind.replace('_', ' ')}s, not events: it has no event transform; "
            "its DataModule (datamodule_for) prepares the input"
        )
    steps = dict(info.input.transform).get("steps")
    if steps is None:  # a format-1 entry: rebuild from its DataModule and arguments
        steps = transform_spec(datamodule_for(info))
    return build_transform(steps)
