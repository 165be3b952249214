"""Serial (charge-fire-reset) baselines: IF, LIF, parametric LIF and LIF without reset.

Each keeps its membrane potential ``v`` between calls (in both step modes) until :meth:`reset`; the
state starts at ``v_reset`` (0 for soft reset). ``v_reset=None`` selects soft reset (subtract the
threshold), ``detach_reset=True`` cuts the reset path out of the gradient (the paper's LIF/PLIF setting).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from . import functional as F
from .base import SpikingNeuron, StepMode, flag
from .registry import register_neuron
from .surrogate import SurrogateSpec


def _number(value: Any, name: str, owner: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        none = " or None (soft reset)" if allow_none else ""
        raise ValueError(f"{owner}: {name} must be a finite number{none}, got {value!r}")
    return float(value)


def _tau(value: Any, owner: str) -> float:
    tau = _number(value, "tau", owner)
    if tau <= 1.0:
        raise ValueError(f"{owner}: tau must be > 1 (the decay is 1 - 1/tau), got {value!r}")
    return tau


class _SerialNeuron(SpikingNeuron):
    """Shared state handling: ``v`` is None after reset and a ``[B, ...]`` tensor afterwards."""

    reset_mode = "auto"

    def __init__(
        self,
        v_threshold: float,
        v_reset: float | None,
        detach_reset: bool,
        surrogate: SurrogateSpec,
    ) -> None:
        super().__init__(surrogate)
        owner = type(self).__name__
        self.v_threshold = _number(v_threshold, "v_threshold", owner)
        self.v_reset = _number(v_reset, "v_reset", owner, allow_none=True)
        self.detach_reset = flag(detach_reset, "detach_reset", type(self).__name__)
        self.v: torch.Tensor | None = None

    def reset(self) -> None:
        self.v = None

    def _initial_v(self, x: torch.Tensor) -> torch.Tensor | float:
        """The stored membrane, or for a fresh state the number every neuron starts at (the kernels need no tensor
        of it)."""
        if self.v is None:
            return float(self.v_reset or 0.0)
        if self.v.shape != x.shape:
            raise ValueError(
                f"{type(self).__name__}: stored membrane potential has shape {tuple(self.v.shape)} but this "
                f"step has shape {tuple(x.shape)}; call reset() (psn_zoo.neurons.reset_states(model)) "
                "between independent sequences or batches"
            )
        return self.v

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` one neuron spends on a T-step sample: the leak's multiply per step (IF: an add)."""
        return float(T), 0.0

    def _kernel_kwargs(self) -> dict[str, Any]:
        return {}

    def _run(self, x_seq: torch.Tensor) -> torch.Tensor:
        spikes, self.v = F.serial_multi_step(
            x_seq,
            self._initial_v(x_seq[0]),
            surrogate=self.surrogate,
            v_threshold=self.v_threshold,
            v_reset=self.v_reset,
            reset=self.reset_mode,
            detach_reset=self.detach_reset,
            **self._kernel_kwargs(),
        )
        return spikes

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self._run(x_seq)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x.unsqueeze(0))[0]

    def _common_spec(self) -> dict[str, Any]:
        return {
            "v_threshold": self.v_threshold,
            "v_reset": self.v_reset,
            "detach_reset": self.detach_reset,
            "surrogate": self.surrogate.spec(),
        }

    def extra_repr(self) -> str:
        return (
            f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
            f"{super().extra_repr()}"
        )


@register_neuron
class IFNode(_SerialNeuron):
    """Integrate-and-fire: ``H[t] = V[t-1] + X[t]``."""

    name = "if"

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = False,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(v_threshold, v_reset, detach_reset, surrogate)
        self.step_mode = step_mode

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` per neuron and sample: no leak, one accumulate per step."""
        return 0.0, float(T)

    def spec_kwargs(self) -> dict[str, Any]:
        return self._common_spec()


@register_neuron
class LIFNode(_SerialNeuron):
    """Leaky integrate-and-fire: ``H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / τ`` (``decay_input``),
    or ``V[t-1] - (V[t-1] - V_reset) / τ + X[t]``."""

    name = "lif"

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = False,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(v_threshold, v_reset, detach_reset, surrogate)
        self.tau = _tau(tau, type(self).__name__)
        self.decay_input = flag(decay_input, "decay_input", type(self).__name__)
        self.step_mode = step_mode

    def _kernel_kwargs(self) -> dict[str, Any]:
        return {"tau": self.tau, "decay_input": self.decay_input}

    def spec_kwargs(self) -> dict[str, Any]:
        return {"tau": self.tau, "decay_input": self.decay_input, **self._common_spec()}

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, {super().extra_repr()}"


@register_neuron
class ParametricLIFNode(_SerialNeuron):
    """LIF with a learnable time constant: ``1/τ = sigmoid(w)``, ``w`` initialised from ``init_tau``."""

    name = "plif"
    initial_kwargs = ("surrogate", "init_tau")
    generalises: ClassVar[dict[str, str]] = {"lif": "w = −log(τ − 1) and not trained"}

    def __init__(
        self,
        init_tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = False,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(v_threshold, v_reset, detach_reset, surrogate)
        self.init_tau = _tau(init_tau, type(self).__name__)
        self.decay_input = flag(decay_input, "decay_input", type(self).__name__)
        self.w = nn.Parameter(torch.tensor(-math.log(self.init_tau - 1.0)))
        self.step_mode = step_mode

    @property
    def tau(self) -> float:
        return float(1.0 / self.w.detach().sigmoid())

    def _kernel_kwargs(self) -> dict[str, Any]:
        return {"w": self.w, "decay_input": self.decay_input}

    def spec_kwargs(self) -> dict[str, Any]:
        return {"init_tau": self.init_tau, "decay_input": self.decay_input, **self._common_spec()}

    def extra_repr(self) -> str:
        return f"tau={self.tau:.4g}, decay_input={self.decay_input}, {super().extra_repr()}"


@register_neuron
class NoResetLIFNode(_SerialNeuron):
    """LIF without reset (the paper's ``lifnr`` baseline): ``V = H``; a fixed linear filter then a threshold."""

    name = "lif_noreset"
    aliases = ("lifnr",)
    reset_kind = "none"

    reset_mode = "none"

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(v_threshold, 0.0, False, surrogate)
        self.tau = _tau(tau, type(self).__name__)
        self.decay_input = flag(decay_input, "decay_input", type(self).__name__)
        self.step_mode = step_mode

    def _kernel_kwargs(self) -> dict[str, Any]:
        return {"tau": self.tau, "decay_input": self.decay_input}

    def spec_kwargs(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "decay_input": self.decay_input,
            "v_threshold": self.v_threshold,
            "surrogate": self.surrogate.spec(),
        }
