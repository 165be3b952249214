"""Triton kernels for the serial neurons: IF, LIF, PLIF and LIF without reset (hard, soft or no reset).

One program owns a block of columns and walks T with the membrane in registers, doing the same operations in the
same order as :mod:`._lif_kernels` (IEEE division for ``1/τ``, no fused multiply-adds: the kernels are launched with
``enable_fp_fusion=False``), in fp32: the spikes and membranes are those of the PyTorch path, bit for bit.

- Forward reads ``x`` and ``v0`` once and writes the spikes and ``v_last``. It stores no membrane.
- Backward recomputes the membrane sequence from ``x``, then runs the reverse scan: surrogate and reset derivative
  in registers, ``grad_x``, ``grad_v0`` and, for PLIF, a per-program fp32 partial of ``∂L/∂q`` summed afterwards in
  a fixed order. Up to ``T = REGISTER_T_MAX`` the recomputed membrane stays in registers (the loops are unrolled),
  so a forward + backward moves 5 ``[T, N]`` tensors (SpikingJelly's, which stores ``H`` in its forward: 6); longer
  sequences keep it in an fp32 ``[T, N]`` buffer (the ``grad_x`` buffer when that is fp32).
"""

from __future__ import annotations

import functools
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
    rounded_to,
    surrogate_grad,
    surrogate_kind,
)
from .surrogate import Surrogate

#: Longest T whose backward keeps the recomputed membrane in registers (reads X and ∂L/∂S once, writes ∂L/∂X once;
#: longer sequences go through an fp32 [T, N] buffer: one more write and read). Measured on an H200
#: (docs/benchmarks/cuda, LIF fwd+bwd at N = 2^22): at T = 32 the register path (254 registers a thread, few warps
#: resident) took 1.86 ms against 1.51 ms through memory, at T = 16 1.17 against 1.15 ms (a tie: registers keep
#: the bf16 path free of an fp32 scratch buffer). PLIF also carries V[t-1] and X[t]: beyond T = 16 it would spill.
REGISTER_T_MAX = {"if": 16, "lif": 16, "plif": 16}
_KINDS = {"if": 0, "lif": 1, "plif": 2}
_RESETS = {"hard": 0, "soft": 1, "none": 2}


@triton.jit
def _charge(v, x, tau, q, r, KIND: tl.constexpr, DECAY_INPUT: tl.constexpr):
    """``H[t]`` from ``V[t-1]`` and ``X[t]`` (IF: ``KIND = 0``; LIF: 1, divides by τ; PLIF: 2, multiplies by q)."""
    if KIND == 0:
        h = v + x
    else:
        leak = v - r
        if DECAY_INPUT:
            d = tl.math.div_rn(x - leak, tau) if KIND == 1 else (x - leak) * q
            h = d + v
        else:
            d = tl.math.div_rn(leak, tau) if KIND == 1 else leak * q
            h = (v - d) + x
    return h


@triton.jit
def _after_fire(h, v_threshold, r, RESET: tl.constexpr):
    """``V[t]`` from ``H[t]``: hard reset to ``r``, soft reset (subtract the threshold) or none."""
    if RESET == 0:
        v = tl.where(h >= v_threshold, r, h)  # a NaN membrane stays NaN, as in SpikingJelly
    elif RESET == 1:
        v = tl.where(h >= v_threshold, h - v_threshold, h)
    else:
        v = h
    return v


