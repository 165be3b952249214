"""Fused autograd kernels for the PSN family on time-first inputs ``x: [T, *]`` (computed as ``[T, N]``).

SpikingJelly computes ``h = addmm(b, W, x)`` then ``Θ(h)`` with autograd, so it keeps both ``x`` and
``h`` ([T, N] each) for backward and runs about ten full passes over [T, N] tensors, each one
allocating. These kernels:

- store ``h`` only where recomputing it costs more than keeping it: the fused C kernel keeps ``W·x`` for backward
  with a dense ``W`` at ``T >= KEEP_MEMBRANE_T`` (a GEMM of 2·T flops per element against one store and one load);
  everywhere else backward recomputes it from ``x``;
- fuse the threshold into the GEMM epilogue: ``Θ(Wx + b) = [Wx ≥ −b]``, exact in IEEE arithmetic;
- walk ``N`` in cache-sized column chunks, so every elementwise step runs on data still in L2;
- for the sliding PSN with a short kernel (``k ≪ T``), replace the dense banded T×T GEMM by ``k``
  fused multiply-adds over time-shifted views (``addcmul``), in the same order as the GEMM's
  accumulation, so the result is the same.

Outputs (spikes) are bit-identical to SpikingJelly 2.0.0; input gradients are too for the dense
kernel; parameter gradients are summed chunk by chunk, so they agree to float round-off.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from . import _backend, _native
from ._memory import fresh_empty, fresh_like, scratch_like
from .surrogate import Surrogate

#: From this T on, the fused kernel keeps the dense PSN's membrane W·x ([T, N] float32, one more tensor between the
#: passes) instead of recomputing it in backward: a quarter of the forward + backward arithmetic. Below it the
#: recomputation (2·T flops per element) costs less than storing and reloading the tensor.
KEEP_MEMBRANE_T = 16

#: Elements of one [T, chunk] block; 2**19 float32 = 2 MiB, the L2 size of one core here.
CHUNK_ELEMENTS = 1 << 19


def _chunks(x2d: torch.Tensor) -> list[slice]:
    """Column slices of ``x2d`` (whole tensor off the CPU or when it is small)."""
    T, N = x2d.shape
    if x2d.device.type != "cpu" or T * N <= CHUNK_ELEMENTS:
        return [slice(0, N)]
    width = max(64, (CHUNK_ELEMENTS // T) // 64 * 64)
    return [slice(c, min(c + width, N)) for c in range(0, N, width)]


def band_mask(T: int, k: int) -> torch.Tensor:
    """``M_k[i, j] = 1`` if ``j <= i <= j + k - 1`` else 0: the causal band of order ``k``, ``[T, T]``."""
    ones = torch.ones(T, T)
    return torch.tril(ones) * torch.triu(ones, -(k - 1))


@functools.cache
def _cached_band_mask(T: int, k: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return band_mask(T, k).to(device=device, dtype=dtype)


def _flat(x_seq: torch.Tensor) -> torch.Tensor:
    """``[T, *] -> [T, N]`` inside the Functions below (a view when contiguous): the caller's shape is kept, so no
    reshape or view node enters the autograd graph around a neuron."""
    return x_seq.reshape(x_seq.shape[0], -1)


def _fresh_with_flat(like: torch.Tensor, flat_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh contiguous tensor shaped like ``like`` (what a Function returns) and its ``[T, N]`` view (what the
    kernels write)."""
    full = fresh_like(like, torch.contiguous_format)
    return full, full.view(*flat_shape)  # ints, not a Size: view(Size) costs 3x more per call


