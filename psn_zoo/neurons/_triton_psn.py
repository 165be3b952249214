"""Triton kernels for the PSN family: ``S = Θ(W·x + b)`` with ``W: [T, T]``, ``b: [T]``, ``x: [T, *]``.

PSN passes its weight, the masked PSN ``W ⊙ (λ·M_k + (1 − λ)·J)`` (a banded matrix at λ = 1), the sliding PSN the
Toeplitz band built from its ``k`` taps: the small ``[T, T]`` matrix is made by autograd-tracked PyTorch ops, so its
gradient flows back onto ``W``, λ or the taps by themselves.

- Forward: one program per block of columns reads ``x`` once, keeps the ``[T, block]`` membrane in registers (T
  fused multiply-adds per element), thresholds it and writes the spikes. No membrane is stored.
- Backward recomputes the membrane from ``x`` (cheaper than storing and reading it back), applies the surrogate in
  registers, writes ``grad_x = Wᵀ·grad_h`` and accumulates ``grad_W = grad_h·xᵀ`` and ``grad_b = Σ grad_h`` in a
  per-program fp32 partial (in registers up to T = 32); a fixed number of programs walks the column blocks, and
  their partials are summed in a fixed order (deterministic, no atomics: a resumed run reproduces).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from . import _backend
from ._backend import interpreting
from ._triton_common import (
    as_columns,
    cdiv,
    column_block,
    column_order,
    new_columns,
    pow2,
    programs_for_reduction,
    rounded_to,
    surrogate_grad,
    surrogate_kind,
)
from .surrogate import Surrogate

#: Largest T the register-tile kernels take; longer sequences run the PyTorch path.
MAX_T = 128


@triton.jit
def _w_column(w_ptr, lam, rows, rmask, j, T: tl.constexpr, BAND: tl.constexpr, TAPS: tl.constexpr):
    """Column ``j`` of the effective ``W`` over the tile's rows, in fp32. ``BAND = k > 0``: the masked PSN's
    ``W ⊙ (λ·M_k + (1 − λ)·J)`` made here from the raw ``W`` and ``λ``, with masked_weight's operations (so the
    same bits), ``M_k`` the causal band ``0 <= t - j < k``. ``TAPS = k > 0``: ``w_ptr`` holds the sliding PSN's k
    taps and ``W[t, j] = taps[k - 1 - (t - j)]`` on the band (its Toeplitz matrix, built here)."""
    if TAPS > 0:
        lag = rows - j
        return tl.load(w_ptr + (TAPS - 1 - lag), mask=rmask & (lag >= 0) & (lag < TAPS), other=0.0).to(tl.float32)
    w = tl.load(w_ptr + rows * T + j, mask=rmask, other=0.0).to(tl.float32)
    if BAND > 0:
        inside = (rows >= j) & (rows - j < BAND)
        w = (lam * tl.where(inside, 1.0, 0.0) + (1.0 - lam)) * w
    return w


@triton.jit
def _mask_factor(rows, lam, BAND: tl.constexpr):
    """``[T_PAD, T_PAD]``: ``λ·M_k + (1 − λ)`` (BAND = k > 0), the factor between the raw ``W`` and the effective
    one, and between their gradients."""
    d = rows[:, None] - rows[None, :]
    return lam * tl.where((d >= 0) & (d < BAND), 1.0, 0.0) + (1.0 - lam)


@triton.jit
def _bias(b_ptr, rows, rmask, TAPS: tl.constexpr):
    """``b`` over the tile's rows in fp32; the sliding PSN's (``TAPS > 0``) is one scalar for every step."""
    return tl.load(b_ptr + rows * (0 if TAPS > 0 else 1), mask=rmask, other=0.0).to(tl.float32)


@triton.jit
def _store_taps(gw, gb, rows, gt_row, TAPS: tl.constexpr):
    """The sliding PSN's parameter gradients from this program's partial ``grad_W`` and ``grad_b``: tap ``i``
    sums the diagonal ``t - j = k - 1 - i``, the scalar bias sums ``grad_b``; stored as ``gt_row[0..k]``."""
    lag = rows[:, None] - rows[None, :]
    for i in tl.static_range(TAPS):
        tl.store(gt_row + i, tl.sum(tl.sum(tl.where(lag == TAPS - 1 - i, gw, 0.0), axis=1), axis=0))
    tl.store(gt_row + TAPS, tl.sum(gb, axis=0))


@triton.jit
def _lambda(lam_ptr, BAND: tl.constexpr):
    """The masked PSN's λ (fp32, read on the device: no host sync), or 1.0 without a band."""
    return tl.load(lam_ptr).to(tl.float32) if BAND > 0 else 1.0


