"""Edges of training runs: run folders and resuming, the cosine schedule's length, a frozen backbone's norm layers,
CutMix on sequences, out-of-range hyperparameters, linked values given inline, model_kwargs that repeat the
classifier's arguments, model flags that contradict a checkpoint, val/acc_causal, predictions, and the configuration
every logger gets. Real (tiny) Lightning fits through the CLI, in-process."""

from __future__ import annotations

import csv
import logging
import math
import re
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from psn_zoo.datamodules import SequentialDigitsDataModule
from psn_zoo.training import SpikingClassifier
from psn_zoo.training.cli import run_cli
from psn_zoo.training.losses import mix_batch

KWARGS = '{"channels": 8, "length": 28, "fc_hidden": 16}'
TINY = ["--data.init_args.images_per_class", "12", "--data.init_args.batch_size", "16", "--model.model_kwargs", KWARGS,
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar",
        "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
SEQ = ["--config", "seqdigits_psn", "--trainer.logger", "false", *TINY]
WANDB = ["--config", "seqdigits_psn", *TINY]  # the recipe's W&B logger (WANDB_MODE=disabled here)


def tiny_classifier(**kwargs) -> SpikingClassifier:
    defaults = {"model": "paper_seq_cnn", "neuron": "psn", "T": 28, "in_channels": 1, "lr": 0.05,
                "model_kwargs": {"channels": 8, "length": 28, "fc_hidden": 16}, "log_input_samples": 0}  # fmt: skip
    return SpikingClassifier(**{**defaults, **kwargs})


def tiny_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    settings = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "default_root_dir": tmp_path,
                "logger": False, "enable_progress_bar": False, "enable_model_summary": False} | kwargs  # fmt: skip
    return L.Trainer(**settings)


