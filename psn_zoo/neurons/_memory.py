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
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
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


def fresh_like(t: torch.Tensor, memory_format: torch.memory_format = torch.preserve_format) -> torch.Tensor:
    """``torch.empty_like(t, memory_format=...)``, on huge pages when that helps (see the module docstring)."""
    out = torch.empty_like(t, memory_format=memory_format)
    advise_huge_pages(out)
    return out
