"""The pre-registered frontier comparison (docs/frontier_comparison.md): run it, resume it, report it.

Every run is the pre-registered command (a recipe with only the neuron replaced, seeds ``S`` for the model and the
data), made in a fresh process, then tested on its best-validation checkpoint; its record (test accuracy, each
epoch's training throughput, the command, the machine's load) is written to ``<out>/runs/<id>.json`` and a finished
run is never made again. ``--report`` gathers whatever runs exist into the per-seed table and judges H1-H7 by the
pre-registered decision rule (a hypothesis whose runs are missing is "not run yet").

    python -m benchmarks.frontier --list                       # the 81 runs and their commands
    python -m benchmarks.frontier --run [--only 'permuted-*'] [--max-runs N]
    python -m benchmarks.frontier --memory                     # Metric 3: one training step's peak memory per arm
    python -m benchmarks.frontier --speed [--quick]            # Metric 5: each neuron alone against T
    python -m benchmarks.frontier --report                     # tables and hypotheses -> <out>/results.md
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import REPO_ROOT, Timing, check_device, markdown_table, time_pair

OUT = REPO_ROOT / "docs" / "frontier"
TASKS = ("columns", "permuted", "ndigits")
SEEDS = (0, 1, 2)
#: One test item in accuracy points (the decision rule's margin): 359 test digits, 1077 N-Digits recordings.
ONE_ITEM = {"columns": 100 / 359, "permuted": 100 / 359, "ndigits": 100 / 1077}


@dataclass(frozen=True)
class Arm:
    """One neuron setting of the comparison: its own recipes (``own``) or the shared ones with only the neuron
    replaced (``neuron`` + ``kwargs`` per task family: ``seq`` for the digit columns, ``ndigits``)."""

    name: str
    neuron: str | None = None
    kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    own: Mapping[str, str] = field(default_factory=dict)


SEQ, ND = "seqdigits_sliding_psn", "ndigits_psn_vgg"
ARMS = (
    Arm("lif", own={"seq": "seqdigits_lif", "ndigits": "ndigits_lif_vgg"}),
    Arm("psn", own={"seq": "seqdigits_psn", "ndigits": "ndigits_psn_vgg"}),
    Arm("masked_psn", own={"seq": "seqdigits_masked_psn", "ndigits": "ndigits_masked_psn_vgg"}),
    Arm("sliding_psn", "sliding_psn", {"seq": {"k": 28, "exp_init": True}, "ndigits": {"k": 2, "exp_init": True}}),
    Arm("pmsn", "pmsn", {"seq": {"n": 4}, "ndigits": {"n": 4}}),
    Arm(
        "channel_sliding_psn",
        "channel_sliding_psn",
        {"seq": {"k": 8, "dilation": 4, "mul_free": True}, "ndigits": {"k": 2, "mul_free": True}},
    ),
    Arm(
        "fpt_lif",
        "fpt_lif",
        {"seq": {"K": 3, "tau": 2.0, "v_reset": None, "detach_reset": True}, "ndigits": {"K": 3, "tau": 2.0}},
    ),
    Arm("paralif", "paralif", {f: {"tau_mem": 2.0, "tau_syn": 2.0, "spike_mode": "T"} for f in ("seq", "ndigits")}),
    Arm("spsn", "paralif", {f: {"tau_mem": 2.0, "tau_syn": 2.0, "spike_mode": "SB"} for f in ("seq", "ndigits")}),
)
ARM = {a.name: a for a in ARMS}
NEW = ("pmsn", "channel_sliding_psn", "fpt_lif", "paralif", "spsn")


def family(task: str) -> str:
    return "ndigits" if task == "ndigits" else "seq"


def run_id(task: str, arm: str, seed: int) -> str:
    return f"{task}-{arm}-s{seed}"


def parse_id(rid: str) -> tuple[str, str, int]:
    """``"permuted-pmsn-s2"`` -> ``("permuted", "pmsn", 2)``; an unknown task, arm or seed is an error."""
    head, _, seed = rid.rpartition("-s")
    task, _, arm = head.partition("-")
    if task not in TASKS or arm not in ARM or not seed.isdigit() or int(seed) not in SEEDS:
        raise SystemExit(f"unknown run {rid!r}: <task>-<arm>-s<seed> with task in {TASKS}, arm in {tuple(ARM)}")
    return task, arm, int(seed)


def all_runs() -> list[tuple[str, str, int]]:
    return [(task, arm.name, seed) for task in TASKS for arm in ARMS for seed in SEEDS]


def command(task: str, arm: str, seed: int) -> list[str]:
    """The pre-registered ``psn-zoo fit`` arguments of one run (docs/frontier_comparison.md, "Tasks")."""
    a, fam = ARM[arm], family(task)
    if a.own:
        args = ["fit", "--config", a.own[fam]]
    else:
        args = ["fit", "--config", SEQ if fam == "seq" else ND, "--model.neuron", str(a.neuron),
                "--model.neuron_kwargs", json.dumps(dict(a.kwargs[fam]))]  # fmt: skip
    if task == "permuted":
        args += ["--data.init_args.permute_pixels", "true"]
    return [*args, "--seed_everything", str(seed), "--data.init_args.seed", str(seed)]


# ------------------------------------------------------------------------------------------------ one run
def run_one(task: str, arm: str, seed: int, out: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Make one run in this process and write its record; ``extra`` appends arguments (tests shrink the run)."""
    import torch

    from psn_zoo.training import EpochClock
    from psn_zoo.training.cli import run_cli

    rid = run_id(task, arm, seed)
    run_dir = out / "work" / rid
    if (out / "runs" / f"{rid}.json").exists():
        raise RuntimeError(f"{rid} is already made ({out / 'runs' / f'{rid}.json'}); delete its record to redo it")
    if run_dir.exists():  # an interrupted attempt (a record is written only once a run completes): start afresh,
        shutil.rmtree(run_dir)  # as the CLI refuses a fit into a folder that holds another run's checkpoints
    harness = ["--trainer.logger", "false", "--trainer.default_root_dir", str(run_dir), "--trainer.callbacks+="
               "psn_zoo.training.EpochClock", "--trainer.enable_progress_bar", "false", *extra]  # fmt: skip
    args = [*command(task, arm, seed), *harness]
    load = os.getloadavg()[0]
    # alone: the harness holds the lock (--run without --shared) and nothing else was busy at the start
    alone = LOCK.exists() and load < 1.0 and not os.environ.get("PSN_ZOO_FRONTIER_SHARED")
    start = time.perf_counter()
    cli = run_cli(args)
    wall = time.perf_counter() - start
    trainer = cli.trainer
    best = next(cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None))
    if not best.best_model_path:
        raise RuntimeError(f"{rid}: no best checkpoint was saved (monitor {best.monitor!r})")
    state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    cli.model.load_state_dict(state)
    tested = trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    clock = next(cb for cb in trainer.callbacks if isinstance(cb, EpochClock))
    rates = [e["samples_per_s"] for e in clock.epochs[1:]] or [e["samples_per_s"] for e in clock.epochs]
    record = {
        "id": rid, "task": task, "arm": arm, "seed": seed,
        "command": "psn-zoo " + " ".join(_quote(a) for a in command(task, arm, seed)),
        "harness_args": harness,
        "test_acc": float(tested["test/acc"]) * 100,
        "best_val": float(best.best_model_score) * 100 if best.best_model_score is not None else None,
        "best_checkpoint": Path(best.best_model_path).name,
        "test_firing_rate": float(tested.get("test/firing_rate", float("nan"))),
        "epochs": clock.epochs,
        "samples_per_s": statistics.median(rates) if rates else None,
        "wall_s": wall,
        "load_at_start": load,
        "alone": alone,
        "commit": _commit(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    path = out / "runs" / f"{rid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)  # a run exists only once its record is complete
    return record


# ------------------------------------------------------------------------------------------------ re-measures
#: Files of the measurements made again after the deviation of 2026-12-05 (docs/frontier_comparison.md,
#: "Deviations"): the neurons' fused implementations, timed next to the pre-registered ones.
AFTER = {"speed": "speed_kernels.json", "throughput": "throughput_kernels.json", "memory": "memory_kernels.json"}
THROUGHPUT_TASK = "columns"


def throughput_one(arm: str, epochs: int, root: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Training throughput of one arm on the column digits (the seed-0 command, ``epochs`` epochs, no test): the
    median samples/s over epochs 2 … E, as Metric 2 reads a full run."""
    from psn_zoo.training import EpochClock
    from psn_zoo.training.cli import run_cli

    args = [*command(THROUGHPUT_TASK, arm, 0), "--trainer.max_epochs", str(epochs), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(root / arm), "--trainer.callbacks+=psn_zoo.training.EpochClock",
            "--trainer.enable_progress_bar", "false", *extra]  # fmt: skip
    load = os.getloadavg()[0]
    alone = LOCK.exists() and load < 1.0
    trainer = run_cli(args).trainer
    clock = next(cb for cb in trainer.callbacks if isinstance(cb, EpochClock))
    rates = [e["samples_per_s"] for e in clock.epochs[1:]] or [e["samples_per_s"] for e in clock.epochs]
    return {"task": THROUGHPUT_TASK, "arm": arm, "epochs": clock.epochs, "samples_per_s": statistics.median(rates),
            "load_at_start": load, "alone": alone}  # fmt: skip


def throughput(arms: Sequence[str], epochs: int, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """:func:`throughput_one` for each arm, each in a fresh process holding /tmp/BENCH_LOCK, after the load has
    dropped (a run counts as alone only when the 1-minute load is under 1 at its start)."""
    rows = []
    with bench_lock(), tempfile.TemporaryDirectory() as root:
        for arm in arms:
            deadline = time.time() + 180
            while os.getloadavg()[0] >= 0.9 and time.time() < deadline:
                time.sleep(5)
            cmd = [sys.executable, "-m", "benchmarks.frontier", "--throughput-one", arm, "--epochs", str(epochs),
                   "--out", root, "--", *extra]  # fmt: skip
            done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"[frontier] {arm}: {rows[-1]['samples_per_s']:.0f} samples/s", flush=True)
    return rows


def _commit() -> str | None:
    """The commit of the code that made a run (the checkout the harness runs from), or None outside git."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in ' {}"') else arg


LOCK = Path(os.environ.get("PSN_ZOO_BENCH_LOCK", "/tmp/BENCH_LOCK"))  # the machine's "someone is timing" flag


@contextlib.contextmanager
def bench_lock(poll_s: float = 20.0) -> Iterator[None]:
    """Hold /tmp/BENCH_LOCK (waiting while another job holds it): the runs' throughput is measured alone."""
    while True:
        try:
            LOCK.touch(exist_ok=False)
            break
        except FileExistsError:
            time.sleep(poll_s)
    try:
        yield
    finally:
        LOCK.unlink(missing_ok=True)


def pending(out: Path, only: str | None) -> list[tuple[str, str, int]]:
    done = {p.stem for p in (out / "runs").glob("*.json")}
    runs = [r for r in all_runs() if run_id(*r) not in done]
    return [r for r in runs if only is None or fnmatch.fnmatchcase(run_id(*r), only)]


def run_all(
    out: Path, only: str | None, max_runs: int | None, extra: Sequence[str] = (), shared: bool = False
) -> list[str]:
    """Each pending run in a fresh process (``--run-one``), in the pre-registered order; returns the ids made.

    By default a run holds /tmp/BENCH_LOCK (its throughput counts). ``shared``: it does not take the lock, is
    recorded as not alone (its throughput is not compared, its accuracy is), and it is paused (SIGSTOP) while
    another job holds the lock, so timed benchmarks still see an idle machine."""
    made = []
    for task, arm, seed in pending(out, only)[:max_runs]:
        rid = run_id(task, arm, seed)
        print(f"[frontier] {rid}: {' '.join(command(task, arm, seed))}", flush=True)
        cmd = [sys.executable, "-m", "benchmarks.frontier", "--run-one", rid, "--out", str(out), "--", *extra]
        if shared:
            result = _run_yielding(cmd)
        else:
            with bench_lock():  # alone on the machine: other timed jobs (and the agents' tests) wait on the lock
                result = subprocess.run(cmd, cwd=REPO_ROOT, check=False)
        if result.returncode != 0:
            raise SystemExit(f"[frontier] {rid} failed (exit {result.returncode}); finished runs are kept")
        made.append(rid)
    return made


def _run_yielding(cmd: Sequence[str], poll_s: float = 2.0) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group, stopped while /tmp/BENCH_LOCK exists (someone is timing)."""
    env = dict(os.environ, PSN_ZOO_FRONTIER_SHARED="1")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, start_new_session=True)
    stopped = False
    while proc.poll() is None:
        busy = LOCK.exists()
        if busy != stopped:
            os.killpg(proc.pid, signal.SIGSTOP if busy else signal.SIGCONT)
            stopped = busy
        time.sleep(poll_s)
    return subprocess.CompletedProcess(cmd, proc.returncode)


# ------------------------------------------------------------------------------------------------ the report
def load_runs(out: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


def accuracies(runs: Mapping[str, dict], task: str, arm: str) -> list[float] | None:
    """Test accuracies of seeds 0, 1, 2, or None until all three runs exist."""
    got = [runs.get(run_id(task, arm, s)) for s in SEEDS]
    return None if any(r is None for r in got) else [r["test_acc"] for r in got]


def beats(a: Sequence[float], b: Sequence[float], margin: float) -> str:
    """The accuracy rule: ``shown`` (A's mean ahead by more than one item and A ahead in >= 2 seeds),
    ``contradicted`` (B's mean ahead by more than one item) or ``not shown``."""
    diff = statistics.mean(a) - statistics.mean(b)
    if diff > margin and sum(x > y for x, y in zip(a, b, strict=True)) >= 2:
        return "shown"
    return "contradicted" if -diff > margin else "not shown"


def equivalent(per_task: Mapping[str, tuple[Sequence[float], Sequence[float]]], bound: float = 0.5) -> str:
    """H4's rule over tasks: ``shown`` when every |mean difference| <= bound; ``contradicted`` when on some task
    the reference is ahead by more than ``bound`` in the mean and in >= 2 seeds; else ``not shown``."""
    diffs = {t: statistics.mean(a) - statistics.mean(b) for t, (a, b) in per_task.items()}
    if all(abs(d) <= bound for d in diffs.values()):
        return "shown"
    for t, (a, b) in per_task.items():
        if -diffs[t] > bound and sum(y > x for x, y in zip(a, b, strict=True)) >= 2:
            return "contradicted"
    return "not shown"


def faster(time_a: float, time_b: float, factor: float = 1.1) -> str:
    """The speed rule: A is faster when B's time is more than ``factor`` times A's; contradicted the other way."""
    if time_b > factor * time_a:
        return "shown"
    return "contradicted" if time_a > factor * time_b else "not shown"


def hypotheses(
    runs: Mapping[str, dict], speed: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None
) -> list[tuple[str, str, str]]:
    """``(hypothesis, verdict, evidence)`` for H1-H7 from the runs that exist (and the speed grid for H6); ``after``
    (``{"speed": grid, "throughput": rows}``, the re-measures of the deviation of 2026-12-05) adds H5 and H6 judged
    again on them."""
    out: list[tuple[str, str, str]] = []

    def acc_rule(label: str, task: str, a: str, b: str) -> None:
        xa, xb = accuracies(runs, task, a), accuracies(runs, task, b)
        if xa is None or xb is None:
            out.append((label, "not run yet", f"needs {task} runs of {a} and {b}, seeds 0-2"))
            return
        verdict = beats(xa, xb, ONE_ITEM[task])
        out.append((label, verdict, f"{a} {_ms(xa)} vs {b} {_ms(xb)} on {task}"))

    acc_rule("H1 PMSN beats LIF (permuted)", "permuted", "pmsn", "lif")
    acc_rule("H2 PMSN beats sliding PSN (permuted)", "permuted", "pmsn", "sliding_psn")
    acc_rule("H3 channel-wise sliding PSN beats sliding PSN (permuted)", "permuted", "channel_sliding_psn",
             "sliding_psn")  # fmt: skip
    pairs = {t: (accuracies(runs, t, "fpt_lif"), accuracies(runs, t, "lif")) for t in TASKS}
    if any(a is None or b is None for a, b in pairs.values()):
        out.append(("H4 FPT-LIF as accurate as LIF (all tasks)", "not run yet", "needs fpt_lif and lif on 3 tasks"))
    else:
        evidence = "; ".join(f"{t}: {_ms(a)} vs {_ms(b)}" for t, (a, b) in pairs.items())
        out.append(("H4 FPT-LIF as accurate as LIF (all tasks)", equivalent(pairs), evidence))
    thr = {arm: _throughput(runs, "permuted", arm) for arm in ("fpt_lif", "lif")}
    thr_cols = {arm: _throughput(runs, "columns", arm) for arm in ("fpt_lif", "lif")}
    both = {arm: [*(thr[arm] or []), *(thr_cols[arm] or [])] for arm in thr}
    if not both["fpt_lif"] or not both["lif"]:
        out.append(("H5 FPT-LIF trains faster than LIF (digits)", "not run yet", "needs runs made alone"))
    else:
        a, b = statistics.median(both["fpt_lif"]), statistics.median(both["lif"])
        out.append(("H5 FPT-LIF trains faster than LIF (digits)", faster(1 / a, 1 / b),
                    f"{a:.0f} vs {b:.0f} samples/s (median over runs made alone)"))  # fmt: skip
    xa, xb = accuracies(runs, "ndigits", "paralif"), accuracies(runs, "ndigits", "lif")
    acc = "not run yet" if xa is None or xb is None else beats(xa, xb, ONE_ITEM["ndigits"])
    out.append(_h6("H6 ParaLIF beats LIF on N-Digits and is faster at T >= 8", acc, speed))
    if after is not None:
        label = "(fused implementations, deviation of 2026-12-05)"
        rates = {r["arm"]: r["samples_per_s"] for r in after.get("throughput") or () if r.get("alone")}
        if "fpt_lif" in rates and "lif" in rates:
            a, b = rates["fpt_lif"], rates["lif"]
            out.append((f"H5 FPT-LIF trains faster than LIF (digits) {label}", faster(1 / a, 1 / b),
                        f"{a:.0f} vs {b:.0f} samples/s ({THROUGHPUT_TASK}, short runs made alone)"))  # fmt: skip
        else:
            out.append((f"H5 FPT-LIF trains faster than LIF (digits) {label}", "not run yet", "needs --throughput"))
        out.append(_h6(f"H6 ParaLIF beats LIF on N-Digits and is faster at T >= 8 {label}", acc, after.get("speed")))
    means = {arm: statistics.mean(x) for arm in NEW if (x := accuracies(runs, "permuted", arm)) is not None}
    if len(means) < len(NEW) or accuracies(runs, "permuted", "sliding_psn") is None:
        out.append(("H7 the best new neuron beats sliding PSN (permuted; post hoc)", "not run yet", "needs all"))
    else:
        best = max(means, key=means.__getitem__)
        acc_rule(f"H7 the best new neuron ({best}, chosen post hoc) beats sliding PSN (permuted)", "permuted", best,
                 "sliding_psn")  # fmt: skip
    return out


def _h6(label: str, acc: str, speed: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """H6 from its accuracy verdict and a speed grid (ParaLIF against LIF, forward + backward, every T >= 8)."""
    speed_verdict = "not run yet"
    if speed:
        rows = [r for r in speed["rows"] if r["neuron"] == "paralif" and r["T"] >= 8]
        verdicts = {faster(r["fb_s"], r["lif_fb_s"]) for r in rows}
        speed_verdict = "shown" if verdicts == {"shown"} else ("contradicted" if "contradicted" in verdicts else
                                                                "not shown")  # fmt: skip
    both_parts = {acc, speed_verdict}
    h6 = acc if len(both_parts) == 1 else ("not run yet" if "not run yet" in both_parts else
                                          "contradicted" if "contradicted" in both_parts else "not shown")  # fmt: skip
    return label, h6, f"accuracy: {acc}; speed: {speed_verdict}"


def _throughput(runs: Mapping[str, dict], task: str, arm: str) -> list[float] | None:
    values = [r["samples_per_s"] for s in SEEDS if (r := runs.get(run_id(task, arm, s))) and r.get("alone")]
    return values or None


def _ms(values: Sequence[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def report(out: Path) -> str:
    runs = load_runs(out)
    speed_path = out / "speed.json"
    speed = json.loads(speed_path.read_text()) if speed_path.exists() else None
    after = {key: json.loads((out / name).read_text()) for key, name in AFTER.items() if (out / name).exists()}
    rows = []
    for task in TASKS:
        for arm in ARMS:
            accs = [runs.get(run_id(task, arm.name, s)) for s in SEEDS]
            cells = [f"{r['test_acc']:.2f}" if r else "—" for r in accs]
            done = [r["test_acc"] for r in accs if r]
            summary = _ms(done) if len(done) == len(SEEDS) else f"{len(done)}/3 runs"
            rates = [r["samples_per_s"] for r in accs if r and r.get("samples_per_s")]
            shared = any(r and not r.get("alone") for r in accs)
            rate = f"{statistics.median(rates):.0f}{' (shared CPU)' if shared else ''}" if rates else "—"
            rows.append([task, arm.name, *cells, summary, rate])
    table = markdown_table(["task", "arm", "seed 0", "seed 1", "seed 2", "mean ± sd", "train samples/s"], rows,
                           left=(0, 1))  # fmt: skip
    judged = hypotheses(runs, speed, after or None)
    verdicts = markdown_table(["hypothesis", "verdict", "evidence"], judged, left=(0, 1, 2))
    text = (f"# Frontier comparison: results so far\n\n{len(runs)} of {len(all_runs())} pre-registered runs made "
            f"(`python -m benchmarks.frontier --report`).\n\n## Test accuracy (%)\n\n{table}\n\n## Hypotheses\n\n"
            f"{verdicts}\n")  # fmt: skip
    if (out / "memory.json").exists():  # Metrics 3 and 4, where measured
        text += f"\n## Peak memory of a training step and neuron cost (Metrics 3, 4)\n\n{cost_table(out, runs)}\n"
    if "throughput" in after:
        heading = "Training throughput, fused implementations (deviation of 2026-12-05)"
        text += f"\n## {heading}\n\n{throughput_table(after['throughput'])}\n"
    fused = "fused implementations of 2026-12-05, "
    for name, where in (("speed.json", "CPU, "), (AFTER["speed"], f"CPU, {fused}"), ("speed_cuda.json", "GPU, "),
                        ("speed_cuda_kernels.json", f"GPU, {fused}")):  # fmt: skip
        if (out / name).exists():  # Metric 5, where measured
            measured = json.loads((out / name).read_text())
            text += (f"\n## Speed against T ({where}N = {measured['N']}, each neuron alone, ratio to LIF)\n\n"
                     f"{speed_table(measured)}\n")  # fmt: skip
    (out / "results.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    return text


def throughput_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The re-measured Metric 2 (``--throughput --after``): each arm's short run on the column digits."""
    note = (
        "Each arm's seed-0 command on the column digits for a few epochs, alone on the machine "
        "(`python -m benchmarks.frontier --throughput --after`); samples/s is the median over epochs 2 … E."
    )
    table = [[r["arm"], len(r["epochs"]), f"{r['samples_per_s']:.0f}", "yes" if r["alone"] else "no"] for r in rows]
    return f"{note}\n\n{markdown_table(['arm', 'epochs', 'train samples/s', 'alone'], table, left=(0,))}"


def cost_table(out: Path, runs: dict[str, dict[str, Any]]) -> str:
    """Metrics 3 and 4 from ``memory.json`` (``--memory``) and the test firing rates of the runs made."""
    rows = []
    fused_path = out / AFTER["memory"]
    fused = {(m["task"], m["arm"]): m for m in json.loads(fused_path.read_text())} if fused_path.exists() else None
    for m in json.loads((out / "memory.json").read_text()):
        rates = [r["test_firing_rate"] for s in SEEDS if (r := runs.get(run_id(m["task"], m["arm"], s)))]
        rate = f"{statistics.mean(rates):.3f}" if rates else "—"
        peak = [f"{m['peak_bytes'] / 2**20:.1f} ({m['batch']})"]
        again = fused.get((m["task"], m["arm"])) if fused is not None else None
        if fused is not None:
            peak.append(f"{again['peak_bytes'] / 2**20:.1f}" if again else "—")
        cost = again or m  # the neuron cost as the current classes count it, where measured again
        rows.append([m["task"], m["arm"], *peak, m["T"], cost["neuron_layers"], cost["neuron_params"],
                     cost["neurons_per_sample"], f"{cost['macs_per_neuron_step']:g}",
                     f"{cost['acs_per_neuron_step']:g}", rate])  # fmt: skip
    headers = ["task", "arm", "peak MiB (batch)", *(["peak MiB, fused (2026-12-05)"] if fused is not None else []),
               "T", "neuron layers", "neuron params", "neurons / sample", "MACs / neuron / step",
               "ACs / neuron / step", "test firing rate"]  # fmt: skip
    note = (
        "Peak MiB: the rise of the peak resident set of one training step (forward + backward, the recipe's "
        "batch) over the built model, in a fresh process (`python -m benchmarks.frontier --memory`). Neuron "
        "cost at the end of training (the masked PSN at λ = 1), each class's `macs_per_neuron` over T; the "
        "firing rate is the mean over the seeds made. *Fused*: measured again with the implementations of the "
        "deviation of 2026-12-05 (`--memory --after`), from no gradient held and psn_zoo's buffer pool emptied "
        "(`benchmarks._common.peak_memory_delta`; the first column left the pool out); the neuron cost columns "
        "are the current classes' count where the arm was measured again (FPT-LIF's K decay filters counted as "
        "recurrences since 2026-12-05, as every other neuron's cheapest form)."
    )
    return f"{note}\n\n{markdown_table(headers, rows, left=(0, 1))}"


# ------------------------------------------------------------------------------------------------ speed (Metric 5)
SPEED_T = (2, 4, 8, 16, 28, 32, 64)


def speed_specs(T: int) -> dict[str, dict[str, Any]]:
    """Each arm's neuron alone, at the sequential digits' settings (k and receptive fields scaled to T)."""
    return {
        "lif": {"name": "lif", "tau": 2.0},
        "psn": {"name": "psn", "T": T},
        "masked_psn": {"name": "masked_psn", "T": T, "k": T, "lambda_": 1.0},
        "sliding_psn": {"name": "sliding_psn", "k": T},
        "pmsn": {"name": "pmsn", "n": 4},
        "channel_sliding_psn": {"name": "channel_sliding_psn", "k": 8, "dilation": max(1, T // 8), "mul_free": True},
        "fpt_lif": {"name": "fpt_lif", "K": 3, "tau": 2.0},
        "paralif": {"name": "paralif", "tau_mem": 2.0, "tau_syn": 2.0, "spike_mode": "T"},
        "spsn": {"name": "paralif", "tau_mem": 2.0, "tau_syn": 2.0, "spike_mode": "SB"},
    }


def speed(Ts: Sequence[int], N: int, timing: Timing, device: str = "cpu") -> dict[str, Any]:
    """t_LIF / t_neuron for every arm's neuron, forward (no grad) and forward + backward, on ``[T, 64, N/64]``
    (the ratio is the median over alternating blocks, with the range of the per-round ratios); on a GPU each call
    is synchronised (the Triton kernels where a neuron has them, PyTorch ops elsewhere)."""
    import torch

    from psn_zoo.neurons import make_neuron, reset_states

    rows = []
    for T in Ts:
        x = torch.randn(T, 64, N // 64, device=device)
        lif = make_neuron({"name": "lif", "tau": 2.0}).to(device)
        for arm, spec in speed_specs(T).items():
            if arm == "lif":
                continue
            neuron = make_neuron(spec).to(device)
            neuron(x)  # per-channel neurons size themselves here

            def fwd(n: torch.nn.Module = neuron, x: torch.Tensor = x) -> Callable[[], object]:
                def run() -> None:
                    reset_states(n)
                    with torch.no_grad():
                        n(x)

                return run

            def fb(n: torch.nn.Module = neuron, x: torch.Tensor = x) -> Callable[[], object]:
                xg = x.clone().requires_grad_(True)

                def run() -> None:
                    reset_states(n)
                    n(xg).sum().backward()

                return run

            f_ours, f_lif, f_ratio = time_pair(fwd(), fwd(lif), **timing.kwargs(), device=device)
            b_ours, b_lif, b_ratio = time_pair(fb(), fb(lif), **timing.kwargs(), device=device)
            rows.append({"neuron": arm, "T": T, "fwd_s": f_ours, "lif_fwd_s": f_lif, "fwd_ratio": str(f_ratio),
                         "fb_s": b_ours, "lif_fb_s": b_lif, "fb_ratio": str(b_ratio)})  # fmt: skip
    return {"N": N, "device": device, "rows": rows}


def speed_table(result: Mapping[str, Any]) -> str:
    rows = [[r["neuron"], r["T"], r["fwd_ratio"], r["fb_ratio"], f"{r['fb_s'] * 1e3:.2f}"] for r in result["rows"]]
    headers = ["neuron", "T", "t_LIF / t fwd (min-max)", "t_LIF / t fwd+bwd (min-max)", "fwd+bwd ms"]
    return markdown_table(headers, rows, left=(0,))


# ------------------------------------------------------------------------------------------------ memory (Metric 3)
def memory(task: str, arm: str) -> dict[str, Any]:
    """Metric 3 and the model side of Metric 4 for one arm and task, in this process (run it in a fresh one): the
    peak resident-memory rise of one training step (forward + backward, the recipe's batch) over the built model,
    and the neurons' cost in that model: layers, parameters, neurons per sample and multiply-adds / accumulates per
    neuron and step (each class's ``macs_per_neuron``, docs/neurons.md)."""
    import torch

    from benchmarks._common import peak_memory_delta
    from psn_zoo.efficiency import neuron_macs_per_neuron
    from psn_zoo.neurons import SpikingNeuron
    from psn_zoo.training.cli import run_cli

    cli = run_cli([*command(task, arm, 0)[1:], "--trainer.logger", "false"], run=False)  # [1:]: no subcommand
    dm = cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    model = cli.model.model.train()
    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    counted: dict[int, int] = {}  # id(neuron) -> neurons it holds for one sample
    batch = int(y.shape[0])
    hooks = [  # a neuron's output is [T, B, ...]: one step of one sample holds that layer's neurons
        m.register_forward_hook(lambda m, i, o: counted.__setitem__(id(m), o[0].numel() // batch)) for m in neurons
    ]

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()

    step()  # first-touch allocations and lazy per-channel parameters happen once, before the measurement
    for h in hooks:
        h.remove()
    peak = peak_memory_delta(step, "cpu", grads_of=(model,))  # from no gradients and an empty buffer pool
    T = int(cli.model.hparams.T)
    if hasattr(neurons[0], "lambda_"):  # the masked PSN's cost once trained: its schedule ends at λ = 1
        for m in neurons:
            m.lambda_ = 1.0
    macs, acs = neuron_macs_per_neuron(neurons[0], T)
    return {
        "task": task, "arm": arm, "peak_bytes": peak, "batch": batch, "T": T,
        "neuron_layers": len(neurons),
        "neuron_params": sum(p.numel() for m in neurons for p in m.parameters()),
        "neurons_per_sample": sum(counted.get(id(m), 0) for m in neurons),
        "macs_per_neuron_step": macs / T, "acs_per_neuron_step": acs / T,
    }  # fmt: skip


def memory_in_fresh_process(task: str, arm: str) -> dict[str, Any]:
    """:func:`memory` in a new interpreter (a process that has already run something has a higher peak, which one
    step may not raise), with malloc serving multi-MiB blocks by mmap so freed memory leaves the resident set."""
    cmd = [sys.executable, "-m", "benchmarks.frontier", "--memory-one", f"{task}-{arm}"]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frontier", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(OUT), help="folder of runs/, results.md, speed.json (docs/frontier)")
    parser.add_argument("--list", action="store_true", help="list the runs, their commands and whether made")
    parser.add_argument("--run", action="store_true", help="make the pending runs, each in a fresh process")
    parser.add_argument("--only", default=None, help="fnmatch on run ids, e.g. 'permuted-*' or '*-pmsn-s0'")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    parser.add_argument("--shared", action="store_true", help="with --run: share the machine (no lock; paused while "
                        "another job holds /tmp/BENCH_LOCK; throughput recorded as shared)")  # fmt: skip
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help="Metric 3 for every arm and task (fresh processes)")
    parser.add_argument("--memory-one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--speed", action="store_true", help="Metric 5: each neuron alone against T")
    parser.add_argument("--quick", action="store_true", help="with --speed: T in {2, 8, 32}, fewer repeats")
    parser.add_argument("--device", default="cpu", help="with --speed: cpu, or cuda (N = 2^20, speed_cuda.json)")
    parser.add_argument("--after", action="store_true", help="with --speed / --throughput / --memory: the "
                        "re-measure of the deviation of 2026-12-05 (writes *_kernels.json)")  # fmt: skip
    parser.add_argument("--throughput", action="store_true", help="Metric 2 again: each arm alone, a short run of "
                        "the column digits (--epochs)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=4, help="with --throughput: epochs per arm (median of 2 … E)")
    parser.add_argument("--throughput-one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help="write <out>/results.md from the runs made")
    parser.add_argument("extra", nargs="*", help="after --: arguments appended to every run (tests shrink runs)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.run_one:
        run_one(*parse_id(args.run_one), out, args.extra)
    elif args.throughput_one:
        print(json.dumps(throughput_one(args.throughput_one, args.epochs, out, args.extra)))
    elif args.throughput:
        rows = throughput([a.name for a in ARMS], args.epochs, args.extra)
        out.mkdir(parents=True, exist_ok=True)
        (out / (AFTER["throughput"] if args.after else "throughput.json")).write_text(json.dumps(rows, indent=1) + "\n")
    elif args.memory_one:
        task, arm = args.memory_one.split("-", 1)
        print(json.dumps(memory(task, arm)))
    elif args.list:
        made = {p.stem for p in (out / "runs").glob("*.json")}
        runs = [r for r in all_runs() if args.only is None or fnmatch.fnmatchcase(run_id(*r), args.only)]
        if not runs:
            parser.error(f"--only {args.only!r} matches no run id (e.g. 'permuted-*', '*-pmsn-s0'; --list shows them)")
        for task, arm, seed in runs:
            rid = run_id(task, arm, seed)
            mark = "made" if rid in made else "    "
            print(f"{mark}  {rid:36s} psn-zoo {' '.join(_quote(a) for a in command(task, arm, seed))}")
    elif args.run:
        run_all(out, args.only, args.max_runs, args.extra, shared=args.shared)
    elif args.speed:
        Ts = (2, 8, 32) if args.quick else SPEED_T
        timing = Timing(rounds=2, min_reps=3, budget_s=0.05, warmup=1) if args.quick else Timing(3, 20, 0.5, 3)
        device = check_device(args.device)
        result = speed(Ts, 2**16 if device == "cpu" else 2**20, timing, device)
        out.mkdir(parents=True, exist_ok=True)
        name = "speed.json" if device == "cpu" else "speed_cuda.json"
        if args.after:
            name = AFTER["speed"] if device == "cpu" else "speed_cuda_kernels.json"
        (out / name).write_text(json.dumps(result, indent=1) + "\n")
        print(speed_table(result))
    elif args.memory:
        rows = [memory_in_fresh_process(task, arm.name) for task in TASKS for arm in ARMS]
        (out / (AFTER["memory"] if args.after else "memory.json")).write_text(json.dumps(rows, indent=1) + "\n")
    elif args.report:
        print(report(out))
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
