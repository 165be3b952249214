"""The benchmark suite: psn_zoo against SpikingJelly 2.0.0, written as Markdown, JSON and PNG.

    python -m benchmarks --quick --out /tmp/bench          # small grids, a few minutes on 2 cores
    python -m benchmarks --full --out docs/benchmarks      # the complete grids (the default)
    python -m benchmarks --quick --only neurons,speed      # some parts only
    python -m benchmarks --quick --only efficiency --remeasure   # re-evaluate the published checkpoints

Parts (each ``<out>/<part>.md`` + ``<out>/<part>.json``, figures as ``<out>/*.png``):

- ``neurons``: every neuron alone, ours vs SJ: forward and forward+backward speedup, forward / memory copy,
  peak memory (``neurons_speedup.png``);
- ``models``: one training step of SEW-ResNet-18 and spiking VGG-11-BN, PSN and LIF, ours vs SJ;
- ``data``: N-Digits epochs, our DataModule cold and warm vs SpikingJelly's own N-MNIST pipeline on the same files;
- ``speed``: the paper's Fig. 3, t_LIF / t_PSN over T and N, ours and SJ (``speed_lif_over_psn.png``);
- ``efficiency``: accuracy, firing rates, SOPs, MACs and energy of every published checkpoint (``firing_rates.png``);
- ``reproduce``: ``psn-zoo validate`` of every published checkpoint against its manifest top-1 (quick: the
  sequential-digits entries only).

``<out>/summary.md`` collects the headline ratios. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks._common import (
    RATIO_MEANING,
    Ratio,
    environment,
    environment_line,
    machine_block,
    markdown_table,
    write_report,
)

PARTS = ("neurons", "models", "data", "speed", "efficiency", "reproduce")
TITLES = {
    "neurons": "Neurons: psn_zoo vs SpikingJelly 2.0.0",
    "models": "Models: one training step, psn_zoo vs SpikingJelly 2.0.0",
    "data": "Data loading: N-Digits, our DataModule vs SpikingJelly's N-MNIST pipeline",
    "speed": "Simulation speed: LIF time / PSN time (the paper's Fig. 3)",
    "efficiency": "Efficiency of the published checkpoints",
    "reproduce": "Published checkpoints reproduced with psn-zoo validate",
}


def grids(mode: str) -> dict[str, dict[str, Any]]:
    """Keyword arguments of every part's ``run`` in ``mode`` (``"quick"`` or ``"full"``)."""
    from benchmarks import data, models, neurons, speed

    return {
        "neurons": dict(neurons.GRIDS[mode]),
        "models": dict(models.GRIDS[mode]),
        "data": dict(data.GRIDS[mode]),
        "speed": dict(speed.GRIDS[mode]),
        "efficiency": {"max_batches": 4} if mode == "quick" else {},
        "reproduce": {"pattern": "*seqdigits*"} if mode == "quick" else {},
    }


def run_part(
    part: str, kwargs: dict[str, Any], out: Path, show_progress: bool = True, mode: str = "full"
) -> dict[str, Any]:
    """Run one part, write its Markdown, JSON and figures; returns its result (with ``files`` and ``wall_s``)."""
    import importlib

    module = importlib.import_module(f"benchmarks.{part}")
    start = time.perf_counter()
    result = module.run(**kwargs, show_progress=show_progress)
    plots = module.plot(result, out) if hasattr(module, "plot") else []
    result["plots"] = [str(p) for p in plots]
    result["wall_s"] = time.perf_counter() - start
    result["mode"] = mode
    result["files"] = [str(p) for p in write_report(out, part, TITLES[part], result)] + result["plots"]
    return result


