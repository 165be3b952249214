"""Shared plumbing of the frontier neurons: channel-wise parameters sized on first use, fp32 computation.

The models build every neuron layer with a zero-argument factory (``SpikingModel.make_neuron()``), so a neuron whose
parameters are per channel (PMSN, the channel-wise sliding PSN) cannot know its channel count when it is built. It
learns it from its first input instead (:class:`torch.nn.modules.lazy.LazyModuleMixin`): the channel is dim 2 of a
multi-step input ``[T, B, C, ...]`` (dim 1 of a single step ``[B, C, ...]``); a ``[T, B]`` input has one channel.
``channels=`` builds the parameters at once. A state dict loaded into an unmaterialised neuron sizes it (the mixin's
load hook), so checkpoints load without a dry run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from .base import SpikingNeuron, check_input
from .surrogate import SurrogateSpec


def positive_int(value: Any, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


def finite_number(value: Any, name: str, owner: str, *, low: float | None = None, low_open: bool = False) -> float:
    """A finite float (``> low`` when ``low_open``, ``>= low`` otherwise); the error names the argument and bound."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and bool(torch.isfinite(torch.tensor(value)))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if low_open else '>='} {low}"
        raise ValueError(f"{owner}: {name} must be a finite number{bound}, got {value!r}")
    return float(value)


@contextlib.contextmanager
def fp32_compute(x: torch.Tensor) -> Iterator[torch.dtype]:
    """Autocast off inside the neuron (its small matrices and recurrences run in fp32, or fp64 for fp64 inputs, as
    the other neurons accumulate half-precision inputs in fp32); yields the compute dtype."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        yield torch.promote_types(x.dtype, torch.float32)


def lower_toeplitz(decay: torch.Tensor, T: int, *, strict: bool = False) -> torch.Tensor:
    """``L[t, j] = decay^(t−j)`` for ``j <= t`` (``j < t`` when ``strict``), else 0: ``[T, T]``, differentiable in
    the 0-d ``decay`` (``0^0 = 1``, so ``decay = 0`` gives the identity)."""
    lag = torch.arange(T, device=decay.device).unsqueeze(1) - torch.arange(T, device=decay.device)
    keep = lag > 0 if strict else lag >= 0
    powers = decay ** lag.clamp(min=0).to(decay.dtype)
    return torch.where(keep, powers, torch.zeros((), dtype=decay.dtype, device=decay.device))


class ChannelwiseNeuron(LazyModuleMixin, SpikingNeuron):
    """A neuron with per-channel parameters ``[C, ...]``; subclasses create them in :meth:`_build` (called with the
    channel count, at construction when ``channels`` is given, else on the first input)."""

    def __init__(self, channels: int | None, surrogate: SurrogateSpec) -> None:
        super().__init__(surrogate)
        owner = type(self).__name__
        self.channels = None if channels is None else positive_int(channels, "channels", owner)

    # ------------------------------------------------------------------ lazy sizing
    def _declare(self, name: str, trailing: tuple[int, ...] = ()) -> None:
        """Register ``name`` as an uninitialised parameter of shape ``[C, *trailing]`` (sized in :meth:`_build`)."""
        self.register_parameter(name, nn.parameter.UninitializedParameter())
        self._trailing = {**getattr(self, "_trailing", {}), name: trailing}

    def _build(self, channels: int) -> None:
        """Materialise every declared parameter for ``channels`` channels and initialise it."""
        raise NotImplementedError

    def _materialise(self, channels: int) -> None:
        # Parameters made on a first input under inference mode (Trainer.validate before fit, a dry run) must still
        # be ordinary trainable tensors, so the context is left for the sizing.
        with torch.inference_mode(False), torch.no_grad():
            for name, trailing in self._trailing.items():
                getattr(self, name).materialize((channels, *trailing))
            self.channels = channels
            self._build(channels)

    def _size_from_state(self, state: Mapping[str, torch.Tensor], prefix: str) -> bool:
        """Size the parameters from a state dict's shapes (``prefix``: this neuron's key prefix); whether it could."""
        key = prefix + next(iter(self._trailing))
        if key not in state:
            return False
        self._materialise(int(state[key].shape[0]))
        return True

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # a plain load_state_dict into an unsized neuron sizes its parameters (LazyModuleMixin's hook): record the
        # channel count too, or the channel check would never run and a wrong input would fail deep inside
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        first = getattr(self, next(iter(self._trailing)))
        if self.channels is None and not isinstance(first, nn.parameter.UninitializedParameter):
            self.channels = int(first.shape[0])

    def _channels_of(self, x: torch.Tensor) -> int:
        channel_dim = 2 if self._step_mode == "m" else 1
        return x.shape[channel_dim] if x.dim() > channel_dim else 1

    def initialize_parameters(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> None:  # LazyModuleMixin hook
        if not self.has_uninitialized_params():
            return
        check_input(x, self)  # the dtype error, not the mixin's "not fully initialized" one
        channels = self._channels_of(x)
        if channels < 1:
            raise ValueError(
                f"{type(self).__name__} takes its channel count from its first input, but this one has 0 channels "
                f"(shape {tuple(x.shape)}); give it a real batch first, or build it with channels=..."
            )
        self._materialise(channels)

    def _check_channels(self, x: torch.Tensor) -> None:
        got = self._channels_of(x)
        if self.channels is not None and got != self.channels:
            where = "dim 2 of [T, B, C, ...]" if self._step_mode == "m" else "dim 1 of [B, C, ...]"
            raise ValueError(
                f"{type(self).__name__} has per-channel parameters for {self.channels} channels but the input has "
                f"{got} on {where} (shape {tuple(x.shape)}); use one neuron layer per channel count (build a new "
                f"one, or pass channels={got})"
            )

    def _per_channel(self, p: torch.Tensor, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """``p: [C]`` viewed to broadcast against ``x`` whose channels sit on ``channel_dim``."""
        return p.reshape(p.shape[0], *([1] * (x.dim() - channel_dim - 1)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, {super().extra_repr()}"


def size_from_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Size every channel-wise neuron of ``model`` that has not seen an input yet from the parameter shapes in
    ``state`` (a state dict of the whole model), so that code which compares shapes before ``load_state_dict``, or
    counts parameters, sees the real ones. Returns the names of the neurons it sized; values are not loaded."""
    sized = []
    for name, module in model.named_modules():
        unsized = isinstance(module, ChannelwiseNeuron) and module.has_uninitialized_params()
        if unsized and module._size_from_state(state, f"{name}." if name else ""):
            sized.append(name)
    return sized


def require_materialised(model: nn.Module, action: str) -> None:
    """Refuse, naming the way out, to ``action`` (e.g. "export it") while a neuron of ``model`` is still waiting for
    its first input to know its channel count (its parameters do not exist yet)."""
    lazy = [name or type(m).__name__ for name, m in model.named_modules()
            if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()]  # fmt: skip
    if lazy:
        raise ValueError(
            f"the neurons {', '.join(lazy[:4])}{' ...' if len(lazy) > 4 else ''} take their channel count from their "
            f"first input, so their parameters do not exist yet: before you {action}, run one batch through the "
            "model (model(x)), load weights, or build them with channels=..."
        )

