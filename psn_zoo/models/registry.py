"""The architecture registry: builders by name, and :func:`build_model` (fresh weights).

Builders are thin functions registered with :func:`register_model`; keyword arguments a builder does not
declare itself are neuron arguments (``build_model("spiking_vgg11_bn", neuron="lif", tau=3.0)``). The public
entry points with pretrained weights, ``create_model`` and ``list_models``, are in :mod:`._builder`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from .._registry import Pattern, Registry
from ..neurons import NEURONS, NeuronSpec

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str, **meta: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder. ``meta``: ``family``, ``paper`` (one of the paper's own networks),
    ``spikingjelly`` (the equivalent SpikingJelly 2.0.0 builder, if any), ``default_neuron`` (the neuron spec it
    builds when its ``neuron`` argument defaults to None: required then, so that listings show what is built)."""
    register = MODELS.register(name, **meta)

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        param = _builder_params(builder).get("neuron")
        if param is not None and param.default is None and meta.get("default_neuron") is None:
            raise TypeError(
                f"model {name!r}: its builder's neuron defaults to None, so register it with default_neuron=<the "
                "spec it builds then> (psn-zoo models and model_info show it)"
            )
        return register(builder)

    return decorator


def _builder_params(builder: Callable[..., nn.Module]) -> dict[str, inspect.Parameter]:
    return {
        n: p
        for n, p in inspect.signature(builder).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture with fresh weights (no pretrained weights: see :func:`psn_zoo.create_model`).

    ``kwargs`` are the builder's arguments (``neuron``, ``T``, ``num_classes``, ``in_channels``, family options) plus,
    for the rest, the neuron's own arguments; anything else is an error that lists what is accepted.
    """
    try:
        entry = MODELS.get(name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    params = _builder_params(entry.obj)
    kwargs = dict(kwargs)
    neuron = kwargs.pop("neuron", params["neuron"].default)
    extra = {k: kwargs.pop(k) for k in sorted(set(kwargs) - set(params))}
    if neuron is None:  # the architecture's own default neuron (e.g. the paper's sliding PSN), which it parses
        return entry.obj(neuron=None, **kwargs, **extra)
    spec = NeuronSpec.parse(neuron)
    if extra:
        neuron_args = [k for k in NEURONS.get(spec.name).accepted_kwargs() if k not in ("step_mode", "T")]
        unknown = [k for k in extra if k not in neuron_args]
        if unknown:
            raise ValueError(
                f"create_model({entry.name!r}): unknown argument(s) {unknown}. The model takes "
                f"{', '.join(params)}; its neuron {spec.name!r} takes {', '.join(neuron_args) or 'nothing else'}"
            )
        spec = spec.with_kwargs(**extra)
    return entry.obj(neuron=spec, **kwargs)  # the builder gets one parsed neuron spec, its own arguments besides


def list_architectures(pattern: Pattern = None, *, paper: bool | None = None) -> list[str]:
    """Registered architecture names (an fnmatch ``pattern``, e.g. ``"sew*"``, or a list of them; case-insensitive);
    ``paper=True``: the paper's only."""
    names = MODELS.names(pattern)
    if paper is None:
        return names
    return [n for n in names if bool(MODELS.get(n).meta.get("paper", False)) == paper]


def model_info(name: str) -> dict[str, Any]:
    """What a model is: family, defaults of its builder, the neuron it builds by default (``neuron``, a spec dict:
    the builder's own choice where its ``neuron`` argument defaults to None), input layout, and its SpikingJelly
    equivalent."""
    entry = MODELS.get(name)
    defaults = {n: p.default for n, p in _builder_params(entry.obj).items()}
    neuron = defaults.get("neuron")
    neuron = entry.meta.get("default_neuron") if neuron is None else neuron
    return {
        "name": entry.name,
        "neuron": NeuronSpec.parse(neuron).to_dict() if neuron is not None else None,
        "family": entry.meta.get("family"),
        "paper": bool(entry.meta.get("paper", False)),
        "spikingjelly": entry.meta.get("spikingjelly"),
        "defaults": defaults,
        "input": entry.meta.get("input", "image"),
        "summary": (entry.obj.__doc__ or "").strip().splitlines()[0],
    }