def run_suite(
    out: str | Path,
    mode: str = "quick",
    only: list[str] | None = None,
    *,
    data_dir: str | None = None,
    remeasure: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the parts in ``only`` (default: all) with ``mode``'s grids (``overrides`` replace a part's arguments),
    write every report into ``out`` and ``out/summary.md``; returns ``{part: result}`` plus ``errors``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = list(only or PARTS)
    settings = grids(mode)
    for part, kw in (overrides or {}).items():
        settings[part] = dict(kw)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    tmp_data = None
    start = time.perf_counter()
    try:
        for part in parts:
            kwargs = dict(settings[part])
            if part == "data":
                if data_dir is None:
                    tmp_data = tmp_data or tempfile.mkdtemp(prefix="psn-zoo-bench-data-")
                kwargs.setdefault("data_dir", data_dir or tmp_data)
            if part == "reproduce":
                kwargs.setdefault("data_dir", data_dir)
            if part == "efficiency":
                kwargs.setdefault("remeasure_data", remeasure)
                kwargs.setdefault("data_dir", data_dir)
                if not kwargs["remeasure_data"]:
                    kwargs.pop("max_batches", None)
            print(f"[benchmarks] {part} ({mode}) ...", file=sys.stderr, flush=True)
            try:
                results[part] = run_part(part, kwargs, out, show_progress, mode)
            except Exception:  # one broken part must not lose the others' numbers
                errors[part] = traceback.format_exc()
                print(f"[benchmarks] {part} FAILED:\n{errors[part]}", file=sys.stderr, flush=True)
                continue
            r = results[part]
            print(f"[benchmarks] {part}: {r['wall_s']:.0f} s -> {', '.join(r['files'])}", file=sys.stderr, flush=True)
    finally:
        if tmp_data is not None:
            shutil.rmtree(tmp_data, ignore_errors=True)
    wall = time.perf_counter() - start
    earlier = earlier_reports(out, skip=set(results) | set(errors))
    summary = write_summary(out, {**results, **earlier}, errors, mode, wall)
    return {"results": results, "errors": errors, "wall_s": wall, "summary": summary}


def earlier_reports(out: Path, skip: set[str]) -> dict[str, Any]:
    """The reports of parts not run now but left in ``out`` by an earlier ``--only`` run, so the summary shows all."""
    found: dict[str, Any] = {}
    for part in PARTS:
        path = out / f"{part}.json"
        if part in skip or not path.exists():
            continue
        result = json.loads(path.read_text())
        result["files"] = [str(out / f"{part}.md"), str(path), *result.get("plots", [])]
        result["earlier"] = True
        found[part] = result
    return found


# ----------------------------------------------------------------------------------- summary
def _range(d: dict, lo: str = "min", hi: str = "max") -> str:
    return f"{d[lo]:.2f}-{d[hi]:.2f}"


def _times(ratio: Ratio | dict) -> str:
    """A Ratio, or its JSON form from an earlier run's report, as ``1.23x (1.10-1.40)``."""
    return (ratio if isinstance(ratio, Ratio) else Ratio(**ratio)).times()