@triton.jit
def _membrane(x_ptr, w_ptr, lam, b_ptr, stride_xt, cols, cmask, rows, rmask, T: tl.constexpr, T_PAD: tl.constexpr,
              BLOCK: tl.constexpr, BAND: tl.constexpr, TAPS: tl.constexpr):  # fmt: skip
    """``h = W·x + b`` for one ``[T_PAD, BLOCK]`` tile, in fp32, summed over inputs oldest first."""
    acc = tl.zeros([T_PAD, BLOCK], dtype=tl.float32)
    for j in range(T):
        xj = tl.load(x_ptr + j * stride_xt + cols, mask=cmask, other=0.0).to(tl.float32)
        wj = _w_column(w_ptr, lam, rows, rmask, j, T, BAND, TAPS)
        acc += wj[:, None] * xj[None, :]
    b = _bias(b_ptr, rows, rmask, TAPS)
    return acc + b[:, None]


@triton.jit
def _tile(ptr, stride_t, rows, rmask, cols, cmask):
    """The ``[T_PAD, BLOCK]`` tile of a ``[T, N]`` tensor, in fp32 (zeros outside it)."""
    mask = rmask[:, None] & cmask[None, :]
    return tl.load(ptr + rows[:, None] * stride_t + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _matrix(w_ptr, lam, rows, rmask, T: tl.constexpr, BAND: tl.constexpr, TAPS: tl.constexpr):
    """The effective ``W`` as a ``[T_PAD, T_PAD]`` fp32 tile (zeros outside ``[T, T]``; masked or built from taps
    as in :func:`_w_column`)."""
    if TAPS > 0:
        lag = rows[:, None] - rows[None, :]
        inside = rmask[:, None] & rmask[None, :] & (lag >= 0) & (lag < TAPS)
        return tl.load(w_ptr + (TAPS - 1 - lag), mask=inside, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + rows[:, None] * T + rows[None, :], mask=rmask[:, None] & rmask[None, :], other=0.0)
    w = w.to(tl.float32)
    if BAND > 0:
        w = _mask_factor(rows, lam, BAND) * w
    return w


@triton.jit
def _forward_kernel(x_ptr, w_ptr, lam_ptr, b_ptr, out_ptr, N, stride_xt, stride_ot, T: tl.constexpr,
                    T_PAD: tl.constexpr, BLOCK: tl.constexpr, DOT: tl.constexpr, BAND: tl.constexpr,
                    TAPS: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    lam = _lambda(lam_ptr, BAND)
    cols = pid * BLOCK + tl.arange(0, BLOCK)
    cmask = cols < N
    rows = tl.arange(0, T_PAD)
    rmask = rows < T
    if DOT:  # one fp32 matrix product of the tile (IEEE: no TF32 rounding)
        x = _tile(x_ptr, stride_xt, rows, rmask, cols, cmask)
        b = _bias(b_ptr, rows, rmask, TAPS)
        h = tl.dot(_matrix(w_ptr, lam, rows, rmask, T, BAND, TAPS), x, input_precision="ieee") + b[:, None]
    else:
        h = _membrane(x_ptr, w_ptr, lam, b_ptr, stride_xt, cols, cmask, rows, rmask, T, T_PAD, BLOCK, BAND, TAPS)
    spikes = tl.where(h >= 0.0, 1.0, 0.0).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + rows[:, None] * stride_ot + cols[None, :], spikes, mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _backward_kernel(x_ptr, w_ptr, lam_ptr, b_ptr, g_ptr, gx_ptr, gw_ptr, gb_ptr, alpha, N, blocks, stride_xt,
                     stride_gt, stride_gxt, stride_pw, stride_pb, T: tl.constexpr, T_PAD: tl.constexpr,
                     BLOCK: tl.constexpr, KIND: tl.constexpr, NEED_X: tl.constexpr, NEED_W: tl.constexpr,
                     NEED_B: tl.constexpr, DOT: tl.constexpr, BAND: tl.constexpr, TAPS: tl.constexpr):  # fmt: skip
    """Per program: ``grad_W``/``grad_b`` partials into ``gw_ptr + pid·stride_pw``/``gb_ptr + pid·stride_pb``
    (``[T, T]``/``[T]``: one buffer can hold both, summed at once); for the sliding PSN (``TAPS = k``) the taps' and
    the scalar bias's partials into ``gb_ptr + pid·stride_pb`` (``k + 1`` values) instead."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    rows = tl.arange(0, T_PAD)
    rmask = rows < T
    gb = tl.zeros([T_PAD], dtype=tl.float32)
    gw = tl.zeros([T_PAD, T_PAD], dtype=tl.float32)  # this program's partial grad_W, in registers (T <= 32)
    gw_tile = gw_ptr + pid * stride_pw + rows[:, None] * T + rows[None, :]
    gw_mask = rmask[:, None] & rmask[None, :]
    lam = _lambda(lam_ptr, BAND)
    if DOT:
        gb_row = gb_ptr + pid * stride_pb
        _dot_backward_blocks(x_ptr, w_ptr, lam, b_ptr, g_ptr, gx_ptr, gw_tile, gw_mask, gb_row, alpha, N, blocks,
                             stride_xt, stride_gt, stride_gxt, rows, rmask, T, BLOCK, KIND, NEED_X, NEED_W, NEED_B,
                             BAND, TAPS)  # fmt: skip
    else:
        if NEED_W and T_PAD > 32:  # longer sequences accumulate in global memory (one program reads what it wrote)
            tl.store(gw_tile, gw, mask=gw_mask)
        for blk in range(pid, blocks, programs):
            cols = blk * BLOCK + tl.arange(0, BLOCK)
            cmask = cols < N
            tile = rmask[:, None] & cmask[None, :]
            h = _membrane(x_ptr, w_ptr, lam, b_ptr, stride_xt, cols, cmask, rows, rmask, T, T_PAD, BLOCK, BAND, TAPS)
            g = tl.load(g_ptr + rows[:, None] * stride_gt + cols[None, :], mask=tile, other=0.0).to(tl.float32)
            gh = tl.where(tile, g * surrogate_grad(h, alpha, KIND), 0.0)
            if NEED_X:  # grad_x[j] = Σ_t W[t, j]·grad_h[t]
                for j in range(T):
                    wj = _w_column(w_ptr, lam, rows, rmask, j, T, BAND, TAPS)
                    gxj = tl.sum(wj[:, None] * gh, axis=0)
                    tl.store(gx_ptr + j * stride_gxt + cols, rounded_to(gxj, gx_ptr.dtype.element_ty), mask=cmask)
            if NEED_W:  # grad_W[:, j] += Σ_n grad_h[:, n]·x[j, n]
                block_gw = tl.zeros([T_PAD, T_PAD], dtype=tl.float32)
                for j in range(T):
                    xj = tl.load(x_ptr + j * stride_xt + cols, mask=cmask, other=0.0).to(tl.float32)
                    column = tl.sum(gh * xj[None, :], axis=1)
                    block_gw += tl.where(rows[None, :] == j, column[:, None], 0.0)
                if BAND > 0:  # the raw W's gradient: the effective one's times the mask factor
                    block_gw = _mask_factor(rows, lam, BAND) * block_gw
                if T_PAD > 32:
                    tl.debug_barrier()  # every thread's earlier store of the partial is visible before it is read
                    tl.store(gw_tile, tl.load(gw_tile, mask=gw_mask, other=0.0) + block_gw, mask=gw_mask)
                    tl.debug_barrier()
                else:
                    gw += block_gw
            if NEED_B:
                gb += tl.sum(gh, axis=1)
        if TAPS > 0:
            if NEED_W and T_PAD > 32:  # the partial grad_W is in memory: read it back (after the last stores)
                tl.debug_barrier()
                gw = tl.load(gw_tile, mask=gw_mask, other=0.0)
            _store_taps(gw, gb, rows, gb_ptr + pid * stride_pb, TAPS)
        else:
            if NEED_W and T_PAD <= 32:
                tl.store(gw_tile, gw, mask=gw_mask)
            if NEED_B:
                tl.store(gb_ptr + pid * stride_pb + rows, gb, mask=rmask)


@triton.jit
def _dot_backward_blocks(x_ptr, w_ptr, lam, b_ptr, g_ptr, gx_ptr, gw_tile, gw_mask, gb_row, alpha, N, blocks, stride_xt,
                         stride_gt, stride_gxt, rows, rmask, T: tl.constexpr, BLOCK: tl.constexpr, KIND: tl.constexpr,
                         NEED_X: tl.constexpr, NEED_W: tl.constexpr, NEED_B: tl.constexpr, BAND: tl.constexpr,
                         TAPS: tl.constexpr):  # fmt: skip
    """The backward's column blocks ``pid, pid + G, ...`` with the three products as fp32 ``tl.dot``: ``h = W·x + b``,
    ``grad_x = Wᵀ·grad_h`` and this program's ``grad_W += grad_h·xᵀ`` (kept in registers, ``T_PAD <= 32``)."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    w = _matrix(w_ptr, lam, rows, rmask, T, BAND, TAPS)
    b = _bias(b_ptr, rows, rmask, TAPS)
    gw = tl.zeros_like(w)
    gb = tl.zeros_like(b)
    for blk in range(pid, blocks, programs):
        cols = blk * BLOCK + tl.arange(0, BLOCK)
        cmask = cols < N
        tile = rmask[:, None] & cmask[None, :]
        x = _tile(x_ptr, stride_xt, rows, rmask, cols, cmask)
        h = tl.dot(w, x, input_precision="ieee") + b[:, None]
        g = _tile(g_ptr, stride_gt, rows, rmask, cols, cmask)
        gh = tl.where(tile, g * surrogate_grad(h, alpha, KIND), 0.0)
        if NEED_X:
            gx = tl.dot(tl.trans(w), gh, input_precision="ieee")
            gx = rounded_to(gx, gx_ptr.dtype.element_ty)
            tl.store(gx_ptr + rows[:, None] * stride_gxt + cols[None, :], gx, mask=tile)
        if NEED_W:
            gw = tl.dot(gh, tl.trans(x), acc=gw, input_precision="ieee")
        if NEED_B:
            gb += tl.sum(gh, axis=1)
    if NEED_W and BAND > 0:  # the raw W's gradient: the effective one's times the mask factor
        gw = _mask_factor(rows, lam, BAND) * gw
    if TAPS > 0:
        _store_taps(gw, gb, rows, gb_row, TAPS)
    else:
        if NEED_W:
            tl.store(gw_tile, gw, mask=gw_mask)
        if NEED_B:
            tl.store(gb_row + rows, gb, mask=rmask)


#: Padded lengths T_PAD whose kernels do their products with ``tl.dot`` (it needs every side >= 16; at 64 the
#: backward's ``W``, ``grad_W`` partial and tiles spill: ``benchmarks.kernel_resources``); other T run the
#: multiply-add loop. Measured on an H200 (docs/benchmarks/cuda, PSN fwd+bwd at N = 2^22): 1.55 ms against the
#: loop's 2.76 ms at T = 16, 2.85 against 6.86 ms at T = 32.
DOT_T_PAD = (16, 32)


def use_dot(T: int) -> bool:
    return pow2(T) in DOT_T_PAD


def backward_block(T: int) -> int:
    """Columns per backward block: :func:`column_block`'s, halved for the ``tl.dot`` kernels (their operands and
    ``grad_W`` partial would spill at T = 32 otherwise: ``benchmarks.kernel_resources``)."""
    block = column_block(T, backward=True)
    return max(16, block // 2) if use_dot(T) and not interpreting() else block


def supports(T: int) -> bool:
    return T <= MAX_T


class TritonThreshold(torch.autograd.Function):
    """``S = Θ(W @ x + b[:, None])`` on any ``[T, *]`` layout of ``x`` (fp32/fp16/bf16); spikes and ``grad_x`` in
    ``x``'s dtype and layout, ``grad_W``/``grad_b`` in the parameters' dtypes, accumulated in fp32.

    ``apply(x_seq, weight, bias, surrogate, band=0, lambda_=1.0, taps=0)``. ``band = k > 0``: the masked PSN, whose
    ``W ⊙ (λ·M_k + (1 − λ)·J)`` the kernels make from the raw ``W`` and ``λ`` (a 0-d tensor, read on the device), so
    no masked matrix or autograd graph is built per call and the host never waits for λ; ``W`` gets the raw
    gradient, ``λ`` none (it is the schedule's, not trained). ``taps = k > 0``: the sliding PSN, ``weight`` its
    ``[k]`` taps and ``bias`` its scalar; the kernels build the Toeplitz band from the taps and sum its gradient back
    onto them (no ``[T, T]`` matrix, index or autograd graph of small ops per call)."""

    @staticmethod
    def forward(
        ctx: Any,
        x_seq: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        surrogate: Surrogate,
        band: int = 0,
        lambda_: torch.Tensor | float = 1.0,
        taps: int = 0,
    ):
        perm = column_order(x_seq) or list(range(x_seq.dim()))
        x2d = as_columns(x_seq, perm)
        T, N = x2d.shape
        weight_c, bias_c = weight.detach().contiguous(), bias.detach().contiguous()
        lam = weight_c  # read only with a band
        if band:
            lam = torch.as_tensor(lambda_, device=weight.device).detach().to(torch.float32).reshape(())
        out, out2d = new_columns(x_seq, perm, x_seq.dtype)
        block = column_block(T)
        if N:
            _forward_kernel[(cdiv(N, block),)](
                x2d, weight_c, lam, bias_c, out2d, N, x2d.stride(0), out2d.stride(0),
                T=T, T_PAD=pow2(T), BLOCK=block, DOT=use_dot(T), BAND=band, TAPS=taps,
            )  # fmt: skip
        ctx.save_for_backward(x2d, weight_c, bias_c, lam)
        ctx.perm, ctx.shape, ctx.surrogate, ctx.band, ctx.taps = perm, x_seq.shape, surrogate, band, taps
        ctx.param_dtypes = weight.dtype, bias.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad_spike: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        _backend.refuse_create_graph("TritonThreshold")
        x2d, weight, bias, lam = ctx.saved_tensors
        T, N = x2d.shape
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g2d = as_columns(grad_spike, ctx.perm)
        grad_seq, gx2d = new_columns(grad_spike, ctx.perm, x2d.dtype) if need_x else (None, g2d)
        block = backward_block(T)
        blocks = cdiv(N, block)
        programs = max(1, programs_for_reduction(blocks, x2d.device))
        # grad_W partials [T, T] per program: the sliding PSN's go straight into its taps' partials, except where the
        # multiply-add loop keeps them in memory (T_PAD > 32)
        keeps_w = need_w and (not ctx.taps or (not use_dot(T) and pow2(T) > 32))
        need_partials = need_b or (need_w and bool(ctx.taps))
        if ctx.taps:  # [programs, k + 1]: the taps' and the bias's partials (+ the loop's [T, T] in memory)
            gw = torch.empty(programs, T * T, dtype=torch.float32, device=x2d.device) if keeps_w else x2d
            # always allocated (k + 1 floats a program): the kernels store the taps' partials unconditionally
            gb = torch.empty(programs, ctx.taps + 1, dtype=torch.float32, device=x2d.device)
            stride_pw, stride_pb, partials = T * T, ctx.taps + 1, gb
        else:  # one [programs, T·T + T] buffer for both (one allocation, one sum)
            row_w, row_b = T * T if keeps_w else 0, T if need_b else 0
            partials = x2d
            if row_w + row_b:
                partials = torch.empty(programs, row_w + row_b, dtype=torch.float32, device=x2d.device)
            gw = partials if keeps_w else x2d
            gb = partials[:, row_w:] if need_b else x2d
            stride_pw = stride_pb = row_w + row_b
        if N:
            _backward_kernel[(programs,)](
                x2d, weight, lam, bias, g2d, gx2d, gw, gb, ctx.surrogate.alpha, N, blocks,
                x2d.stride(0), g2d.stride(0), gx2d.stride(0), stride_pw, stride_pb,
                T=T, T_PAD=pow2(T), BLOCK=block, KIND=surrogate_kind(ctx.surrogate),
                NEED_X=need_x, NEED_W=need_w, NEED_B=need_b, DOT=use_dot(T), BAND=ctx.band, TAPS=ctx.taps,
            )  # fmt: skip
        elif need_w or need_b:
            partials.zero_()
        if ctx.taps:
            summed = gb.sum(0) if need_partials else None
            grad_w = summed[: ctx.taps].to(ctx.param_dtypes[0]) if need_w else None
            grad_b = summed[ctx.taps].to(ctx.param_dtypes[1]) if need_b else None
            return grad_seq, grad_w, grad_b, None, None, None, None
        summed = partials.sum(0) if need_w or need_b else None
        grad_w = summed[: T * T].view(T, T).to(ctx.param_dtypes[0]) if need_w else None
        grad_b = summed[T * T if need_w else 0 :].to(ctx.param_dtypes[1]) if need_b else None
        return grad_seq, grad_w, grad_b, None, None, None, None
