"""KLIF, the k-based leaky integrate-and-fire neuron (Jiang & Zhang, arXiv 2302.09238), a baseline of the PSN paper's
sequential-CIFAR table (``neuron.KLIFNode(v_reset=None)`` in ``sequential_cifar/train_secf10.py``).

A LIF whose charged membrane is scaled by one learnable scalar ``k`` (initialised to 1) and rectified before firing:

    H[t] = V[t−1] + (X[t] − (V[t−1] − V_reset)) / τ          (decay_input; else V[t−1] − (V[t−1] − V_reset)/τ + X[t])
    F[t] = ReLU(k·H[t]),    S[t] = Θ(F[t] − V_th)
    V[t] = F[t] − S[t]·V_th  (soft reset, v_reset=None)   or   F[t]·(1 − S[t]) + V_reset·S[t]  (hard reset)

``scale_reset=True`` resets ``F[t]/k`` with threshold ``V_th/k`` instead (the KLIF paper's variant). ``k`` scales the
surrogate gradient's slope as well as the membrane, which is the paper's point. SpikingJelly 2.0.0's ``KLIFNode``
computes the same equations (its default surrogate is the sigmoid; psn_zoo's, as for every neuron, is ATan).

A half-precision input (bf16, fp16, or autocast's) runs in fp32, as every other neuron's: the membrane is charged,
scaled and reset in fp32 (fp64 for an fp64 input) and kept in fp32 between calls, and the spikes come back in the
input's dtype.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ._channelwise import fp32_compute
from .base import SpikingNeuron, StepMode, flag
from .lif import _number, _tau
from .registry import register_neuron
from .surrogate import SurrogateSpec


@register_neuron
class KLIFNode(SpikingNeuron):
    """K-based LIF: ``F = ReLU(k·H)`` with a learnable scalar ``k`` (init 1), ``S = Θ(F − V_th)``, then reset."""

    name = "klif"
    causal: ClassVar[bool] = True
    needs_T: ClassVar[bool] = False
    reset_kind: ClassVar[str] = "exact"
    generalises: ClassVar[dict[str, str]] = {}  # k = 1 still rectifies the membrane: no exact reduction to LIF

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = False,
        scale_reset: bool = False,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(surrogate)
        owner = type(self).__name__
        self.tau = _tau(tau, owner)
        self.decay_input = flag(decay_input, "decay_input", type(self).__name__)
        self.v_threshold = _number(v_threshold, "v_threshold", owner)
        self.v_reset = _number(v_reset, "v_reset", owner, allow_none=True)
        self.detach_reset = flag(detach_reset, "detach_reset", type(self).__name__)
        self.scale_reset = flag(scale_reset, "scale_reset", type(self).__name__)
        self.k = nn.Parameter(torch.tensor(1.0))
        self.v: torch.Tensor | None = None
        self.step_mode = step_mode

    def reset(self) -> None:
        self.v = None

    def _step(self, x: torch.Tensor, v: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step ``[B, ...]``: ``(spike, V[t])`` from ``V[t−1]``, all in the compute dtype (``k`` cast to it)."""
        r = 0.0 if self.v_reset is None else self.v_reset
        h = v + (x - (v - r)) / self.tau if self.decay_input else v - (v - r) / self.tau + x
        f = torch.relu(k * h)
        spike = self.surrogate(f - self.v_threshold)
        s = spike.detach() if self.detach_reset else spike
        base, threshold = (f / k, self.v_threshold / k) if self.scale_reset else (f, self.v_threshold)
        if self.v_reset is None:
            return spike, base - s * threshold
        return spike, base * (1.0 - s) + self.v_reset * s

    def _initial_v(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The stored membrane in the compute ``dtype``, or a fresh one at ``v_reset``."""
        if self.v is None:
            return torch.full(x.shape, self.v_reset or 0.0, dtype=dtype, device=x.device)
        if self.v.shape != x.shape:
            raise ValueError(
                f"KLIFNode: stored membrane potential has shape {tuple(self.v.shape)} but this step has shape "
                f"{tuple(x.shape)}; call reset() (psn_zoo.neurons.reset_states(model)) between independent sequences"
            )
        return self.v.to(dtype)

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``[T, B, ...] -> [T, B, ...]`` spikes, step by step (the state carries on to the next call), computed in
        fp32 for a half-precision input (fp64 for fp64) and returned in its dtype."""
        with fp32_compute(x_seq) as dtype:
            v = self._initial_v(x_seq[0], dtype)
            k = self.k.to(dtype)
            spikes = []
            for x in x_seq.to(dtype):
                spike, v = self._step(x, v, k)
                spikes.append(spike)
            self.v = v
        return torch.stack(spikes).to(x_seq.dtype)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        with fp32_compute(x) as dtype:
            spike, self.v = self._step(x.to(dtype), self._initial_v(x, dtype), self.k.to(dtype))
        return spike.to(x.dtype)

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` one neuron spends on a T-step sample: the leak and the ``k`` scaling, per step."""
        return float(2 * T), 0.0

    def spec_kwargs(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "decay_input": self.decay_input,
            "v_threshold": self.v_threshold,
            "v_reset": self.v_reset,
            "detach_reset": self.detach_reset,
            "scale_reset": self.scale_reset,
            "surrogate": self.surrogate.spec(),
        }

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, k={float(self.k):.4g}, "
            f"{super().extra_repr()}"
        )
