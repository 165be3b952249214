"""Neuron speed and memory: psn_zoo vs SpikingJelly 2.0.0, side by side in one process.

For PSN, masked PSN (λ = 1), sliding PSN and LIF at T ∈ {4, 8, 16, 32} and N ∈ {2^16, 2^20, 2^22}
neurons per step, it times the forward pass (inference, no grad) and forward + backward (median over
interleaved repeats), a copy of the same [T, N] input as the physical floor, and the peak memory of
forward + backward (peak RSS growth, measured in a worker process). Every ratio is SJ time / our time.

    python -m benchmarks.neurons            # full grid (about 10 minutes on 2 cores)
    python -m benchmarks.neurons --quick    # T ∈ {4, 16}, N ∈ {2^16, 2^20}
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from benchmarks._common import peak_rss_delta, print_table, run_worker, time_one, time_pair
from psn_zoo.neurons import make_neuron
from psn_zoo.neurons.compat import to_spikingjelly

NEURONS = {
    "psn": lambda T: {"name": "psn", "T": T},
    "masked_psn": lambda T: {"name": "masked_psn", "T": T, "k": max(2, T // 4), "lambda_": 1.0},
    "sliding_psn": lambda T: {"name": "sliding_psn", "k": 2},
    "lif": lambda T: {"name": "lif", "tau": 2.0},
}
PSN_FAMILY = ("psn", "masked_psn", "sliding_psn")


def _pair(name: str, T: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    ours = make_neuron(NEURONS[name](T))
    return ours, to_spikingjelly(ours)


def _forward(neuron: torch.nn.Module, x: torch.Tensor):
    def run() -> None:
        _reset(neuron)
        with torch.no_grad():
            neuron(x)

    return run


def _forward_backward(neuron: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def run() -> None:
        _reset(neuron)
        x.grad = None
        for p in neuron.parameters():
            p.grad = None
        neuron(x).backward(grad)

    return run


def _reset(neuron: torch.nn.Module) -> None:
    if hasattr(neuron, "reset"):  # ours and SpikingJelly's stateful neurons
        neuron.reset()


def measure_memory(cases: list[dict]) -> list[dict]:
    """Worker side: peak RSS growth of one forward + backward, ours and SpikingJelly's."""
    results = []
    for case in cases:
        ours, theirs = _pair(case["neuron"], case["T"])
        x = torch.randn(case["T"], case["N"], requires_grad=True)
        grad = torch.randn(case["T"], case["N"])
        row = dict(case)
        for label, neuron in (("ours", ours), ("sj", theirs)):
            run = _forward_backward(neuron, x, grad)
            run()  # warm-up
            row[label] = peak_rss_delta(run)
        results.append(row)
    return results


def run(Ts: list[int], Ns: list[int], neurons: list[str]) -> dict:
    torch.manual_seed(0)
    cases = [{"neuron": n, "T": T, "N": N} for n in neurons for T in Ts for N in Ns]
    memory = {(r["neuron"], r["T"], r["N"]): r for r in run_worker("benchmarks.neurons", cases)}
    rows, records = [], []
    for case in cases:
        name, T, N = case["neuron"], case["T"], case["N"]
        ours, theirs = _pair(name, T)
        x = torch.randn(T, N)
        copy_s = time_one(lambda x=x: x.clone())
        f_ours, f_sj, f_ratio = time_pair(_forward(ours, x), _forward(theirs, x))
        xg, grad = x.clone().requires_grad_(True), torch.randn(T, N)
        fb_ours, fb_sj, fb_ratio = time_pair(_forward_backward(ours, xg, grad), _forward_backward(theirs, xg, grad))
        mem = memory[(name, T, N)]
        record = {
            **case,
            "copy_ms": copy_s * 1e3,
            "fwd_ms": {"ours": f_ours * 1e3, "sj": f_sj * 1e3},
            "fwd_speedup": vars(f_ratio),
            "fwd_over_copy": f_ours / copy_s,
            "fwdbwd_ms": {"ours": fb_ours * 1e3, "sj": fb_sj * 1e3},
            "fwdbwd_speedup": vars(fb_ratio),
            "peak_mb": {"ours": mem["ours"] / 2**20, "sj": mem["sj"] / 2**20},
        }
        records.append(record)
        rows.append(
            [
                name,
                T,
                f"2^{int(math.log2(N))}",
                f"{copy_s * 1e3:.2f}",
                f"{f_ours * 1e3:.2f}",
                f"{f_sj * 1e3:.2f}",
                str(f_ratio),
                f"{f_ours / copy_s:.2f}",
                f"{fb_ours * 1e3:.2f}",
                f"{fb_sj * 1e3:.2f}",
                str(fb_ratio),
                f"{mem['ours'] / 2**20:.1f}",
                f"{mem['sj'] / 2**20:.1f}",
                f"{mem['ours'] / max(mem['sj'], 1):.2f}",
            ]
        )
        print(f"  measured {name} T={T} N=2^{int(math.log2(N))}", file=sys.stderr, flush=True)
    headers = [
        "neuron",
        "T",
        "N",
        "copy ms",
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
    table = print_table(headers, rows)
    summary = _summary(records, max(Ns))
    print()
    for line in summary:
        print(line)
    return {
        "records": records,
        "table": table,
        "summary": summary,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _summary(records: list[dict], n_max: int) -> list[str]:
    lines = []
    family = [r for r in records if r["neuron"] in PSN_FAMILY]
    if family:
        speedups = [r["fwdbwd_speedup"]["median"] for r in family]
        lines.append(
            f"PSN family fwd+bwd speedup over SJ: min {min(speedups):.2f}x, median "
            f"{sorted(speedups)[len(speedups) // 2]:.2f}x over {len(speedups)} cells"
        )
        big = [r for r in family if r["N"] == n_max]
        worst = max(big, key=lambda r: r["fwd_over_copy"])
        lines.append(
            f"PSN family forward / memory copy at N=2^{int(math.log2(n_max))}: max {worst['fwd_over_copy']:.2f}x "
            f"({worst['neuron']}, T={worst['T']})"
        )
        mem = [r["peak_mb"]["ours"] / max(r["peak_mb"]["sj"], 1e-9) for r in family if r["peak_mb"]["sj"] > 1]
        if mem:
            lines.append(f"PSN family peak memory of fwd+bwd, ours / SJ: max {max(mem):.2f}")
    lif = [r for r in records if r["neuron"] == "lif"]
    if lif:
        s = [r["fwdbwd_speedup"]["median"] for r in lif]
        f = [r["fwd_speedup"]["median"] for r in lif]
        lines.append(f"LIF speedup over SJ: fwd+bwd min {min(s):.2f}x, fwd min {min(f):.2f}x")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small grid (T in {4, 16}, N in {2^16, 2^20})")
    parser.add_argument("--neurons", nargs="+", default=list(NEURONS), choices=list(NEURONS))
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure_memory(json.loads(sys.stdin.read()))))
        return 0
    Ts, Ns = ([4, 16], [2**16, 2**20]) if args.quick else ([4, 8, 16, 32], [2**16, 2**20, 2**22])
    result = run(Ts, Ns, args.neurons)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
