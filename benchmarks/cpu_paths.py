"""Which code path each CPU-emulation control really changes, and that our kernel's results never change.

    python -m benchmarks.cpu_paths --out docs/benchmarks      # writes cpu_paths.md / cpu_paths.json

Each control (an environment variable read by torch, MKL, oneDNN, numpy or psn_zoo) is set alone in a fresh
process, which fingerprints the results of each library on fixed inputs: torch's vectorised elementwise functions,
MKL's GEMM (T = 2 … 16, the PSN family's shapes), oneDNN's convolution, numpy's transcendental functions, our fused
kernel (forward and backward, dense and banded) and the PyTorch path of the PSN neuron. A column that differs from
the run without controls shows that the control changed the path taken (and the rounding) there. The inputs are
made from integers divided by 7 in float64, so they are the same bits on every machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: One control per row (``{}``: none, the reference).
CONTROLS: list[dict[str, str]] = [
    {},
    {"PSN_ZOO_NATIVE_MARCH": "x86-64-v3"},
    {"PSN_ZOO_NATIVE_MARCH": "x86-64"},
    {"PSN_ZOO_NATIVE": "0"},
    {"ATEN_CPU_CAPABILITY": "avx2"},
    {"ATEN_CPU_CAPABILITY": "default"},
    {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    {"MKL_CBWR": "COMPATIBLE"},
    {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    {"NPY_DISABLE_CPU_FEATURES": "X86_V4"},  # numpy >= 2.4's names: X86_V4 = AVX-512 (SKX), X86_V3 = AVX2 + FMA
    {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4"},
]
COLUMNS = ("torch_capability", "torch_elementwise", "mkl_gemm", "onednn_conv", "numpy", "psn_kernel", "psn_pytorch")


def _inputs(*shape: int, seed: int) -> Any:
    import numpy as np
    import torch

    values = np.random.default_rng(seed).integers(-3000, 3000, shape) / 7.0  # float64, correctly rounded anywhere
    return torch.from_numpy(values.astype(np.float32))


def _digest(*tensors: Any) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def probe() -> dict[str, Any]:
    """The fingerprints of this process (its environment holds the control under test)."""
    import numpy as np
    import torch

    from psn_zoo.machine import numpy_dispatch
    from psn_zoo.neurons import _native, _psn_kernels, make_surrogate

    torch.set_num_threads(1)
    a = _inputs(4096, seed=1) / 300
    elementwise = _digest(a.exp(), a.log1p().nan_to_num(), a.tanh(), a.sigmoid(), a.sin())
    gemm = _digest(*(torch.mm(_inputs(T, T, seed=T), _inputs(T, 1024, seed=100 + T)) for T in range(2, 17)))
    conv = torch.nn.functional.conv2d(_inputs(2, 16, 12, 12, seed=3), _inputs(32, 16, 3, 3, seed=4) / 100, padding=1)
    x64 = np.asarray(a.double().numpy())
    npy = hashlib.sha256(
        b"".join(f(v).tobytes() for v in (x64, x64.astype(np.float32)) for f in (np.exp, np.sin, np.tanh))
    ).hexdigest()[:12]
    npy = f"{npy} ({' '.join(numpy_dispatch()) or 'baseline only'})"
    atan = make_surrogate("atan")
    results = []
    for T, band in ((2, None), (3, None), (5, None), (8, None), (11, None), (16, 3)):
        x, w = _inputs(T, 1000, seed=T), _inputs(T, T, seed=50 + T) / 1000
        b, g = _inputs(T, seed=70 + T) / 3000 - 0.5, _inputs(T, 1000, seed=90 + T)
        xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))
        spikes = _psn_kernels.DenseThreshold.apply(xg, wg, bg, atan, band)
        spikes.backward(g)
        results.append((spikes, xg.grad, wg.grad, bg.grad))
    kernel = _native.describe()
    fingerprint = _digest(*(t for r in results for t in r))
    return {
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_elementwise": elementwise,
        "mkl_gemm": gemm,
        "onednn_conv": _digest(conv),
        "numpy": npy,
        "psn_kernel": f"{fingerprint} ({kernel})" if _native.enabled() else f"- ({kernel})",
        "psn_pytorch": fingerprint if not _native.enabled() else "-",
    }


def run(controls: list[dict[str, str]] = CONTROLS) -> list[dict[str, Any]]:
    """:func:`probe` in a fresh process per control (the libraries read them once, at load)."""
    from psn_zoo.machine import PATH_CONTROLS

    rows = []
    unset = set(PATH_CONTROLS) | {name for control in controls for name in control}
    base = {k: v for k, v in os.environ.items() if k not in unset}  # each control alone, none inherited
    root = Path(__file__).resolve().parents[1]
    for control in controls:
        done = subprocess.run(
            [sys.executable, "-c", "import json, benchmarks.cpu_paths as p; print(json.dumps(p.probe()))"],
            env={**base, **control}, cwd=root, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"the probe failed under {control}:\n{done.stderr[-3000:]}")
        rows.append({"control": control, **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: each control's fingerprints, ``=`` where equal to the run without controls."""
    from psn_zoo.machine import machine_summary

    ref = rows[0]
    lines = ["| control | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in rows:
        name = " ".join(f"`{k}={v}`" for k, v in row["control"].items()) or "none (reference)"
        cells = [str(row[c]) if row is ref or row[c] != ref[c] else "=" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(["Machine: " + " / ".join(machine_summary()), "", *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for cpu_paths.md / cpu_paths.json (default: print only)")
    args = parser.parse_args(argv)
    rows = run()
    table = report(rows)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cpu_paths.md").write_text(f"# Which path each CPU-emulation control changes\n\n{table}\n")
        (args.out / "cpu_paths.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
