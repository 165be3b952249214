"""The Parallel Spiking Neuron family (Fang et al., NeurIPS 2023): PSN, masked PSN, sliding PSN.

All three compute a membrane ``H = W·X`` as a linear map over time, then fire ``S = Θ(H + b)`` with a
learnable bias ``b = −threshold`` (initialised to −1, so the effective threshold starts at 1). There
is no reset, so the whole sequence is processed in parallel.

| neuron | W | parameters | causal / streaming |
|---|---|---|---|
| ``PSN(T)`` | dense ``[T, T]`` | ``T² + T`` | no |
| ``MaskedPSN(T, k, lambda_)`` | ``W ⊙ (λ·M_k + (1−λ)·J)``, band of order k | ``T² + T`` | yes once λ = 1 |
| ``SlidingPSN(k)`` | banded Toeplitz from ``w: [k]`` | ``k + 1``; any T | yes |
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from . import functional as F
from .base import SpikingNeuron, StepMode, check_time_steps, flag
from .registry import register_neuron
from .surrogate import SurrogateSpec


def _positive_int(value: Any, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


class _StreamingPSN(SpikingNeuron):
    """Shared input-history handling of the causal PSN variants in single-step mode."""

    def __init__(self, surrogate: SurrogateSpec) -> None:
        super().__init__(surrogate)
        self._queue: list[torch.Tensor] = []
        self._t = 0

    def reset(self) -> None:
        if self._queue or self._t:  # nothing to forget after multi-step calls (Module.__setattr__ costs µs a call)
            self._queue = []
            self._t = 0

    def _check_stream_shape(self, x: torch.Tensor) -> None:
        if self._queue and self._queue[-1].shape != x.shape:
            raise ValueError(
                f"{type(self).__name__}: single-step input shape changed from {tuple(self._queue[-1].shape)} to "
                f"{tuple(x.shape)} within one sequence; call reset() (psn_zoo.neurons.reset_states(model)) "
                "before a new sequence"
            )


@register_neuron
class PSN(SpikingNeuron):
    """Parallel spiking neuron: ``S = Θ(W·X + b)``, ``W: [T, T]``, ``b: [T]``. Input ``[T, B, ...]`` only."""

    name = "psn"
    aliases = ("if5",)
    needs_T = True
    reset_kind = "none"
    streamable = False
    generalises: ClassVar[dict[str, str]] = {
        "masked_psn": "lambda_ = 1: W restricted to the causal band of order k",
        "lif_noreset": "W[t, j] = c·β^(t−j) for j <= t (c = 1/τ with decay_input, β = 1 − 1/τ), b = −v_threshold",
        "paralif": "spike_mode = 'T': W = the two-pole (α, β) filter's lower-triangular Toeplitz matrix, b = −θ",
    }
    causal = False

    def __init__(self, T: int, surrogate: SurrogateSpec = "atan", step_mode: StepMode = "m") -> None:
        super().__init__(surrogate)
        self.T = _positive_int(T, "T", "PSN")
        self.weight = nn.Parameter(torch.empty(T, T))
        self.bias = nn.Parameter(torch.full((T,), -1.0))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # U(±1/√T), as in the paper
        self.step_mode = step_mode

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_time_steps(x_seq, self.T, self)
        return F.psn_multi_step(x_seq, self.weight, self.bias, self.surrogate)

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` one neuron spends on a T-step sample: the ``[T, T]`` weight on the T inputs."""
        return float(T * T), 0.0

    def spec_kwargs(self) -> dict[str, Any]:
        return {"T": self.T, "surrogate": self.surrogate.spec()}

    def extra_repr(self) -> str:
        return f"T={self.T}, {super().extra_repr()}"


