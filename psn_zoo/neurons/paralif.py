"""ParaLIF / SPSN: the parallelisable leaky integrate-and-fire neuron (Yarga & Wood, 2024; SPSN, IJCNN 2023;
NECOTIS/Parallelizable-Leaky-Integrate-and-Fire-Neuron).

A current-based LIF without reset, so the membrane is a fixed causal filter of the input:

    I[t] = α·I[t−1] + X[t],    V[t] = β·V[t−1] + (1 − β)·I[t],    α = exp(−1/τ_syn), β = exp(−1/τ_mem)

(τ in steps; ``tau_syn = 0`` means α = 0, ``I = X``), computed as two ``[T, T]`` lower-triangular products. The
spike function is the paper's choice (``spike_mode``):

- ``"T"`` threshold: ``S = Θ(V − θ)``;
- ``"D"`` delta: ``S = Θ(V[t] − V[t−1] − θ)`` (fires on a rise of the membrane);
- ``"SB"`` sigmoid-Bernoulli (the stochastic SPSN): ``S ~ Bernoulli(σ(V))`` with a straight-through gradient
  ``∂S/∂V = σ'(V)``; random, so seed it (``torch.manual_seed``) for reproducible runs.

``learn_tau`` makes the decays trainable (``α = σ(w_syn)``, ``β = σ(w_mem)``, scalars shared by the layer).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from . import _backend
from ._channelwise import finite_number, fp32_compute, lower_toeplitz
from ._memory import fresh_like, scratch_like
from ._psn_kernels import _chunks
from .base import SpikingNeuron, StepMode, flag
from .functional import _tracing, sliding_psn_multi_step, sliding_weight_matrix
from .registry import register_neuron
from .surrogate import Surrogate, SurrogateSpec

SPIKE_MODES = ("T", "D", "SB")


class _BernoulliST(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, p: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(p)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _FilteredBernoulli(torch.autograd.Function):
    """SPSN from rest: ``S ~ Bernoulli(σ(W·x))`` with the straight-through gradient ``∂S/∂V = σ'(V)``, ``W: [T, T]``
    (the membrane's causal filter), ``x: [T, N]``. The probabilities are computed per L2-sized column chunk and the
    draws made over the whole ``[T, N]`` at once (the random stream of ``torch.bernoulli(σ(V))``); backward
    recomputes ``V`` per chunk instead of keeping ``σ(V)``. Why not autograd: two ``[T, T]`` products and a sigmoid
    each kept for backward, every step a pass over fresh memory."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        probability = fresh_like(x, torch.contiguous_format)
        for cols in _chunks(x):
            torch.sigmoid(torch.mm(weight, x[:, cols], out=scratch_like(x[:, cols])), out=probability[:, cols])
        spikes = torch.bernoulli(probability)
        ctx.save_for_backward(x, weight)
        return spikes

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        _backend.refuse_create_graph("_FilteredBernoulli")
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = fresh_like(x, torch.contiguous_format) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        for cols in _chunks(x):
            p = torch.mm(weight, x[:, cols], out=scratch_like(x[:, cols])).sigmoid_()
            grad_v = p.mul_(torch.sub(1.0, p, out=scratch_like(p, 1))).mul_(grad[:, cols])  # g·σ(V)·(1 − σ(V))
            if grad_x is not None:
                torch.mm(weight.t(), grad_v, out=grad_x[:, cols])
            if grad_w is not None:
                grad_w.addmm_(grad_v, x[:, cols].t())
        return grad_x, grad_w


def paralif_fire(v: torch.Tensor, v_prev: torch.Tensor, mode: str, v_threshold: float, surrogate: Surrogate):
    """Spikes from the membrane ``v: [T, *]`` (``v_prev``: the membrane one step earlier, ``[T, *]``)."""
    if mode == "T":
        return surrogate(v - v_threshold)
    if mode == "D":
        return surrogate(v - v_prev - v_threshold)
    return _BernoulliST.apply(torch.sigmoid(v))


@register_neuron
class ParaLIF(SpikingNeuron):
    """Parallelisable LIF without reset: ``I = α·I + X``, ``V = β·V + (1−β)·I``, spikes by ``spike_mode`` ("T":
    ``Θ(V − θ)``, "D": ``Θ(ΔV − θ)``, "SB": ``Bernoulli(σ(V))``, the stochastic SPSN); any T, streaming."""

    name = "paralif"
    aliases = ("spsn",)

    reset_kind: ClassVar[str] = "none"
    streamable: ClassVar[bool] = True
    generalises: ClassVar[dict[str, str]] = {
        "lif_noreset": "tau_syn = 0 and spike_mode = 'T': lif_noreset with tau = 1 / (1 − exp(−1/tau_mem))",
    }

    def __init__(
        self,
        tau_mem: float = 2.0,
        tau_syn: float = 2.0,
        spike_mode: str = "T",
        v_threshold: float = 1.0,
        learn_tau: bool = False,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(surrogate)
        owner = type(self).__name__
        self.tau_mem = finite_number(tau_mem, "tau_mem", owner, low=0.0, low_open=True)
        self.tau_syn = finite_number(tau_syn, "tau_syn", owner, low=0.0)
        if spike_mode not in SPIKE_MODES:
            raise ValueError(
                f"{owner}: spike_mode must be one of {SPIKE_MODES} ('T' threshold, 'D' delta, 'SB' sigmoid-Bernoulli),"
                f" got {spike_mode!r}"
            )
        self.spike_mode = spike_mode
        self.v_threshold = finite_number(v_threshold, "v_threshold", owner)
        self.learn_tau = flag(learn_tau, "learn_tau", type(self).__name__)
        if self.learn_tau and self.tau_syn == 0.0:
            raise ValueError(f"{owner}: learn_tau needs tau_syn > 0 (α = 0 has no logit to learn); set tau_syn > 0")
        beta = math.exp(-1.0 / self.tau_mem)
        alpha = math.exp(-1.0 / self.tau_syn) if self.tau_syn > 0 else 0.0
        if self.learn_tau:
            for arg, decay in (("tau_mem", beta), ("tau_syn", alpha)):
                if not 0.0 < decay < 1.0:  # the learned form stores logit(decay): it must lie strictly inside (0, 1)
                    raise ValueError(
                        f"{owner}: with learn_tau, {arg}={getattr(self, arg)!r} gives a decay exp(-1/{arg}) = {decay!r}"
                        f", which has no finite logit to learn; choose {arg} between about 0.01 and 1e7"
                    )
            self.w_mem = nn.Parameter(torch.tensor(math.log(beta / (1 - beta))))
            self.w_syn = nn.Parameter(torch.tensor(math.log(alpha / (1 - alpha))))
        else:  # Python floats, not buffers: module.to(bf16) must not round them (at tau_mem >= ~512, β = 1: silent)
            self.beta, self.alpha = beta, alpha
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None  # (I, V) after the last step
        self.step_mode = step_mode

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` one neuron spends on a T-step sample, in the recurrent form that gives the same spikes:
        ``α·I`` (1 MAC; an add when ``tau_syn = 0``) and ``β·V + (1 − β)·I`` (2 MACs) per step."""
        return float((2 if self.tau_syn == 0.0 and not self.learn_tau else 3) * T), 0.0

    def decays(
        self, dtype: torch.dtype = torch.float32, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α, β)`` as 0-d tensors (fixed ones made in ``dtype`` on ``device`` from their Python floats)."""
        if self.learn_tau:
            return self.w_syn.to(dtype).sigmoid(), self.w_mem.to(dtype).sigmoid()
        return torch.tensor(self.alpha, dtype=dtype, device=device), torch.tensor(self.beta, dtype=dtype, device=device)

    def _initial(self, x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self._state is None:
            zero = torch.zeros(x.shape, dtype=dtype, device=x.device)
            return zero, zero
        if self._state[0].shape != x.shape:
            raise ValueError(
                f"{type(self).__name__}: stored state has shape {tuple(self._state[0].shape)} but this step has "
                f"shape {tuple(x.shape)}; call reset() (psn_zoo.neurons.reset_states(model)) between sequences"
            )
        return self._state[0].to(dtype), self._state[1].to(dtype)

    def taps(self, T: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
        """The membrane's impulse response from rest as sliding-PSN taps ``[T]``, newest last:
        ``V[t] = Σ_d taps[T−1−d]·X[t−d]`` with ``taps[T−1−d] = (1 − β)·Σ_{i<=d} β^(d−i)·α^i``."""
        alpha, beta = self.decays(dtype, device)
        current = alpha ** torch.arange(T, dtype=dtype, device=alpha.device)  # I's response to X[0] = 1 (0^0 = 1)
        return ((1 - beta) * (lower_toeplitz(beta, T) @ current)).flip(0)

    @staticmethod
    def _state_from_rest(
        x: torch.Tensor, taps: torch.Tensor, alpha: torch.Tensor, shape: torch.Size
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(I, V)`` at the last step of a call from rest over ``x: [T, N]`` (``taps``, ``alpha``: the call's)."""
        powers = alpha ** torch.arange(x.shape[0] - 1, -1, -1, dtype=x.dtype, device=x.device)
        current, membrane = torch.stack([powers, taps]) @ x  # one pass over x for both
        return current.reshape(shape), membrane.reshape(shape)

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``[T, B, ...] -> [T, B, ...]`` from the stored state (rest after :meth:`reset`).

        From rest the membrane is a fixed causal filter of ``T`` taps (:meth:`taps`): threshold spikes run as a
        sliding PSN through its fused kernels, SPSN's draws through :class:`_FilteredBernoulli`; the state the call
        leaves is two weighted sums over ``x`` (computed now: keeping ``x`` for later would read the caller's
        tensor after the call, which the caller may have refilled)."""
        T = x_seq.shape[0]
        from_rest = self._state is None and not _tracing()
        fused = self.spike_mode == "SB" or (self.spike_mode == "T" and self.surrogate.fires_heaviside)
        if from_rest and fused:
            with fp32_compute(x_seq) as dtype:
                taps = self.taps(T, dtype, x_seq.device)
                x = x_seq.reshape(T, -1).to(dtype)
                if self.spike_mode == "T":
                    bias = torch.tensor(-self.v_threshold, dtype=dtype, device=x_seq.device)
                    spikes = sliding_psn_multi_step(x_seq.to(dtype), taps, bias, self.surrogate)
                else:
                    spikes = _FilteredBernoulli.apply(x.contiguous(), sliding_weight_matrix(taps, T)).view(x_seq.shape)
                self._state = self._state_from_rest(x, taps, self.decays(dtype, x.device)[0], x_seq.shape[1:])
            return spikes.to(x_seq.dtype)
        with fp32_compute(x_seq) as dtype:
            x = x_seq.reshape(T, -1).to(dtype)
            i0, v0 = (s.reshape(-1) for s in self._initial(x_seq[0], dtype))
            alpha, beta = self.decays(dtype, x.device)
            steps = torch.arange(1, T + 1, dtype=dtype, device=x.device).unsqueeze(1)
            current = lower_toeplitz(alpha, T) @ x + alpha**steps * i0
            v = (1 - beta) * (lower_toeplitz(beta, T) @ current) + beta**steps * v0
            v_prev = torch.cat([v0.unsqueeze(0), v[:-1]])
            spikes = paralif_fire(v, v_prev, self.spike_mode, self.v_threshold, self.surrogate)
            self._state = (current[-1].reshape(x_seq.shape[1:]), v[-1].reshape(x_seq.shape[1:]))
        return spikes.reshape(x_seq.shape).to(x_seq.dtype)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        with fp32_compute(x) as dtype:
            i0, v0 = self._initial(x, dtype)
            alpha, beta = self.decays(dtype, x.device)
            current = alpha * i0 + x.to(dtype)
            v = beta * v0 + (1 - beta) * current
            spike = paralif_fire(v.unsqueeze(0), v0.unsqueeze(0), self.spike_mode, self.v_threshold, self.surrogate)
            self._state = (current, v)
        return spike[0].to(x.dtype)

    def reset(self) -> None:
        self._state = None

    def spec_kwargs(self) -> dict[str, Any]:
        return {
            "tau_mem": self.tau_mem,
            "tau_syn": self.tau_syn,
            "spike_mode": self.spike_mode,
            "v_threshold": self.v_threshold,
            "learn_tau": self.learn_tau,
            "surrogate": self.surrogate.spec(),
        }

    def extra_repr(self) -> str:
        return (
            f"tau_mem={self.tau_mem}, tau_syn={self.tau_syn}, spike_mode={self.spike_mode!r}, "
            f"learn_tau={self.learn_tau}, {super().extra_repr()}"
        )
