"""Where one benchmark cell's time goes: ``torch.profiler`` over a neuron's forward + backward, ours and
SpikingJelly's, kernel by kernel.

``benchmarks.neurons`` gives a cell's total; this names its parts (each kernel's device time, the PyTorch calls
on the host), to explain a cell that is slower than its bytes say (the second H200 run's bf16 PSN at T = 8 took
2.20 ms against 0.91 ms in fp32). ``python -m benchmarks.profile_cell --neuron psn --T 8 --N 4194304 --dtype
bfloat16 --device cuda --out <dir>`` writes ``profile_<neuron>_T<T>_<dtype>.md``; on the CPU it profiles the
host calls alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks._common import check_device, markdown_table, prefer_sj_triton


def profile(neuron: str, T: int, N: int, dtype: str, device: str, reps: int = 10) -> dict[str, list[list[str]]]:
    """Top operations by self time (device time on a GPU) over ``reps`` forward + backward calls, per library."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as run_profiler

    from benchmarks.neurons import _forward_backward, _pair

    ours, theirs = _pair(neuron, T, device, dtype)
    x = torch.randn(T, N, device=device).to(getattr(torch, dtype)).requires_grad_(True)
    grad = torch.randn(T, N, device=device).to(x.dtype)
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    tables = {}
    for label, module in (("ours", ours), ("SpikingJelly", theirs)):
        step = _forward_backward(module, x, grad)
        for _ in range(3):
            step()  # compiled, autotuned, allocator warm
        if cuda:
            torch.cuda.synchronize()
        with run_profiler(activities=activities) as prof:
            for _ in range(reps):
                step()
            if cuda:
                torch.cuda.synchronize()
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        events = sorted(prof.key_averages(), key=lambda e: -getattr(e, key, 0.0))
        rows = []
        for e in events[:15]:
            spent = getattr(e, key, 0.0) / reps
            if spent <= 0:
                break
            rows.append([e.key[:70], str(e.count // reps), f"{spent:.1f}"])
        tables[label] = rows
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neuron", default="psn")
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--N", type=int, default=2**22)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = check_device(args.device)
    if device != "cpu":
        prefer_sj_triton()
    tables = profile(args.neuron, args.T, args.N, args.dtype, device)
    where = "device" if device != "cpu" else "host"
    text = f"# {args.neuron}, T = {args.T}, N = {args.N}, {args.dtype}, {device}: one forward + backward\n"
    for label, rows in tables.items():
        headers = ["operation or kernel", "calls", f"self {where} µs per fwd+bwd"]
        text += f"\n## {label}\n\n{markdown_table(headers, rows, left=(0,))}\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"profile_{args.neuron}_T{args.T}_{args.dtype}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
