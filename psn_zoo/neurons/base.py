"""The base class of every neuron, input checks, and model-wide state helpers.

Step modes:

- ``"m"`` (multi-step, the default): the input is time-first ``[T, B, ...]`` and the whole sequence is
  processed at once;
- ``"s"`` (single-step, streaming): the input is one time step ``[B, ...]``; state is kept between
  calls until :meth:`SpikingNeuron.reset` (or :func:`reset_states` on the whole model).

Anything else that keeps state from one step of a sequence to the next (the models' streaming ``Dropout`` mask)
subclasses :class:`StatefulModule` too, so :func:`reset_states` resets it with the neurons.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from .surrogate import SurrogateSpec, make_surrogate

StepMode = Literal["m", "s"]


class StatefulModule(nn.Module):
    """A module that keeps state between the calls of one sequence; :func:`reset_states` calls :meth:`reset`
    between independent sequences."""

    def reset(self) -> None:
        """Forget the state."""


class SpikingNeuron(StatefulModule):
    """Base of all psn_zoo neurons; subclasses implement ``multi_step`` (and ``single_step`` if causal)."""

    # A neuron type's identity lives here, on its class; the registry (``register_neuron``), ``spec()``, the
    # SpikingJelly mapping, ``psn-zoo neurons`` and the efficiency counts all read it from these attributes.
    #: Registry name (``make_neuron(name)``, the ``"name"`` of ``spec()``); every registered class sets its own.
    name: ClassVar[str]
    #: Other names that select it (e.g. the paper code's class names).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Can the neuron run one time step at a time (its output at t depends only on inputs <= t)?
    causal: ClassVar[bool] = True
    #: Are its weights sized by the number of time steps (so a model must pass ``T``)?
    needs_T: ClassVar[bool] = False
    #: How it resets after a spike: a key of ``psn_zoo.neurons.registry.RESET_KINDS``.
    reset_kind: ClassVar[str] = "exact"
    #: Does it have a single-step (streaming) mode? ``None``: the same as ``causal``.
    streamable: ClassVar[bool | None] = None
    #: ``{other neuron: condition}`` under which this neuron reduces to the other exactly.
    generalises: ClassVar[Mapping[str, str]] = {}
    #: Constructor arguments that loaded weights do not pin: initial values the state dict replaces, and the
    #: surrogate (it shapes training only). Fine-tuning a checkpoint may set them differently.
    initial_kwargs: ClassVar[tuple[str, ...]] = ("surrogate",)
    #: Does its forward compute with complex numbers (which ONNX has no operators for)?
    complex_ops: ClassVar[bool] = False

    def __init__(self, surrogate: SurrogateSpec = "atan") -> None:
        """Subclasses call this first, define their parameters, then set ``self.step_mode``."""
        super().__init__()
        self.surrogate = make_surrogate(surrogate)
        self._step_mode: StepMode = "m"

    # ------------------------------------------------------------------ step mode
    @property
    def step_mode(self) -> StepMode:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, mode: StepMode) -> None:
        if mode not in ("m", "s"):
            raise ValueError(
                f"step_mode must be 'm' (multi-step, [T, B, ...]) or 's' (single-step, [B, ...]), got {mode!r}"
            )
        if mode == "s":
            self.check_single_step()
        self._step_mode = mode

    def check_single_step(self) -> None:
        """Raise a clear error if the neuron cannot run step by step in its current configuration."""
        if not self.causal:
            raise ValueError(
                f"{type(self).__name__} is not causal (its output at step t uses later inputs), so it has no "
                "single-step mode; run it multi-step on the whole [T, B, ...] sequence, or use a causal "
                "neuron ('sliding_psn', 'masked_psn' with lambda_=1, 'lif', ...) for streaming"
            )

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self)
        if self._step_mode == "m":
            if x.dim() < 2:
                raise ValueError(
                    f"{type(self).__name__} in multi-step mode expects a time-first tensor [T, B, ...] with at "
                    f"least 2 dimensions, got shape {tuple(x.shape)}"
                )
            return self.multi_step(x)
        self.check_single_step()
        return self.single_step(x)

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``[T, B, ...] -> [T, B, ...]`` spikes."""
        raise NotImplementedError

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, ...] -> [B, ...]`` spikes for one time step; updates the state."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the state (membrane potential, input history, step counter)."""

    def spec(self) -> dict[str, Any]:
        """Plain-data constructor arguments, e.g. ``{"name": "lif", "tau": 2.0, ...}``: lives in YAML/metadata."""
        return {"name": self.name, **self.spec_kwargs()}

    def spec_kwargs(self) -> dict[str, Any]:
        """The constructor arguments of :meth:`spec`, without the name."""
        raise NotImplementedError

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` one neuron spends on a ``T``-step sample (``psn_zoo.efficiency`` reads it)."""
        raise NotImplementedError(f"{type(self).__name__} does not state its operation count (macs_per_neuron)")

    def extra_repr(self) -> str:
        return f"step_mode={self._step_mode!r}"


def check_input(x: torch.Tensor, neuron: nn.Module) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{type(neuron).__name__} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{type(neuron).__name__} expects a floating-point input (membrane currents), got dtype {x.dtype}; "
            "convert it first, e.g. x.float()"
        )


def flag(value: Any, name: str, owner: str) -> bool:
    """A true/false constructor argument, strictly: ``bool("false")`` is True, so a string or number from a command
    line or config is refused, naming the argument, rather than converted."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be true or false (a boolean), got {value!r}")
    return value


def check_time_steps(x_seq: torch.Tensor, T: int, neuron: nn.Module) -> None:
    """Raise if ``x_seq.shape[0] != T`` for neurons whose weights fix the number of time steps."""
    if x_seq.shape[0] != T:
        raise ValueError(
            f"{type(neuron).__name__} was built for T={T} time steps but got an input with {x_seq.shape[0]} "
            f"steps on dim 0 (shape {tuple(x_seq.shape)}). Inputs must be time-first [T, B, ...]: transpose "
            f"batch-first data with x.transpose(0, 1), or build the neuron with T={x_seq.shape[0]}"
        )


def neurons_of(model: nn.Module) -> list[SpikingNeuron]:
    return [m for m in model.modules() if isinstance(m, SpikingNeuron)]


def reset_states(model: nn.Module) -> None:
    """Reset every :class:`StatefulModule` in ``model`` — its neurons and any streaming layer (call between
    independent sequences / batches)."""
    for module in model.modules():
        if isinstance(module, StatefulModule):
            module.reset()


def set_step_mode(model: nn.Module, mode: StepMode) -> None:
    """Switch every neuron of ``model`` to ``mode``; fails before changing anything if one cannot."""
    neurons = neurons_of(model)
    if mode == "s":
        for neuron in neurons:
            neuron.check_single_step()
    for neuron in neurons:
        neuron.step_mode = mode