def data() -> SequentialDigitsDataModule:
    return SequentialDigitsDataModule(batch_size=16, images_per_class=12)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return tmp_path


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory) -> Path:
    """A logger-less 1-epoch fit of the sequential-digits recipe (lr 0): its folder ``runs/seqdigits_psn/<time>``."""
    root = tmp_path_factory.mktemp("seq-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("WANDB_MODE", "disabled")
        run_cli(["fit", *SEQ, "--trainer.max_epochs", "1", "--model.lr", "0"])
    (folder,) = (root / "runs" / "seqdigits_psn").iterdir()
    return folder


# ---------------------------------------------------------------------------------------------- run folders, resuming
def test_a_saved_config_reruns_in_a_new_folder_and_a_resume_continues_in_its_own(cwd, monkeypatch):
    """Re-running a run's config.yaml wrote into that run (its saved default_root_dir is the stamped folder) and
    overwrote its last.ckpt; a resume started a new folder, so Lightning dropped the best-score tracking (a worse
    epoch became "best"); `--ckpt_path last` looked in the new, empty folder and trained from epoch 0."""
    frozen = [*SEQ, "--model.lr", "0"]  # val/acc never improves after epoch 0: "best" must stay epoch 0
    run_cli(["fit", *frozen, "--trainer.max_epochs", "1"])
    runs = cwd / "runs" / "seqdigits_psn"
    (first,) = runs.iterdir()
    ckpts = first / "checkpoints"
    saved = files(ckpts)
    assert set(saved) == {"best-epoch=0.ckpt", "last.ckpt", "config.yaml"}

    run_cli(["fit", "--config", str(ckpts / "config.yaml")])  # the run's own config, as it was saved
    folders = sorted(runs.iterdir())
    assert len(folders) == 2 and files(ckpts) == saved
    other = next(f for f in folders if f != first)
    assert (other / "checkpoints" / "last.ckpt").is_file()
    refused = r"already holds another run's checkpoints \(best-epoch=0.ckpt, last.ckpt\) and this fit would overwrite"
    with pytest.raises(ValueError, match=refused + r" them\. To continue that run, resume it: --ckpt_path "):
        run_cli(["fit", *frozen, "--trainer.default_root_dir", str(first)])
    assert files(ckpts) == saved

    # resume from another working directory (the absolute path): the run's own folder, its best score kept
    elsewhere = cwd / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_cli(["fit", *frozen, "--trainer.max_epochs", "2", "--ckpt_path", str((ckpts / "last.ckpt").resolve())])
    assert list(elsewhere.iterdir()) == []
    monkeypatch.chdir(cwd)
    # --ckpt_path last: the newest last.ckpt of this recipe's runs (the first run's, just written)
    run_cli(["fit", *frozen, "--trainer.max_epochs", "3", "--ckpt_path", "last"])
    assert sorted(runs.iterdir()) == folders
    assert sorted(files(ckpts)) == ["best-epoch=0.ckpt", "config-2.yaml", "config-3.yaml", "config.yaml", "last.ckpt"]
    assert files(ckpts)["config.yaml"] == saved["config.yaml"]
    assert yaml.safe_load((ckpts / "config-3.yaml").read_text())["ckpt_path"] == str(ckpts.relative_to(cwd) /
                                                                                       "last.ckpt")  # fmt: skip
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    (best,) = [state for key, state in last["callbacks"].items() if "'monitor': 'val/acc'" in key]
    first_best = torch.load(ckpts / "best-epoch=0.ckpt", weights_only=True)["callbacks"]
    assert Path(best["best_model_path"]).resolve() == (ckpts / "best-epoch=0.ckpt").resolve()
    assert float(best["best_model_score"]) == float(next(s["best_model_score"] for k, s in first_best.items()
                                                         if "'monitor': 'val/acc'" in k))  # fmt: skip


def test_ckpt_path_last_and_best_are_refused_when_they_name_nothing(cwd):
    with pytest.raises(ValueError, match=r"--ckpt_path last: no last checkpoint to resume from \(runs/seqdigits_psn/"
                       r"<time>/checkpoints\)\. Give the checkpoint's path"):  # fmt: skip
        run_cli(["fit", *SEQ, "--ckpt_path", "last"])
    with pytest.raises(ValueError, match=r"runs/psn-zoo/<run>/checkpoints: a logged run gets a new folder every time"):
        run_cli(["fit", *WANDB, "--ckpt_path", "last"])
    with pytest.raises(ValueError, match=r"--ckpt_path best means the best checkpoint of a fit in the same process"):
        run_cli(["test", *SEQ, "--ckpt_path", "best"])
    assert not (cwd / "runs").exists()


def test_a_wandb_run_resumes_with_its_run_id_in_its_folder(seq_run, cwd):
    """A checkpoint of runs/psn-zoo/<id>/checkpoints resumes that W&B run (same id, resume="allow"), in its folder."""
    folder = cwd / "runs" / "psn-zoo" / "abc12345" / "checkpoints"
    shutil.copytree(seq_run / "checkpoints", folder)
    last = torch.load(folder / "last.ckpt", weights_only=True)  # as the W&B run would have saved it
    for state in last["callbacks"].values():
        for key in ("dirpath", "best_model_path", "last_model_path", "kth_best_model_path"):
            if isinstance(state.get(key), str):
                state[key] = state[key].replace(str(seq_run.relative_to(seq_run.parents[2])), "runs/psn-zoo/abc12345")
        if state.get("best_k_models"):
            state["best_k_models"] = {k.replace(str(seq_run.relative_to(seq_run.parents[2])), "runs/psn-zoo/abc12345"):
                                      v for k, v in state["best_k_models"].items()}  # fmt: skip
    torch.save(last, folder / "last.ckpt")
    cli = run_cli(["fit", *WANDB, "--trainer.max_epochs", "2", "--model.lr", "0", "--ckpt_path",
                   "runs/psn-zoo/abc12345/checkpoints/last.ckpt"])  # fmt: skip
    assert cli.trainer.logger.version == "abc12345"
    assert [p.name for p in (cwd / "runs" / "psn-zoo").iterdir()] == ["abc12345"]
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch=0.ckpt", "config-2.yaml", "config.yaml",
                                                        "last.ckpt"]  # fmt: skip
    logger = yaml.safe_load((folder / "config-2.yaml").read_text())["trainer"]["logger"]["init_args"]
    assert (logger["id"], logger["resume"]) == ("abc12345", "allow")
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1


