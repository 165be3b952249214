"""Edges of DDP runs, as 2 real CPU processes over gloo: what an evaluation logs equals what one process logs for any
split size (the loss weighted by samples, the firing rates as spike and element sums), predictions.csv names the
sample of every row, a split smaller than the process count is refused with the fix, EpochClock counts every
process's samples with or without ``limit_train_batches``, and ``--trainer.strategy ddp_spawn`` runs (everything
the trainer holds pickles)."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from procs import clean_env, run

from psn_zoo.training import SpikingClassifier

pytestmark = pytest.mark.timeout(900)

MODEL = {"model": "paper_seq_cnn", "neuron": "if", "T": 28, "num_classes": 10, "in_channels": 1,
         "model_kwargs": {"channels": 8, "length": 28, "fc_hidden": 16}, "log_input_samples": 0}  # fmt: skip
EVAL_SIZE = 5  # odd: 3 samples on rank 0 (batches of 2 and 1), 2 on rank 1; one process sees 2, 2, 1
BATCH = 2

_DATA = """
from torch.utils.data import Subset
from psn_zoo.datamodules import SequentialDigitsDataModule


class Part(Subset):
    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)


class FewEval(SequentialDigitsDataModule):
    \"\"\"The sequential digits with the first ``n_eval`` samples of the validation and test splits (and the first
    ``n_train`` training samples).\"\"\"

    def __init__(self, n_eval, n_train=None, **kwargs):
        super().__init__(images_per_class=12, **kwargs)
        self.n_eval, self.n_train = n_eval, n_train

    def setup(self, stage=None):
        super().setup(stage)
        for split in ("val", "test"):
            if len(self.datasets[split]) != self.n_eval:
                self.datasets[split] = Part(self.datasets[split], range(self.n_eval))
        if self.n_train is not None and len(self.datasets["train"]) != self.n_train:
            self.datasets["train"] = Part(self.datasets["train"], range(self.n_train))
"""

_SCRIPT = """
import json, sys
from pathlib import Path
import lightning as L
import torch
from few_eval import FewEval
from psn_zoo.training import EpochClock, PredictionWriter, SpikingClassifier

out = Path(sys.argv[1])
model_kwargs, eval_size, batch = json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = SpikingClassifier(**model_kwargs)
model.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
common = dict(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(out / "root"))
result = {}


def record(trainer, key, value):  # after each part, so a later part's failure leaves the earlier results
    result[key] = value
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


def metrics(trainer):
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


# evaluation: test and validate on an odd-size split
trainer = L.Trainer(callbacks=[PredictionWriter("predictions.csv")], **common)
trainer.test(model, FewEval(eval_size, batch_size=batch), verbose=False)
record(trainer, "test", metrics(trainer))
trainer.validate(model, FewEval(eval_size, batch_size=batch), verbose=False)
record(trainer, "val", metrics(trainer))


# EpochClock: every process's samples, with and without limit_train_batches
class Count(L.Callback):
    def __init__(self):
        self.n = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.n += len(batch[1])


for limit, n_train in ((2, None), (1.0, 45)):  # 90 training samples: 3 batches a process; 45: 2, padded to 23 each
    clock, count = EpochClock(), Count()
    fit = L.Trainer(max_epochs=1, limit_train_batches=limit, limit_val_batches=0, num_sanity_val_steps=0,
                    callbacks=[clock, count], **common)
    fit.fit(SpikingClassifier(**model_kwargs), FewEval(eval_size, n_train=n_train, batch_size=16))
    record(fit, f"clock_{limit}", {"samples": clock.epochs[0]["samples"], "seconds": clock.epochs[0]["seconds"],
                                   "here": count.n})

# predictions.csv
trainer.predict(model, FewEval(eval_size, batch_size=batch), return_predictions=False)
record(trainer, "predicted", True)
"""


def _few_eval(folder: Path) -> type:
    """The ``FewEval`` DataModule the run's script imports, loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("few_eval", folder / "few_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FewEval