def headline_rows(part: str, result: dict[str, Any]) -> list[list[str]]:
    """``[benchmark, quantity, value]`` rows of the summary's headline table."""
    h = result.get("headline", {})
    rows: list[list[str]] = []
    if part == "neurons":
        if "psn_family_fwdbwd_speedup" in h:
            s = h["psn_family_fwdbwd_speedup"]
            rows.append([part, "PSN family fwd+bwd speedup over SJ (median / min)",
                         f"{s['median']:.2f}x / {s['min']:.2f}x over {s['cells']} cells"])  # fmt: skip
            s = h["psn_family_fwd_speedup"]
            rows.append([part, "PSN family forward speedup over SJ (median / min)",
                         f"{s['median']:.2f}x / {s['min']:.2f}x"])  # fmt: skip
            s = h["psn_family_fwd_over_copy_max"]
            rows.append([part, f"PSN family forward / memory copy at N=2^{s['N'].bit_length() - 1} (max)",
                         f"{s['value']:.2f}x ({s['neuron']}, T={s['T']})"])  # fmt: skip
        if "psn_family_peak_memory_ours_over_sj" in h:
            s = h["psn_family_peak_memory_ours_over_sj"]
            rows.append(
                [part, "PSN family peak memory ours / SJ (median / max)", f"{s['median']:.2f} / {s['max']:.2f}"]
            )
        if "lif_fwdbwd_speedup" in h:
            s, f = h["lif_fwdbwd_speedup"], h["lif_fwd_speedup"]
            rows.append(
                [part, "LIF speedup over SJ, fwd+bwd / fwd (median)", f"{s['median']:.2f}x / {f['median']:.2f}x"]
            )
        if "lif_peak_memory_ours_over_sj" in h:
            rows.append([part, "LIF peak memory ours / SJ", _range(h["lif_peak_memory_ours_over_sj"])])
    elif part == "models":
        for r in result["records"]:
            s = r["speedup"]
            rows.append([part, f"training-step throughput ours / SJ, {r['model']} {r['neuron']}",
                         f"{s['median']:.2f}x ({s['low']:.2f}-{s['high']:.2f})"])  # fmt: skip
        for case, ceiling in h.get("ceiling", {}).items():
            rows.append([part, f"ceiling of that ratio (neurons that cost nothing), {case}", f"{ceiling:.2f}x"])
        if "peak_memory_ours_over_sj" in h:
            s = h["peak_memory_ours_over_sj"]
            rows.append([part, "peak memory of a step ours / SJ (median / max)", f"{s['median']:.2f} / {s['max']:.2f}"])
    elif part == "data":
        for r in result["records"]:
            w = r["workers"]
            rows.append([part, f"memory-cache warm / cold epoch, {w} workers", _times(r["memory_warm_over_cold"])])
            if "cold_over_sj" in r:
                rows.append([part, f"ours cold / SJ frame-file epoch, {w} workers", _times(r["cold_over_sj"])])
                rows.append(
                    [part, f"ours warm memory / SJ frame-file epoch, {w} workers", _times(r["warm_memory_over_sj"])]
                )
        if "sj_preprocessing_s" in h:
            rows.append([part, "SJ one-off preprocessing (ours: none)", f"{h['sj_preprocessing_s']:.1f} s"])
        if result.get("spikingjelly_error"):
            rows.append([part, "SJ pipeline", f"could not run: {result['spikingjelly_error']}"])
    elif part == "speed":
        for key, s in h.items():
            if key.count("/") == 2:
                family, mode, lib = key.split("/")
                rows.append([part, f"t_LIF / t_{family}, {mode}, {'ours' if lib == 'ours' else 'SJ'} (median, range)",
                             f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f}); PSN faster in "
                             f"{s['psn_faster_cells']}/{s['cells']} cells"])  # fmt: skip
            elif key.endswith("_sj_over_ours"):
                rows.append([part, f"{key.replace('_sj_over_ours', '').replace('_', ' ')}: SJ time / our time (median)",
                             f"{s['median']:.2f}x (min {s['min']:.2f}x)"])  # fmt: skip
    elif part == "efficiency":
        for key, s in h.items():
            if " / " in key:
                rows.append([part, f"energy {key}, without / with neuron MACs",
                             f"{s['energy_ratio_without_neurons']:.2f} / {s['energy_ratio_with_neurons']:.2f} "
                             f"(top-1 {s['top1_delta_pp']:+.2f} pp)"])  # fmt: skip
        if "psn_family_neuron_energy_share" in h:
            s = h["psn_family_neuron_energy_share"]
            rows.append([part, "PSN-family neuron MACs' share of energy (median)", f"{100 * s['median']:.0f} %"])
    elif part == "reproduce" and "reproduced" in h:
        s = h["reproduced"]
        rows.append([part, f"entries whose psn-zoo validate top-1 is within {s['tolerance']} pt of the manifest",
                     f"{s['passed']}/{s['entries']}"])  # fmt: skip
    return rows