def test_a_csv_logged_masked_psn_run_logs_its_config_and_causal_accuracy_and_resumes(cwd):
    """Any logger gets the whole configuration (trainer, data, callbacks, seed), val/acc_causal is logged with
    val/acc's step and epoch (it was a row of its own, one step late, without an epoch), and a resume keeps its
    checkpoints in the run's folder (the CSV logger's new version keeps the first version's metrics.csv)."""
    logged = ["--config", "seqdigits_masked_psn", *TINY, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
              "--trainer.logger.save_dir", "logs", "--trainer.log_every_n_steps", "1", "--model.lr", "0"]  # fmt: skip
    run_cli(["fit", *logged, "--trainer.max_epochs", "2"])
    version = cwd / "logs" / "seqdigits_masked_psn" / "version_0"  # the recipe's logger name stays
    hparams = yaml.safe_load((version / "hparams.yaml").read_text())
    assert hparams["seed_everything"] == 0 and hparams["trainer.max_epochs"] == 2
    assert {"trainer.precision", "trainer.accumulate_grad_batches", "trainer.gradient_clip_val"} <= set(hparams)
    assert hparams["data.class_path"] == "psn_zoo.datamodules.SequentialDigitsDataModule"
    callbacks = {v: k.rsplit(".", 1)[0] for k, v in hparams.items() if k.endswith(".class_path")}
    assert hparams[callbacks["psn_zoo.training.MaskedPSNSchedule"] + ".init_args.factor"] == 2.5  # the recipe's
    assert hparams["model"] == "paper_seq_cnn" and hparams["neuron"] == "masked_psn"  # the model's own, still

    rows = list(csv.DictReader((version / "metrics.csv").open()))
    validated = [r for r in rows if r.get("val/acc")]
    assert [int(r["epoch"]) for r in validated] == [0, 1]
    assert all(r["val/acc_causal"] for r in validated)  # in val/acc's row: its step and epoch
    assert float(validated[0]["val/acc_causal"]) == 0.0  # λ < 1 in epoch 0 of 2
    assert float(validated[1]["val/acc_causal"]) == float(validated[1]["val/acc"])
    assert not [r for r in rows if r.get("val/acc_causal") and not r.get("val/acc")]
    metrics = (version / "metrics.csv").read_bytes()

    run_cli(["fit", *logged, "--trainer.max_epochs", "3", "--ckpt_path", str(version / "checkpoints" / "last.ckpt")])
    assert (version / "metrics.csv").read_bytes() == metrics
    saved = sorted(p.name for p in (version / "checkpoints").iterdir())
    assert len(saved) == 4 and saved[0].startswith("best-epoch=") and saved[1:] == ["config-2.yaml", "config.yaml",
                                                                                    "last.ckpt"]  # fmt: skip
    last = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    resumed = list(csv.DictReader((version.parent / "version_1" / "metrics.csv").open()))
    causal = [float(r["val/acc_causal"]) for r in [*validated, *resumed] if r.get("val/acc_causal")]
    (best,) = [s for k, s in last["callbacks"].items() if "'monitor': 'val/acc_causal'" in k]
    assert len(causal) == 3 and float(best["best_model_score"]) == max(causal)  # judged over all three epochs
    assert Path(best["best_model_path"]).name == saved[0]
    assert yaml.safe_load((version.parent / "version_1" / "hparams.yaml").read_text())[
        "trainer.max_epochs"] == 3  # fmt: skip


