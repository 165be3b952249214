"""FPT-LIF: a LIF neuron *with* reset, trained in parallel by fixed-point iteration (FPT, ICML 2025; WanjinVon/FPT).

psn_zoo's LIF (:class:`~psn_zoo.neurons.LIFNode`) is ``H[t] = β·V[t−1] + u[t]`` with ``β = 1 − 1/τ`` and
``u[t] = c·X[t] + r/τ`` (``c = 1/τ`` with ``decay_input``, else 1; ``r = v_reset``), ``S[t] = Θ(H[t] − θ)`` and
``V[t] = H[t] − R[t]``, where the reset removes ``R[t] = S[t]·(H[t] − r)`` (hard reset) or ``θ·S[t]`` (soft,
``v_reset=None``). Unrolled, the membrane is a parallel reset-free part minus the past resets:

    H = A − L·R,    A[t] = Σ_{j<=t} β^(t−j)·u[j] + β^(t+1)·V[−1],    L[t, j] = β^(t−j) for j < t (else 0)

FPT solves this fixed point by iteration from no reset (``R⁰ = 0``), each iteration one ``[T, T]`` product:

    H^k = A − L·R^(k−1),   S^k = Θ(H^k − θ),   R^k = S^k·(H^k − r)  (or θ·S^k)      k = 1 … K

and outputs ``S^K`` (the surrogate gradient flows through all K iterations). Iteration k is exact on steps
``0 … k−1`` (step t only sees resets before t), so ``K >= T`` reproduces the serial LIF (spike for spike except where
a membrane lies within float round-off of θ: the products regroup the serial sum, as the PSN family's do), ``K = 1``
in one multi-step call from rest is the LIF without reset, and FPT's point is that a small K (the paper uses about 3)
is already close. Single-step mode runs the
exact LIF step (one step needs one iteration); multi-step equals step-by-step when ``K >= T``.

(The authors' code iterates with a sharpening sigmoid and samples the final spikes; this is the deterministic form of
the same fixed point on psn_zoo's LIF, so it converges to :class:`~psn_zoo.neurons.LIFNode`'s spikes, ties at θ apart.)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ._channelwise import fp32_compute, positive_int
from ._fpt_kernel import DecayMatrices, FixedPointLIF
from .base import SpikingNeuron, StepMode, flag
from .functional import _tracing
from .registry import register_neuron
from .surrogate import Surrogate, SurrogateSpec


def fpt_lif_multi_step(
    x_seq: torch.Tensor,
    v: torch.Tensor,
    *,
    K: int,
    surrogate: Surrogate,
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    detach_reset: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``K`` fixed-point iterations of the LIF with reset over ``x_seq: [T, *]`` from the membrane ``v: [*]``;
    returns ``(spikes [T, *], V[T−1] [*])`` (the last membrane after reset, exact when ``K >= T``)."""
    T = x_seq.shape[0]
    x = x_seq.reshape(T, -1)
    if not _tracing():  # the fused Function: the same forward values, a hand-written backward
        recording = torch.is_grad_enabled()
        spikes, v_last = FixedPointLIF.apply(
            x, v.reshape(-1), K, surrogate, tau, decay_input, v_threshold, v_reset, detach_reset, recording
        )
        return spikes.reshape(x_seq.shape), v_last.reshape(v.shape)
    decay = DecayMatrices(T, tau, x.dtype, x.device)  # L, L' and β^(t+1), as the fused Function builds them
    r = 0.0 if v_reset is None else v_reset
    u = x / tau if decay_input else x
    if r != 0.0:
        u = u + r / tau
    a = decay.full @ u + decay.decays * v.reshape(1, -1)
    h, spike, removed = a, None, None
    for k in range(K):
        if k:
            h = a - decay.strict @ removed
        spike = surrogate(h - v_threshold)
        s = spike.detach() if detach_reset else spike
        removed = s * (h - r) if v_reset is not None else s * v_threshold
        if k + 1 >= T and k + 1 < K:  # exact from here on: further iterations reproduce the same values
            break
    v_last = h[-1] - removed[-1]
    return spike.reshape(x_seq.shape), v_last.reshape(v.shape)