@register_neuron
class MaskedPSN(_StreamingPSN):
    """Masked PSN of order ``k``: ``W`` restricted to the causal band of the last ``k`` inputs.

    ``lambda_`` blends the mask in progressively (0: dense like PSN, 1: causal band); the paper raises
    it per epoch with ``min(8·e/(E−1), 1)``. It is a buffer, so it is saved in checkpoints. Single-step
    (streaming) mode needs ``lambda_ == 1`` and at most ``T`` steps between resets.
    """

    name = "masked_psn"
    initial_kwargs = ("surrogate", "lambda_")
    aliases = ("if5pmd8",)
    needs_T = True
    reset_kind = "none"
    generalises: ClassVar[dict[str, str]] = {
        "sliding_psn": "W Toeplitz on the band (the same k taps at every step), one bias",
        "lif_noreset": "k = T, W[t, j] = c·β^(t−j), b = −v_threshold (at λ = 1)",
    }

    def __init__(
        self,
        T: int,
        k: int,
        lambda_: float = 0.0,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(surrogate)
        self.T = _positive_int(T, "T", "MaskedPSN")
        self.k = _positive_int(k, "k", "MaskedPSN")
        if k > T:
            raise ValueError(f"MaskedPSN: order k={k} cannot exceed T={T}")
        self.weight = nn.Parameter(torch.empty(T, T))
        self.bias = nn.Parameter(torch.full((T,), -1.0))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.register_buffer("mask", F.band_mask(T, k))
        self.register_buffer("lambda_", torch.tensor(_check_lambda(lambda_)))
        self.step_mode = step_mode

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "lambda_" and "_buffers" in self.__dict__ and "lambda_" in self._buffers:
            self._buffers["lambda_"].fill_(_check_lambda(value))
            return
        super().__setattr__(name, value)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A state dict's λ is checked as an assigned one is (a value outside [0, 1] would load, then fail later)."""
        stored = state_dict.get(prefix + "lambda_")
        if isinstance(stored, torch.Tensor) and stored.numel() == 1:
            _check_lambda(stored.item())
        super()._load_from_state_dict(state_dict, prefix, *args)

    def check_single_step(self) -> None:
        if float(self.lambda_) < 1.0:
            raise ValueError(
                f"MaskedPSN with lambda_={float(self.lambda_):g} < 1 still sees future inputs (the mask is not "
                "complete), so it cannot run step by step; set neuron.lambda_ = 1.0 (the end of the paper's "
                "schedule) before streaming, or use multi-step mode"
            )

    def effective_weight(self) -> torch.Tensor:
        """``W ⊙ M_k(λ)``, ``[T, T]``."""
        return F.masked_weight(self.weight, self.mask, self.lambda_)

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_time_steps(x_seq, self.T, self)
        return F.masked_psn_multi_step(x_seq, self.weight, self.mask, self.lambda_, self.bias, self.surrogate, self.k)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        self._check_stream_shape(x)
        if self._t >= self.T:
            raise RuntimeError(
                f"MaskedPSN(T={self.T}) has already run {self._t} single steps since the last reset; its "
                "weights cover only T steps. Call reset() (psn_zoo.neurons.reset_states(model)) between sequences"
            )
        spike, self._queue = F.masked_psn_step(
            x, self._queue, self._t, self.effective_weight(), self.bias, self.k, self.surrogate
        )
        self._t += 1
        return spike

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` per neuron and sample: ``T²`` while λ < 1, the band's ``k·T − k(k−1)/2`` at λ = 1."""
        if float(self.lambda_) < 1.0:
            return float(T * T), 0.0
        return float(self.k * T - self.k * (self.k - 1) / 2), 0.0

    def spec_kwargs(self) -> dict[str, Any]:
        return {
            "T": self.T,
            "k": self.k,
            "lambda_": float(self.lambda_),
            "surrogate": self.surrogate.spec(),
        }

    def extra_repr(self) -> str:
        return f"T={self.T}, k={self.k}, lambda_={float(self.lambda_):g}, {super().extra_repr()}"


def _check_lambda(value: Any) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"MaskedPSN: lambda_ must be in [0, 1], got {value}")
    return value


@register_neuron
class SlidingPSN(_StreamingPSN):
    """Sliding PSN of order ``k``: ``H[t] = Σ_i w_i·X[t−k+1+i]``, ``S = Θ(H + b)``; works for any T.

    ``exp_init=True`` starts ``w`` at ``(…, 1/4, 1/2, 1)`` (SpikingJelly's default, the CIFAR10-DVS
    model); ``False`` uses Kaiming-uniform ``U(±1/√k)`` (the sequential-CIFAR script's default).
    """

    name = "sliding_psn"
    initial_kwargs = ("surrogate", "exp_init")
    aliases = ("mspsn",)
    reset_kind = "none"

    def __init__(
        self,
        k: int,
        exp_init: bool = True,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(surrogate)
        self.k = _positive_int(k, "k", "SlidingPSN")
        self.exp_init = flag(exp_init, "exp_init", type(self).__name__)
        if exp_init:
            weight = torch.tensor([0.5 ** (k - 1 - i) for i in range(k)])
        else:
            weight = torch.empty(1, k)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            weight = weight[0]
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.tensor(-1.0))
        self.step_mode = step_mode

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        return F.sliding_psn_multi_step(x_seq, self.weight, self.bias, self.surrogate)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        self._check_stream_shape(x)
        spike, self._queue = F.sliding_psn_step(x, self._queue, self.weight, self.bias, self.surrogate)
        self._t += 1
        return spike

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` per neuron and sample: a k-tap filter over T steps, ``k·T − k(k−1)/2``."""
        k = min(self.k, T)
        return float(k * T - k * (k - 1) / 2), 0.0

    def spec_kwargs(self) -> dict[str, Any]:
        return {"k": self.k, "exp_init": self.exp_init, "surrogate": self.surrogate.spec()}

    def extra_repr(self) -> str:
        return f"k={self.k}, {super().extra_repr()}"