def test_evaluations_get_their_own_folders_and_predict_writes_the_predictions(seq_run, cwd, caplog):
    """validate/test/predict all wrote runs/checkpoints/config.yaml (each overwriting the last), and predict wrote
    its predictions nowhere."""
    runs = cwd / "runs" / "seqdigits_psn"
    shutil.copytree(seq_run, runs / seq_run.name)
    ckpt = str(runs / seq_run.name / "checkpoints" / "last.ckpt")
    run_cli(["validate", *SEQ, "--ckpt_path", ckpt])
    (validated,) = runs.glob("*-validate")
    assert yaml.safe_load((validated / "config.yaml").read_text())["ckpt_path"] == ckpt
    assert not (cwd / "runs" / "checkpoints").exists() and not (cwd / "runs" / "config.yaml").exists()

    mine = cwd / "mine"  # a folder of your choice, where an earlier run left its files: they are kept
    mine.mkdir()
    for name in ("config.yaml", "predictions.csv"):
        (mine / name).write_text("earlier\n")
    with caplog.at_level(logging.INFO):
        cli = run_cli(["predict", *SEQ, "--ckpt_path", ckpt, "--trainer.default_root_dir", "mine"])
    assert sorted(p.name for p in mine.iterdir()) == ["config-2.yaml", "config.yaml", "predictions-2.csv",
                                                      "predictions.csv"]  # fmt: skip
    assert (mine / "predictions.csv").read_text() == (mine / "config.yaml").read_text() == "earlier\n"
    assert yaml.safe_load((mine / "config-2.yaml").read_text())["ckpt_path"] == ckpt
    dm = data()
    dm.setup()
    labels = dm.datasets["test"].dataset.tensors[1].tolist()
    assert f"wrote the predictions of {len(labels)} samples to mine/predictions-2.csv" in caplog.text
    rows = list(csv.DictReader((mine / "predictions-2.csv").open()))
    assert list(rows[0]) == ["index", "target", "pred", *(f"probs_{c}" for c in range(10))]
    assert [int(r["index"]) for r in rows] == list(range(len(labels))) and [int(r["target"]) for r in rows] == labels
    probs = torch.tensor([[float(r[f"probs_{c}"]) for c in range(10)] for r in rows])
    torch.testing.assert_close(probs.sum(1), torch.ones(len(labels)))
    assert [int(r["pred"]) for r in rows] == probs.argmax(1).tolist()
    assert torch.equal(probs, torch.cat([p["probs"] for p in cli.trainer.predict_loop.predictions]))


def test_predictions_name_their_samples_whatever_order_the_loader_reads_them(tmp_path):
    """The rows' index is the sample's index in the dataset, read from Lightning's batch indices (nested per
    dataloader even for one): a loader that reads the split backwards still gets each row's target = the label of
    dataset[index] (the index used to fall back to the position in the loader's order)."""
    from torch.utils.data import DataLoader

    from psn_zoo.training import PredictionWriter

    dm = data()
    dm.setup()
    test = dm.datasets["test"]
    labels = [int(test[i][1]) for i in range(len(test))]
    loader = DataLoader(test, batch_size=6, sampler=list(reversed(range(len(test)))))
    writer = PredictionWriter("rows.csv")
    tiny_trainer(tmp_path, callbacks=[writer]).predict(tiny_classifier(), loader, return_predictions=False)
    rows = list(csv.DictReader(writer.path.open()))
    assert [int(r["index"]) for r in rows] == list(range(len(test)))
    assert [int(r["target"]) for r in rows] == labels and len(set(labels)) > 1


