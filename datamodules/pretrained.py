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
import inspect
from typing import Any

import lightning as L

from ..hub import HF_HUB_PREFIX, CheckpointInfo, get_pretrained_info, hf_hub_info
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
    """The metadata of a published entry, an ``hf-hub:org/repo[@revision]`` repository (as ``create_model`` takes
    them) or a :class:`CheckpointInfo` itself."""
    if isinstance(entry, CheckpointInfo):
        return entry
    if isinstance(entry, str) and entry.startswith(HF_HUB_PREFIX):
        return hf_hub_info(entry)
    return get_pretrained_info(entry)


def _accepted(cls: type) -> tuple[set[str], bool]:
    """The keyword arguments ``cls`` takes, and whether it takes any (``**kwargs``)."""
    params = inspect.signature(cls).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def datamodule_for(entry: str | CheckpointInfo, **overrides: Any) -> L.LightningDataModule:
    """The DataModule ``entry`` was evaluated with, built with the entry's arguments; ``overrides`` adds the
    runtime ones (``data_dir``, ``batch_size``, ``num_workers``, ...) or replaces any of them.

    A runtime argument the DataModule does not take is left out (the sequential digits are embedded: they have no
    ``data_dir``), so one call serves every entry; any other argument it does not take is an error that lists the
    ones it does."""
    info = _info(entry)
    cls = datamodule_class(info.dataset["datamodule"])
    kwargs = {k: v for k, v in dict(info.dataset.get("init_args", {})).items() if not k.startswith("_")}
    kwargs = {k: v for k, v in kwargs.items() if k not in RUNTIME_ARGS}
    accepted, any_kwargs = _accepted(cls)
    if not any_kwargs:
        overrides = {k: v for k, v in overrides.items() if k in accepted or k not in RUNTIME_ARGS}
        unknown = sorted(set(overrides) - accepted)
        if unknown:
            raise ValueError(
                f"datamodule_for({info.name!r}): {cls.__name__} takes no {', '.join(map(repr, unknown))}; its "
                f"arguments are {', '.join(sorted(accepted))}"
            )
    return cls(**{**kwargs, **overrides})


def transform_for(entry: str | CheckpointInfo) -> Compose:
    """The evaluation transform of an entry, the exact steps its published metrics were measured with: for an event
    entry, raw events (Tonic's structured array) -> float frames ``[T, C, H, W]``; for a sequential-digits entry,
    a ``[28, 28]`` image (float, as its DataModule holds it) -> the sequence ``[T, 1, L]`` the model reads: its
    columns or, for a permuted entry, its pixels in the entry's fixed order (``permute_pixels``,
    ``permutation_seed``), 28 per step."""
    info = _info(entry)
    cls = datamodule_class(info.dataset["datamodule"])
    if info.input.kind == "sequence" and cls.__name__ == "SequentialDigitsDataModule":
        return _sequence_transform(info)
    if info.input.kind != "event_frames" and not hasattr(cls, "preprocessing"):
        raise ValueError(
            f"{info.name} reads {info.input.kind.replace('_', ' ')}s, not events: it has no stored transform; "
            "its DataModule (datamodule_for) prepares the input"
        )
    steps = dict(info.input.transform).get("steps")
    if steps is None:  # a format-1 entry: rebuild from its DataModule and arguments
        steps = transform_spec(datamodule_for(info))
    return build_transform(steps)


def _sequence_transform(info: CheckpointInfo) -> Compose:
    """A sequential-digits entry's image -> sequence step (no augmentation), with the pixel order its input spec
    records (or, for entries published before it did, its DataModule arguments)."""
    from .seqdigits import _ColumnsAsTime, pixel_permutation

    recorded, data = dict(info.input.transform), dict(info.dataset.get("init_args", {}))
    permuted = recorded.get("permute_pixels", data.get("permute_pixels", False))
    seed = recorded.get("permutation_seed", data.get("permutation_seed", 0))
    if data.get("permute_pixels", permuted) != permuted or data.get("permutation_seed", seed) != seed:
        raise ValueError(
            f"{info.name}: its input transform (permute_pixels={permuted}, permutation_seed={seed}) and its "
            f"DataModule arguments (permute_pixels={data.get('permute_pixels')}, permutation_seed="
            f"{data.get('permutation_seed')}) disagree: the record is inconsistent; republish the entry"
        )
    side = int(info.input.shape[-1])
    return Compose([_ColumnsAsTime(0, pixel_permutation(int(seed), side) if permuted else None)])
