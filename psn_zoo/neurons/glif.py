"""GLIF, the gated leaky integrate-and-fire neuron (Yao et al., NeurIPS 2022), as the PSN paper's sequential-CIFAR
baseline runs it (``glif.LIFSpike_CW`` with ``get_initial_dict(T)`` in ``sequential_cifar/``).

Per channel ``c`` three gates ``α, β, γ ∈ {0, 1}`` choose between dynamics, and every membrane constant is learnable
(stored as logits; ``σ`` below is the sigmoid). From ``U[−1] = 0, S[−1] = 0``, for ``t = 0 … T−1``:

    I[t] = X[t]·(1 − β·(1 − σ(g[t])))                                   (time-dependent conductance g: [T, C])
    U[t] = (1 − α·(1 − σ(τ)))·U[t−1]·(1 − γ·S[t−1]) − (1 − α)·σ(l) + I[t] − (1 − γ)·σ(r)·S[t−1]
    S[t] = Θ(U[t] − σ(θ))

(α: exponential decay σ(τ) or linear decay σ(l); β: conductance on the input or not; γ: hard reset of the membrane
or soft reset by σ(r)). ``gate_mode="hard"`` (the paper's code) uses ``Θ(σ(gate) − 1/2)`` forward and passes the
gradient straight through to ``σ(gate)``; ``"soft"`` uses ``σ(gate)`` itself, which is SpikingJelly 2.0.0's
``GatedLIFNode`` (parameter names follow it: ``v_threshold`` is the paper code's ``Vth``, ``linear_decay`` its
``leak``, ``v_subreset`` its ``reVth``). The spike's surrogate is the code's rectangle (``"rect"``: gradient 1 for
``|U − σ(θ)| < 1/2``); the code fires on ``> 0``, psn_zoo on ``>= 0`` (equal except on a measure-zero set).

Initial values (the code's ``get_initial_dict``): gates from 0.6, 0.8, 0.6 (``logit(0.5 + (g − 0.5)/2)``, all open),
``σ(τ) = 0.25``, ``σ(θ) = σ(r) = 0.5``, ``σ(l) = 0.0625`` (its ``Vth / (2·4)``) and ``σ(g) = 0.5``.

Parameters are per channel (dim 2 of ``[T, B, C, ...]``), sized from the first input like the other channel-wise
neurons; the conductance is ``[T, C]``, so the neuron runs exactly ``T`` steps (``T`` too is taken from the first
input when not given).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ._channelwise import ChannelwiseNeuron, finite_number, fp32_compute, positive_int
from .base import StepMode, check_input
from .registry import register_neuron
from .surrogate import SurrogateSpec

GATE_MODES = ("hard", "soft")
_GATE_INIT = {"alpha": 0.6, "beta": 0.8, "gamma": 0.6}


class _HardGate(torch.autograd.Function):
    """``Θ(σ(p) − 1/2)`` forward (``σ(p) > 1/2``, as the code's ``ArchAct``); the gradient passes straight through."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor) -> torch.Tensor:
        return (gate > 0.5).to(gate.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def _logit(p: float) -> float:
    return -math.log(1.0 / p - 1.0)


@register_neuron
class GLIFNode(ChannelwiseNeuron):
    """Gated LIF: per-channel gates choose exponential/linear decay, input conductance and hard/soft reset; every
    membrane constant is learnable; ``T`` steps exactly (time-dependent conductance ``[T, C]``)."""

    name = "glif"
    initial_kwargs = ("surrogate", "init_tau", "init_v_threshold", "init_linear_decay", "init_conduct")
    aliases: ClassVar[tuple[str, ...]] = ("gated_lif",)
    causal: ClassVar[bool] = True
    needs_T: ClassVar[bool] = True
    reset_kind: ClassVar[str] = "exact"
    generalises: ClassVar[dict[str, str]] = {
        "lif": "gates α = γ = 1, β = 0 and equal constants over channels: LIF with decay_input=False, v_reset=0, "
        "1 − 1/tau = σ(tau), v_threshold = σ(v_threshold)",
    }

    _SCALARS = ("alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay", "v_subreset")

    def __init__(
        self,
        T: int | None = None,
        gate_mode: str = "hard",
        init_tau: float = 0.25,
        init_v_threshold: float = 0.5,
        init_linear_decay: float = 0.0625,
        init_conduct: float = 0.5,
        channels: int | None = None,
        surrogate: SurrogateSpec = "rect",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(channels, surrogate)
        owner = type(self).__name__
        self.T = None if T is None else positive_int(T, "T", owner)
        if gate_mode not in GATE_MODES:
            raise ValueError(f"{owner}: gate_mode must be one of {GATE_MODES}, got {gate_mode!r}")
        self.gate_mode = gate_mode
        for name, value in (("init_tau", init_tau), ("init_v_threshold", init_v_threshold),
                            ("init_linear_decay", init_linear_decay), ("init_conduct", init_conduct)):  # fmt: skip
            if not 0.0 < finite_number(value, name, owner) < 1.0:
                raise ValueError(f"{owner}: {name} is a sigmoid's value, so it must lie in (0, 1), got {value!r}")
        self.init_tau, self.init_v_threshold = float(init_tau), float(init_v_threshold)
        self.init_linear_decay, self.init_conduct = float(init_linear_decay), float(init_conduct)
        for name in self._SCALARS:
            self._declare(name)
        self.register_parameter("conduct", nn.parameter.UninitializedParameter())  # [T, C], sized in _build
        self._u: torch.Tensor | None = None
        self._s: torch.Tensor | None = None
        self._t = 0
        if self.channels is not None:
            if self.T is None:
                raise ValueError(f"{owner}: channels= sizes the parameters now, which needs T (conductance [T, C])")
            self._materialise(self.channels)
        self.step_mode = step_mode

    # ------------------------------------------------------------------ parameters
    def _build(self, channels: int) -> None:
        for gate, value in _GATE_INIT.items():
            getattr(self, gate).fill_(_logit(0.5 + (value - 0.5) * 0.5))
        self.tau.fill_(_logit(self.init_tau))
        self.v_threshold.fill_(_logit(self.init_v_threshold))
        self.linear_decay.fill_(_logit(self.init_linear_decay))
        self.v_subreset.fill_(_logit(self.init_v_threshold))
        if isinstance(self.conduct, nn.parameter.UninitializedParameter):
            self.conduct.materialize((self.steps, channels))
        self.conduct.fill_(_logit(self.init_conduct))

    def initialize_parameters(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> None:  # LazyModuleMixin hook
        if self.T is None and self.has_uninitialized_params():
            check_input(x, self)
            if self._step_mode != "m":
                raise ValueError("GLIFNode: give T (or run one multi-step input first) before streaming")
            self.T = x.shape[0]
        super().initialize_parameters(x, *args, **kwargs)

    def _size_from_state(self, state: Mapping[str, torch.Tensor], prefix: str) -> bool:
        if self.T is None and prefix + "conduct" in state:  # the conductance [T, C] says T
            self.T = int(state[prefix + "conduct"].shape[0])
        return super()._size_from_state(state, prefix)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.T is None and not isinstance(self.conduct, nn.parameter.UninitializedParameter):
            self.T = int(self.conduct.shape[0])

    @property
    def steps(self) -> int:
        """The number of time steps the conductance covers (``T``, or the loaded ``conduct``'s first dim)."""
        if not isinstance(self.conduct, nn.parameter.UninitializedParameter):
            return self.conduct.shape[0]
        if self.T is None:
            raise ValueError("GLIFNode: T is not known yet; give T or run one multi-step input")
        return self.T

    def _constants(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sigmoided constants, each ``[C, 1, ...]`` to broadcast against one step ``x: [B, C, ...]``."""
        out = {}
        for name in self._SCALARS:
            value = torch.sigmoid(getattr(self, name).to(x.dtype))
            if name in _GATE_INIT and self.gate_mode == "hard":
                value = _HardGate.apply(value)
            out[name] = self._per_channel(value, x, 1)
        return out

    # ------------------------------------------------------------------ dynamics
    def _step(self, x: torch.Tensor, t: int, u: torch.Tensor, s: torch.Tensor, c: dict[str, torch.Tensor]):
        """One step ``x: [B, C, ...]`` from ``(U[t−1], S[t−1])`` -> ``(S[t], U[t])``."""
        al, be, ga = c["alpha"], c["beta"], c["gamma"]
        conduct = self._per_channel(torch.sigmoid(self.conduct[t].to(x.dtype)), x, 1)
        current = x * (1 - be * (1 - conduct))
        u = ((1 - al * (1 - c["tau"])) * u * (1 - ga * s) - (1 - al) * c["linear_decay"]) + current \
            - (1 - ga) * c["v_subreset"] * s  # fmt: skip
        return self.surrogate(u - c["v_threshold"]), u

    @staticmethod
    def _channels_last_flat(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """``[..., C, *rest] -> [..., C, R]``; a tensor without a channel dim gets one channel."""
        if x.dim() == channel_dim:
            x = x.unsqueeze(-1)
        return x.flatten(channel_dim + 1) if x.dim() > channel_dim + 1 else x.unsqueeze(-1)

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``[T, B, C, ...] -> [T, B, C, ...]``: one independent sequence of exactly ``T`` steps from rest."""
        self._check_channels(x_seq)
        if x_seq.shape[0] != self.steps:
            raise ValueError(
                f"GLIFNode has a conductance for T={self.steps} steps but the input has {x_seq.shape[0]} on dim 0 "
                f"(shape {tuple(x_seq.shape)}); inputs are time-first [T, B, ...]"
            )
        with fp32_compute(x_seq) as dtype:
            x = self._channels_last_flat(x_seq.to(dtype), 2)
            c = self._constants(x[0])
            u = s = torch.zeros_like(x[0])
            spikes = []
            for t in range(x.shape[0]):
                s, u = self._step(x[t], t, u, s, c)
                spikes.append(s)
        return torch.stack(spikes).reshape(x_seq.shape).to(x_seq.dtype)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        self._check_channels(x)
        if self._t >= self.steps:
            raise RuntimeError(
                f"GLIFNode(T={self.steps}) has already run {self._t} steps since the last reset; its conductance "
                "covers only T steps. Call reset() (psn_zoo.neurons.reset_states(model)) between sequences"
            )
        with fp32_compute(x) as dtype:
            step = self._channels_last_flat(x.to(dtype), 1)
            if self._u is None or self._u.shape != step.shape:
                if self._t:
                    raise ValueError("GLIFNode: the step's shape changed within a sequence; call reset() first")
                self._u = self._s = torch.zeros_like(step)
            spike, self._u = self._step(step, self._t, self._u, self._s, self._constants(step))
            self._s = spike
            self._t += 1
        return spike.reshape(x.shape).to(x.dtype)

    def reset(self) -> None:
        self._u = self._s = None
        self._t = 0

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` one neuron spends on a T-step sample: the input's conductance, the decay and the two
        reset products per step (the gates are 0 or 1 and fold into constants)."""
        return float(4 * T), float(2 * T)

    def spec_kwargs(self) -> dict[str, Any]:
        T = self.T
        if T is None and not isinstance(self.conduct, nn.parameter.UninitializedParameter):
            T = self.conduct.shape[0]
        return {
            "T": T,
            "gate_mode": self.gate_mode,
            "init_tau": self.init_tau,
            "init_v_threshold": self.init_v_threshold,
            "init_linear_decay": self.init_linear_decay,
            "init_conduct": self.init_conduct,
            "surrogate": self.surrogate.spec(),
        }

    def extra_repr(self) -> str:
        return f"T={self.T}, gate_mode={self.gate_mode!r}, {super().extra_repr()}"
