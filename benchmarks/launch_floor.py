"""What one call costs before any data moves: the per-call floor of a GPU (or the CPU) on a tiny input.

On a tiny ``[T, N]`` input the GPU has next to nothing to do, so a call's time is the host's: Python, autograd and
the launches. Timed per call, synchronised (as ``benchmarks.neurons`` times every cell), the median of many calls:

- ``synchronize``: an empty ``torch.cuda.synchronize()`` (the floor under every timed call);
- ``torch clone``: one PyTorch kernel; ``Triton copy``: one trivial Triton kernel through ``kernel[grid](...)``;
- ``mul fwd+bwd``: one op and its backward through autograd (the engine's fixed cost of a ``backward()`` call);
- each neuron's forward (no grad) and forward+backward, ours and SpikingJelly's (its Triton kernels for LIF).

A cell of ``benchmarks.neurons`` cannot take less than its row here, whatever the kernel; where a large-``N`` cell's
time is close to this floor, the host, not the kernel, sets it. Also timed: ``host per call``, the same calls
enqueued 100 at a time with one synchronisation (what a training loop sees while the GPU has work queued).

``python -m benchmarks.launch_floor --device cuda --out <dir>`` writes ``launch_floor.md``; ``--device cpu`` runs
the same on the CPU (the Triton copy then needs ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks._common import markdown_table, prefer_sj_triton, time_one

T, N = 8, 4096
NAMES = ("psn", "masked_psn", "sliding_psn", "lif")


def _triton_copy():
    """A one-line Triton kernel: the cheapest launch the Triton path can make."""
    import triton
    import triton.language as tl

    @triton.jit
    def copy_kernel(src, dst, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(dst + offs, tl.load(src + offs, mask=offs < n), mask=offs < n)

    def run(x: torch.Tensor, y: torch.Tensor) -> None:
        copy_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)

    return run


def _queued(fn, device: str, calls: int = 100) -> float:
    """Seconds per call with ``calls`` calls enqueued before one synchronisation (median of 5)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def measure(device: str) -> list[list[str]]:
    from benchmarks.neurons import _forward, _forward_backward, _pair

    rows: list[list[str]] = []

    def add(what: str, fn) -> None:
        synced = time_one(fn, min_reps=50, budget_s=0.2, warmup=5, device=device)
        rows.append([what, f"{synced * 1e6:.0f}", f"{_queued(fn, device) * 1e6:.0f}"])
        print(" | ".join(rows[-1]), flush=True)

    x = torch.randn(T, N, device=device)
    y = torch.empty_like(x)
    if device.startswith("cuda"):
        add("synchronize", lambda: None)
    add("torch clone", lambda: x.clone())
    copy = _triton_copy()
    add("Triton copy", lambda: copy(x, y))
    grad = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)

    def autograd_floor() -> None:
        xg.grad = None
        (xg * 1.0).backward(grad)

    add("mul fwd+bwd (autograd's floor)", autograd_floor)
    for name in NAMES:
        ours, theirs = _pair(name, T, device)
        for label, neuron in (("ours", ours), ("SJ", theirs)):
            add(f"{name} fwd, {label}", _forward(neuron, x))
            add(f"{name} fwd+bwd, {label}", _forward_backward(neuron, xg, grad))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    prefer_sj_triton()
    rows = measure(args.device)
    table = markdown_table(["call (T = 8, N = 4096, fp32)", "synced µs", "host per call µs (100 queued)"], rows, [0])
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "launch_floor.md").write_text(f"# Per-call floor on {args.device}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
