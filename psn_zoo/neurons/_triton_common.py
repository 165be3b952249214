"""What the Triton kernels share: the fused surrogate derivatives, ``[T, N]`` column views of any ``[T, *]`` layout,
and launch sizes.

Every kernel reads its inputs in their dtype (fp32, fp16 or bf16), computes in fp32 and writes spikes and input
gradients in the input's dtype. A kernel's program owns a block of columns (neurons) over all T steps.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ._backend import FUSED_SURROGATES, MAX_ELEMENTS, interpreting
from .surrogate import Surrogate

PI = math.pi


@triton.jit
def surrogate_grad(h, alpha, KIND: tl.constexpr):
    """``g'(h)`` in fp32: ATan (``KIND = 0``) ``(α/2) / (1 + (π α h / 2)²)``; Sigmoid (``KIND = 1``)
    ``α·σ(αh)·(1 − σ(αh))``."""
    if KIND == 0:
        a = alpha * 0.5
        ax = h * (a * 3.141592653589793)
        return tl.math.div_rn(a, 1.0 + ax * ax)
    else:
        s = tl.sigmoid(h * alpha)
        return (1.0 - s) * s * alpha


@triton.jit
def rounded_to(value, dtype: tl.constexpr):
    """fp32 ``value`` rounded to nearest-even in ``dtype``: the bf16 rounding is spelled out in integer arithmetic
    because Triton's CPU interpreter truncates fp32 -> bf16 (the GPU rounds; both now give the same bits)."""
    if dtype == tl.bfloat16:
        bits = value.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        # a NaN stays NaN (the carry would turn GPUs' canonical NaN 0x7FFFFFFF into -0.0): made quiet, so that its
        # top 16 bits are a NaN too (the interpreter's truncation would read 0x7F800001 as infinity)
        bits = tl.where(value != value, bits | 0x00400000, rounded)
        value = bits.to(tl.float32, bitcast=True)
    return value.to(dtype)


def pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (host code: ``triton.next_power_of_2`` is a constexpr function in Triton
    3.5+, about 5 µs a call on the host, and a launch asks for several)."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for launch grids (plain Python for the reason :func:`pow2` gives)."""
    return -(-a // b)


def surrogate_kind(surrogate: Surrogate) -> int:
    return FUSED_SURROGATES[type(surrogate)]


def _order(t: torch.Tensor) -> list[int]:
    """Dimensions ``1..`` of ``t`` from the slowest to the fastest in memory (size-1 dimensions kept in place)."""
    dims = list(range(1, t.dim()))
    return sorted(dims, key=lambda d: -t.stride(d) if t.shape[d] > 1 else 0, reverse=False)


def column_order(x: torch.Tensor) -> list[int] | None:
    """The permutation ``[0, *dims]`` that makes each step of ``x: [T, *]`` contiguous, or None if its steps are not
    dense (then the caller copies ``x`` to a contiguous tensor)."""
    if x.is_contiguous():  # the common case, without sorting strides (a few µs a call on the host)
        return list(range(x.dim()))
    perm = [0, *_order(x)]
    step = x.permute(perm)[0]
    return perm if step.is_contiguous() else None


def as_columns(t: torch.Tensor, perm: list[int]) -> torch.Tensor:
    """``t: [T, *]`` as ``[T, N]`` with unit column stride, columns in the memory order ``perm`` gives (a view when
    ``t`` is laid out that way and its last step's offset fits in int32, else a copy in that order)."""
    if t.is_contiguous() and perm == list(range(t.dim())):
        return t.view(t.shape[0], -1)
    p = t.permute(perm)
    columns = p[0].numel()
    overlapping = p.shape[0] > 1 and p.stride(0) < columns
    beyond_int32 = (p.shape[0] - 1) * p.stride(0) + columns > MAX_ELEMENTS  # the kernels' offsets are int32
    if not p[0].is_contiguous() or overlapping or beyond_int32:
        p = p.contiguous()
    if p.is_contiguous():
        return p.reshape(p.shape[0], -1)
    return p.as_strided((p.shape[0], p[0].numel()), (p.stride(0), 1))


def new_columns(like: torch.Tensor, perm: list[int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh tensor shaped like ``like`` whose steps are laid out in the order ``perm`` (as the input's), and its
    ``[T, N]`` view."""
    shape = [like.shape[d] for d in perm]
    flat = torch.empty(shape, dtype=dtype, device=like.device)
    if perm == list(range(len(perm))):
        return flat, flat.view(shape[0], -1)
    inverse = [perm.index(d) for d in range(len(perm))]
    return flat.permute(inverse), flat.view(shape[0], -1)


def column_block(T: int, backward: bool = False) -> int:
    """Columns per program: a ``[T_pad, block]`` fp32 tile of 4096 elements, 2048 for a backward pass (it holds
    the membrane and its gradient: no register spills, checked by ``benchmarks.kernel_resources``); larger under
    the interpreter, which runs programs one after another."""
    return _column_block(T, backward, interpreting())


@functools.cache
def _column_block(T: int, backward: bool, interpreted: bool) -> int:
    elements, widest = (1 << 16, 1 << 14) if interpreted else (2048 if backward else 4096, 1024)
    return max(16, min(widest, elements // pow2(T)))


def programs_for_reduction(blocks: int, device: torch.device) -> int:
    """Programs of a kernel that reduces parameter gradients: each walks blocks ``pid, pid + G, ...`` and keeps its
    own partial sum, which are added in a fixed order afterwards (deterministic, no float atomics)."""
    if device.type != "cuda":
        return min(blocks, 4)
    return min(blocks, 4 * _multiprocessors(device.index if device.index is not None else torch.cuda.current_device()))


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count
