"""Neurons by name: the neuron type is a hyperparameter (a string, or a mapping with kwargs).

::

    make_neuron("psn", T=4)
    make_neuron({"name": "lif", "tau": 2.0, "surrogate": "sigmoid"})
    list_neurons("*psn")            # ['masked_psn', 'psn', 'sliding_psn']

A spec is plain data, so the same value works in YAML recipes, on the command line and in a
checkpoint's metadata. Unknown names and bad arguments fail with the list of valid choices.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .._registry import Entry, Registry
from .base import SpikingNeuron
from .surrogate import make_surrogate

NEURONS: Registry[type[SpikingNeuron]] = Registry("neuron")


#: How a neuron resets its membrane after a spike (``reset`` in :func:`neuron_info`):
RESET_KINDS = {
    "none": "reset-free: the membrane is a fixed (learned) linear map of the input, so it is parallel over T",
    "exact": "exact reset, computed serially step by step",
    "fixed_point": "exact reset reached by fixed-point iterations in parallel (exact once K >= T)",
    "decoupled": "reset by subtraction computed in parallel from a cumulative sum; no gradient through the reset",
}


def register_neuron(cls: type[SpikingNeuron]) -> type[SpikingNeuron]:
    """Class decorator: register a neuron under the ``name`` and ``aliases`` its class declares.

    The class is the one home of a neuron type's identity; the registry stores nothing else about it."""
    if not (isinstance(cls, type) and issubclass(cls, SpikingNeuron)):
        raise TypeError(f"register_neuron registers SpikingNeuron subclasses, got {cls!r}")
    if "name" not in vars(cls):
        raise TypeError(
            f"{cls.__name__} declares no registry name of its own: set the class attribute name = '...' "
            "(a subclass does not inherit its parent's name)"
        )
    if cls.reset_kind not in RESET_KINDS:
        raise ValueError(f"{cls.__name__}.reset_kind = {cls.reset_kind!r}; choose one of {sorted(RESET_KINDS)}")
    return NEURONS.register(cls.name, aliases=tuple(cls.aliases))(cls)


#: Arguments every neuron accepts but which are not part of its identity.
_RUNTIME_KWARGS = ("step_mode",)


@dataclass(frozen=True)
class NeuronSpec:
    """A validated neuron choice: canonical ``name`` plus constructor ``kwargs``."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | NeuronSpec) -> NeuronSpec:
        """Accept ``"lif"``, ``{"name": "lif", "tau": 2.0}`` or a NeuronSpec; validate names and kwargs."""
        if isinstance(spec, NeuronSpec):
            name, kwargs = spec.name, dict(spec.kwargs)
        elif isinstance(spec, str):
            name, kwargs = spec, {}
        elif isinstance(spec, Mapping):
            kwargs = dict(spec)
            name = kwargs.pop("name", None)
            if name is None:
                raise ValueError(
                    f"neuron spec {dict(spec)!r} has no 'name'; write e.g. {{'name': 'lif', 'tau': 2.0}}. "
                    f"Valid names: {', '.join(NEURONS.names())}"
                )
        else:
            raise TypeError(f"a neuron spec is a name or a mapping with a 'name' key, got {type(spec).__name__}")
        try:
            entry = NEURONS.get(name)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        _check_kwargs(entry, kwargs)
        return cls(entry.name, kwargs)

    def with_kwargs(self, **kwargs: Any) -> NeuronSpec:
        return NeuronSpec.parse({"name": self.name, **self.kwargs, **kwargs})

    def build(self, **kwargs: Any) -> nn.Module:
        merged = {**self.kwargs, **kwargs}
        _check_kwargs(NEURONS.get(self.name), merged)
        _check_required(NEURONS.get(self.name), merged)
        return NEURONS.get(self.name).obj(**merged)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **kwargs}`` -- the plain form for YAML and checkpoint metadata."""
        return {"name": self.name, **self.kwargs}

    def differences(
        self, other: NeuronSpec | str | Mapping[str, Any], *, pinned_only: bool = False, given_only: bool = False
    ) -> list[str]:
        """How ``other`` builds another neuron than this spec: ``["tau=3.0 (here: 2.0)", ...]``, defaults filled in
        on both sides (``{"name": "lif"}`` equals ``{"name": "lif", "tau": 2.0}``); empty when they build the same.
        ``pinned_only``: ignore the class's :attr:`~SpikingNeuron.initial_kwargs` (what loaded weights replace);
        ``given_only``: compare only the arguments ``other`` names. Arguments a model supplies (``T``, ``channels``,
        ``step_mode``) are not compared."""
        other = NeuronSpec.parse(other)
        if other.name != self.name:
            return [f"neuron={other.name!r} (here: {self.name!r})"]
        params = inspect.signature(self.neuron_class).parameters
        defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        skip = {"T", "channels", *_RUNTIME_KWARGS, *(self.neuron_class.initial_kwargs if pinned_only else ())}
        wrong = []
        for key in sorted((set(other.kwargs) if given_only else set(self.kwargs) | set(other.kwargs)) - skip):
            mine, theirs = self.kwargs.get(key, defaults.get(key)), other.kwargs.get(key, defaults.get(key))
            if key == "surrogate":  # "atan" builds what {"name": "atan", "alpha": 2.0} builds
                mine, theirs = _surrogate_form(mine), _surrogate_form(theirs)
            if mine != theirs:
                wrong.append(f"{key}={theirs!r} (here: {mine!r})")
        return wrong

    @property
    def neuron_class(self) -> type[SpikingNeuron]:
        """The class that holds this neuron type's identity (name, causal, needs_T, reset kind, MAC count)."""
        return NEURONS.get(self.name).obj

    @property
    def needs_T(self) -> bool:
        return bool(self.neuron_class.needs_T)

    @property
    def causal(self) -> bool:
        return bool(self.neuron_class.causal)