def _one_process(data_dir: Path, weights: dict) -> dict[str, dict[str, float]]:
    """The test and validation metrics of one process on the same samples and weights."""
    FewEval = _few_eval(data_dir)
    model = SpikingClassifier(**MODEL)
    model.load_state_dict(weights)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=data_dir)  # fmt: skip
    out = {}
    trainer.test(model, FewEval(EVAL_SIZE, batch_size=BATCH), verbose=False)
    out["test"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    trainer.validate(model, FewEval(EVAL_SIZE, batch_size=BATCH), verbose=False)
    out["val"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return out


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> dict:
    """One 2-process run of the evaluation, EpochClock and prediction checks (each part records its results when it
    is done); the ranks' results, the run's output, the one-process reference and the folder."""
    folder = tmp_path_factory.mktemp("ddp")
    (folder / "few_eval.py").write_text(_DATA)
    (folder / "ddp.py").write_text(_SCRIPT)
    torch.manual_seed(0)
    weights = SpikingClassifier(**MODEL).state_dict()
    torch.save(weights, folder / "weights.pt")
    args = [str(folder / "ddp.py"), str(folder), json.dumps(MODEL), str(EVAL_SIZE), str(BATCH)]
    done = run(args, folder, 600, clean_env(WANDB_MODE="disabled"))  # few_eval imports from the script's folder
    ranks = [json.loads(path.read_text()) if (path := folder / f"rank{r}.json").exists() else {} for r in (0, 1)]
    return {"ranks": ranks, "done": done, "single": _one_process(folder, weights), "folder": folder}


def _part(ddp: dict, key: str) -> list:
    """Both ranks' results of one part of the run; a part that did not finish fails with the run's output."""
    missing = [r for r, rank in enumerate(ddp["ranks"]) if key not in rank]
    assert not missing, f"{key!r} did not finish on rank(s) {missing}:\n{ddp['done'].stdout[-4000:]}"
    return [rank[key] for rank in ddp["ranks"]]


def test_the_ddp_run_finishes(ddp):
    assert ddp["done"].returncode == 0, ddp["done"].stdout[-4000:]


@pytest.mark.parametrize("stage", ["test", "val"])
def test_ddp_evaluation_logs_the_one_process_values_on_an_odd_split(ddp, stage):
    """5 samples on 2 processes (3 + 2): the loss is the mean over the 5 samples (Lightning's sync_dist mean gave the
    mean of the ranks' means over a truncated batch count), each firing rate is spikes over elements of the 5 (it was
    the unweighted mean of the ranks' rates), the accuracies are the 5 samples' (torchmetrics): what one process
    logs, on every rank."""
    single, ranks = ddp["single"][stage], _part(ddp, stage)
    rates = [k for k in single if k.startswith("firing_rate/")]
    assert rates and f"{stage}/firing_rate" in single and 0 < single[f"{stage}/firing_rate"] < 1
    for logged in ranks:
        assert logged[f"{stage}/loss"] == pytest.approx(single[f"{stage}/loss"], rel=1e-6, abs=0)
        for key in [*rates, f"{stage}/firing_rate", f"{stage}/acc", f"{stage}/acc_top5"]:
            assert logged[key] == pytest.approx(single[key], rel=1e-6, abs=1e-9), key
    assert ranks[0] == ranks[1]


def test_ddp_predictions_name_the_sample_of_every_row(ddp):
    """predictions.csv under DDP: one row per sample of the split, in dataset order, each row's target the label of
    dataset[index] (the rows used to carry the rank's positions: duplicated indices, wrong samples)."""
    _part(ddp, "predicted")
    data = _few_eval(ddp["folder"])(EVAL_SIZE, batch_size=BATCH)
    data.setup("predict")
    labels = [int(data.datasets["test"][i][1]) for i in range(EVAL_SIZE)]
    rows = list(csv.DictReader((ddp["folder"] / "root" / "predictions.csv").open()))
    assert [int(r["index"]) for r in rows] == list(range(EVAL_SIZE))
    assert [int(r["target"]) for r in rows] == labels
    assert len(set(labels)) > 1  # the check can tell samples apart
    for row in rows:
        probs = [float(row[f"probs_{c}"]) for c in range(10)]
        assert sum(probs) == pytest.approx(1.0, abs=1e-6) and int(row["pred"]) == probs.index(max(probs))


@pytest.mark.parametrize("limit", ["2", "1.0"], ids=["limit_train_batches=2", "every_batch"])
def test_ddp_epoch_clock_counts_every_process_samples(ddp, limit):
    """EpochClock's samples are the samples both processes trained on: 2 processes x 2 batches of 16 of the 90 with
    limit_train_batches=2 (it counted one process's, 32), and every batch of both shards without a limit (45
    samples, which Lightning's sampler pads to 23 + 23); both processes record the same numbers."""
    ranks = _part(ddp, f"clock_{limit}")
    processed = sum(rank["here"] for rank in ranks)
    assert processed == (64 if limit == "2" else 46)
    assert ranks[0]["samples"] == ranks[1]["samples"] == processed
    assert ranks[0]["seconds"] == ranks[1]["seconds"] > 0


_TINY = """
import sys
import lightning as L
from few_eval import FewEval
from psn_zoo.training import SpikingClassifier

model = SpikingClassifier(model="paper_seq_cnn", T=28, num_classes=10, in_channels=1, log_input_samples=0,
                          model_kwargs={"channels": 8, "length": 28, "fc_hidden": 16})
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=sys.argv[1])
trainer.test(model, FewEval(1, batch_size=2), verbose=False)
"""


def test_ddp_eval_split_smaller_than_the_processes_is_refused_with_the_fix(tmp_path):
    """A 1-sample test split on 2 processes: Lightning's sampler failed with a bare AssertionError on one rank while
    the other waited; every rank now raises an error naming the split, its size, the process count and the fix."""
    (tmp_path / "few_eval.py").write_text(_DATA)
    (tmp_path / "tiny.py").write_text(_TINY)
    done = run([str(tmp_path / "tiny.py"), str(tmp_path)], tmp_path, 300, clean_env(WANDB_MODE="disabled"))
    assert done.returncode != 0
    for rank in (0, 1):
        assert (f"[rank{rank}]: ValueError: the test split (test_dataloader) has 1 sample but the run has 2 processes"
                in done.stdout), done.stdout[-4000:]  # fmt: skip
    assert "--trainer.devices 1" in done.stdout and "at least 2 samples" in done.stdout


# ---------------------------------------------------------------------------------------------- ddp_spawn
TINY_CONFIG = {
    "seed_everything": 0,
    "trainer": {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                "enable_progress_bar": False, "enable_model_summary": False, "logger": False},
    "model": {"model": "paper_seq_cnn", "neuron": "psn", "model_kwargs": {"channels": 8, "length": 28,
              "fc_hidden": 16}, "lr": 0.05, "log_input_samples": 0},
    "data": {"class_path": "psn_zoo.datamodules.SequentialDigitsDataModule",
             "init_args": {"batch_size": 16, "images_per_class": 12}},
}  # fmt: skip


@pytest.mark.parametrize("recipe", ["seqdigits_psn", "ndigits_psn_vgg"])
def test_the_configured_trainer_pickles_for_ddp_spawn(recipe, tmp_path, monkeypatch):
    """ddp_spawn pickles the trainer (its callbacks hold the parser, whose links compute the model's T, classes and
    channels from the data) into every process: every piece of it pickles, and the links still work after."""
    from psn_zoo.training.cli import data_attribute, run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cli = run_cli(["--config", recipe, "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy",
                   "ddp_spawn", "--trainer.sync_batchnorm", "false"], run=False)  # fmt: skip
    for part in (cli.trainer, *cli.trainer.callbacks, cli.model, cli.datamodule):
        pickle.loads(pickle.dumps(part))
    for name in ("T", "num_classes", "in_channels"):
        read = pickle.loads(pickle.dumps(data_attribute(name)))
        assert read(cli.datamodule) == cli.model.hparams[name]


def test_a_ddp_spawn_fit_runs(tmp_path):
    """``psn-zoo fit --trainer.strategy ddp_spawn --trainer.devices 2`` finishes and saves its checkpoint (it died
    with "Can't pickle local object 'data_attribute.<locals>.read'")."""
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    args = ["-m", "psn_zoo.cli", "fit", "--config", str(config), "--trainer.strategy", "ddp_spawn",
            "--trainer.devices", "2", "--trainer.default_root_dir", str(tmp_path / "out")]  # fmt: skip
    done = run(args, tmp_path, 400, clean_env(WANDB_MODE="disabled"))
    assert done.returncode == 0, done.stdout[-4000:]
    assert "max_epochs=1` reached" in done.stdout
    assert list((tmp_path / "out" / "checkpoints").glob("*.ckpt"))
