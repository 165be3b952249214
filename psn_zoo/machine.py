"""What machine the numbers come from: the CPU, its SIMD features, the math libraries and the paths they take.

Float32 results of a BLAS or a vectorised kernel can depend on all of these (docs/numerics.md), so the pytest
header and every benchmark report print :func:`machine_summary`.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

#: The SIMD features that change which code paths the math libraries (and our kernel's build) take.
SIMD_FEATURES = (
    "sse4_2", "avx", "fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile",
    "asimd", "sve",
)  # fmt: skip
#: Environment variables that steer those paths (the CPU emulations the test suite runs under).
PATH_CONTROLS = (
    "PSN_ZOO_NATIVE", "PSN_ZOO_NATIVE_MARCH", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES",
)  # fmt: skip


@cache
def _cpuinfo() -> dict[str, str]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine()


def simd_features() -> list[str]:
    """The entries of :data:`SIMD_FEATURES` this CPU has (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    return [f for f in SIMD_FEATURES if f in flags]


def blas() -> str:
    """The BLAS and oneDNN torch was built with, from ``torch.__config__.show()``."""
    import torch

    found = []
    for line in torch.__config__.show().splitlines():
        line = line.strip(" -")
        if "Math Kernel Library" in line or "MKL-DNN" in line or line.startswith("BLAS_INFO"):
            found.append(line.split(" for ")[0].split(" (Git")[0])
    return "; ".join(found) or "unknown"


def numpy_dispatch() -> list[str]:
    """The SIMD targets numpy dispatches to on this CPU (after ``NPY_DISABLE_CPU_FEATURES``), beyond its baseline."""
    try:
        from numpy._core import _multiarray_umath as umath  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import _multiarray_umath as umath
    return [t for t in umath.__cpu_dispatch__ if umath.__cpu_features__.get(t)]


def machine_info() -> dict[str, Any]:
    """The facts as data (stored with benchmark results)."""
    import numpy as np
    import torch

    from .neurons import _native

    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "simd": simd_features(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas(),
        "numpy": np.__version__,
        "numpy_dispatch": numpy_dispatch(),
        "psn_kernel": _native.describe(),
        "controls": {name: os.environ[name] for name in PATH_CONTROLS if name in os.environ},
    }


def machine_summary() -> list[str]:
    """Three lines: the CPU and its SIMD features; the libraries and their paths; the path controls set."""
    info = machine_info()
    controls = " ".join(f"{k}={v}" for k, v in info["controls"].items()) or "none"
    return [
        f"cpu: {info['cpu']} ({info['machine']}; SIMD {' '.join(info['simd']) or 'unknown'})",
        f"math: torch CPU capability {info['torch_cpu_capability']}; {info['blas']}; numpy {info['numpy']} "
        f"(SIMD {' '.join(info['numpy_dispatch']) or 'baseline'}); PSN kernel: {info['psn_kernel']}",
        f"path controls: {controls}",
    ]
