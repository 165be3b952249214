"""Re-measure every published checkpoint with ``psn-zoo validate`` and compare with its manifest top-1.

For each entry it runs, as a user would::

    psn-zoo validate --config <entry's recipe> --model.pretrained <entry> \
        --data.init_args.val_split test --trainer.logger false

(the test split, through the entry's own recipe and DataModule) and reports the manifest's top-1, the measured
top-1 and the difference; an entry passes within ``--tolerance`` points (0.5 by default).

    python -m benchmarks.reproduce [--pattern '*ndigits*'] [--data-dir DIR] [--out docs/benchmarks]
    python -m benchmarks.reproduce --reuse docs/benchmarks/reproduce.json --out docs/benchmarks  # report again
    python -m benchmarks --only reproduce        # the same, as a part of the benchmark suite
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import environment, markdown_table, write_report
from psn_zoo.hub import CheckpointInfo, get_pretrained_info, list_pretrained

ROOT = Path(__file__).resolve().parents[1]
_VAL_ACC = re.compile(r"val/acc\s*[│|┃]?\s+([0-9.]+)")


def validate_command(name: str, data_dir: str | None = None) -> list[str]:
    """The ``psn-zoo validate`` command line that re-measures entry ``name`` on its test split."""
    info = get_pretrained_info(name)
    args = ["validate", "--config", info.recipe, "--model.pretrained", name, "--data.init_args.val_split", "test"]
    args += ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.devices", "1"]
    if data_dir is not None and "NDigits" in info.dataset.get("datamodule", ""):
        args += ["--data.init_args.data_dir", data_dir]
    return args


def measure(name: str, data_dir: str | None = None, timeout: float = 1800) -> dict:
    """Run the validation of ``name`` in a fresh process; returns the manifest and measured top-1 (fractions)."""
    command = [sys.executable, "-m", "psn_zoo.cli", *validate_command(name, data_dir)]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    found = _VAL_ACC.findall(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"psn-zoo validate failed for {name}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return {
        "name": name,
        "command": "psn-zoo " + " ".join(command[3:]),
        "manifest_top1": float(get_pretrained_info(name).metrics["top1"]),
        "measured_top1": float(found[-1]),
        "seconds": time.perf_counter() - start,
    }


def task_of(info: CheckpointInfo) -> tuple:
    """What an entry's top-1 measures: its architecture and T, its dataset and DataModule, the DataModule arguments
    that define the data (all but where and how they are read: the split ``seed``, ``permute_pixels`` and
    ``permutation_seed``, ``images_per_class``...) and, where recorded, the fingerprint of its test split. Entries of
    one task were measured on the same examples presented the same way; a permuted-pixel entry and one reading columns
    are different tasks."""
    from psn_zoo.datamodules.pretrained import RUNTIME_ARGS

    data_args = {k: v for k, v in (info.dataset.get("init_args") or {}).items() if k not in RUNTIME_ARGS}
    fingerprint = info.eval_data.sha256 if info.eval_data is not None else None
    return (info.architecture, info.T, info.dataset.get("name"), info.dataset.get("datamodule"),
            json.dumps(data_args, sort_keys=True, default=str), fingerprint)  # fmt: skip


def against_lif(records: list[dict]) -> list[dict]:
    """Each measured non-LIF entry against the measured LIF entry of its task (:func:`task_of`); an entry whose task
    has no LIF entry is compared with none."""
    infos = {r["name"]: get_pretrained_info(r["name"]) for r in records}
    lif = {task_of(infos[r["name"]]): r for r in records if infos[r["name"]].neuron["name"] == "lif"}
    out = []
    for r in records:
        base = lif.get(task_of(infos[r["name"]]))
        if base is None or base is r:
            continue
        out.append({"entry": r["name"], "lif_entry": base["name"], "top1": r["measured_top1"],
                    "lif_top1": base["measured_top1"],
                    "diff_points": 100 * (r["measured_top1"] - base["measured_top1"])})  # fmt: skip
    return out


def run(
    pattern: str | None = None,
    data_dir: str | None = None,
    tolerance: float = 0.5,
    show_progress: bool = True,
    reuse: str | Path | None = None,
) -> dict:
    """Validate every entry matching ``pattern``; the result is a benchmark-suite report (see ``_common``).

    ``reuse``: a ``reproduce.json`` written earlier, whose measurements (and the environment they were made in) are
    reported again instead of running ``psn-zoo validate``: for a change in how they are compared, not in them."""
    from tqdm.auto import tqdm

    rows, records = [], []
    names = [n for n in list_pretrained(pattern) if "top1" in get_pretrained_info(n).metrics]
    earlier = json.loads(Path(reuse).read_text()) if reuse is not None else None
    measured = {r["name"]: r for r in earlier["records"]} if earlier is not None else {}
    if earlier is not None:
        names = [n for n in names if n in measured]
    for name in tqdm(names, desc="psn-zoo validate", disable=not show_progress or bool(measured), file=sys.stderr):
        record = dict(measured[name]) if measured else measure(name, data_dir)
        record["diff_points"] = 100 * (record["measured_top1"] - record["manifest_top1"])
        record["ok"] = abs(record["diff_points"]) <= tolerance
        records.append(record)
        rows.append(
            [
                name,
                f"{100 * record['manifest_top1']:.2f}",
                f"{100 * record['measured_top1']:.2f}",
                f"{record['diff_points']:+.2f}",
                "yes" if record["ok"] else "NO",
                f"{record['seconds']:.0f}",
            ]
        )
    headers = ["entry", "manifest top-1 %", "psn-zoo validate top-1 %", "diff (points)", f"within {tolerance}", "s"]
    table = markdown_table(headers, rows, left=(0,))
    passed = sum(r["ok"] for r in records)
    summary = [f"{passed}/{len(records)} published entries reproduce their manifest top-1 within {tolerance} points"]
    commands = [f"`{r['command']}`" for r in records]
    comparisons = against_lif(records)
    tables = [(None, table)]
    if comparisons:
        claim_rows = [
            [c["entry"], c["lif_entry"], f"{100 * c['top1']:.2f}", f"{100 * c['lif_top1']:.2f}",
             f"{c['diff_points']:+.2f}", "yes" if c["diff_points"] >= 0 else "no"]
            for c in comparisons
        ]  # fmt: skip
        claim_headers = ["entry", "LIF baseline", "top-1 %", "LIF top-1 %", "diff (points)", "at least LIF"]
        tables.append(("The paper's claims in miniature: each entry against the LIF entry of its task (same "
                       "architecture and T, same data: dataset, split seed, pixel order; measured top-1 above). An "
                       "entry whose task has no LIF entry, such as the permuted-pixel ones, is compared with none",
                       markdown_table(claim_headers, claim_rows, left=(0, 1))))  # fmt: skip
    kept = {k: earlier[k] for k in ("wall_s", "mode", "plots") if k in earlier} if earlier is not None else {}
    return {
        **kept,
        "description": __doc__.split("\n\n")[0] + " Each row comes from the command listed below it.",
        "environment": earlier["environment"] if earlier is not None else environment(),
        "tables": tables,
        "notes": summary + commands,
        "summary": summary,
        "comparisons": comparisons,
        "headline": {"reproduced": {"passed": passed, "entries": len(records), "tolerance": tolerance}},
        "records": records,
        "tolerance": tolerance,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pattern", default=None, help="fnmatch filter on entry names")
    parser.add_argument("--data-dir", default=None, help="where N-Digits is (or is generated)")
    parser.add_argument("--tolerance", type=float, default=0.5, help="allowed |difference| in points")
    parser.add_argument("--out", default=None, help="write reproduce.md and reproduce.json here")
    parser.add_argument(
        "--reuse", default=None, metavar="JSON", help="report an earlier reproduce.json's measurements again (no runs)"
    )
    args = parser.parse_args(argv)
    result = run(args.pattern, args.data_dir, args.tolerance, reuse=args.reuse)
    print(result["tables"][0][1])
    if args.out:
        write_report(args.out, "reproduce", "Published checkpoints reproduced with psn-zoo validate", result)
    return 0 if all(r["ok"] for r in result["records"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