def _grad_buffers(
    grad_spike: torch.Tensor, x2d: torch.Tensor, need_x: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Backward's ``(grad_x in the caller's shape, its [T, N] view, grad_spike as [T, N])``; no buffer if the
    input needs no gradient."""
    grad_seq, grad_x = _fresh_with_flat(grad_spike, x2d.shape) if need_x else (None, None)
    return grad_seq, grad_x, grad_spike.reshape(*x2d.shape)


class DenseThreshold(torch.autograd.Function):
    """``S = Θ(W @ x + b[:, None])`` with ``W: [T, T]``, ``b: [T]``, ``x: [T, *]`` (PSN, masked PSN, and the
    sliding PSN's banded matrix). ``band=k`` uses only the causal band of order k of ``W`` (``W ⊙ M_k``, entries
    outside it are ignored) and masks the gradient of ``W`` to it: the masked PSN at λ = 1 passes its raw weight.
    ``recording``: ``torch.is_grad_enabled()`` at the call (no membrane is kept for a backward that cannot come).
    Small T (or a short band) on the CPU runs the fused C kernel (:mod:`._native`), which reads only the band; the
    rest runs the chunked PyTorch path below on ``W ⊙ M_k``. Both give the same spikes."""

    @staticmethod
    def forward(
        ctx: Any,
        x_seq: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        surrogate: Surrogate,
        band: int | None = None,
        recording: bool = True,
    ) -> torch.Tensor:
        x2d = _flat(x_seq)
        ctx.surrogate, ctx.band = surrogate, band
        ctx.native = _native.dense_kernels(x2d, weight, bias, surrogate, band)
        if ctx.native is None and band is not None:  # the PyTorch path multiplies the band out
            weight = weight * _cached_band_mask(weight.shape[0], band, weight.device, weight.dtype)
        out, out2d = _fresh_with_flat(x_seq, x2d.shape)
        if ctx.native is not None:
            # ``recording``: grad mode was on at the call (inside forward it is always off, and needs_input_grad
            # says True for parameters even under no_grad, when no backward can follow)
            keep = recording and band is None and x2d.shape[0] >= KEEP_MEMBRANE_T and any(ctx.needs_input_grad[:3])
            membrane = fresh_like(x2d, torch.contiguous_format) if keep else None
            ctx.native.forward(x2d, weight, bias, out2d, membrane=membrane, band=band)
            ctx.save_for_backward(x2d, weight, bias, membrane)
            return out
        ctx.save_for_backward(x2d, weight, bias, None)
        neg_bias = bias.neg().unsqueeze(1)
        for cols in _chunks(x2d):
            block = out2d[:, cols]
            torch.mm(weight, x2d[:, cols], out=block)
            block.ge_(neg_bias)
        return out

    @staticmethod
    def backward(ctx: Any, grad_spike: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        _backend.refuse_create_graph("DenseThreshold")
        x2d, weight, bias, membrane = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_seq, grad_x, grad_spike = _grad_buffers(grad_spike, x2d, need_x)
        if ctx.native is not None:
            # contiguous (the kernel writes [T, T] rows; empty_like would keep a transposed weight's strides)
            grad_w = fresh_empty(weight.shape, weight.dtype, weight.device) if need_w else None
            grad_b = fresh_empty(bias.shape, bias.dtype, bias.device) if need_b else None
            ctx.native.backward(
                x2d, weight, bias, grad_spike, ctx.surrogate.alpha, grad_x, grad_w, grad_b, ctx.band, membrane=membrane
            )
            return grad_seq, grad_w, grad_b, None, None, None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b else None
        bias_col = bias.unsqueeze(1)
        weight_t = weight.t()
        for cols in _chunks(x2d):
            x = x2d[:, cols]
            h = torch.addmm(bias_col, weight, x, out=scratch_like(x))
            grad_h = ctx.surrogate.backward_(h, grad_spike[:, cols])
            if grad_x is not None:
                torch.mm(weight_t, grad_h, out=grad_x[:, cols])
            if grad_w is not None:
                grad_w.addmm_(grad_h, x.t())
            if grad_b is not None:
                grad_b.add_(grad_h.sum(1))
        if grad_w is not None and ctx.band is not None:
            grad_w.mul_(_cached_band_mask(weight.shape[0], ctx.band, weight.device, weight.dtype))
        return grad_seq, grad_w, grad_b, None, None, None


class ToeplitzThreshold(torch.autograd.Function):
    """Sliding PSN through the fused C kernel: ``w: [k]`` and scalar ``b``, ``x: [T, *]`` (CPU, float32).

    The kernel builds the banded Toeplitz ``[T, T]`` matrix from the taps itself and sums its gradient back onto
    them, so no matrix, index or autograd graph of small ops is made here; the values are those of the dense route
    with :func:`~psn_zoo.neurons.functional.sliding_weight_matrix`.
    """

    @staticmethod
    def forward(
        ctx: Any, x_seq: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate: Surrogate, kernels: Any
    ) -> torch.Tensor:
        x2d = _flat(x_seq)
        ctx.save_for_backward(x2d, weight, bias)
        ctx.surrogate, ctx.kernels = surrogate, kernels
        out, out2d = _fresh_with_flat(x_seq, x2d.shape)
        kernels.forward_sliding(x2d, weight, bias, out2d)
        return out

    @staticmethod
    def backward(ctx: Any, grad_spike: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        _backend.refuse_create_graph("ToeplitzThreshold")
        x2d, weight, bias = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_seq, grad_x, grad_spike = _grad_buffers(grad_spike, x2d, need_x)
        grad_w = fresh_empty(weight.shape, weight.dtype, weight.device) if need_w else None
        grad_b = fresh_empty(bias.shape, bias.dtype, bias.device) if need_b else None
        ctx.kernels.backward_sliding(x2d, weight, bias, grad_spike, ctx.surrogate.alpha, grad_x, grad_w, grad_b)
        return grad_seq, grad_w, grad_b, None, None


def _shifted_membrane(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[t] = Σ_i w_i·x[t-k+1+i]`` (no bias), accumulated oldest input first like the GEMM.

    The oldest tap initialises the rows it reaches (``w·x`` rounds like ``fma(w, x, 0)``), the rows it
    does not reach start at 0, and every newer tap is one fused multiply-add over a time-shifted view.
    """
    T, k = x.shape[0], weight.shape[0]
    first = max(0, k - T)  # taps older than the sequence never contribute
    shift = k - 1 - first
    out[:shift].zero_()
    torch.mul(x[: T - shift], weight[first], out=out[shift:])
    for i in range(first + 1, k):
        shift = k - 1 - i
        out[shift:].addcmul_(x[: T - shift], weight[i])
    return out


