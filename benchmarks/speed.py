"""The paper's simulation-speed figure in miniature: t_LIF / t_PSN over T and the number of neurons N.

Fang et al. (NeurIPS 2023, Sec. 4.1, Fig. 3) plot the ratio of a multi-step LIF layer's time to a PSN layer's,
for N = 2^8 … 2^20 neurons and T = 2 … 64, in inference (forward) and training (forward + backward); above 1 the
PSN is faster. This measures the same ratio twice in one process: psn_zoo's LIF against psn_zoo's PSN, and
SpikingJelly 2.0.0's multi-step ``LIFNode`` (its torch implementation, the only one on CPU) against its ``PSN``;
in the full grid also the masked PSN (λ = 1, k = max(2, T/4)) and the sliding PSN (k = 2). Each ratio is the
median over alternating blocks of the two neurons, with the range of the per-round ratios.

    python -m benchmarks.speed [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks._common import Timing, emit, environment, markdown_table, median, pow2, progress, time_pair
from benchmarks.neurons import NEURONS, _forward, _forward_backward
from psn_zoo.neurons import make_neuron
from psn_zoo.neurons.compat import to_spikingjelly

LIF = {"name": "lif", "tau": 2.0}
MODES = ("inference", "training")
LIBS = ("ours", "sj")
GRIDS = {
    "quick": {
        "Ts": [2, 8, 32, 64],
        "Ns": [2**8, 2**14, 2**20],
        "families": ["psn"],
        "timing": Timing(rounds=2, min_reps=2, budget_s=0.05, warmup=1),
    },
    "full": {
        "Ts": [2, 4, 8, 16, 32, 64],
        "Ns": [2**k for k in range(8, 21, 2)],
        "families": ["psn", "masked_psn", "sliding_psn"],
        "timing": Timing(rounds=3, min_reps=3, budget_s=0.3, warmup=2),
    },
}
HEADERS = [
    "family",
    "T",
    "N",
    "inference ours t_LIF/t_PSN (min-max)",
    "inference SJ t_LIF/t_PSN (min-max)",
    "training ours t_LIF/t_PSN (min-max)",
    "training SJ t_LIF/t_PSN (min-max)",
    "PSN inf SJ/ours",
    "PSN train SJ/ours",
    "LIF inf SJ/ours",
    "LIF train SJ/ours",
]


def _neurons(family: str, T: int) -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    """``{"ours": (psn, lif), "sj": (psn, lif)}`` with identical parameters across libraries."""
    psn, lif = make_neuron(NEURONS[family](T)), make_neuron(LIF)
    return {"ours": (psn, lif), "sj": (to_spikingjelly(psn), to_spikingjelly(lif))}


def run(
    Ts: list[int],
    Ns: list[int],
    families: list[str] | None = None,
    timing: Timing | None = None,
    *,
    show_progress: bool = True,
) -> dict:
    """Measure t_LIF / t_PSN for every (family, T, N, mode, library)."""
    families = list(families or ["psn"])
    timing = timing or Timing()
    env = environment()
    torch.manual_seed(0)
    cells = [(f, T, N) for f in families for T in Ts for N in Ns]
    records = []
    for family, T, N in progress(cells, "speed (LIF vs PSN)", disable=not show_progress):
        pairs = _neurons(family, T)
        x = torch.randn(T, N)
        xg, grad = x.clone().requires_grad_(True), torch.randn(T, N)
        for mode in MODES:
            for lib in LIBS:
                psn, lif = pairs[lib]
                if mode == "inference":
                    fn_psn, fn_lif = _forward(psn, x), _forward(lif, x)
                else:
                    fn_psn, fn_lif = _forward_backward(psn, xg, grad), _forward_backward(lif, xg, grad)
                t_psn, t_lif, ratio = time_pair(fn_psn, fn_lif, **timing.kwargs())
                records.append({"family": family, "T": T, "N": N, "mode": mode, "lib": lib,
                                "psn_ms": t_psn * 1e3, "lif_ms": t_lif * 1e3, "lif_over_psn": vars(ratio)})  # fmt: skip
        del x, xg, grad
    table = _table(records)
    summary, headline = _summary(records, families)
    return {
        "description": _description(),
        "environment": env,
        "grid": {"Ts": Ts, "Ns": Ns, "families": families, "timing": vars(timing)},
        "records": records,
        "table": table,
        "tables": [(None, table)],
        "summary": summary,
        "notes": summary,
        "headline": headline,
    }


def _description() -> str:
    return (
        "`python -m benchmarks.speed`: the paper's Fig. 3 in miniature. For each neuron count N (per time step) and "
        "T, the time of a multi-step LIF layer (τ = 2, hard reset, ATan surrogate) divided by the time of a PSN "
        "layer on the same `[T, N]` input: *inference* is the forward pass without grad, *training* forward + "
        "backward. *ours* pits psn_zoo's LIF against psn_zoo's PSN; *SJ* pits SpikingJelly 2.0.0's multi-step "
        "`LIFNode` (its torch implementation: SJ 2.0.0 has no `backend` switch on CPU) against its `PSN`, in the "
        "same process. Above 1 the PSN is faster. Ratios are medians over alternating blocks (range: per-round "
        "ratios). The last four columns compare the libraries directly: SJ time / our time for the same neuron "
        "(from the medians of the two separate pairs)."
    )


def _find(records: list[dict], **key) -> dict:
    return next(r for r in records if all(r[k] == v for k, v in key.items()))


def _table(records: list[dict]) -> str:
    rows = []
    seen = list(dict.fromkeys((r["family"], r["T"], r["N"]) for r in records))
    for family, T, N in seen:
        cell = {(r["mode"], r["lib"]): r for r in records if (r["family"], r["T"], r["N"]) == (family, T, N)}
        row = [family, T, pow2(N)]
        for mode in MODES:
            for lib in LIBS:
                ratio = cell[(mode, lib)]["lif_over_psn"]
                row.append(f"{ratio['median']:.2f} ({ratio['low']:.2f}-{ratio['high']:.2f})")
        for neuron in ("psn", "lif"):
            for mode in MODES:
                row.append(f"{cell[(mode, 'sj')][f'{neuron}_ms'] / cell[(mode, 'ours')][f'{neuron}_ms']:.2f}")
        rows.append(row)
    return markdown_table(HEADERS, rows, left=(0,))


def _summary(records: list[dict], families: list[str]) -> tuple[list[str], dict]:
    lines, headline = [], {}
    Ns = sorted({r["N"] for r in records})
    for family in families:
        for mode in MODES:
            for lib in LIBS:
                sel = [r for r in records if (r["family"], r["mode"], r["lib"]) == (family, mode, lib)]
                ratios = [r["lif_over_psn"]["median"] for r in sel]
                small = [r["lif_over_psn"]["median"] for r in sel if r["N"] == Ns[0]]
                large = [r["lif_over_psn"]["median"] for r in sel if r["N"] == Ns[-1]]
                faster = sum(x > 1 for x in ratios)
                headline[f"{family}/{mode}/{lib}"] = {
                    "median": median(ratios), "min": min(ratios), "max": max(ratios),
                    "median_smallest_N": median(small), "median_largest_N": median(large),
                    "psn_faster_cells": faster, "cells": len(ratios),
                }  # fmt: skip
                trend = (
                    f"; median {median(small):.2f} at N={pow2(Ns[0])} vs {median(large):.2f} at N={pow2(Ns[-1])}"
                    if len(Ns) > 1
                    else ""
                )
                lines.append(
                    f"{family}, {mode}, {'ours' if lib == 'ours' else 'SJ'}: t_LIF/t_PSN median {median(ratios):.2f} "
                    f"({min(ratios):.2f}-{max(ratios):.2f}); PSN faster in {faster}/{len(ratios)} cells{trend}"
                )
    for mode in MODES:
        sel = [r for r in records if r["family"] == families[0] and r["mode"] == mode]
        by_cell: dict = {}
        for r in sel:
            by_cell.setdefault((r["T"], r["N"]), {})[r["lib"]] = r
        psn = [c["sj"]["psn_ms"] / c["ours"]["psn_ms"] for c in by_cell.values()]
        lif = [c["sj"]["lif_ms"] / c["ours"]["lif_ms"] for c in by_cell.values()]
        headline[f"{families[0]}_{mode}_sj_over_ours"] = {"median": median(psn), "min": min(psn)}
        headline[f"lif_{mode}_sj_over_ours"] = {"median": median(lif), "min": min(lif)}
        lines.append(
            f"{mode}: SJ time / our time, {families[0]} median {median(psn):.2f}x (min {min(psn):.2f}x), "
            f"LIF median {median(lif):.2f}x (min {min(lif):.2f}x)"
        )
    lines.append(
        "The paper's author notes (issue #7) that the PSN's advantage shrinks as N grows (the T×T GEMM becomes "
        "memory-bound); compare the medians at the smallest and largest N above. On a CPU the LIF's serial loop "
        "over T is cheap per step, so the ratio depends on the machine far more than on a GPU."
    )
    return lines, headline


def plot(result: dict, out: str | Path) -> list[Path]:
    """One 2×2 figure per family (rows: inference, training; columns: ours, SJ): t_LIF/t_PSN against T, a
    line per N. ``speed_lif_over_psn.png`` for the PSN, ``speed_lif_over_<family>.png`` for the others."""
    from benchmarks.plots import ratio_grid

    records = result["records"]
    paths = []
    for family in dict.fromkeys(r["family"] for r in records):
        panels: dict = {}
        for row, mode in enumerate(MODES):
            for col, lib in enumerate(LIBS):
                lines: dict = {}
                for r in records:
                    if (r["family"], r["mode"], r["lib"]) == (family, mode, lib):
                        lines.setdefault(f"N = {pow2(r['N'])}", []).append((r["T"], r["lif_over_psn"]["median"]))
                panels[(row, col)] = lines
        paths.append(
            ratio_grid(
                panels,
                row_titles=["inference (fwd)", "training (fwd+bwd)"],
                col_titles=["psn_zoo", "SpikingJelly 2.0.0"],
                ylabel=f"t_LIF / t_{family}",
                path=Path(out) / f"speed_lif_over_{family}.png",
                suptitle=f"LIF time / {family} time (above 1: the {family} is faster)",
            )
        )
    return paths


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T in {2, 8, 32, 64}, N in {2^8, 2^14, 2^20}, PSN only")
    parser.add_argument("--out", help="write speed.md, speed.json and the figure(s) into this folder")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    result = run(**GRIDS["quick" if args.quick else "full"])
    emit(result, name="speed", title="Simulation speed: LIF time / PSN time", out=args.out, json_path=args.json,
         plot=plot)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
