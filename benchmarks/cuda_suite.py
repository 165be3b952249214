"""The GPU checks of the Triton path on a lent GPU: benchmarks, tests, tables.

Measured on an H200 (2026-12-04, second run): the default steps take about 8.5 minutes (neurons 191 s, models
128 s, floor 19 s, tests 44 s, bf16 45 s); with ``--only-extra alternatives`` and the CUDA kernel tests about
10.5 minutes, more than one 10-minute device call: run ``--skip models bf16 --only-extra alternatives`` in the
first call (about 6 minutes) and ``--skip neurons floor tests`` in the second (about 3; the machine stays warm 30 s
between calls).

Most important first, each step bounded by its own timeout, the benchmarks printing every row as it is measured
(a step stopped early keeps its rows in ``<step>.txt``):

1. the machine: GPU, driver, torch/Triton versions, the copy bandwidth it reaches (the memory floor);
2. ``benchmarks.neurons --device cuda --cuda-grid`` in fp32: every neuron against SpikingJelly's fastest backend
   (its Triton kernels for IF/LIF/PLIF, torch for the PSN family), with the copy floor and peak memory;
3. ``benchmarks.models --device cuda --cuda-grid``: training steps of SEW-ResNet-18 and VGG-11-BN, batch 32 of
   128×128, in fp32 and bf16-mixed;
4. ``benchmarks.launch_floor``: what one call costs on a tiny input (the host's share of every cell);
5. ``pytest tests/test_cuda.py -k "mixed_precision or neurons_match"``: SJ parity on CUDA and bf16-mixed/16-mixed
   Lightning fits that must run the kernels (tests/test_triton.py runs on CUDA too when given the time);
6. ``benchmarks.neurons`` in bf16 at T = 8, 32 and N = 2^22 (SJ autotunes its mixed-precision kernels per shape);
7. extras (``--only-extra``): ``kernels``, registers and spills of every kernel variant as compiled there;
   ``alternatives``, the kernels the defaults were chosen against (PSN multiply-add loop instead of ``tl.dot``,
   serial backward with H in memory); ``host-cpu``, the CPU kernel/parity/fingerprint tests on the device
   machine's own CPU (an Intel Xeon where seen: the other CPU of issue 22).

Everything lands in ``--out`` (``neurons.md``, ``models.md``, ``bf16/neurons.md``, ``machine.md``, each step's
log, the JSON beside them), ready to copy into ``docs/benchmarks/cuda``.

Preparing, on this (CPU) machine, once: the device image has torch, Triton, Lightning, torchmetrics, h5py, scipy,
matplotlib, safetensors and huggingface_hub, but not SpikingJelly, Tonic, W&B or jsonargparse.
``python -m benchmarks.cuda_suite --prepare`` downloads their wheels (Python 3.12, x86-64) into ``.whl/`` (add
``/.whl/`` to ``.git/info/exclude``); the device call then carries ``.whl`` and runs::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:$PWD python3 -m benchmarks.cuda_suite --out /tmp/cuda --archive $OUT/cuda.tgz

The device tool brings back at most 8 files, and a full run writes about 25: ``--archive`` packs ``--out`` into one
``.tgz`` after every step (a call stopped by its time limit still returns what the finished steps wrote).

Step 0 lists any module the image still lacks, so a first call shows what to add to :data:`WHEELS`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Packages the device image lacks, pinned to what this project is tested with (pure-Python or manylinux wheels).
WHEELS = [
    "spikingjelly==2.0.0", "loguru==0.7.3", "SciencePlots==2.2.2",
    "tonic==1.7.0", "importRosbag==1.0.4",
    "librosa==0.11.0", "audioread==3.1.0", "soundfile==0.14.0", "soxr==1.1.0", "pooch==1.9.0", "decorator==5.2.1",
    "lazy-loader==0.6", "platformdirs==4.14.9",
    "jsonargparse==4.53.0", "docstring-parser==0.18.0", "typeshed-client==2.15.0", "aedat==2.3.0",
]  # fmt: skip
NEEDED_MODULES = ["torch", "triton", "lightning", "spikingjelly", "tonic", "jsonargparse", "torchmetrics", "psn_zoo"]


def prepare(folder: Path) -> int:
    """Download :data:`WHEELS` for the device's Python (3.12, manylinux x86-64) into ``folder``, one by one; says
    which have no such wheel on the package index (their modules then show as missing in step 0 there)."""
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 27, 28, 31, 34)] + [
        "--platform=manylinux2014_x86_64", "--platform=any",
    ]  # fmt: skip
    failed = []
    for wheel in WHEELS:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version=3.12", "--implementation=cp", *platforms, "-d", str(folder), wheel]  # fmt: skip
        if subprocess.call(cmd, stderr=subprocess.DEVNULL) != 0:
            failed.append(wheel)
    print(f"{len(WHEELS) - len(failed)} of {len(WHEELS)} wheels in {folder}; no Python 3.12 wheel: {failed or 'none'}")
    return 1 if failed else 0


def _missing() -> list[str]:
    out = []
    for name in NEEDED_MODULES:
        try:
            importlib.import_module(name)
        except Exception as error:  # report whatever stops the import
            out.append(f"{name}: {type(error).__name__}: {error}")
    return out


def machine(out: Path) -> None:
    import torch
    import triton

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm",
                          "--format=csv,noheader"], capture_output=True, text=True)  # fmt: skip
    x = torch.empty(1 << 28, device="cuda")  # 1 GiB: far past the L2
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        y.copy_(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    gbps = 2 * x.numel() * 4 / sorted(times)[len(times) // 2] / 1e9
    lines = [f"- GPU: {smi.stdout.strip() or smi.stderr.strip()}",
             f"- torch {torch.__version__} (CUDA {torch.version.cuda}), Triton {triton.__version__}",
             f"- device-to-device copy of 1 GiB: {gbps:.0f} GB/s (bytes read + written; median of 10)"]  # fmt: skip
    (out / "machine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def archive(folder: Path, path: Path) -> None:
    """Pack ``folder`` into the gzipped tar ``path`` (written beside it, then renamed: a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    partial.replace(path)


def _step(name: str, cmd: list[str], out: Path, timeout: int) -> dict:
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        code, text = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        code, text = 124, f"{error.stdout or ''}{error.stderr or ''}\nTIMEOUT after {timeout} s"
    seconds = time.perf_counter() - start
    (out / f"{name}.txt").write_text(text if isinstance(text, str) else text.decode())
    print(f"   exit {code} in {seconds:.0f} s; last lines:\n" + "\n".join(str(text).splitlines()[-6:]), flush=True)
    return {"step": name, "exit": code, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "cuda")
    parser.add_argument("--archive", type=Path, help="also pack --out into this .tgz after every step (the device "
                        "tool returns at most 8 files: --out /tmp/cuda --archive $OUT/cuda.tgz)")  # fmt: skip
    parser.add_argument("--prepare", action="store_true", help="download the wheels into .whl/ (here, not there)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["neurons", "models", "floor", "tests", "bf16"])
    extras = ["kernels", "alternatives", "host-cpu", "frontier", "profile"]
    parser.add_argument("--only-extra", nargs="*", default=[], choices=extras,
                        help="kernels: compile every kernel there and report registers (CI does it with Triton's "
                        "ptxas); alternatives: the PSN family with its multiply-add loop instead of tl.dot, and the "
                        "serial backward with H in memory, at T = 16, 32 (the choices the defaults were made against); "
                        "host-cpu: the CPU kernel, parity and fingerprint tests on the device machine's own CPU (an "
                        "Intel Xeon where seen: issue 22's other CPU)")
    args = parser.parse_args(argv)
    if args.prepare:
        return prepare(ROOT / ".whl")
    args.out.mkdir(parents=True, exist_ok=True)
    if missing := _missing():
        print("missing on this machine (add wheels to benchmarks/cuda_suite.py WHEELS):\n  " + "\n  ".join(missing))
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("cuda_suite: torch sees no CUDA GPU; run it on the device machine")
    steps: list[dict] = []

    def saved() -> None:  # after every step: the table so far, and the archive a stopped call still returns
        (args.out / "suite.json").write_text(json.dumps(steps, indent=1))
        if args.archive is not None:
            archive(args.out, args.archive)

    def run_step(name: str, cmd: list[str], timeout: int) -> None:
        steps.append(_step(name, cmd, args.out, timeout))
        saved()

    machine(args.out)
    saved()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    os.environ.clear()
    os.environ.update(env)
    py = sys.executable
    # most important first; each step's timeout bounds it, and the benchmarks print every row as it is measured
    if "neurons" not in args.skip:
        cmd = [py, "-m", "benchmarks.neurons", "--device", "cuda", "--cuda-grid", "--dtypes", "float32",
               "--out", str(args.out)]  # fmt: skip
        run_step("neurons", cmd, 220)  # 48 cells: 191 s on 2026-12-04
    if "models" not in args.skip:
        cmd = [py, "-m", "benchmarks.models", "--device", "cuda", "--cuda-grid", "--out", str(args.out)]
        run_step("models", cmd, 150)  # 8 cases: 128 s on 2026-12-04
    if "floor" not in args.skip:
        cmd = [py, "-m", "benchmarks.launch_floor", "--device", "cuda", "--out", str(args.out)]
        run_step("launch_floor", cmd, 40)  # what one call costs before any data moves
    if "tests" not in args.skip:
        cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py", "-k",
               "mixed_precision or neurons_match"]  # fmt: skip
        run_step("tests", cmd, 60)  # 44 s
    if "bf16" not in args.skip:  # SJ autotunes its mixed-precision serial kernels per shape: fewer cells
        bf16 = args.out / "bf16"
        bf16.mkdir(exist_ok=True)
        cmd = [py, "-m", "benchmarks.neurons", "--device", "cuda", "--cuda-grid", "--dtypes", "bfloat16",
               "--ts", "8", "32", "--ns", str(2**22), "--neurons", "psn", "masked_psn", "sliding_psn", "lif",
               "--out", str(bf16)]  # fmt: skip
        run_step("neurons_bf16", cmd, 70)  # 45 s (with IF and PLIF too: over 90 s)
    if "alternatives" in args.only_extra:
        for flag, neurons in (("--psn-loop", ["psn"]), ("--serial-h-in-memory", ["lif"])):
            cmd = [py, "-m", "benchmarks.neurons", "--device", "cuda", "--cuda-grid", "--dtypes", "float32",
                   "--ts", "16", "32", "--neurons", *neurons, flag, "--out", str(args.out)]  # fmt: skip
            run_step(flag.strip("-").replace("-", "_"), cmd, 35)  # 23 s
    if "tests" not in args.skip:  # the kernel tests on CUDA tensors, last: the GPU's time goes to the tables first
        cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_triton.py", "-k",
               "not compiles_for_hopper"]  # fmt: skip
        run_step("triton_tests", cmd, 75)  # 57 s
    if "frontier" in args.only_extra:  # issue 21's Metric 5 on the GPU: every parallel neuron against T
        cmd = [py, "-m", "benchmarks.frontier", "--speed", "--quick", "--device", "cuda", "--out", str(args.out)]
        run_step("frontier_speed", cmd, 90)
    if "profile" in args.only_extra:  # the cells the last run could not explain, kernel by kernel
        for neuron, T, dtype in (("psn", 8, "bfloat16"), ("psn", 8, "float32"), ("lif", 32, "float32")):
            cmd = [py, "-m", "benchmarks.profile_cell", "--neuron", neuron, "--T", str(T), "--N", str(2**22),
                   "--dtype", dtype, "--device", "cuda", "--out", str(args.out)]  # fmt: skip
            run_step(f"profile_{neuron}_T{T}_{dtype}", cmd, 40)
    if "host-cpu" in args.only_extra:  # CUDA hidden: the CPU paths, on a CPU other than CI's
        cmd = ["env", "CUDA_VISIBLE_DEVICES=", py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/test_native.py", "tests/test_kernels.py", "tests/test_sj_parity.py", "tests/test_fingerprints.py",
               "tests/test_data_fingerprints.py"]  # fmt: skip
        run_step("host_cpu_tests", cmd, 300)
    if "kernels" in args.only_extra:
        cmd = [py, "-m", "benchmarks.kernel_resources", "--json", str(args.out / "kernels.json")]
        run_step("kernels", cmd, 120)
        (args.out / "kernels.md").write_text((args.out / "kernels.txt").read_text())
        saved()
    print("\n| step | exit | seconds |\n|---|---:|---:|")
    for s in steps:
        print(f"| {s['step']} | {s['exit']} | {s['seconds']} |")
    return max((s["exit"] for s in steps), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