def _surrogate_form(value: Any) -> Any:
    """A surrogate spec in its full plain form (``make_surrogate(value).spec()``); a value that builds none is
    compared as it is."""
    try:
        return make_surrogate(value).spec()
    except (TypeError, ValueError, KeyError):
        return value


def _check_kwargs(entry: Entry[type[nn.Module]], kwargs: Mapping[str, Any]) -> None:
    valid = [k for k in entry.accepted_kwargs() if k != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"neuron {entry.name!r} got unexpected argument(s) {unknown}; it accepts: {', '.join(valid)}")


def _check_required(entry: Entry[type[nn.Module]], kwargs: Mapping[str, Any]) -> None:
    """Name the arguments a neuron cannot be built without (instead of the constructor's TypeError)."""
    params = inspect.signature(entry.obj).parameters.values()
    missing = [p.name for p in params if p.default is p.empty and p.kind is not p.VAR_KEYWORD and p.name not in kwargs]
    if missing:
        example = ", ".join(f"{m!r}: <value>" for m in missing)
        cli = ", ".join(f'"{m}": <value>' for m in missing)
        raise ValueError(
            f"neuron {entry.name!r} needs argument(s) {missing}: give them in the spec, e.g. "
            f"{{'name': {entry.name!r}, {example}}} (CLI: --model.neuron_kwargs '{{{cli}}}')"
        )


def make_neuron(spec: str | Mapping[str, Any] | NeuronSpec, **kwargs: Any) -> nn.Module:
    """Build a neuron from a spec; ``kwargs`` add to / override the spec's arguments.

    >>> make_neuron("psn", T=4)
    PSN(...)
    """
    return NeuronSpec.parse(spec).build(**kwargs)