@triton.jit
def _forward_kernel(x_ptr, v0_ptr, q_ptr, out_ptr, v_ptr, N, stride_xt, stride_ot, tau, v_threshold, r, v_init,
                    T: tl.constexpr, BLOCK: tl.constexpr, KIND: tl.constexpr, DECAY_INPUT: tl.constexpr,
                    RESET: tl.constexpr, HAS_V0: tl.constexpr):  # fmt: skip
    """``HAS_V0``: the initial membrane is read from ``v0_ptr``; else every column starts at ``v_init``."""
    pid = tl.program_id(0)
    cols = pid * BLOCK + tl.arange(0, BLOCK)
    cmask = cols < N
    v = _initial(v0_ptr, cols, cmask, v_init, BLOCK, HAS_V0)
    q = tl.load(q_ptr).to(tl.float32) if KIND == 2 else 0.0
    for t in range(T):
        x = tl.load(x_ptr + t * stride_xt + cols, mask=cmask, other=0.0).to(tl.float32)
        h = _charge(v, x, tau, q, r, KIND, DECAY_INPUT)
        spike = tl.where(h >= v_threshold, 1.0, 0.0)
        tl.store(out_ptr + t * stride_ot + cols, spike.to(out_ptr.dtype.element_ty), mask=cmask)
        v = _after_fire(h, v_threshold, r, RESET)
    tl.store(v_ptr + cols, v.to(v_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _initial(v0_ptr, cols, cmask, v_init, BLOCK: tl.constexpr, HAS_V0: tl.constexpr):
    """``V[-1]`` of a block of columns (fp32): read, or the constant ``v_init`` (a fresh state: no tensor made)."""
    if HAS_V0:
        v = tl.load(v0_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    else:
        v = tl.zeros([BLOCK], dtype=tl.float32) + v_init
    return v


@triton.jit
def _reverse_step(h, gs, carry, v_prev, x, tau, q, v_threshold, r, alpha, KIND: tl.constexpr,
                  DECAY_INPUT: tl.constexpr, RESET: tl.constexpr, DETACH: tl.constexpr,
                  SURROGATE: tl.constexpr):  # fmt: skip
    """One step of the reverse scan: ``(grad_x[t], carry into t-1, ∂L/∂q contribution)`` from ``H[t]``,
    ``∂L/∂S[t]``, the carried ``∂L/∂V[t]`` and (PLIF) ``V[t-1]`` and ``X[t]``."""
    sg = surrogate_grad(h - v_threshold, alpha, SURROGATE)
    if RESET == 2:  # dV/dH = 1
        gh = carry + gs * sg
    elif RESET == 1:  # dV/dH = 1 - V_th·sg unless detached
        gh = carry + gs * sg if DETACH else carry + sg * (gs - v_threshold * carry)
    else:  # hard: dV/dH = 1 - Θ(H) (+ (r - H)·sg unless detached)
        kept = tl.where(h >= v_threshold, 0.0, carry)
        gh = kept + gs * sg if DETACH else kept + sg * (gs + carry * (r - h))
    dq = gh * 0.0
    if KIND == 0:
        gx = gh
        carry = gh
    else:
        decay = tl.math.div_rn(gh, tau) if KIND == 1 else gh * q
        gx = decay if DECAY_INPUT else gh
        carry = gh - decay
        if KIND == 2:  # ∂H/∂q = X - (V[t-1] - r) (decay_input) or -(V[t-1] - r)
            leak = v_prev - r
            dq = gh * (x - leak) if DECAY_INPUT else -(gh * leak)
    return gx, carry, dq


@triton.jit
def _backward_kernel(x_ptr, v0_ptr, q_ptr, g_ptr, gv_ptr, gx_ptr, h_ptr, gv0_ptr, gq_ptr, N, stride_xt, stride_gt,
                     stride_gxt, stride_ht, tau, v_threshold, r, alpha, v_init, T: tl.constexpr, BLOCK: tl.constexpr,
                     KIND: tl.constexpr, DECAY_INPUT: tl.constexpr, RESET: tl.constexpr, DETACH: tl.constexpr,
                     SURROGATE: tl.constexpr, HAS_GV: tl.constexpr, IN_REGISTERS: tl.constexpr,
                     HAS_V0: tl.constexpr, NEED_GV0: tl.constexpr):  # fmt: skip
    """``IN_REGISTERS``: the recomputed ``H[0..T-1]`` stay in registers (loops unrolled, T <= REGISTER_T_MAX);
    else they go through the fp32 ``h_ptr`` buffer. ``HAS_V0`` as in the forward; ``NEED_GV0``: store
    ``∂L/∂V[-1]``."""
    pid = tl.program_id(0)
    cols = pid * BLOCK + tl.arange(0, BLOCK)
    cmask = cols < N
    v0 = _initial(v0_ptr, cols, cmask, v_init, BLOCK, HAS_V0)
    q = tl.load(q_ptr).to(tl.float32) if KIND == 2 else 0.0
    if HAS_GV:
        carry = tl.load(gv_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([BLOCK], dtype=tl.float32)
    gq = tl.zeros([BLOCK], dtype=tl.float32)
    x = gq  # X[t] is read again only for PLIF with decay_input
    v = v0
    if IN_REGISTERS:
        hs = ()
        for t in tl.static_range(T):  # the forward again, keeping H[t] (fp32) in registers
            xt = tl.load(x_ptr + t * stride_xt + cols, mask=cmask, other=0.0).to(tl.float32)
            h = _charge(v, xt, tau, q, r, KIND, DECAY_INPUT)
            hs = hs + (h,)  # noqa: RUF005 (Triton builds tuples by concatenation, not unpacking)
            v = _after_fire(h, v_threshold, r, RESET)
        for i in tl.static_range(T):  # step t = T - 1 - i (spelled out: tuple indices must stay constexpr)
            v_prev = v0
            if i < T - 1:
                v_prev = _after_fire(hs[T - 2 - i], v_threshold, r, RESET)
            gs = tl.load(g_ptr + (T - 1 - i) * stride_gt + cols, mask=cmask, other=0.0).to(tl.float32)
            if KIND == 2 and DECAY_INPUT:
                x = tl.load(x_ptr + (T - 1 - i) * stride_xt + cols, mask=cmask, other=0.0).to(tl.float32)
            gx, carry, dq = _reverse_step(hs[T - 1 - i], gs, carry, v_prev, x, tau, q, v_threshold, r, alpha, KIND,
                                          DECAY_INPUT, RESET, DETACH, SURROGATE)  # fmt: skip
            if KIND == 2:
                gq += dq
            gx = rounded_to(gx, gx_ptr.dtype.element_ty)
            tl.store(gx_ptr + (T - 1 - i) * stride_gxt + cols, gx, mask=cmask)
    else:
        for t in range(T):  # the forward again, keeping H[t] (fp32) for the reverse scan
            xt = tl.load(x_ptr + t * stride_xt + cols, mask=cmask, other=0.0).to(tl.float32)
            h = _charge(v, xt, tau, q, r, KIND, DECAY_INPUT)
            tl.store(h_ptr + t * stride_ht + cols, h, mask=cmask)
            v = _after_fire(h, v_threshold, r, RESET)
        for i in range(T):
            t = T - 1 - i
            h = tl.load(h_ptr + t * stride_ht + cols, mask=cmask, other=0.0)
            gs = tl.load(g_ptr + t * stride_gt + cols, mask=cmask, other=0.0).to(tl.float32)
            v_prev = v0
            if KIND == 2:
                h_prev = tl.load(h_ptr + (t - 1) * stride_ht + cols, mask=cmask & (t > 0), other=0.0)
                v_prev = tl.where(t > 0, _after_fire(h_prev, v_threshold, r, RESET), v0)
                if DECAY_INPUT:
                    x = tl.load(x_ptr + t * stride_xt + cols, mask=cmask, other=0.0).to(tl.float32)
            gx, carry, dq = _reverse_step(h, gs, carry, v_prev, x, tau, q, v_threshold, r, alpha, KIND,
                                          DECAY_INPUT, RESET, DETACH, SURROGATE)  # fmt: skip
            if KIND == 2:
                gq += dq
            tl.store(gx_ptr + t * stride_gxt + cols, rounded_to(gx, gx_ptr.dtype.element_ty), mask=cmask)
    if NEED_GV0:
        tl.store(gv0_ptr + cols, carry.to(gv0_ptr.dtype.element_ty), mask=cmask)
    if KIND == 2:
        tl.store(gq_ptr + pid, tl.sum(tl.where(cmask, gq, 0.0), axis=0))


def backward_block(T: int, in_registers: bool) -> int:
    """Columns per backward program: with ``H`` in registers, ``T_pad * block <= 4096`` (32 fp32 values per
    thread of 4 warps, checked by ``benchmarks.kernel_resources``); else the forward's block."""
    if not in_registers or interpreting():
        return column_block(1)
    return max(128, min(column_block(1), 4096 // pow2(T)))


class TritonSerial(torch.autograd.Function):
    """``(spikes [T, *], v_last [*]) = f(x_seq [T, *], v0, q)``; ``v0`` is the initial membrane ``[*]`` or a number
    (a fresh state: every neuron starts there, no tensor is made); ``q = sigmoid(w)`` for PLIF (a 0-d tensor) or None.
    ``v_last`` and ``grad_v0`` are fp32 (the membrane state), spikes and ``grad_x`` in ``x``'s dtype."""

    @staticmethod
    def forward(
        ctx: Any,
        x_seq: torch.Tensor,
        v0: torch.Tensor | float,
        q: torch.Tensor | None,
        tau: float | None,
        decay_input: bool,
        v_threshold: float,
        r: float,
        reset_mode: str,
        detach_reset: bool,
        surrogate: Surrogate,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)  # an unused v_last (or spikes) gets no zeros tensor in backward
        perm = column_order(x_seq) or list(range(x_seq.dim()))
        x2d = as_columns(x_seq, perm)
        T, N = x2d.shape
        has_v0 = isinstance(v0, torch.Tensor)
        v0_1d = as_columns(v0.unsqueeze(0), perm)[0].to(torch.float32) if has_v0 else x2d
        v_init = 0.0 if has_v0 else initial_value(float(v0), x_seq.dtype)
        kind = "if" if tau is None and q is None else ("lif" if q is None else "plif")
        q_arg = q.detach().to(torch.float32).reshape(()) if q is not None else x2d
        out, out2d = new_columns(x_seq, perm, x_seq.dtype)
        v_last, v_last1d = new_columns(v0.unsqueeze(0) if has_v0 else x_seq[:1], perm, torch.float32)
        if N:
            _forward_kernel[(cdiv(N, block := column_block(1)),)](
                x2d, v0_1d, q_arg, out2d, v_last1d, N, x2d.stride(0), out2d.stride(0),
                float(tau or 1.0), float(v_threshold), float(r), v_init,
                T=T, BLOCK=block, KIND=_KINDS[kind], DECAY_INPUT=bool(decay_input), RESET=_RESETS[reset_mode],
                HAS_V0=has_v0, enable_fp_fusion=False,
            )  # fmt: skip
        ctx.save_for_backward(x2d, v0_1d if has_v0 else None, q_arg if q is not None else None)
        ctx.config = (kind, tau, decay_input, v_threshold, r, reset_mode, detach_reset, surrogate)
        ctx.perm, ctx.v0_dtype, ctx.v_init, ctx.x_shape = perm, v0.dtype if has_v0 else None, v_init, x_seq.shape
        return out, v_last[0]

    @staticmethod
    def backward(ctx: Any, grad_spikes: torch.Tensor | None, grad_v: torch.Tensor | None) -> tuple[Any, ...]:
        _backend.refuse_create_graph("TritonSerial")
        x2d, v0_1d, q = ctx.saved_tensors
        kind, tau, decay_input, v_threshold, r, reset_mode, detach_reset, surrogate = ctx.config
        T, N = x2d.shape
        if grad_spikes is None:  # only v_last reached the loss
            grad_spikes = torch.zeros(ctx.x_shape, dtype=x2d.dtype, device=x2d.device)
        g2d = as_columns(grad_spikes, ctx.perm)
        grad_seq, gx2d = new_columns(grad_spikes, ctx.perm, x2d.dtype)
        gv = as_columns(grad_v.unsqueeze(0), ctx.perm)[0] if grad_v is not None else x2d
        need_gv0 = v0_1d is not None and ctx.needs_input_grad[1]
        grad_v0, gv0_1d = new_columns(grad_spikes[:1], ctx.perm, torch.float32) if need_gv0 else (None, x2d)
        in_registers = REGISTER_T_MAX[kind] >= T
        scratch = gx2d  # H in memory: the grad_x buffer when it is fp32 (each step is read before it is written)
        if not in_registers and gx2d.dtype != torch.float32:
            scratch = torch.empty(T, N, dtype=torch.float32, device=x2d.device)
        block = backward_block(T, in_registers)
        blocks = cdiv(N, block)
        # PLIF: one ∂L/∂q partial per program (each program writes its own), summed below in a fixed order
        gq = x2d
        if q is not None:
            gq = torch.empty(blocks, dtype=torch.float32, device=x2d.device) if N else q.new_zeros(1)
        if N:
            _backward_kernel[(blocks,)](
                x2d, v0_1d if v0_1d is not None else x2d, q if q is not None else x2d, g2d, gv, gx2d, scratch,
                gv0_1d, gq, N, x2d.stride(0), g2d.stride(0), gx2d.stride(0), scratch.stride(0),
                float(tau or 1.0), float(v_threshold), float(r), surrogate.alpha, ctx.v_init,
                T=T, BLOCK=block, KIND=_KINDS[kind], DECAY_INPUT=bool(decay_input), RESET=_RESETS[reset_mode],
                DETACH=bool(detach_reset), SURROGATE=surrogate_kind(surrogate), HAS_GV=grad_v is not None,
                IN_REGISTERS=in_registers, HAS_V0=v0_1d is not None, NEED_GV0=need_gv0, enable_fp_fusion=False,
            )  # fmt: skip
        elif need_gv0:
            gv0_1d.zero_()
        grad_q = gq.sum() if q is not None and ctx.needs_input_grad[2] else None
        grad_v0 = grad_v0[0].to(ctx.v0_dtype) if need_gv0 else None
        return grad_seq, grad_v0, grad_q, None, None, None, None, None, None, None


@functools.cache
def initial_value(value: float, dtype: torch.dtype) -> float:
    """``value`` as a fresh membrane of an input in ``dtype`` holds it (rounded to that dtype, as
    ``torch.full_like(x, value)`` would: the PyTorch path's start), in fp32."""
    return float(torch.tensor(value, dtype=dtype).float())