def write_summary(out: Path, results: dict[str, Any], errors: dict[str, str], mode: str, wall_s: float) -> Path:
    env = environment()
    rows = [row for part in PARTS if part in results for row in headline_rows(part, results[part])]
    parts = [
        "# Benchmark summary",
        "",
        *machine_block(env),
        "",
        f"`python -m benchmarks --{mode}`: {sum(not r.get('earlier') for r in results.values())} part(s) in "
        f"{wall_s:.0f} s (parts marked 'an earlier run' come from an earlier `--only` run). Every ratio compares "
        f"psn_zoo with SpikingJelly 2.0.0 measured in the same process ({RATIO_MEANING}); above 1 means ours is "
        "faster, below 1 for memory means ours is leaner.",
        "",
        environment_line(env),
        "",
    ]
    if env["load_average_1m"] >= 0.75 * (env["cpus"] or 1):
        parts += [
            f"**Noisy run:** the load average ({env['load_average_1m']}) shows other work on this "
            f"{env['cpus']}-CPU machine; the times, and the ratios of kernels that open many short parallel regions "
            "(which stall while a thread waits for a busy core), are unreliable. Rerun on an idle machine, or with "
            "`--threads 1` to take thread contention out.",
            "",
        ]
    if rows:
        parts += [
            "## Headline ratios",
            "",
            markdown_table(["benchmark", "quantity", "value"], rows, left=(0, 1, 2)),
            "",
        ]
    parts += ["## Reports", ""]
    for part in PARTS:
        if part in results:
            r = results[part]
            files = ", ".join(f"[{Path(f).name}]({Path(f).name})" for f in r["files"])
            when = f"{r.get('mode', mode)}, " + ("an earlier run, " if r.get("earlier") else "")
            parts.append(f"- **{part}** ({when}{r.get('wall_s', 0):.0f} s): {files}")
            parts += [f"  - {line}" for line in r.get("summary", [])]
        elif part in errors:
            last = errors[part].strip().splitlines()[-1]
            parts.append(f"- **{part}**: FAILED ({last}); see stderr for the traceback")
    parts.append("")
    path = out / "summary.md"
    path.write_text("\n".join(parts))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="mode", help="small grids, few rounds")
    group.add_argument("--full", action="store_const", const="full", dest="mode", help="the complete grids (default)")
    parser.add_argument("--out", default="docs/benchmarks", help="output folder (default: docs/benchmarks)")
    parser.add_argument("--only", help=f"comma-separated parts among {','.join(PARTS)} (default: all)")
    parser.add_argument("--data-dir", help="N-Digits folder for the data part and --remeasure (default: a temp folder "
                        "for data, the DataModules' default for --remeasure)")  # fmt: skip
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="efficiency: re-evaluate every checkpoint on its test data (--quick: 4 batches of 64 each)",
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    args = parser.parse_args(argv)
    mode = args.mode or "full"
    only = None
    if args.only is not None:  # an empty --only names no part: refused, never taken for "all"
        only = [p.strip() for p in args.only.split(",") if p.strip()]
        if not only:
            parser.error(f"--only {args.only!r} names no part; choose among {', '.join(PARTS)} (or leave --only out)")
        unknown = sorted(set(only) - set(PARTS))
        if unknown:
            parser.error(f"unknown part(s) {', '.join(unknown)}; choose among {', '.join(PARTS)}")
    if args.threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory workers too
        torch.set_num_threads(args.threads)
    suite = run_suite(
        args.out, mode, only, data_dir=args.data_dir, remeasure=args.remeasure, show_progress=not args.no_progress
    )
    print(Path(suite["summary"]).read_text())
    print(f"[benchmarks] done in {suite['wall_s']:.0f} s; reports in {args.out}", file=sys.stderr)
    return 1 if suite["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
