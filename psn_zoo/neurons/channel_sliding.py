"""Channel-wise, dilated, multiplication-free sliding PSN (Xue, Fang et al., arXiv 2501.14490).

Each channel ``c`` has its own ``k`` taps and threshold; the taps read the input every ``dilation`` steps:

    H[t, c] = Σ_{i=0}^{k−1} w[c, i] · X[t − dilation·(k−1−i), c] + b[c],    S = Θ(H)

(``X`` before step 0 is 0). With ``mul_free=True`` the forward pass uses ``w`` rounded to a signed power of two,
``sign(w)·2^round(log2|w|)`` with the exponent clamped to ``[−8, 3]`` (``|w| < 2^−8.5`` rounds to 0), so each
product is a bit shift in fixed point; the gradient passes straight through the rounding to ``w``. The paper spreads
the dilations of successive layers over a sawtooth (1, 2, 4, 1, 2, 4, ...); here each layer takes one ``dilation``,
and a model that wants the sawtooth gives each layer its own (see docs/neurons.md).

The authors' code was not found; this follows the paper's description. Causal, any T, streaming with a history of
the last ``dilation·(k−1)`` inputs.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from . import _backend
from ._channelwise import ChannelwiseNeuron, fp32_compute, positive_int
from ._memory import fresh_like, scratch_like
from ._psn_kernels import CHUNK_ELEMENTS
from .base import StepMode, flag
from .functional import _plain
from .registry import register_neuron
from .surrogate import Surrogate, SurrogateSpec

#: Exponent range of the power-of-two taps (``mul_free=True``).
POW2_MIN_EXP, POW2_MAX_EXP = -8, 3


class _Pow2STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: torch.Tensor) -> torch.Tensor:
        return pow2_round(w)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def pow2_round(w: torch.Tensor) -> torch.Tensor:
    """``sign(w)·2^round(log2|w|)``, exponent clamped to ``[POW2_MIN_EXP, POW2_MAX_EXP]``; ``|w|`` below
    ``2^(POW2_MIN_EXP − 0.5)`` becomes 0. Not differentiable (see :func:`pow2_ste`)."""
    mag = w.abs()
    exp = torch.log2(mag.clamp(min=torch.finfo(w.dtype).tiny)).round().clamp(POW2_MIN_EXP, POW2_MAX_EXP)
    out = torch.sign(w) * torch.exp2(exp)
    return torch.where(mag < 2.0 ** (POW2_MIN_EXP - 0.5), torch.zeros_like(w), out)


def pow2_ste(w: torch.Tensor) -> torch.Tensor:
    """:func:`pow2_round` forward, identity gradient (straight-through estimator)."""
    return _Pow2STE.apply(w)


def channel_sliding_membrane(
    x_seq: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, dilation: int
) -> torch.Tensor:
    """``H = Σ_i taps[:, i]·X[t − dilation·(k−1−i)] + b`` over time: ``x_seq [T, B, C, *]``, ``taps [C, k]``,
    ``bias [C]`` -> ``[T, B, C, *]``. One multiply and one add per tap, oldest tap first (the streaming order)."""
    T, k = x_seq.shape[0], taps.shape[1]
    view = (taps.shape[0], *([1] * (x_seq.dim() - 3)))
    h = torch.zeros_like(x_seq)
    for i in range(k):
        lag = dilation * (k - 1 - i)
        if lag >= T:
            continue
        w = taps[:, i].reshape(view)
        h = torch.cat([h[:lag], h[lag:] + w * x_seq[: T - lag]]) if lag else h + w * x_seq
    return h + bias.reshape(view)


def _blocks(x: torch.Tensor) -> list[tuple[slice, slice, slice, slice]]:
    """Index tuples of ``x: [T, B, C, R]`` cutting it into blocks of about :data:`CHUNK_ELEMENTS` elements: whole
    batch rows where one fits, else each row cut along R (time and channels stay whole: the taps run along time, the
    weights along channels). One block off the CPU."""
    T, B, C, R = x.shape
    whole = slice(None)
    if not x.is_cpu:
        return [(whole, whole, whole, whole)]
    per_row = T * C * R
    if per_row <= CHUNK_ELEMENTS:
        step = CHUNK_ELEMENTS // max(per_row, 1)
        return [(whole, slice(b, min(b + step, B)), whole, whole) for b in range(0, B, step)]
    width = max(1, CHUNK_ELEMENTS // (T * C))
    return [(whole, slice(b, b + 1), whole, slice(r, min(r + width, R))) for b in range(B) for r in range(0, R, width)]


class ChannelShiftedThreshold(torch.autograd.Function):
    """``S = Θ(Σ_i taps[:, i]·X[t − d(k−1−i)] + b)`` on ``x: [T, B, C, R]``, ``taps: [C, k]``, ``bias: [C]``.

    Why not autograd over :func:`channel_sliding_membrane`: that builds a new ``[T, *]`` tensor per tap and keeps it
    for backward. Here each block of about 2 MiB (batch rows, or pieces of one row along R: :func:`_blocks`)
    accumulates its taps in place, oldest first, each a multiply then an add as the streaming step does (so the spikes
    are :func:`channel_sliding_membrane`'s bit for bit), and backward recomputes the membrane instead of storing it:
    ``gx[t − lag_i] += w_i·gh[t]``, ``gw_i = Σ gh[t]·x[t − lag_i]``, ``gb = Σ gh`` (sums over time, batch and the
    rest, per channel)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, dilation: int, surrogate: Surrogate
    ) -> torch.Tensor:
        spikes = fresh_like(x, torch.contiguous_format)
        for block in _blocks(x):
            h, _ = _membrane(x[block], taps, bias, dilation)
            torch.ge(h, 0, out=spikes[block])
        ctx.save_for_backward(x, taps, bias)
        ctx.dilation, ctx.surrogate = dilation, surrogate
        return spikes

    @staticmethod
    def backward(ctx: Any, grad_spikes: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        _backend.refuse_create_graph("ChannelShiftedThreshold")
        x, taps, bias = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        T, k = x.shape[0], taps.shape[1]
        grad_x = fresh_like(x, torch.contiguous_format) if need_x else None
        grad_w = torch.zeros_like(taps) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b else None
        lags = [(i, ctx.dilation * (k - 1 - i)) for i in range(k - 1, -1, -1) if ctx.dilation * (k - 1 - i) < T]
        for block in _blocks(x):
            xc = x[block]
            h, spare = _membrane(xc, taps, bias, ctx.dilation)
            gh = ctx.surrogate.backward_(h, grad_spikes[block])
            gx = grad_x[block] if grad_x is not None else None
            if grad_b is not None:
                grad_b += gh.sum((0, 1, 3))
            for i, lag in lags:  # newest tap (lag 0) first: it writes every row of grad_x
                w = taps[:, i].reshape(-1, 1)
                if grad_x is not None:
                    if lag == 0:
                        torch.mul(gh, w, out=gx)
                    else:
                        gx[: T - lag] += torch.mul(gh[lag:], w, out=spare[: T - lag])
                if grad_w is not None:
                    grad_w[:, i] += torch.mul(gh[lag:], xc[: T - lag], out=spare[: T - lag]).sum((0, 1, 3))
        return grad_x, grad_w, grad_b, None, None


def _membrane(
    x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, dilation: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, scratch)`` for one batch chunk ``x: [T, b, C, R]``: H in a reused buffer, accumulated as
    :func:`channel_sliding_membrane` does (``scratch``: a second buffer of the same shape, free after the call)."""
    T, k = x.shape[0], taps.shape[1]
    h, spare = (scratch_like(x, slot) for slot in (0, 1))
    h.zero_()
    for i in range(k):
        lag = dilation * (k - 1 - i)
        if lag < T:
            h[lag:] += torch.mul(taps[:, i].reshape(-1, 1), x[: T - lag], out=spare[: T - lag])
    return h.add_(bias.reshape(-1, 1)), spare


@register_neuron
class ChannelSlidingPSN(ChannelwiseNeuron):
    """Channel-wise dilated sliding PSN: ``H[t,c] = Σ_i w[c,i]·X[t − d(k−1−i), c] + b[c]``, ``S = Θ(H)``; any T.

    ``w: [C, k]`` (``exp_init``: ``(…, 1/4, 1/2, 1)`` in every channel, as the sliding PSN; else U(±1/√k)),
    ``b: [C]`` starting at −1. ``mul_free``: power-of-two taps in the forward pass (straight-through gradient).
    ``channels``: size the parameters now instead of from the first input.
    """

    name = "channel_sliding_psn"
    initial_kwargs = ("surrogate", "exp_init")
    aliases = ("cw_psn", "mulfree_psn")

    reset_kind: ClassVar[str] = "none"
    streamable: ClassVar[bool] = True
    generalises: ClassVar[dict[str, str]] = {
        "sliding_psn": "every channel has the same k taps and bias, dilation = 1, mul_free = False",
    }

    def __init__(
        self,
        k: int,
        dilation: int = 1,
        mul_free: bool = False,
        exp_init: bool = True,
        channels: int | None = None,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(channels, surrogate)
        owner = type(self).__name__
        self.k = positive_int(k, "k", owner)
        self.dilation = positive_int(dilation, "dilation", owner)
        self.mul_free = flag(mul_free, "mul_free", type(self).__name__)
        self.exp_init = flag(exp_init, "exp_init", type(self).__name__)
        self._declare("weight", (self.k,))
        self._declare("bias")
        self._history: list[torch.Tensor] = []
        if self.channels is not None:
            self._materialise(self.channels)
        self.step_mode = step_mode

    def _build(self, channels: int) -> None:
        if self.exp_init:
            self.weight.copy_(torch.tensor([0.5 ** (self.k - 1 - i) for i in range(self.k)]).expand(channels, -1))
        else:
            bound = 1 / math.sqrt(self.k)
            self.weight.uniform_(-bound, bound)
        self.bias.fill_(-1.0)

    @property
    def receptive_field(self) -> int:
        """How many steps back (including the current one) a spike can see: ``dilation·(k−1) + 1``."""
        return self.dilation * (self.k - 1) + 1

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` one neuron spends on a T-step sample: one per tap that reaches a step at or after 0
        (shift-and-adds, counted as ACs, when ``mul_free``)."""
        ops = float(sum(max(T - self.dilation * (self.k - 1 - i), 0) for i in range(self.k)))
        return (0.0, ops) if self.mul_free else (ops, 0.0)

    def effective_weight(self) -> torch.Tensor:
        """The taps the forward pass uses, ``[C, k]`` (powers of two when ``mul_free``)."""
        return pow2_ste(self.weight) if self.mul_free else self.weight

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        self._check_channels(x_seq)
        flat = x_seq.unsqueeze(-1) if x_seq.dim() == 2 else x_seq
        with fp32_compute(x_seq) as dtype:
            taps, bias = self.effective_weight().to(dtype), self.bias.to(dtype)
            if not _plain(self.surrogate):
                x4 = flat.to(dtype).reshape(*flat.shape[:3], math.prod(flat.shape[3:]))  # not -1: B may be 0
                spikes = ChannelShiftedThreshold.apply(x4, taps, bias, self.dilation, self.surrogate)
            else:
                spikes = self.surrogate(channel_sliding_membrane(flat.to(dtype), taps, bias, self.dilation))
        return spikes.reshape(x_seq.shape).to(x_seq.dtype)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        self._check_channels(x)
        if self._history and self._history[-1].shape != x.shape:
            raise ValueError(
                f"{type(self).__name__}: single-step input shape changed from {tuple(self._history[-1].shape)} to "
                f"{tuple(x.shape)} within one sequence; call reset() (psn_zoo.neurons.reset_states(model)) first"
            )
        self._history = [*self._history, x.clone()][-self.receptive_field :]  # a copy: the caller may refill x
        flat = x.unsqueeze(-1) if x.dim() == 1 else x
        with fp32_compute(x) as dtype:
            taps, bias = self.effective_weight().to(dtype), self.bias.to(dtype)
            view = (taps.shape[0], *([1] * (flat.dim() - 2)))
            h = torch.zeros_like(flat, dtype=dtype)
            for i in range(self.k):  # the same operations, in the same order, as channel_sliding_membrane
                lag = self.dilation * (self.k - 1 - i)
                if lag < len(self._history):
                    past = self._history[-1 - lag]
                    past = past.unsqueeze(-1) if past.dim() == 1 else past
                    h = h + taps[:, i].reshape(view) * past.to(dtype)
            spike = self.surrogate(h + bias.reshape(view))
        return spike.reshape(x.shape).to(x.dtype)

    def reset(self) -> None:
        self._history = []

    def spec_kwargs(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "dilation": self.dilation,
            "mul_free": self.mul_free,
            "exp_init": self.exp_init,
            "surrogate": self.surrogate.spec(),
        }

    def extra_repr(self) -> str:
        return f"k={self.k}, dilation={self.dilation}, mul_free={self.mul_free}, {super().extra_repr()}"
