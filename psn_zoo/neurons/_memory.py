"""Fresh output buffers of the fused kernels, on transparent huge pages where Linux offers them.

A new CPU tensor of many megabytes comes from ``mmap``: its pages are mapped on first touch, one page
fault per 4 KiB, and on a small machine those faults cost more than the arithmetic that fills the tensor
(a 512 MiB ``clone`` spends about two thirds of its time in them). The kernels' large outputs (spikes, the
input gradient, LIF's stored membrane) are therefore advised ``MADV_HUGEPAGE`` before they are first
written, so the kernel maps them 2 MiB at a time — the same advice PyTorch gives every allocation under
``THP_MEM_ALLOC_ENABLE=1``, here limited to the buffers these kernels fill completely.

Nothing changes where it cannot help: off Linux, off the CPU, for tensors under :data:`MIN_BYTES`, when the
system's THP mode is ``never`` (or ``always``: then every page is huge already), or with the environment
variable ``PSN_ZOO_HUGE_PAGES=0``. Values are never affected, only how memory is mapped.

Advice makes the faults fewer, not free: the kernel still zeroes every fresh page, and glibc hands a freed
multi-MiB block straight back to the OS, so the next call's output faults again (at T = 16, N = 2^16 a PSN
forward + backward spent a third of its time so). :func:`fresh_like` therefore reuses its own CPU buffers: a
small pool of storages (:data:`POOL_MIN_BYTES` and up) that are handed out again once no tensor holds them any
more (the storage's reference count says so), like PyTorch's CUDA caching allocator. It keeps at most
:data:`POOL_PER_SIZE` buffers per size and ``$PSN_ZOO_BUFFER_POOL_MB`` MiB in all (default
:data:`POOL_DEFAULT_MB`; ``0`` switches the pool off); :func:`release_pool` frees what no tensor holds. When a new
size does not fit under the cap, free buffers of the least recently used sizes are dropped to make room, so sizes
a run no longer uses never lock the pool out of the sizes it does (a neuron swept over T filled a 256 MiB pool by
T = 27; from then on every new output faulted again: PSN fwd+bwd at T = 32, N = 2^16 took 3.44 ms instead of 2.57).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import torch

#: Linux's ``MADV_HUGEPAGE`` (``include/uapi/asm-generic/mman-common.h``).
MADV_HUGEPAGE = 14
HUGE_PAGE = 2 << 20
#: Smallest buffer worth advising: it holds at least one whole aligned huge page.
MIN_BYTES = 4 * HUGE_PAGE
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = THP_MODE_FILE) -> str | None:
    """The system's transparent-huge-page mode (``always``, ``madvise`` or ``never``), or None if unknown."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