def neuron_factory(
    spec: str | Mapping[str, Any] | NeuronSpec, T: int | None = None, **defaults: Any
) -> Callable[[], nn.Module]:
    """Validate ``spec`` once and return a zero-argument builder (used by models for each layer).

    ``T`` is passed to neurons whose weights depend on it (PSN, masked PSN) and ignored by the others;
    a spec that fixes a different ``T`` is an error, and so is a spec with ``step_mode`` (a model's neurons follow
    the model's mode: ``model.set_step_mode``). ``defaults`` are applied where the neuron accepts them.
    """
    parsed = NeuronSpec.parse(spec)
    if "step_mode" in parsed.kwargs:
        raise ValueError(
            f"neuron spec {parsed.to_dict()!r} sets step_mode={parsed.kwargs['step_mode']!r}, but a model's neurons "
            "run in the model's mode (with step_mode='s' each one would read the whole [T, B, ...] input as a single "
            "step): drop step_mode from the spec and set the model's mode with model.set_step_mode('s')"
        )
    entry = NEURONS.get(parsed.name)
    kwargs = {k: v for k, v in defaults.items() if k in entry.accepted_kwargs() and k not in parsed.kwargs}
    if parsed.needs_T:
        if T is None and "T" not in parsed.kwargs:
            raise ValueError(f"neuron {parsed.name!r} needs the number of time steps T")
        if T is not None and parsed.kwargs.get("T", T) != T:
            raise ValueError(f"neuron spec fixes T={parsed.kwargs['T']} but the model runs T={T}; drop T from the spec")
        if T is not None:
            kwargs["T"] = T
    full = parsed.with_kwargs(**kwargs)
    full.build()  # fail now, with a clear message, rather than deep inside a model constructor
    return full.build


def list_neurons(pattern: str | None = None) -> list[str]:
    """Registered neuron names, optionally filtered by an fnmatch pattern (``"*psn*"``)."""
    return NEURONS.names(pattern)


# ------------------------------------------------------------------------------------------------ family tree


def _family(cls: type[nn.Module]) -> dict[str, Any]:
    streamable = getattr(cls, "streamable", None)
    return {
        "reset": cls.reset_kind,
        "streamable": bool(cls.causal if streamable is None else streamable),
        "generalises": dict(cls.generalises),
    }


def neuron_info(name: str) -> dict[str, Any]:
    """Name, class, aliases, causality, whether T is required, accepted arguments, and the neuron's place in the
    family tree: ``reset`` (a key of :data:`RESET_KINDS`), ``reset_free``, ``exact_reset`` (the serial LIF's spikes,
    always or at enough iterations), ``streamable`` (single-step mode), ``generalises`` / ``generalised_by``
    (``{neuron: condition}`` under which one reduces to the other exactly) and ``channelwise`` (per-channel
    parameters, sized from the first input)."""
    entry = NEURONS.get(name)
    cls = entry.obj
    family = _family(cls)
    return {
        "name": entry.name,
        "class": cls.__name__,
        "aliases": NEURONS.aliases(entry.name),
        "causal": bool(cls.causal),
        "needs_T": bool(cls.needs_T),
        "kwargs": [k for k in entry.accepted_kwargs() if k not in _RUNTIME_KWARGS],
        "summary": (entry.obj.__doc__ or "").strip().splitlines()[0],
        "reset": family["reset"],
        "reset_free": family["reset"] == "none",
        "exact_reset": family["reset"] in ("exact", "fixed_point"),
        "streamable": family["streamable"],
        "generalises": family["generalises"],
        "generalised_by": {
            other.name: cond for other in NEURONS if (cond := other.obj.generalises.get(entry.name)) is not None
        },
        "channelwise": "channels" in entry.accepted_kwargs(),
    }


def neuron_tree() -> str:
    """The family tree as text: each neuron under the ones that generalise it, with its reset and streaming flags
    (what ``psn-zoo neurons --tree`` prints)."""
    infos = {name: neuron_info(name) for name in list_neurons()}
    lines: list[str] = []

    def flags(info: dict[str, Any]) -> str:
        parts = [f"reset: {info['reset']}", "streamable" if info["streamable"] else "parallel-only"]
        return ", ".join(parts + (["per-channel"] if info["channelwise"] else []))

    def walk(name: str, depth: int, path: tuple[str, ...], condition: str | None) -> None:
        info = infos[name]
        when = f"  when {condition}" if condition else ""
        lines.append(f"{'  ' * depth}{'└─ ' if depth else ''}{name} [{flags(info)}]{when}")
        for child, cond in sorted(info["generalises"].items()):
            if child not in path and child in infos:
                walk(child, depth + 1, (*path, child), cond)

    for name, info in infos.items():
        if not info["generalised_by"]:  # roots
            walk(name, 0, (name,), None)
    return "\n".join(lines)