def test_predicted_probabilities_are_float32_softmaxes_under_bf16_mixed(tmp_path):
    """Under ``precision="bf16-mixed"`` the logits are bf16; the probabilities are their softmax in float32 (rows
    summed to 0.9976-1.0021 when it was taken in bf16), in the model's predictions and in predictions.csv."""
    from psn_zoo.training import PredictionWriter

    writer = PredictionWriter()
    trainer = tiny_trainer(tmp_path, precision="bf16-mixed", callbacks=[writer])
    torch.manual_seed(0)
    predicted = trainer.predict(tiny_classifier(neuron="if"), data())
    probs = torch.cat([p["probs"] for p in predicted])
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)), rtol=0, atol=1e-6)
    assert torch.equal(torch.cat([p["pred"] for p in predicted]), probs.argmax(1))
    rows = list(csv.DictReader(writer.path.open()))
    written = torch.tensor([[float(r[f"probs_{c}"]) for c in range(10)] for r in rows])
    torch.testing.assert_close(written.sum(1), torch.ones(len(rows)), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- schedules
def _lr_spy(at: str) -> tuple[L.Callback, list[float]]:
    seen: list[float] = []

    class Spy(L.Callback):
        pass

    setattr(Spy, at, lambda self, trainer, *args: seen.append(trainer.optimizers[0].param_groups[0]["lr"]))
    return Spy(), seen


def cosine(base: float, t: int, length: int) -> float:
    return base * (1 + math.cos(math.pi * t / length)) / 2


def test_cosine_anneals_over_max_steps_and_over_a_longer_resumed_run(tmp_path):
    """`max_epochs -1 max_steps N` annealed over T_max = 1 (the lr alternating between lr and 0); a resume with a
    larger max_epochs kept the checkpoint's T_max (lr 0 at the old end, then rising); a run with no end is refused."""
    spy, seen = _lr_spy("on_train_batch_start")
    tiny_trainer(tmp_path, max_epochs=-1, max_steps=3, limit_val_batches=0, callbacks=[spy]).fit(
        tiny_classifier(lr=0.04), data()
    )  # 2 batches per epoch: the run is 3 steps, not a whole number of epochs
    assert seen == pytest.approx([cosine(0.04, s, 3) for s in range(3)])

    # 2 epochs, then resumed to 4: epochs 2 and 3 run as a 4-epoch run's do
    short = {"limit_train_batches": 1, "limit_val_batches": 0}
    tiny_trainer(tmp_path / "a", max_epochs=2, **short).fit(tiny_classifier(lr=0.04), data())
    (ckpt,) = (tmp_path / "a" / "checkpoints").glob("*.ckpt")
    spy, seen = _lr_spy("on_train_epoch_start")
    resumed = tiny_trainer(tmp_path / "b", max_epochs=4, callbacks=[spy], **short)
    resumed.fit(tiny_classifier(lr=0.04), data(), ckpt_path=ckpt)
    assert seen == pytest.approx([cosine(0.04, 2, 4), cosine(0.04, 3, 4)])
    assert resumed.lr_scheduler_configs[0].scheduler.T_max == 4

    with pytest.raises(ValueError, match=r"cosine anneals over the run's length, but this run has none.*"
                       r"--trainer.max_epochs or --trainer.max_steps"):  # fmt: skip
        tiny_trainer(tmp_path, max_epochs=-1).fit(tiny_classifier(), data())


# ---------------------------------------------------------------------------------------------- frozen backbone
def test_a_frozen_backbone_keeps_its_norm_layers_in_eval_mode(tmp_path):
    """freeze_backbone froze the backbone's weights but its BatchNorm running statistics went on changing."""
    module = tiny_classifier(freeze_backbone=True, lr=0.5)
    norms = module.frozen_norm_layers()
    assert norms and all(isinstance(m, torch.nn.BatchNorm1d) for m in norms)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    modes: list[bool] = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append(pl_module.training and not any(m.training for m in norms))

    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=1, callbacks=[Spy()], enable_checkpointing=False)
    trainer.fit(module, data())  # with a validation after each epoch
    assert modes == [True, True]
    after = module.model.state_dict()
    head = module.model.classifier_path + "."
    assert [k for k in before if not k.startswith(head) and not torch.equal(before[k], after[k])] == []
    assert not torch.equal(before[head + "bias"], after[head + "bias"])  # the head trains
    assert not any(m.training for m in module.train().frozen_norm_layers()) and not module.eval().training
    unfrozen = tiny_classifier().train()
    assert unfrozen.frozen_norm_layers() == [] and all(m.training for m in unfrozen.modules())