class ShiftedThreshold(torch.autograd.Function):
    """Sliding PSN ``S[t] = Θ(Σ_i w_i·x[t-k+1+i] + b)`` with ``w: [k]``, scalar ``b``, ``x: [T, *]``."""

    @staticmethod
    def forward(
        ctx: Any, x_seq: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate: Surrogate
    ) -> torch.Tensor:
        x2d = _flat(x_seq)
        out, out2d = _fresh_with_flat(x_seq, x2d.shape)
        neg_bias = bias.neg()
        for cols in _chunks(x2d):
            _shifted_membrane(x2d[:, cols], weight, out2d[:, cols]).ge_(neg_bias)
        ctx.save_for_backward(x2d, weight, bias)
        ctx.surrogate = surrogate
        return out

    @staticmethod
    def backward(ctx: Any, grad_spike: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        _backend.refuse_create_graph("ShiftedThreshold")
        x2d, weight, bias = ctx.saved_tensors
        k, T = weight.shape[0], x2d.shape[0]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_seq, grad_x, grad_spike = _grad_buffers(grad_spike, x2d, need_x)
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b else None
        taps = [(i, k - 1 - i) for i in range(max(0, k - T), k)]  # (tap, time shift), newest last
        for cols in _chunks(x2d):
            x = x2d[:, cols]
            membrane = _shifted_membrane(x, weight, scratch_like(x)).add_(bias)
            grad_h = ctx.surrogate.backward_(membrane, grad_spike[:, cols])
            if grad_x is not None:  # dL/dx[j] = Σ_i w_i·dL/dh[j + shift_i]; the newest tap covers every row
                torch.mul(grad_h, weight[k - 1], out=grad_x[:, cols])
                for i, shift in taps[:-1]:
                    grad_x[: T - shift, cols].addcmul_(grad_h[shift:], weight[i])
            if grad_w is not None:
                for i, shift in taps:
                    grad_w[i] += torch.vdot(grad_h[shift:].reshape(-1), x[: T - shift].reshape(-1))
            if grad_b is not None:
                grad_b += grad_h.sum()
        return grad_seq, grad_w, grad_b, None
