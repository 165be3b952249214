"""Neuron speed and memory: psn_zoo vs SpikingJelly 2.0.0, side by side in one process.

For PSN, masked PSN (λ = 1), sliding PSN and LIF at T ∈ {4, 8, 16, 32} and N ∈ {2^16, 2^20, 2^22}
neurons per step, it times the forward pass (inference, no grad) and forward + backward (median over
interleaved repeats), a copy of the same [T, N] input as the physical floor, and the peak memory of
forward + backward (peak RSS growth, measured in a worker process). Every ratio is SJ time / our time.

    python -m benchmarks.neurons            # full grid (about 10 minutes on 2 cores)
    python -m benchmarks.neurons --quick    # T ∈ {4, 16}, N ∈ {2^16, 2^20}
    python -m benchmarks.neurons --memory-only   # only the peak memory of each cell, no timing
    python -m benchmarks.neurons --device cuda   # on a GPU, fp32 and bf16 (memory: peak of the CUDA allocator)

On a GPU each neuron meets SpikingJelly's fastest backend for it: its Triton kernels for IF/LIF/PLIF
(``SJ_{IF,LIF,PLIF}_CUDA_IMPLEMENTATION=triton``, set here unless given), ``addmm``/``conv1d`` for the PSN family
(it has no kernel for them). bf16 cells run both libraries under ``torch.autocast`` on a bf16 input, as a
``bf16-mixed`` training step feeds them.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks._common import (
    RATIO_MEANING,
    Timing,
    check_device,
    emit,
    environment,
    markdown_table,
    median,
    memory_meaning,
    memory_report,
    memory_rows,
    peak_memory_delta,
    pow2,
    prefer_sj_triton,
    progress,
    sj_state_in_fp32,
    time_one,
    time_pair,
)
from psn_zoo.neurons import _memory, _native, make_neuron
from psn_zoo.neurons.compat import to_spikingjelly

NEURONS = {
    "psn": lambda T: {"name": "psn", "T": T},
    "masked_psn": lambda T: {"name": "masked_psn", "T": T, "k": max(2, T // 4), "lambda_": 1.0},
    "sliding_psn": lambda T: {"name": "sliding_psn", "k": 2},
    "lif": lambda T: {"name": "lif", "tau": 2.0},
    "if": lambda T: {"name": "if"},
    "plif": lambda T: {"name": "plif", "init_tau": 2.0},
}
CPU_NEURONS = ["psn", "masked_psn", "sliding_psn", "lif"]  # the CPU grids' default (IF/PLIF: the LIF kernel)
SERIAL = ("if", "lif", "plif")
PSN_FAMILY = ("psn", "masked_psn", "sliding_psn")


def _pair(name: str, T: int, device: str = "cpu", dtype: str = "float32") -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our neuron and SpikingJelly's with the same parameters; for half-precision inputs on a GPU, SJ's serial
    neurons keep their state in fp32 through its own mixed-precision setting, as ours do."""
    ours = make_neuron(NEURONS[name](T))
    theirs = to_spikingjelly(ours).to(device)
    if dtype != "float32" and device != "cpu":
        sj_state_in_fp32(theirs)
    return ours.to(device), theirs


def our_kernel(neuron: torch.nn.Module, T: int, N: int, device: str = "cpu") -> str:
    """Which implementation our neuron ran on a ``[T, N]`` input, read off the autograd node it made (so this
    report never restates the dispatch rules): ``fused C`` (psn_zoo/neurons/csrc), ``GEMM`` (the chunked PyTorch
    path), ``shifted`` (sliding PSN with k ≪ T) or ``serial`` (LIF)."""
    x = torch.zeros(T, N, device=device, requires_grad=True)
    _reset(neuron)
    node = neuron(x).grad_fn
    _reset(neuron)
    kind = type(node).__name__.removesuffix("Backward")
    if kind in ("TritonThreshold", "TritonSerial"):
        return "Triton"
    if kind == "ToeplitzThreshold":
        return f"fused C, band {neuron.k}"
    if kind == "DenseThreshold":
        if node.native is None:
            return "GEMM"
        return "fused C" if node.band is None else f"fused C, band {node.band}"
    return "shifted" if kind == "ShiftedThreshold" else "serial"


