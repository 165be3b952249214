"""The harness of the pre-registered frontier comparison (benchmarks/frontier.py): the 81 runs are the documented
commands, a run is made, recorded and never repeated, and the decision rule judges the hypotheses as written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import frontier as fr
from benchmarks._common import Timing
from psn_zoo.training.recipes import recipe_path

ROOT = Path(__file__).resolve().parents[1]
PREREG = (ROOT / "docs" / "frontier_comparison.md").read_text()


def test_the_runs_are_the_pre_registered_grid():
    runs = fr.all_runs()
    assert len(runs) == len(set(runs)) == 81 == 9 * 3 * 3
    for task, arm, seed in runs:
        assert fr.parse_id(fr.run_id(task, arm, seed)) == (task, arm, seed)
    with pytest.raises(SystemExit, match="unknown run"):
        fr.parse_id("permuted-nosuch-s0")


@pytest.mark.parametrize("arm", [a.name for a in fr.ARMS])
def test_each_arms_command_is_the_documented_one(arm):
    """The table of docs/frontier_comparison.md: the shared recipe with only the neuron replaced, or the arm's own
    recipe; the permuted task adds only its flag; seeds for the model and the data."""
    a = fr.ARM[arm]
    for task in fr.TASKS:
        args = fr.command(task, arm, 1)
        assert args[-4:] == ["--seed_everything", "1", "--data.init_args.seed", "1"]
        assert ("--data.init_args.permute_pixels" in args) == (task == "permuted")
        recipe = args[args.index("--config") + 1]
        assert (ROOT / "psn_zoo" / "recipes" / f"{recipe}.yaml").is_file()
        if a.own:
            assert "--model.neuron" not in args and recipe == a.own[fr.family(task)]
        else:
            assert recipe == (fr.SEQ if task != "ndigits" else fr.ND)
            kwargs = json.loads(args[args.index("--model.neuron_kwargs") + 1])
            label = {"spsn": "| SPSN |", "paralif": "| ParaLIF |"}.get(arm, f"`{a.neuron}`")
            row = next(line for line in PREREG.splitlines() if line.startswith("| ") and label in line)
            for key, value in kwargs.items():  # every setting of the run stands in the pre-registered row
                assert f"{key}: {json.dumps(value)}" in row, (key, value, row)


@pytest.mark.parametrize("arm", [a.name for a in fr.ARMS])
def test_every_command_builds(arm, tmp_path, monkeypatch):
    from psn_zoo.training.cli import run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for task in ("permuted", "ndigits"):
        cli = run_cli([*fr.command(task, arm, 0)[1:], "--trainer.logger", "false"], run=False)
        neuron = cli.model.hparams.neuron
        assert neuron == (fr.ARM[arm].neuron or neuron)
        if task == "permuted":
            assert cli.datamodule.hparams.permute_pixels


def test_the_accuracy_rule():
    item = 0.28
    assert fr.beats([90.0, 91.0, 89.0], [89.0, 89.5, 89.5], item) == "shown"  # mean +0.67, ahead in 2 seeds
    assert fr.beats([93.0, 88.0, 88.0], [89.0, 89.0, 89.0], item) == "not shown"  # mean +0.67, ahead in 1 seed
    assert fr.beats([89.0, 89.0, 89.0], [89.2, 89.0, 89.0], item) == "not shown"  # within one item
    assert fr.beats([88.0, 88.0, 88.0], [89.0, 89.0, 89.0], item) == "contradicted"
    assert fr.equivalent({"a": ([90.0] * 3, [90.4] * 3), "b": ([80.0] * 3, [79.6] * 3)}) == "shown"
    assert fr.equivalent({"a": ([89.0] * 3, [90.0] * 3)}) == "contradicted"
    assert fr.equivalent({"a": ([91.0] * 3, [90.0] * 3)}) == "not shown"  # better by more than the bound
    assert (fr.faster(1.0, 1.2), fr.faster(1.0, 1.05), fr.faster(1.2, 1.0)) == ("shown", "not shown", "contradicted")


def _record(task: str, arm: str, seed: int, acc: float, rate: float = 100.0) -> dict:
    return {"id": fr.run_id(task, arm, seed), "test_acc": acc, "samples_per_s": rate, "alone": True}


def test_hypotheses_from_the_runs_that_exist(tmp_path):
    runs = {}
    for seed, (pmsn, lif, sliding) in enumerate([(92.0, 80.0, 90.0), (91.5, 81.0, 90.2), (92.4, 79.0, 89.9)]):
        for arm, acc in (("pmsn", pmsn), ("lif", lif), ("sliding_psn", sliding)):
            runs[fr.run_id("permuted", arm, seed)] = _record("permuted", arm, seed, acc)
    verdicts = {label.split()[0]: verdict for label, verdict, _ in fr.hypotheses(runs)}
    assert verdicts["H1"] == "shown" and verdicts["H2"] == "shown"
    assert {verdicts[h] for h in ("H3", "H4", "H5", "H6", "H7")} == {"not run yet"}
    (tmp_path / "runs").mkdir()
    for rid, record in runs.items():
        (tmp_path / "runs" / f"{rid}.json").write_text(json.dumps(record))
    text = fr.report(tmp_path)
    assert "9 of 81 pre-registered runs made" in text and (tmp_path / "results.md").read_text() == text
    row = next(line for line in text.splitlines() if line.startswith("| permuted") and "| pmsn " in line)
    assert [c.strip() for c in row.split("|")[3:7]] == ["92.00", "91.50", "92.40", "91.97 ± 0.45"], row
    assert len(fr.pending(tmp_path, "permuted-*")) == 27 - 9


def test_a_run_is_made_recorded_and_not_repeated(tmp_path, monkeypatch):
    """One real (shrunken) run of the harness: the pre-registered command plus limits, in this process."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    shrink = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
              "--data.init_args.images_per_class", "8"]  # fmt: skip
    stale = tmp_path / "work" / "permuted-pmsn-s0" / "checkpoints"  # an interrupted attempt's leftovers
    stale.mkdir(parents=True)
    (stale / "last.ckpt").write_bytes(b"interrupted")
    record = fr.run_one("permuted", "pmsn", 0, tmp_path, shrink)
    assert not (stale / "last.ckpt").exists() or (stale / "last.ckpt").read_bytes() != b"interrupted"
    with pytest.raises(RuntimeError, match="already made"):
        fr.run_one("permuted", "pmsn", 0, tmp_path, shrink)
    saved = json.loads((tmp_path / "runs" / "permuted-pmsn-s0.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert 0.0 <= record["test_acc"] <= 100.0 and record["best_checkpoint"].startswith("best-")
    assert [e["epoch"] for e in record["epochs"]] == [0, 1]
    assert all(e["samples_per_s"] > 0 and 0 < e["samples"] <= 2 * 64 for e in record["epochs"])  # <= 2 batches
    assert record["command"].startswith("psn-zoo fit --config seqdigits_sliding_psn --model.neuron pmsn")
    assert record["commit"] is None or len(record["commit"]) == 40  # the code that made it (None outside git)
    assert "permuted-pmsn-s0" not in {fr.run_id(*r) for r in fr.pending(tmp_path, None)}


def test_the_speed_grid_times_every_arms_neuron_against_lif():
    result = fr.speed((2,), 2**8, Timing(rounds=1, min_reps=1, budget_s=0.0, warmup=0))
    assert {r["neuron"] for r in result["rows"]} == {a.name for a in fr.ARMS} - {"lif"}
    assert all(r["fwd_s"] > 0 and r["fb_s"] > 0 and r["lif_fb_s"] > 0 for r in result["rows"])
    assert "t_LIF / t fwd+bwd" in fr.speed_table(result)


def test_a_shared_run_pauses_while_someone_else_is_timing(tmp_path, monkeypatch):
    """``--run --shared``: the run's process group is stopped while the lock exists and resumes after."""
    import sys
    import threading
    import time

    lock, ticks = tmp_path / "BENCH_LOCK", tmp_path / "ticks"
    monkeypatch.setattr(fr, "LOCK", lock)
    lock.touch()
    child = f"import time\nfor i in range(20):\n    open({str(ticks)!r}, 'a').write('x')\n    time.sleep(0.05)"
    done: list = []
    thread = threading.Thread(target=lambda: done.append(fr._run_yielding([sys.executable, "-c", child], 0.05)))
    thread.start()
    time.sleep(2.0)  # the child starts, is seen by the poll and stopped within a tick or two
    paused_at = len(ticks.read_text()) if ticks.exists() else 0
    time.sleep(1.0)
    assert (len(ticks.read_text()) if ticks.exists() else 0) == paused_at < 20 and not done  # stopped, not dead
    lock.unlink()
    thread.join(timeout=60)
    assert done and done[0].returncode == 0 and len(ticks.read_text()) == 20


def test_memory_and_neuron_cost_of_one_arm_reach_the_report(tmp_path, monkeypatch):
    """Metric 3 (one training step's peak memory) and Metric 4 (the neurons' cost) through the same builder the runs
    use; the masked PSN is costed at the end of its schedule (λ = 1: its band, not T² multiply-adds)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    row = fr.memory_in_fresh_process("permuted", "masked_psn")  # as --memory measures it
    assert row["peak_bytes"] > 0 and row["batch"] == 64 and row["T"] == 28
    k, T = yaml.safe_load(recipe_path("seqdigits_masked_psn").read_text())["model"]["neuron_kwargs"]["k"], 28
    assert row["neuron_layers"] > 0 and row["neurons_per_sample"] > 0 and row["neuron_params"] > 0
    assert row["macs_per_neuron_step"] == (k * T - k * (k - 1) / 2) / T and row["acs_per_neuron_step"] == 0
    (tmp_path / "out" / "runs").mkdir(parents=True)
    (tmp_path / "out" / "memory.json").write_text(json.dumps([row]))
    text = fr.report(tmp_path / "out")
    cost = text[text.index("(Metrics 3, 4)") :]
    line = next(x for x in cost.splitlines() if x.startswith("| permuted") and "| masked_psn" in x)
    cells = [c.strip() for c in line.split("|")[3:8]]
    assert cells == [f"{row['peak_bytes'] / 2**20:.1f} (64)", "28", "7", str(row["neuron_params"]), "8192"], cells


def test_the_deviations_remeasures_rejudge_h5_and_h6_next_to_the_originals(tmp_path):
    """The re-measures of 2026-12-05 (docs/frontier_comparison.md, "Deviations") add H5 and H6 rows judged on them;
    the pre-registered rows stay as they were."""
    runs = {}
    for seed in fr.SEEDS:
        for arm, acc in (("paralif", 90.0 + seed), ("lif", 80.0 + seed)):
            runs[fr.run_id("ndigits", arm, seed)] = _record("ndigits", arm, seed, acc)
    runs[fr.run_id("columns", "lif", 0)] = _record("columns", "lif", 0, 98.0, rate=300.0)
    runs[fr.run_id("columns", "fpt_lif", 0)] = _record("columns", "fpt_lif", 0, 97.0, rate=200.0)
    grid = {"N": 256, "rows": [{"neuron": "paralif", "T": T, "fb_s": 1.0, "lif_fb_s": lif, "fwd_ratio": "1",
                                "fb_ratio": "1"} for T, lif in ((8, 2.0), (32, 3.0))]}  # fmt: skip
    slow = {"N": 256, "rows": [{**r, "lif_fb_s": 0.5} for r in grid["rows"]]}
    after = {"speed": grid, "throughput": [{"arm": "lif", "samples_per_s": 300.0, "alone": True, "epochs": [{}] * 4},
                                           {"arm": "fpt_lif", "samples_per_s": 450.0, "alone": True,
                                            "epochs": [{}] * 4}]}  # fmt: skip
    judged = {label: verdict for label, verdict, _ in fr.hypotheses(runs, slow, after)}
    h5 = {k: v for k, v in judged.items() if k.startswith("H5")}
    h6 = {k: v for k, v in judged.items() if k.startswith("H6")}
    assert sorted(h5.values()) == ["contradicted", "shown"] and sorted(h6.values()) == ["contradicted", "shown"]
    assert all(v == "shown" for k, v in {**h5, **h6}.items() if "fused implementations" in k)
    (tmp_path / "runs").mkdir()
    for rid, record in runs.items():
        (tmp_path / "runs" / f"{rid}.json").write_text(json.dumps(record))
    (tmp_path / "speed.json").write_text(json.dumps(slow))
    (tmp_path / fr.AFTER["speed"]).write_text(json.dumps(grid))
    (tmp_path / fr.AFTER["throughput"]).write_text(json.dumps(after["throughput"]))
    cost = {"task": "ndigits", "arm": "pmsn", "peak_bytes": 300 * 2**20, "batch": 32, "T": 4, "neuron_layers": 8,
            "neuron_params": 0, "neurons_per_sample": 10, "macs_per_neuron_step": 3.0,
            "acs_per_neuron_step": 0.0}  # fmt: skip
    (tmp_path / "memory.json").write_text(json.dumps([cost]))
    (tmp_path / fr.AFTER["memory"]).write_text(json.dumps([{**cost, "peak_bytes": 120 * 2**20}]))
    text = fr.report(tmp_path)
    cost_rows = text[text.index("(Metrics 3, 4)") :].splitlines()
    row = next(line for line in cost_rows if line.startswith("| ndigits") and "| pmsn" in line)
    assert "| peak MiB, fused (2026-12-05) |" in text and [c.strip() for c in row.split("|")[3:5]] == [
        "300.0 (32)",
        "120.0",
    ]
    assert "## Training throughput, fused implementations" in text and "| fpt_lif |      4 |             450 |" in text
    assert "## Speed against T (CPU, N = 256" in text and "## Speed against T (CPU, fused implementations" in text


def test_the_throughput_of_one_arm_is_a_short_run_of_its_command(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    shrink = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
              "--data.init_args.images_per_class", "8"]  # fmt: skip
    row = fr.throughput_one("fpt_lif", 2, tmp_path, shrink)
    assert row["arm"] == "fpt_lif" and row["task"] == "columns" and len(row["epochs"]) == 2
    assert row["samples_per_s"] == row["epochs"][1]["samples_per_s"] > 0