@functools.cache
def _madvise() -> ctypes._CFuncPtr | None:
    """libc's ``madvise`` when advising can change anything here, else None (decided once per process)."""
    if not sys.platform.startswith("linux") or os.environ.get("PSN_ZOO_HUGE_PAGES", "1") == "0":
        return None
    if thp_mode() != "madvise":
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def advise_huge_pages(t: torch.Tensor) -> bool:
    """Ask the kernel to back the whole 2 MiB pages inside ``t``'s storage with huge pages.

    Call it before ``t`` is first written. Returns whether the advice was given (it is only advice: the
    kernel falls back to small pages when no huge page is free).
    """
    madvise = _madvise() if t.device.type == "cpu" and t.numel() * t.element_size() >= MIN_BYTES else None
    if madvise is None:  # the cheap checks first: this runs on every kernel call
        return False
    storage = t.untyped_storage()
    ptr, nbytes = storage.data_ptr(), storage.nbytes()
    start = -(-ptr // HUGE_PAGE) * HUGE_PAGE
    end = (ptr + nbytes) // HUGE_PAGE * HUGE_PAGE
    return end > start and madvise(start, end - start, MADV_HUGEPAGE) == 0


#: Smallest buffer the pool keeps (smaller ones come from malloc's heap without faults).
POOL_MIN_BYTES = 1 << 18
#: Buffers kept per size: the outputs of one layer's forward and backward, and a few layers' worth more.
POOL_PER_SIZE = 4
#: Default cap of the pool's total size, MiB (``$PSN_ZOO_BUFFER_POOL_MB`` overrides it; 0: no pool).
POOL_DEFAULT_MB = 256

_pool_lock = threading.Lock()
#: Buffers by size in bytes, least recently used size first.
_pool: OrderedDict[int, list[torch.UntypedStorage]] = OrderedDict()


@functools.cache
def pool_limit_bytes() -> int:
    """The pool's cap in bytes, read once per process from ``$PSN_ZOO_BUFFER_POOL_MB`` (0 when the reference
    count the pool relies on cannot be read in this PyTorch)."""
    raw = os.environ.get("PSN_ZOO_BUFFER_POOL_MB", str(POOL_DEFAULT_MB))
    try:
        mb = float(raw)
    except ValueError as err:
        raise ValueError(
            f"PSN_ZOO_BUFFER_POOL_MB must be a number of MiB (0 switches the pool off); got {raw!r}"
        ) from err
    if not math.isfinite(mb):
        raise ValueError(f"PSN_ZOO_BUFFER_POOL_MB must be a finite number of MiB (0: no pool); got {raw!r}")
    return int(mb * (1 << 20)) if mb > 0 and hasattr(torch._C, "_storage_Use_Count") else 0


def _free(storage: torch.UntypedStorage, nbytes: int) -> bool:
    """``storage`` can be handed out as a buffer of ``nbytes``: nothing outside the pool holds it (no tensor: its
    use count is the pool's 1; no Python name either: ``out.untyped_storage()`` returns this very object, and 4
    references are the pool's list, the caller's loop variable, this argument and getrefcount's own), and it is
    still the pool's (see :func:`_evict_foreign`)."""
    return (
        torch._C._storage_Use_Count(storage._cdata) == 1
        and sys.getrefcount(storage) <= 4
        and not _foreign(storage, nbytes)
    )


def _foreign(storage: torch.UntypedStorage, nbytes: int) -> bool:
    """No longer the pool's to hand out: moved to shared memory (a tensor on it was sent to another process, which
    may read it after this one lets go) or resized by a user (``resize_``: no longer ``nbytes``)."""
    return storage.is_shared() or storage.nbytes() != nbytes


def _evict_foreign(storages: list[torch.UntypedStorage], nbytes: int) -> None:
    """Drop the :func:`_foreign` buffers from ``storages``; they are freed when their last user lets go."""
    storages[:] = [st for st in storages if not _foreign(st, nbytes)]


def pooled_bytes() -> int:
    """Bytes the pool holds now (free or in use)."""
    with _pool_lock:
        return sum(st.nbytes() for storages in _pool.values() for st in storages)


def _drop_free(wanted: float, spare: int | None = None) -> int:
    """Drop free buffers, least recently used size first, until ``wanted`` bytes are released (``math.inf``: all of
    them), never those of size ``spare``; returns the bytes released. Call with the lock held; a buffer a tensor
    holds is never dropped."""
    released = 0
    for size in list(_pool):
        if released >= wanted:
            break
        if size == spare:
            continue
        kept = []
        _evict_foreign(_pool[size], size)
        for storage in _pool[size]:
            if released < wanted and _free(storage, size):
                released += size
            else:
                kept.append(storage)
        if kept:
            _pool[size] = kept
        else:
            del _pool[size]
    return released


def release_pool() -> int:
    """Drop the pool's free buffers (their memory goes back to malloc); returns the bytes released."""
    with _pool_lock:
        return _drop_free(math.inf)


def _make_room(nbytes: int, limit: int) -> bool:
    """Whether ``nbytes`` more fit under ``limit``, after dropping free buffers of other sizes (least recently used
    first) until they do. Call with the lock held."""
    excess = sum(size * len(storages) for size, storages in _pool.items()) + nbytes - limit
    return excess <= 0 or _drop_free(excess, spare=nbytes) >= excess


def _pooled_empty(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor | None:
    """A contiguous CPU tensor on a free pooled buffer (a new one if the pool has room), else None."""
    limit = pool_limit_bytes()
    nbytes = shape.numel() * dtype.itemsize
    if not limit or nbytes < POOL_MIN_BYTES:
        return None
    with _pool_lock:  # the tensor is made under the lock, so two threads never take the same free buffer
        storages = _pool.setdefault(nbytes, [])
        _pool.move_to_end(nbytes)
        for storage in storages:
            if _free(storage, nbytes):
                return torch.empty(0, dtype=dtype).set_(storage, 0, shape)  # no stride given: contiguous
        _evict_foreign(storages, nbytes)  # none free: make room of what is no longer the pool's
        if len(storages) >= POOL_PER_SIZE:
            return None
        if not _make_room(nbytes, limit):
            if not storages:
                del _pool[nbytes]
            return None
        storage = torch.UntypedStorage(nbytes)
        out = torch.empty(0, dtype=dtype).set_(storage, 0, shape)
        advise_huge_pages(out)
        storages.append(storage)
        return out


_scratch = threading.local()


def scratch_like(x: torch.Tensor, slot: int = 0) -> torch.Tensor:
    """A contiguous tensor shaped like ``x``, contents undefined, valid until this thread's next call with the same
    ``slot``: on the CPU a view of one per-thread buffer per slot and dtype, grown to the largest size asked for and
    reused chunk after chunk and call after call (a fresh multi-MiB allocation per chunk page-faults more than the
    arithmetic done in it costs); elsewhere a new tensor."""
    if not x.is_cpu:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    key = (slot, x.dtype)
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < x.numel():
        with torch.inference_mode(False):  # grown under inference_mode it would be an inference tensor, which no
            buffer = buffers[key] = torch.empty(x.numel(), dtype=x.dtype)  # later training call may write
    return buffer[: x.numel()].view(x.shape)


def release_scratch() -> int:
    """Drop this thread's scratch buffers (:func:`scratch_like`); returns the bytes they held. For measurements that
    must count what a call allocates, not what an earlier call left."""
    buffers = getattr(_scratch, "buffers", None) or {}
    held = sum(b.numel() * b.element_size() for b in buffers.values())
    _scratch.buffers = {}
    return held


def fresh_empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``, contiguous: a pooled buffer on the CPU where one is free
    (see :func:`fresh_like`)."""
    out = _pooled_empty(torch.Size(shape), dtype) if device.type == "cpu" else None
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=device)
        advise_huge_pages(out)
    return out


def fresh_like(t: torch.Tensor, memory_format: torch.memory_format = torch.preserve_format) -> torch.Tensor:
    """``torch.empty_like(t, memory_format=...)``: a pooled buffer where one is free (contiguous CPU tensors of
    :data:`POOL_MIN_BYTES` and up), else a new one, on huge pages when that helps (see the module docstring)."""
    if t.is_cpu and (
        memory_format == torch.contiguous_format or (memory_format == torch.preserve_format and t.is_contiguous())
    ):
        out = _pooled_empty(t.shape, t.dtype)
        if out is not None:
            return out
    out = torch.empty_like(t, memory_format=memory_format)
    advise_huge_pages(out)
    return out