def _precision(x: torch.Tensor):
    """Autocast to ``x``'s dtype when it is half precision (fp32 parameters, as in mixed-precision training)."""
    if x.dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=x.dtype)


def _forward(neuron: torch.nn.Module, x: torch.Tensor):
    def run() -> None:
        _reset(neuron)
        with torch.no_grad(), _precision(x):
            neuron(x)

    return run


def _forward_backward(neuron: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def run() -> None:
        _reset(neuron)
        x.grad = None
        for p in neuron.parameters():
            p.grad = None
        with _precision(x):
            out = neuron(x)
        out.backward(grad.to(out.dtype))

    return run


def _reset(neuron: torch.nn.Module) -> None:
    if hasattr(neuron, "reset"):  # ours and SpikingJelly's stateful neurons
        neuron.reset()


def _advised_empty_like(x: torch.Tensor) -> torch.Tensor:
    """A fresh buffer like ``x`` (never a reused one), advised onto huge pages as the kernels' new outputs are."""
    out = torch.empty_like(x)
    _memory.advise_huge_pages(out)
    return out


def measure_memory(cases: list[dict], device: str = "cpu") -> list[dict]:
    """Peak memory growth of one forward + backward, ours and SpikingJelly's (:func:`peak_memory_delta`: after a
    warm-up, from no gradients, no neuron state and an empty pool)."""
    results = []
    for case in cases:
        ours, theirs = _pair(case["neuron"], case["T"], device, case.get("dtype", "float32"))
        dtype = getattr(torch, case.get("dtype", "float32"))
        x = torch.randn(case["T"], case["N"], device=device).to(dtype).requires_grad_(True)
        grad = torch.randn(case["T"], case["N"], device=device).to(dtype)
        row = dict(case)
        for label, neuron in (("ours", ours), ("sj", theirs)):
            run = _forward_backward(neuron, x, grad)
            try:
                run()  # warm-up
            except Exception:  # the timing of this cell reports the error
                row[label] = float("nan")
                continue
            _reset(neuron)  # the call would free the warm-up's state first, as it frees the warm-up's gradients
            row[label] = peak_memory_delta(run, device, grads_of=(x, neuron))
        results.append(row)
    return results


GRIDS = {
    "quick": {"Ts": [4, 16], "Ns": [2**16, 2**20], "timing": Timing(rounds=2, min_reps=3, budget_s=0.15, warmup=1)},
    "full": {"Ts": [4, 8, 16, 32], "Ns": [2**16, 2**20, 2**22], "timing": Timing()},
    # one device call on a lent GPU (benchmarks/cuda_suite.py): launch-bound sizes left out, short timing blocks
    "cuda": {"Ts": [4, 8, 16, 32], "Ns": [2**20, 2**22], "timing": Timing(rounds=3, min_reps=5, budget_s=0.05)},
    # every T the paper's range holds, at the narrowest N the 3x target covers (the fused kernel's hardest cells)
    "every_t": {
        "Ts": list(range(2, 33)),
        "Ns": [2**16],
        "neurons": ["psn", "masked_psn", "sliding_psn"],
        "timing": Timing(rounds=5, min_reps=3, budget_s=0.3),  # 5 rounds: the median resists a noisy host
    },
}
HEADERS = [
    "neuron",
    "T",
    "N",
    "dtype",
    "ours runs",
    "copy ms",
    "copy THP ms",
    "fwd ours ms",
    "fwd SJ ms",
    "fwd speedup (min-max)",
    "fwd/copy",
    "f+b ours ms",
    "f+b SJ ms",
    "f+b speedup (min-max)",
    "peak MB ours",
    "peak MB SJ",
    "mem ours/SJ",
]
DESCRIPTION = f"""\
`python -m benchmarks.neurons`: each neuron alone on a `[T, N]` input, psn_zoo against SpikingJelly 2.0.0 built
with the same parameters (`psn_zoo.neurons.compat.to_spikingjelly`), in the same process. *speedup* = SJ time /
our time ({RATIO_MEANING}; the ms columns are medians over all timed repeats); *fwd* is inference (no grad),
*f+b* forward + backward; *ours runs* names our implementation in that cell (*fused C*: the compiled kernel of
`psn_zoo/neurons/csrc/psn_cpu.c`; *GEMM*: the chunked PyTorch path; *shifted*: k time-shifted multiply-adds;
*serial*: the LIF kernel); *copy* is `x.clone()` of the same input (the physical floor of producing a new tensor);
*copy THP* is the same copy into a new buffer advised onto transparent huge pages, as our kernels' new outputs are
(`psn_zoo.neurons._memory`; equal to *copy* where the advice does not apply); our kernels take their outputs from a
reuse pool where a buffer of the size is free (`psn_zoo.neurons._memory.fresh_like`: no page faults after the first
call; SpikingJelly allocates through malloc, which returns multi-MiB blocks to the OS);
{memory_meaning("one forward + backward")}."""


CASE_KEYS = ("neuron", "T", "N", "dtype")


def _neurons(names: list[str] | None, device: str) -> list[str]:
    """The neurons asked for, else the default for ``device``."""
    return list(names or (CPU_NEURONS if device == "cpu" else NEURONS))


def _cases(neurons: list[str], Ts: list[int], Ns: list[int], dtypes: list[str]) -> list[dict]:
    """Every (neuron, T, N, dtype) cell of a grid, dtype outermost."""
    return [{"neuron": n, "T": T, "N": N, "dtype": d} for d, n, T, N in itertools.product(dtypes, neurons, Ts, Ns)]


def run(
    Ts: list[int],
    Ns: list[int],
    neurons: list[str] | None = None,
    timing: Timing | None = None,
    *,
    memory: bool = True,
    show_progress: bool = True,
    device: str = "cpu",
    dtypes: list[str] | None = None,
) -> dict:
    """Time every (neuron, T, N, dtype) cell; returns records, the Markdown table, summary lines and headline
    numbers."""
    neurons = _neurons(neurons, device)
    timing = timing or Timing()
    dtypes = list(dtypes or ["float32"])
    kernels = _native.load() if device == "cpu" else None
    env = {**environment(), "device": device, "fused C kernel": str(kernels.path) if kernels else "not used"}
    if device != "cpu":
        env |= {"SpikingJelly backends": ", ".join(f"{k}={v}" for k, v in prefer_sj_triton().items())}
    torch.manual_seed(0)
    cases = _cases(neurons, Ts, Ns, dtypes)
    mem_rows = memory_rows("benchmarks.neurons", cases, device, measure_memory, memory)
    mem_by_case = {(r["neuron"], r["T"], r["N"], r["dtype"]): r for r in mem_rows}
    rows, records = [], []
    failed: list[str] = []
    for case in progress(cases, "neurons", disable=not show_progress):
        name, T, N, dtype = case["neuron"], case["T"], case["N"], case["dtype"]
        try:
            record, row = _cell(case, timing, device, mem_by_case)
        except Exception as error:  # one failing cell (say, a peer's backend refusing a dtype) keeps the others
            failed.append(f"{name} T={T} N={pow2(N)} {dtype}: {type(error).__name__}: {str(error)[:300]}")
            rows.append([name, T, pow2(N), dtype, "error", *["-"] * (len(HEADERS) - 5)])
            continue
        records.append(record)
        rows.append(row)
        if show_progress:  # each row as it is measured: a run stopped early keeps what it measured
            print("| " + " | ".join(map(str, row)) + " |", file=sys.stderr, flush=True)
    table = markdown_table(HEADERS, rows, left=(0,))
    summary, headline = _summary([r for r in records if r["dtype"] == dtypes[0]], max(Ns), device)
    for dtype in dtypes[1:]:  # the first dtype's numbers at the top level, each other's under its name
        lines, headline[dtype] = _summary([r for r in records if r["dtype"] == dtype], max(Ns), device)
        summary += [f"{dtype}: {line}" for line in lines]
    summary += [f"failed cell: {line}" for line in failed]
    return {
        "description": DESCRIPTION,
        "environment": env,
        "grid": {"Ts": Ts, "Ns": Ns, "neurons": neurons, "dtypes": dtypes, "timing": vars(timing)},
        "records": records,
        "failed": failed,
        "table": table,
        "tables": [(None, table)],
        "summary": summary,
        "notes": summary,
        "headline": headline,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
    }


def _cell(case: dict, timing: Timing, device: str, mem_by_case: dict) -> tuple[dict, list]:
    """One (neuron, T, N, dtype) cell: its record and table row."""
    name, T, N, dtype = case["neuron"], case["T"], case["N"], case["dtype"]
    ours, theirs = _pair(name, T, device, dtype)
    x = torch.randn(T, N, device=device).to(getattr(torch, dtype))
    copy_s = time_one(lambda x=x: x.clone(), min_reps=timing.min_reps, budget_s=timing.budget_s, device=device)
    copy_thp_s = time_one(
        lambda x=x: _advised_empty_like(x).copy_(x),
        min_reps=timing.min_reps, budget_s=timing.budget_s, device=device,
    )  # fmt: skip
    f_ours, f_sj, f_ratio = time_pair(_forward(ours, x), _forward(theirs, x), **timing.kwargs(), device=device)
    xg, grad = x.clone().requires_grad_(True), torch.randn(T, N, device=device).to(x.dtype)
    fb_ours, fb_sj, fb_ratio = time_pair(
        _forward_backward(ours, xg, grad), _forward_backward(theirs, xg, grad), **timing.kwargs(), device=device
    )
    mem = mem_by_case.get((name, T, N, dtype), {"ours": float("nan"), "sj": float("nan")})
    record = {
        **case,
        "kernel": our_kernel(ours, T, N, device),
        "copy_ms": copy_s * 1e3,
        "copy_thp_ms": copy_thp_s * 1e3,
        "fwd_over_copy_thp": f_ours / copy_thp_s,
        "fwd_ms": {"ours": f_ours * 1e3, "sj": f_sj * 1e3},
        "fwd_speedup": vars(f_ratio),
        "fwd_over_copy": f_ours / copy_s,
        "fwdbwd_ms": {"ours": fb_ours * 1e3, "sj": fb_sj * 1e3},
        "fwdbwd_speedup": vars(fb_ratio),
        "peak_mb": {"ours": mem["ours"] / 2**20, "sj": mem["sj"] / 2**20},
    }
    row = [
        name,
        T,
        pow2(N),
        dtype,
        record["kernel"],
        f"{copy_s * 1e3:.2f}",
        f"{copy_thp_s * 1e3:.2f}",
        f"{f_ours * 1e3:.2f}",
        f"{f_sj * 1e3:.2f}",
        str(f_ratio),
        f"{f_ours / copy_s:.2f}",
        f"{fb_ours * 1e3:.2f}",
        f"{fb_sj * 1e3:.2f}",
        str(fb_ratio),
        f"{mem['ours'] / 2**20:.1f}",
        f"{mem['sj'] / 2**20:.1f}",
        f"{mem['ours'] / mem['sj']:.2f}" if mem["sj"] > 0 else "-",
    ]
    return record, row


def _summary(records: list[dict], n_max: int, device: str = "cpu") -> tuple[list[str], dict]:
    lines: list[str] = []
    headline: dict = {}
    family = [r for r in records if r["neuron"] in PSN_FAMILY]
    if family:
        speedups = [r["fwdbwd_speedup"]["median"] for r in family]
        fwd = [r["fwd_speedup"]["median"] for r in family]
        headline["psn_family_fwdbwd_speedup"] = {"median": median(speedups), "min": min(speedups), "cells": len(family)}
        headline["psn_family_fwd_speedup"] = {"median": median(fwd), "min": min(fwd)}
        lines.append(
            f"PSN family fwd+bwd speedup over SJ: median {median(speedups):.2f}x, min {min(speedups):.2f}x over "
            f"{len(speedups)} cells; forward: median {median(fwd):.2f}x, min {min(fwd):.2f}x"
        )
        big = [r for r in family if r["N"] == n_max]
        worst = max(big, key=lambda r: r["fwd_over_copy"])
        headline["psn_family_fwd_over_copy_max"] = {
            "value": worst["fwd_over_copy"], "N": n_max, "neuron": worst["neuron"], "T": worst["T"],
        }  # fmt: skip
        worst_thp = max(big, key=lambda r: r["fwd_over_copy_thp"])
        headline["psn_family_fwd_over_copy_thp_max"] = {
            "value": worst_thp["fwd_over_copy_thp"], "N": n_max, "neuron": worst_thp["neuron"], "T": worst_thp["T"],
        }  # fmt: skip
        lines.append(
            f"PSN family forward / memory copy at N={pow2(n_max)}: max {worst['fwd_over_copy']:.2f}x "
            f"({worst['neuron']}, T={worst['T']}); against a copy onto huge pages: max "
            f"{worst_thp['fwd_over_copy_thp']:.2f}x ({worst_thp['neuron']}, T={worst_thp['T']})"
        )
        if device != "cpu":  # the GPU goal (issue 7): the kernels move their bytes at >= 70 % of copy bandwidth
            fractions = {(r["neuron"], r["T"]): 1 / r["fwd_over_copy"] for r in big}
            headline["psn_family_fwd_bandwidth_fraction"] = {"min": min(fractions.values()),
                                                             "median": median(fractions.values())}  # fmt: skip
            lines.append(
                f"PSN family forward bandwidth as a fraction of the copy's at N={pow2(n_max)} (same bytes read and "
                f"written): median {median(fractions.values()):.0%}, min {min(fractions.values()):.0%}"
            )
        mem = [r["peak_mb"]["ours"] / r["peak_mb"]["sj"] for r in family if r["peak_mb"]["sj"] > 1]
        if mem:
            headline["psn_family_peak_memory_ours_over_sj"] = {"median": median(mem), "max": max(mem)}
            lines.append(f"PSN family peak memory of fwd+bwd, ours / SJ: median {median(mem):.2f}, max {max(mem):.2f}")
    for serial in SERIAL:
        cells = [r for r in records if r["neuron"] == serial]
        if not cells:
            continue
        s = [r["fwdbwd_speedup"]["median"] for r in cells]
        f = [r["fwd_speedup"]["median"] for r in cells]
        headline[f"{serial}_fwdbwd_speedup"] = {"median": median(s), "min": min(s)}
        headline[f"{serial}_fwd_speedup"] = {"median": median(f), "min": min(f)}
        lines.append(
            f"{serial.upper()} speedup over SJ: fwd+bwd median {median(s):.2f}x (min {min(s):.2f}x), "
            f"fwd median {median(f):.2f}x (min {min(f):.2f}x)"
        )
        mem = [r["peak_mb"]["ours"] / r["peak_mb"]["sj"] for r in cells if r["peak_mb"]["sj"] > 1]
        if mem:
            headline[f"{serial}_peak_memory_ours_over_sj"] = {"min": min(mem), "max": max(mem)}
            lines.append(f"{serial.upper()} peak memory of fwd+bwd, ours / SJ: {min(mem):.2f}-{max(mem):.2f}")
    return lines, headline


def plot(result: dict, out: str | Path) -> list[Path]:
    """``<out>/neurons_speedup.png``: SJ time / our time against T, one line per N; rows fwd and f+b, a column
    per neuron."""
    from benchmarks.plots import ratio_grid

    records = result["records"]
    names = list(dict.fromkeys(r["neuron"] for r in records))
    panels: dict = {}
    for c, name in enumerate(names):
        for r, key in enumerate(("fwd_speedup", "fwdbwd_speedup")):
            lines: dict = {}
            for rec in records:
                if rec["neuron"] == name:
                    dtype = "" if rec.get("dtype", "float32") == "float32" else f", {rec['dtype']}"
                    lines.setdefault(f"N = {pow2(rec['N'])}{dtype}", []).append((rec["T"], rec[key]["median"]))
            panels[(r, c)] = lines
    path = ratio_grid(
        panels,
        row_titles=["inference (fwd)", "training (fwd+bwd)"],
        col_titles=names,
        ylabel="SJ time / our time",
        path=Path(out) / "neurons_speedup.png",
        suptitle="psn_zoo neurons against SpikingJelly 2.0.0 (above 1: ours faster)",
    )
    return [path]


def _best_s(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _kernel_alone(kernels: _native.NativeKernels, T: int, N: int) -> tuple[float, float]:
    """Best seconds of the fused kernel's dense forward (keeping the membrane) and backward from it, no autograd,
    into preallocated tensors."""
    x, grad, w, bias = torch.randn(T, N), torch.randn(T, N), torch.randn(T, T) / T, torch.randn(T) * 0.1
    s, m, gx = torch.empty(T, N), torch.empty(T, N), torch.empty(T, N)
    gw, gb = torch.empty(T, T), torch.empty(T)
    fwd = _best_s(lambda: kernels.forward(x, w, bias, s, m), 50)
    bwd = _best_s(lambda: kernels.backward(x, w, bias, grad, 2.0, gx, gw, gb, membrane=m), 50)
    return fwd, bwd


def arithmetic_floor(Ts: tuple[int, ...] = (16, 24, 29, 32), N: int = 2**16) -> list[str]:
    """The dense PSN's arithmetic floor on this machine: its forward + backward is three GEMM-shaped products of
    2·T²·N flops; at the best measured fp32 GEMM rate (``torch.mm`` of two 2048² matrices) they take at least
    6·T²·N / rate. Also the fused kernel alone (no autograd, preallocated outputs) at each T. Best of repeats."""
    a, b, c = torch.randn(2048, 2048), torch.randn(2048, 2048), torch.empty(2048, 2048)
    peak = 2 * 2048**3 / _best_s(lambda: torch.mm(a, b, out=c), 15)
    threads = torch.get_num_threads()
    lines = [f"fp32 GEMM peak: {peak / 1e9:.0f} GFLOP/s (torch.mm 2048^3, {threads} threads, best of 15)"]
    kernels = _native.load()
    for T in Ts:
        flops = 2 * T * T * N
        line = f"T={T}, N={N}: 3 products {3 * flops / 1e6:.0f} MFLOP, floor {3 * flops / peak * 1e3:.2f} ms"
        if kernels is not None:
            fwd, bwd = _kernel_alone(kernels, T, N)
            line += (f"; kernel alone: forward + kept membrane {fwd * 1e3:.2f} ms ({flops / fwd / 1e9:.0f} GFLOP/s), "
                     f"backward from it {bwd * 1e3:.2f} ms ({2 * flops / bwd / 1e9:.0f} GFLOP/s)")  # fmt: skip
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small grid (T in {4, 16}, N in {2^16, 2^20})")
    parser.add_argument("--cuda-grid", action="store_true", help="T in {4, 8, 16, 32}, N in {2^20, 2^22}, short blocks")
    parser.add_argument(
        "--every-t", action="store_true", help="the PSN family at every T = 2..32, N = 2^16 (neurons_every_t.md)"
    )
    parser.add_argument(
        "--floor", action="store_true", help="print the dense PSN's arithmetic floor and the kernel alone, then exit"
    )
    parser.add_argument("--serial-h-in-memory", action="store_true",
                        help="GPU: the serial backward keeps H in an fp32 buffer at every T (the register path's "
                        "alternative; writes neurons_serial_h_in_memory.md)")  # fmt: skip
    parser.add_argument("--psn-loop", action="store_true",
                        help="GPU: the PSN family's kernels use their multiply-add loop at every T instead of tl.dot "
                        "at T = 9..32 (writes neurons_psn_loop.md)")  # fmt: skip
    parser.add_argument("--ns", nargs="+", type=int, help="only these N of the grid (e.g. 4194304)")
    parser.add_argument("--ts", nargs="+", type=int, help="only these T of the grid (e.g. re-measure a few cells)")
    parser.add_argument("--neurons", nargs="+", choices=list(NEURONS),
                        help=f"default: the grid's ({', '.join(CPU_NEURONS)} on the CPU, all on a GPU)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16", "float16"],
                        help="input dtypes (default: float32 on the CPU, float32 and bfloat16 on a GPU)")  # fmt: skip
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak memory of each cell, no timing (writes neurons_memory.md)")  # fmt: skip
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    parser.add_argument("--out", help="also write neurons.md/.json and the figure to this folder")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure_memory(json.loads(sys.stdin.read()))))
        return 0
    if args.floor:
        print("\n".join(arithmetic_floor()))
        return 0
    device = check_device(args.device)
    mode = "every_t" if args.every_t else "quick" if args.quick else "cuda" if args.cuda_grid else "full"
    grid = GRIDS[mode]
    dtypes = args.dtypes or (["float32"] if device == "cpu" else ["float32", "bfloat16"])
    if device != "cpu":
        prefer_sj_triton()
    if args.serial_h_in_memory:
        from psn_zoo.neurons import _triton_serial

        _triton_serial.REGISTER_T_MAX = dict.fromkeys(_triton_serial.REGISTER_T_MAX, 0)
    if args.psn_loop:
        from psn_zoo.neurons import _triton_psn

        _triton_psn.DOT_T_PAD = ()
    Ts = [T for T in grid["Ts"] if T in args.ts] if args.ts else grid["Ts"]
    if not Ts:
        parser.error(f"--ts: none of {args.ts} is in the grid's T = {grid['Ts']}")
    Ns = [N for N in grid["Ns"] if N in args.ns] if args.ns else grid["Ns"]
    if not Ns:
        parser.error(f"--ns: none of {args.ns} is in the grid's N = {grid['Ns']}")
    neuron_names = _neurons(args.neurons or grid.get("neurons"), device)
    if args.memory_only:
        result = memory_report("benchmarks.neurons", _cases(neuron_names, Ts, Ns, dtypes), list(CASE_KEYS), device,
                               measure_memory, "one forward + backward")  # fmt: skip
        emit(result, name="neurons_memory", title=f"Neurons: peak memory ({device})", out=args.out,
             json_path=args.json)  # fmt: skip
        return 0
    result = run(Ts, Ns, neuron_names, grid["timing"], device=device, dtypes=dtypes)
    name = "neurons_every_t" if args.every_t else "neurons"
    if args.serial_h_in_memory:
        name = "neurons_serial_h_in_memory"
    if args.psn_loop:
        name = "neurons_psn_loop"
    # one figure, the main grid's: an alternative or every-T run written to the same folder leaves it alone
    emit(result, name=name, title=f"Neurons ({device}{', every T' if args.every_t else ''})", out=args.out,
         json_path=args.json, plot=plot if name == "neurons" else None)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
