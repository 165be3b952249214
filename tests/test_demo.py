"""The README's main job, ``psn-zoo demo``, end to end in a reduced size (few digits, two training batches)."""

from __future__ import annotations

import re
import shlex

import pytest
import torch
from procs import run, wandb_env
from wandb_reader import read_run

from psn_zoo.hub import get_pretrained_info, load_pretrained_weights
from psn_zoo.training import SpikingClassifier
from psn_zoo.training.demo import DEFAULT_ENTRY

pytestmark = pytest.mark.timeout(600)


def test_demo_evaluates_finetunes_logs_and_saves(tmp_path):
    args = ["-m", "psn_zoo.cli", "demo", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "runs")]
    result = run([*args, "--images-per-class", "3", "--limit-train-batches", "3"], tmp_path, 480, wandb_env(tmp_path))
    out = result.stdout
    assert result.returncode == 0, out[-4000:]
    assert "simulating N-Digits recordings" in out  # first use: the dataset is simulated, with a progress bar
    assert re.search(r"Testing DataLoader 0: 100%", out) and re.search(r"Epoch 0: 100%", out)  # Lightning's bars

    before = float(re.search(r"pretrained \S+: test top-1 ([\d.]+) %", out).group(1))
    after = float(re.search(r"after fine-tuning: +test top-1 ([\d.]+) %", out).group(1))
    assert before >= 80.0 and after >= 50.0, out[-2000:]
    ckpt_path = re.search(r"checkpoint: (\S+\.ckpt)", out).group(1)
    run_dir = re.search(r"W&B run: +(\S+)", out).group(1)
    assert f"wandb sync {run_dir}" in out and "next steps:" in out and f"--ckpt_path {ckpt_path}" in out

    # the saved checkpoint is a plain Lightning checkpoint (loads with weights_only=True) and was fine-tuned
    module = SpikingClassifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    # self-contained: the origin is recorded, never re-applied on load (SECURITY.md)
    assert module.hparams.pretrained is None
    assert torch.load(ckpt_path, map_location="cpu", weights_only=True)["fine_tuned_from"] == DEFAULT_ENTRY
    published = load_pretrained_weights(DEFAULT_ENTRY)
    changed = [k for k, v in module.model.state_dict().items() if not torch.equal(v.float(), published[k].float())]
    assert changed, "fine-tuning left every weight unchanged"

    # the W&B run (offline) holds both evaluations, the training curve and the checkpoint artifact
    (log,) = list((tmp_path / "runs" / "demo" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert str(log.parent) == run_dir
    run_log = read_run(log)
    assert run_log.exit_code == 0
    info = get_pretrained_info(DEFAULT_ENTRY)
    assert run_log.config["pretrained"] == DEFAULT_ENTRY and run_log.config["T"] == info.T
    tests = [row["test/acc"] for row in run_log.history if "test/acc" in row]
    assert len(tests) == 2 and abs(100 * tests[0] - before) < 0.01 and abs(100 * tests[1] - after) < 0.01
    assert sum("train/loss_epoch" in row for row in run_log.history) == 1
    assert any(a["type"] == "model" for a in run_log.artifacts)

    # the first next step, `psn-zoo test --config <recipe name> --ckpt_path ...`, works from another directory and
    # measures the fine-tuned top-1 the demo printed (W&B off for the check)
    (line,) = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("psn-zoo test ")]
    argv = shlex.split(line)
    assert argv[argv.index("--config") + 1] == "ndigits_psn_vgg"  # a recipe name, not a path into the repository
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checked = run(["-m", "psn_zoo.cli", *argv[1:], "--trainer.logger", "false", "--trainer.enable_progress_bar",
                   "false"], elsewhere, 300, wandb_env(tmp_path))  # fmt: skip
    assert checked.returncode == 0, checked.stdout[-4000:]
    measured = float(re.search(r"test/acc\s+([0-9.]+)", checked.stdout).group(1))
    assert abs(100 * measured - after) < 0.01, (measured, after)