@register_neuron
class FPTLIFNode(SpikingNeuron):
    """LIF with reset trained by ``K`` fixed-point iterations in parallel over T (FPT): ``K >= T`` is ``lif`` (ties
    at θ apart), ``K = 1`` is ``lif_noreset`` within one call from rest. Arguments as
    :class:`~psn_zoo.neurons.LIFNode`, plus ``K``."""

    name = "fpt_lif"
    aliases = ("fpt",)

    reset_kind: ClassVar[str] = "fixed_point"
    streamable: ClassVar[bool] = True
    generalises: ClassVar[dict[str, str]] = {
        "lif": "K >= T (the fixed point is reached: the serial LIF's spikes, except where a membrane lies within "
        "round-off of the threshold)",
        "lif_noreset": "K = 1 with v_reset = 0, in one multi-step call from rest (the first iterate has no reset; "
        "streaming, and a call that carries a state, run the exact LIF with reset)",
    }

    def __init__(
        self,
        K: int = 3,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = False,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(surrogate)
        owner = type(self).__name__
        self.K = positive_int(K, "K", owner)
        self.tau = _tau(tau, owner)
        self.decay_input = flag(decay_input, "decay_input", type(self).__name__)
        self.v_threshold = _number(v_threshold, "v_threshold", owner)
        self.v_reset = None if v_reset is None else _number(v_reset, "v_reset", owner)
        self.detach_reset = flag(detach_reset, "detach_reset", type(self).__name__)
        self.v: torch.Tensor | None = None
        self.step_mode = step_mode

    def reset(self) -> None:
        self.v = None

    def _initial_v(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.v is None:
            return torch.full(x.shape, self.v_reset or 0.0, dtype=dtype, device=x.device)
        if self.v.shape != x.shape:
            raise ValueError(
                f"{type(self).__name__}: stored membrane potential has shape {tuple(self.v.shape)} but this step has "
                f"shape {tuple(x.shape)}; call reset() (psn_zoo.neurons.reset_states(model)) between sequences"
            )
        return self.v.to(dtype)

    def _run(self, x_seq: torch.Tensor, K: int) -> torch.Tensor:
        with fp32_compute(x_seq) as dtype:
            spikes, self.v = fpt_lif_multi_step(
                x_seq.to(dtype), self._initial_v(x_seq[0], dtype), K=K, surrogate=self.surrogate, tau=self.tau,
                decay_input=self.decay_input, v_threshold=self.v_threshold, v_reset=self.v_reset,
                detach_reset=self.detach_reset,
            )  # fmt: skip
        return spikes.to(x_seq.dtype)

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` one neuron spends on a T-step sample, in the cheapest form that gives the same spikes: at
        ``K >= T`` they are the serial LIF's, which costs ``T`` (the leak); below, the K iterations, each a decay
        filter that a recurrence gives in 1 MAC per step (the kernel's lower-triangular ``[T, T]`` products compute
        the same sums): ``T`` for the reset-free first, ``T − 1`` for the reset term of each further one."""
        if self.K >= T:
            return float(T), 0.0
        return float(T + (self.K - 1) * (T - 1)), 0.0

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``[T, B, ...] -> [T, B, ...]`` from the stored membrane (rest after :meth:`reset`)."""
        return self._run(x_seq, self.K)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        """One exact LIF step (one iteration is exact for one step)."""
        return self._run(x.unsqueeze(0), 1)[0]

    def spec_kwargs(self) -> dict[str, Any]:
        return {
            "K": self.K,
            "tau": self.tau,
            "decay_input": self.decay_input,
            "v_threshold": self.v_threshold,
            "v_reset": self.v_reset,
            "detach_reset": self.detach_reset,
            "surrogate": self.surrogate.spec(),
        }

    def extra_repr(self) -> str:
        return f"K={self.K}, tau={self.tau}, v_reset={self.v_reset}, {super().extra_repr()}"


def _number(value: Any, name: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return float(value)


def _tau(value: Any, owner: str) -> float:
    tau = _number(value, "tau", owner)
    if tau <= 1.0:
        raise ValueError(f"{owner}: tau must be > 1 (the decay is 1 - 1/tau), got {value!r}")
    return tau