# ---------------------------------------------------------------------------------------------- bad hyperparameters
def test_cutmix_on_sequences_cuts_a_box_of_the_image_they_read():
    """CutMix read [B, T, C, L] as images of C x L: with one channel (sequential digits) its box was always empty and
    nothing was ever mixed; with three (sequential CIFAR) it cut across channels. The box is T x L, all channels:
    the image the sequence reads column by column, as the paper's code mixes it before reading it."""
    x, y = torch.rand(16, 32, 3, 32), torch.arange(16) % 10
    boxes = []
    for _ in range(20):
        mixed, soft = mix_batch(x, y, 10, 0.0, 1.0, sequence=True)
        changed = mixed != x  # [B, T, C, L]
        assert torch.equal(changed.any(2), changed.all(2))  # every channel, or none
        where = changed.any(2).any(0)  # [T, L]
        if where.any():
            steps, rows = where.nonzero().unbind(1)
            box = (steps.max() - steps.min() + 1) * (rows.max() - rows.min() + 1)
            assert where.sum() == box  # one rectangle
            kept = soft[torch.arange(16), y]  # mixed with another class: the label keeps 1 - the box's share
            torch.testing.assert_close(kept[kept < 1], torch.full_like(kept[kept < 1], 1 - float(box) / (32 * 32)))
            boxes.append(int(box))
    assert len(boxes) >= 15 and len(set(boxes)) > 3
    with pytest.raises(ValueError, match=r"CutMix cuts a box of at least 2 x 2 out of images .* got a batch of shape "
                       r"\(8, 28, 1, 28\) \(a box over 1 x 28\)"):  # fmt: skip
        mix_batch(torch.rand(8, 28, 1, 28), y[:8], 10, 0.0, 1.0)  # a sequence read as an image: refused
    module = tiny_classifier(cutmix_alpha=1.0)
    tiny_batch = (torch.rand(4, 28, 1, 28), torch.arange(4))
    torch.manual_seed(1)
    module.training_step(tiny_batch, 0)  # the sequential-digits model trains with CutMix


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_smoothing": 1.5}, r"label_smoothing=1.5 must be in \[0, 1\]"),
        ({"scheduler": "step", "step_size": 0}, r"step_size=0 must be ≥ 1"),
        ({"mixup_alpha": -1.0}, r"mixup_alpha=-1.0 must be ≥ 0"),
        ({"cutmix_alpha": -0.5}, r"cutmix_alpha=-0.5 must be ≥ 0"),
        ({"loss": "tet", "tet_lambda": 5.0}, r"tet_lambda=5.0 must be in \[0, 1\]"),
        ({"tet_lambda": -0.1}, r"tet_lambda=-0.1 must be in \[0, 1\]"),
        ({"gamma": 0.0}, r"gamma=0.0 must be > 0"),
        ({"lr": -0.1, "weight_decay": -1.0}, r"lr=-0.1 must be ≥ 0; weight_decay=-1.0 must be ≥ 0\. Set --model.lr, "
                                             r"--model.weight_decay"),
    ],
)  # fmt: skip
def test_out_of_range_hyperparameters_are_refused_when_the_model_is_built(kwargs, message):
    """label_smoothing 1.5 failed deep inside the first training step, step_size 0 after an epoch; negative alphas
    silently turned mixing off and tet_lambda outside [0, 1] made the objective negative."""
    with pytest.raises(ValueError, match=r"^SpikingClassifier: " + message):
        tiny_classifier(**kwargs)


@pytest.mark.parametrize(("key", "flag"), [("neuron", "neuron"), ("T", "T"), ("num_classes", "num_classes"),
                                           ("in_channels", "in_channels"), ("neuron_kwargs", "neuron_kwargs"),
                                           ("pretrained", "pretrained")])  # fmt: skip
def test_model_kwargs_refuses_what_the_classifier_s_own_arguments_set(key, flag):
    """``--model.model_kwargs '{..., "neuron": "lif"}'`` failed inside with "create_model() got multiple values for
    keyword argument 'neuron'" (a TypeError: a traceback on the command line)."""
    kwargs = {"channels": 8, "length": 28, "fc_hidden": 16, key: {"neuron": "lif", "neuron_kwargs": {}}.get(key, 4)}
    with pytest.raises(ValueError, match=rf"^SpikingClassifier: model_kwargs sets {key}, which the classifier's own "
                       rf"arguments set: use --model\.{flag} instead"):  # fmt: skip
        tiny_classifier(model_kwargs=kwargs)


def test_model_flags_that_contradict_the_checkpoint_are_refused_naming_both(seq_run, cwd):
    """``validate --ckpt_path`` parsed the checkpoint's hyperparameters over the command line's: a conflicting
    ``--model.neuron`` or ``--model.model_kwargs`` was dropped without a word (the checkpoint's model was evaluated).
    Values equal to the checkpoint's (a default spelled out, too) are fine."""
    ckpt = str(seq_run / "checkpoints" / "last.ckpt")
    (cwd / "model.yaml").write_text("loss: tet\n")
    with pytest.raises(ValueError, match=rf"^--ckpt_path {re.escape(ckpt)} builds the model from the checkpoint's "
                       r"hyperparameters, which would replace what you gave: --model\.neuron lif but the checkpoint "
                       r"has neuron='psn'; --model \{model_kwargs: \{'channels': 4, 'length': 28, 'fc_hidden': 16\}\} "
                       r"but the checkpoint has model_kwargs=\{'channels': 8, 'length': 28, 'fc_hidden': 16\}; "
                       r"model\.loss: tet in model\.yaml but the checkpoint has loss='ce'\. Drop the flag\(s\) .*"
                       rf"psn-zoo fit --model\.pretrained {re.escape(ckpt)}"):  # fmt: skip
        run_cli(["validate", *SEQ, "--ckpt_path", ckpt, "--model.neuron", "lif", "--model",
                 '{"model_kwargs": {"channels": 4, "length": 28, "fc_hidden": 16}}', "--model", "model.yaml"])
    same = ["--model.neuron", "psn", "--model.lr", "0", "--model.neuron_kwargs", '{"surrogate": "atan"}']
    cli = run_cli(["validate", *SEQ, "--ckpt_path", ckpt, *same])
    assert (cli.model.hparams.neuron, cli.model.hparams.lr) == ("psn", 0.0)


