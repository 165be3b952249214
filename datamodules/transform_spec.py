"""Transforms as plain data: ``[{"name": "ToFrame", "kwargs": {...}}, ...]`` and back.

A published checkpoint stores the exact evaluation transform of its DataModule (events in, float frames out) in
this form, so anyone can rebuild it without the training code and without a ``repr`` string. Only the step classes
listed in :data:`TRANSFORM_STEPS` can be named: metadata never makes psn_zoo import anything else.

::

    spec = transform_spec(dm)          # the DataModule's evaluation transform as JSON-able data
    transform = build_transform(spec)  # a Compose equal to it: transform(events) -> frames [T, C, H, W]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tonic

from .._registry import Registry
from .asldvs import FlattenEvents
from .errors import RequireEvents
from .transforms import AsSequence, Compose, RandomFlipFrames, RandomTranslateFrames, ToFloatFrames
from .validation import ValidEvents

StepSpec = dict[str, Any]

#: The step classes a stored transform may name (Tonic's event transforms and psn_zoo's own steps).
TRANSFORM_STEPS: Registry[type] = Registry("transform step")
for _cls in (
    tonic.transforms.Denoise,
    tonic.transforms.Downsample,
    tonic.transforms.ToFrame,
    RequireEvents,
    ValidEvents,
    FlattenEvents,
    ToFloatFrames,
    AsSequence,
    RandomFlipFrames,
    RandomTranslateFrames,
):
    TRANSFORM_STEPS.register(_cls.__name__)(_cls)

_DTYPE_KEY = "numpy_dtype"


class TransformSpecError(ValueError):
    """A stored transform that cannot be rebuilt: unknown step, bad arguments or malformed data."""


def step_spec(step: Callable) -> StepSpec:
    """One step as ``{"name": <class name>, "kwargs": {<constructor field>: <JSON value>}}``."""
    name = type(step).__name__
    if name not in TRANSFORM_STEPS or TRANSFORM_STEPS.get(name).obj is not type(step):
        raise TransformSpecError(
            f"{name} cannot be stored as plain data: only {', '.join(TRANSFORM_STEPS.names())} can; register the "
            "class in psn_zoo.datamodules.transform_spec.TRANSFORM_STEPS (a dataclass, or a class without arguments)"
        )
    if not dataclasses.is_dataclass(step):
        return {"name": name, "kwargs": {}}
    fields = [f for f in dataclasses.fields(step) if f.init and f.metadata.get("stored", True)]
    kwargs = {f.name: _encode(getattr(step, f.name)) for f in fields}
    return {"name": name, "kwargs": kwargs}


def steps_of(transform: Callable) -> list[Callable]:
    """The flat list of steps of a (nested) :class:`Compose` or Tonic ``Compose``; a single step is a list of one."""
    inner = getattr(transform, "steps", None) if isinstance(transform, Compose) else None
    if inner is None and isinstance(transform, tonic.transforms.Compose):
        inner = transform.transforms
    if inner is None:
        return [transform]
    return [s for step in inner for s in steps_of(step)]


def transform_spec(datamodule: Any) -> list[StepSpec]:
    """The evaluation transform of an event DataModule (its cached preprocessing, then the access steps of
    evaluation: no augmentation) as plain data."""
    if not hasattr(datamodule, "preprocessing"):
        raise TransformSpecError(
            f"{type(datamodule).__name__} has no event transform (it reads images or sequences, not events)"
        )
    steps = [*steps_of(datamodule.preprocessing()), *steps_of(datamodule.per_access(False))]
    return [step_spec(step) for step in steps]


def build_transform(spec: Sequence[Mapping[str, Any]]) -> Compose:
    """The :class:`Compose` that ``spec`` (from :func:`transform_spec` / a manifest) describes."""
    if isinstance(spec, str | bytes) or not isinstance(spec, Sequence):
        raise TransformSpecError(f"a transform spec is a list of {{'name', 'kwargs'}} steps, got {type(spec).__name__}")
    steps = []
    for i, item in enumerate(spec):
        if not isinstance(item, Mapping) or set(item) - {"name", "kwargs"} or not isinstance(item.get("name"), str):
            raise TransformSpecError(f"step {i} of the transform spec must be {{'name': str, 'kwargs': {{...}}}}, "
                                     f"got {item!r}")  # fmt: skip
        kwargs = item.get("kwargs", {})
        if not isinstance(kwargs, Mapping):
            raise TransformSpecError(f"step {i} ({item['name']}): kwargs must be a mapping, got {kwargs!r}")
        try:
            cls = TRANSFORM_STEPS.get(item["name"]).obj
        except KeyError as err:
            raise TransformSpecError(f"step {i}: {err.args[0]}") from None
        try:
            steps.append(cls(**{key: _decode(value) for key, value in kwargs.items()}))
        except (TypeError, ValueError) as err:
            message = f"step {i} ({item['name']}) cannot be built from {dict(kwargs)!r}: {err}"
            raise TransformSpecError(message) from None
    return Compose(_linked(steps))


def _linked(steps: list[Callable]) -> list[Callable]:
    """Each :class:`ValidEvents` gets ``bins`` (not stored) from the frame count of the ``ToFrame`` after it."""
    linked = list(steps)
    for i, step in enumerate(linked):
        if not isinstance(step, ValidEvents):
            continue
        frames = next((s for s in linked[i + 1 :] if isinstance(s, tonic.transforms.ToFrame)), None)
        count = None if frames is None else frames.n_time_bins if step.time_bins else frames.n_event_bins
        if isinstance(count, int) and count > 0:
            linked[i] = dataclasses.replace(step, bins=count)
    return linked


def _encode(value: Any) -> Any:
    if isinstance(value, np.dtype):
        return {_DTYPE_KEY: [list(field) for field in value.descr] if value.names else value.str}
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TransformSpecError(f"cannot store {type(value).__name__} {value!r} as plain data")


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {_DTYPE_KEY}:
        descr = value[_DTYPE_KEY]
        return np.dtype([tuple(_tuples(f)) for f in descr] if isinstance(descr, list) else descr)
    return _tuples(value)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
