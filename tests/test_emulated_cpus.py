"""The kernel, parity and fingerprint tests again, in fresh processes that emulate other CPUs on this one.

Each emulation sets the controls that make the libraries take another CPU's code paths (which of them really
change a path here: ``python -m benchmarks.cpu_paths``, docs/numerics.md): our kernel built for that CPU
(``PSN_ZOO_NATIVE_MARCH``), torch's vectorised kernels (``ATEN_CPU_CAPABILITY``), MKL (``MKL_ENABLE_INSTRUCTIONS``,
``MKL_CBWR``), oneDNN (``ONEDNN_MAX_CPU_ISA``) and numpy (``NPY_DISABLE_CPU_FEATURES``), or turn our kernel off.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ["tests/test_kernels.py", "tests/test_sj_parity.py", "tests/test_fingerprints.py"]
EMULATIONS = {
    "avx2-cpu": {
        "PSN_ZOO_NATIVE_MARCH": "x86-64-v3",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4",
    },
    "bare-x86-64": {
        "PSN_ZOO_NATIVE_MARCH": "x86-64",
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4",
    },
    "no-kernel": {"PSN_ZOO_NATIVE": "0", "MKL_CBWR": "COMPATIBLE"},
}
_CONTROLS = {k for emulation in EMULATIONS.values() for k in emulation}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the emulated CPUs are x86-64 ones")
@pytest.mark.parametrize("name", list(EMULATIONS))
def test_suite_passes_on_an_emulated_cpu(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in _CONTROLS}
    env.update(EMULATIONS[name], PSN_ZOO_CACHE=str(tmp_path / "cache"), PYTHONDONTWRITEBYTECODE="1")
    tests = SUITE if env.get("PSN_ZOO_NATIVE") == "0" else ["tests/test_native.py", *SUITE]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-p", "no:cacheprovider", *tests],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    report = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, f"under {EMULATIONS[name]}:\n{report}"
    header = "\n".join(line for line in done.stdout.splitlines() if line.startswith(("math:", "path controls:")))
    for key, value in EMULATIONS[name].items():
        assert f"{key}={value}" in header, header  # the run really was under the emulation (pytest's header)
    if "PSN_ZOO_NATIVE_MARCH" in EMULATIONS[name]:
        assert "portable loops" in header, header



@pytest.mark.skipif(platform.machine() != "x86_64", reason="the emulated CPUs are x86-64 ones")
def test_cpu_paths_report_shows_which_control_changed_a_path(monkeypatch):
    """benchmarks.cpu_paths fingerprints each library under each control in a fresh process: here the reference,
    our kernel built for a bare x86-64, and MKL's compatible mode. Our kernel's results are the same bits under
    both; MKL_CBWR is seen to change MKL's GEMM only where it changes its order (reported, not assumed)."""
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is not installed, it runs from the repository
    from benchmarks import cpu_paths

    controls = [{}, {"PSN_ZOO_NATIVE_MARCH": "x86-64"}, {"MKL_CBWR": "COMPATIBLE"}]
    rows = cpu_paths.run(controls)
    fingerprint = [row["psn_kernel"].split()[0] for row in rows]
    assert fingerprint[0] == fingerprint[1] == fingerprint[2]
    assert "portable loops" in rows[1]["psn_kernel"] and "AVX-512" not in rows[1]["psn_kernel"]
    assert rows[2]["onednn_conv"] == rows[0]["onednn_conv"]  # MKL's control leaves oneDNN's path alone
    table = cpu_paths.report(rows)
    assert "| `PSN_ZOO_NATIVE_MARCH=x86-64` |" in table
    assert table.count("\n|") == 2 + len(controls)  # header, rule, one row per control