def test_linked_values_given_inline_or_in_a_model_file_are_checked_and_the_fix_is_the_datas_argument(cwd):
    """`--model '{"T": 8}'` (or a file) was silently dropped; the refusal named --data.init_args.T for a
    DataModule without a T argument."""
    fixed = r"SequentialDigitsDataModule fixes T=28 \(it has no T argument\), so use a DataModule that gives T=8"
    with pytest.raises(ValueError, match=r"--model \{T: 8\} but the data gives T=28; --model \{num_classes: 11\} but "
                       r"the data gives num_classes=10\..*" + fixed):  # fmt: skip
        run_cli([*SEQ, "--model", '{"T": 8, "num_classes": 11}'], run=False)
    (cwd / "model.yaml").write_text("T: 8\nneuron: psn\n")
    with pytest.raises(ValueError, match=r"model.T: 8 in model.yaml but the data gives T=28.*" + fixed):
        run_cli([*SEQ, "--model", "model.yaml"], run=False)
    agreeing = run_cli([*SEQ, "--model", '{"T": 28, "in_channels": 1, "lr": 0.02}'], run=False)
    assert (agreeing.model.hparams.T, agreeing.model.hparams.lr) == (28, 0.02)
    with pytest.raises(ValueError, match=r"--model.T 8 but the data gives T=4.*--data.init_args.T 8 sets "
                       r"NDigitsDataModule's T"):  # fmt: skip
        run_cli(["--config", "ndigits_psn_vgg", "--trainer.logger", "false", "--model.T", "8"], run=False)


# ------------------------------------------------------------------------------------------------ hostile checkpoints
@pytest.mark.parametrize("planted", [
    {"model_kwargs": {"gadget": {"class_path": "planted_module.Gadget"}}},
    {"model_kwargs": {"gadget": ["x", {"class_path": "planted_module.Gadget"}]}},
    {"neuron_kwargs": {"gadget": "{class_path: planted_module.Gadget}"}},  # a string the parser reads as YAML
], ids=["dict", "list", "yaml-string"])  # fmt: skip
def test_a_checkpoint_naming_a_class_in_its_hyperparameters_imports_nothing(planted, cwd, monkeypatch):
    """``--ckpt_path`` parses the checkpoint's hyperparameters with the command-line parser, which imports any
    ``class_path`` it meets (even in a free-form dict, or a string it reads as YAML): a pure-tensor checkpoint could
    run any installed module's import-time code. Refused, naming where, before anything is parsed."""
    (cwd / "planted_module.py").write_text(
        "from pathlib import Path\nPath('IMPORTED').write_text('ran')\nclass Gadget:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(cwd))
    hparams = tiny_classifier().hparams
    torch.save({"state_dict": {}, "hyper_parameters": {**dict(hparams), **planted}}, cwd / "hostile.ckpt")
    with pytest.raises(ValueError, match=r"names a class in hyper_parameters\.(model|neuron)_kwargs\.gadget"):
        run_cli(["validate", *SEQ, "--ckpt_path", "hostile.ckpt"])
    assert not (cwd / "IMPORTED").exists()


def test_a_checkpoint_naming_a_hub_repo_as_its_model_fetches_nothing(tmp_path):
    """``load_from_checkpoint`` rebuilds the module from the hyperparameters: a ``model`` naming a Hub repo would be
    fetched on load (a fine-tuned checkpoint is self-contained). ``model`` must be an architecture name."""
    hparams = {**dict(tiny_classifier().hparams), "model": "hf-hub:evil/names-me"}
    torch.save({"state_dict": {}, "hyper_parameters": hparams, "pytorch-lightning_version": L.__version__},
               tmp_path / "plain.ckpt")  # fmt: skip
    with pytest.raises(ValueError, match=r"model=.* must be an architecture name"):
        SpikingClassifier.load_from_checkpoint(tmp_path / "plain.ckpt")
