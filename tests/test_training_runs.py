"""Whole runs of ``psn-zoo fit`` in subprocesses: offline W&B read back, 2-process DDP, kill-and-resume."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from native_fixtures import write_nmnist
from PIL import Image
from procs import clean_env, run, wandb_env
from wandb_reader import read_run

from psn_zoo.datamodules import NMNISTDataModule, SequentialDigitsDataModule
from psn_zoo.training.recipes import recipe_path

pytestmark = pytest.mark.timeout(900)

TINY_MODEL = {
    "model": "paper_seq_cnn",
    "neuron": "psn",
    "T": 28,
    "num_classes": 10,
    "in_channels": 1,
    "model_kwargs": {"channels": 8, "length": 28, "fc_hidden": 16},
    "lr": 0.05,
}
TINY_DATA = {
    "class_path": "psn_zoo.datamodules.SequentialDigitsDataModule",
    "init_args": {"batch_size": 16, "images_per_class": 12, "random_translate": 2},
}


def write_config(path: Path, trainer: dict, model: dict | None = None) -> Path:
    config = {"seed_everything": 0, "trainer": trainer, "model": {**TINY_MODEL, **(model or {})}, "data": TINY_DATA}
    path.write_text(yaml.safe_dump(config))
    return path


def test_offline_wandb_run_is_complete(tmp_path):
    config = write_config(
        tmp_path / "cfg.yaml",
        {
            "max_epochs": 2,
            "accelerator": "cpu",
            "limit_train_batches": 4,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "psn_zoo.training.ZooWandbLogger",
                "init_args": {"save_dir": str(tmp_path / "runs"), "name": "wandb-test"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/acc", "mode": "max", "dirpath": str(tmp_path / "ckpt")},
                }
            ],
        },
    )
    result = run(["-m", "psn_zoo.cli", "fit", "--config", str(config)], tmp_path, 300, wandb_env(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("logging offline to") == 1 and "wandb sync " in result.stdout
    (log,) = list((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))
    run_log = read_run(log)
    assert run_log.exit_code == 0
    assert (
        run_log.config["model"] == "paper_seq_cnn" and run_log.config["neuron"] == "psn" and run_log.config["T"] == 28
    )
    # the whole resolved configuration, not only the model's hyperparameters: seed, trainer, data, callbacks
    assert run_log.config["seed_everything"] == 0 and run_log.config["trainer.max_epochs"] == 2
    assert {"trainer.precision", "trainer.accumulate_grad_batches", "trainer.gradient_clip_val"} <= set(run_log.config)
    assert run_log.config["data.class_path"] == TINY_DATA["class_path"] and run_log.config["model.lr"] == 0.05
    assert run_log.config["trainer.callbacks.0.class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"
    assert run_log.config["trainer.callbacks.0.init_args.monitor"] == "val/acc"
    train_rows = [row for row in run_log.history if "train/loss_step" in row]
    val_rows = [row for row in run_log.history if "val/acc" in row]
    assert len(train_rows) >= 2 and len(val_rows) == 2
    assert {"val/acc", "val/firing_rate", "firing_rate/conv.2", "firing_rate/fc.2"} <= set(run_log.summary)
    assert run_log.summary["inputs/count"] == 4  # input samples logged as images
    best = next(a for a in run_log.artifacts if "best" in a["aliases"])
    assert best["type"] == "model" and best["name"].startswith("model-")
    (ckpt,) = list((tmp_path / "ckpt").glob("*.ckpt"))
    assert best["metadata"]["original_filename"] == ckpt.name
    assert best["entries"][0]["digest"] == base64.b64encode(hashlib.md5(ckpt.read_bytes()).digest()).decode()


def test_wandb_images_show_on_and_off_events_and_the_run_keeps_what_ran(tmp_path):
    """The logged input samples are the event frames (read back from the offline run's PNGs): red exactly where
    the sample has ON events, blue exactly where it has OFF events, each frame scaled to its maximum. The optimizer
    that ran (AdamW, lr 0.003, step schedule) is the one in the checkpoint's hyperparameters, its optimizer state
    and the W&B config, and the run's resolved config.yaml sits next to its checkpoints."""
    write_nmnist(tmp_path / "data", per_class=3)
    data_args = {"data_dir": str(tmp_path / "data"), "T": 3, "batch_size": 8, "val_fraction": 0.34, "cache": "none"}
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1, "accelerator": "cpu", "limit_train_batches": 1, "limit_val_batches": 1,
            "enable_progress_bar": False,
            "logger": {"class_path": "psn_zoo.training.ZooWandbLogger",
                       "init_args": {"save_dir": str(tmp_path / "runs"), "name": "images"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"monitor": "val/acc", "mode": "max"}}],
        },
        "model": {"model": "paper_cifar10dvs_vgg", "neuron": "psn", "log_input_samples": 2,
                  "model_kwargs": {"input_size": 34, "width_mult": 0.25},
                  "optimizer": "adamw", "lr": 0.003, "scheduler": "step"},
        "data": {"class_path": "psn_zoo.datamodules.NMNISTDataModule", "init_args": data_args},
    }  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    result = run(["-m", "psn_zoo.cli", "fit", "--config", "cfg.yaml"], tmp_path, 300, wandb_env(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    (log,) = list((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb"))
    run_log = read_run(log)
    files = [log.parent / "files" / name for name in run_log.summary["inputs/filenames"]]
    assert len(files) == 2 and run_log.summary["inputs/captions"] == ["label 0", "label 1"]

    dm = NMNISTDataModule(**data_args)  # the validation loader's first batch: the logged samples
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    assert y[:2].tolist() == [0, 1]
    for path, sample in zip(files, x[:2].numpy(), strict=True):
        image = np.asarray(Image.open(path).convert("RGB"))
        T, _, H, W = sample.shape
        pixel = image.shape[0] // H
        assert pixel >= 2 and image.shape == (H * pixel, (T * (W + 1) - 1) * pixel, 3)
        image = image[::pixel, ::pixel]
        for t, frame in enumerate(sample):  # frame: [OFF, ON] event counts
            tile = image[:, t * (W + 1) : t * (W + 1) + W]
            on, off = frame[1], frame[0]
            assert on.any() and off.any()
            assert np.array_equal(tile[..., 0] > 0, on > 0), f"frame {t}: red pixels are not the ON events"
            assert np.array_equal(tile[..., 2] > 0, off > 0), f"frame {t}: blue pixels are not the OFF events"
            assert not tile[..., 1].any()
            peak = frame.max()
            np.testing.assert_allclose(tile[..., 0], np.round(on / peak * 255), atol=1)
            np.testing.assert_allclose(tile[..., 2], np.round(off / peak * 255), atol=1)
            if t:
                assert (image[:, t * (W + 1) - 1] == 128).all()  # the grey separator

    # what ran is what was saved and logged
    (run_dir,) = list((tmp_path / "runs" / "psn-zoo").iterdir())
    (ckpt_path,) = list((run_dir / "checkpoints").glob("*.ckpt"))
    saved = yaml.safe_load((run_dir / "checkpoints" / "config.yaml").read_text())
    assert saved["model"]["optimizer"] == "adamw" and saved["model"]["lr"] == 0.003
    assert "optimizer" not in saved and "lr_scheduler" not in saved  # no second mechanism
    ckpt = torch.load(ckpt_path, weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert (hp["optimizer"], hp["lr"], hp["scheduler"], hp["T"], hp["in_channels"]) == ("adamw", 0.003, "step", 3, 2)
    (group,) = ckpt["optimizer_states"][0]["param_groups"]
    assert group["initial_lr"] == 0.003 and "amsgrad" in group  # AdamW's state
    assert ckpt["lr_schedulers"][0]["step_size"] == 30
    assert (run_log.config["optimizer"], run_log.config["lr"], run_log.config["scheduler"]) == ("adamw", 0.003, "step")


def test_ddp_two_processes_disjoint_shards_identical_weights(tmp_path):
    out = tmp_path / "ranks"
    config = write_config(
        tmp_path / "cfg.yaml",
        {
            "max_epochs": 2,
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
            "logger": False,
            "enable_progress_bar": False,
            "enable_checkpointing": False,
            "callbacks": [{"class_path": "probes.RankRecorder", "init_args": {"out_dir": str(out)}}],
        },
    )
    result = run(["-m", "psn_zoo.cli", "fit", "--config", str(config)], tmp_path, 300, clean_env(WANDB_MODE="disabled"))
    assert result.returncode == 0, result.stdout[-3000:]
    meta = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert meta[0]["pid"] != meta[1]["pid"] and {m["rank"] for m in meta} == {0, 1}
    assert all(m["world_size"] == 2 and m["backend"] == "gloo" and m["sampler"] == "DistributedSampler" for m in meta)
    data = SequentialDigitsDataModule(**TINY_DATA["init_args"])
    data.setup()
    n_train = len(data.datasets["train"])
    for epoch in ("0", "1"):
        a, b = set(meta[0]["indices"][epoch]), set(meta[1]["indices"][epoch])
        assert not a & b and a | b == set(range(n_train))
    assert meta[0]["indices"]["0"] != meta[0]["indices"]["1"]  # reshuffled every epoch
    weights = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # different shards, identical parameters: the gradients were all-reduced
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_killed_run_resumes_to_identical_weights(tmp_path):
    def trainer(dirpath: Path, extra: list | None = None) -> dict:
        return {
            "max_epochs": 3,
            "accelerator": "cpu",
            "deterministic": True,
            "logger": False,
            "enable_progress_bar": False,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(dirpath), "save_last": True},
                },
                {"class_path": "psn_zoo.training.RandomStateCheckpoint"},
                *(extra or []),
            ],
        }

    env = clean_env(WANDB_MODE="disabled")
    model = {"scheduler": "cosine"}
    whole = write_config(tmp_path / "whole.yaml", trainer(tmp_path / "whole"), model)
    assert run(["-m", "psn_zoo.cli", "fit", "--config", str(whole)], tmp_path, 300, env).returncode == 0

    kill = {"class_path": "probes.KillMidEpoch", "init_args": {"epoch": 1, "batch": 3}}
    crashing = write_config(tmp_path / "crash.yaml", trainer(tmp_path / "resumed", [kill]), model)
    crashed = run(["-m", "psn_zoo.cli", "fit", "--config", str(crashing)], tmp_path, 300, env)
    assert crashed.returncode == -9, crashed.stdout[-2000:]  # SIGKILL: no clean-up ran
    assert (tmp_path / "resumed" / "last.ckpt").exists()
    assert torch.load(tmp_path / "resumed" / "last.ckpt", weights_only=True)["epoch"] == 0

    resume = write_config(tmp_path / "resume.yaml", trainer(tmp_path / "resumed"), model)
    resumed = run(["-m", "psn_zoo.cli", "fit", "--config", str(resume), "--ckpt_path", "last"], tmp_path, 300, env)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    final = [torch.load(p / "last.ckpt", weights_only=True) for p in (tmp_path / "whole", tmp_path / "resumed")]
    assert final[0]["epoch"] == final[1]["epoch"] == 2
    for key, value in final[0]["state_dict"].items():
        assert torch.equal(value, final[1]["state_dict"][key]), key


def test_recipe_last_checkpoint_is_the_latest_epoch(tmp_path):
    """Lightning 2.6 writes ``save_last`` only when the monitored metric improves; the recipes keep a separate
    ``last.ckpt`` of every epoch, so a resumed run never restarts from a stale epoch."""
    recipe = yaml.safe_load(recipe_path("ndigits_psn_vgg").read_text())
    callbacks = [c for c in recipe["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert len(callbacks) == 2
    trainer = {"max_epochs": 3, "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
               "default_root_dir": str(tmp_path), "limit_train_batches": 2, "callbacks": callbacks}  # fmt: skip
    config = write_config(tmp_path / "cfg.yaml", trainer, {"lr": 0.0})  # val/acc never improves after epoch 0
    result = run(["-m", "psn_zoo.cli", "fit", "--config", str(config)], tmp_path, 300, clean_env(WANDB_MODE="disabled"))
    assert result.returncode == 0, result.stdout[-3000:]
    saved = {p.name: torch.load(p, weights_only=True)["epoch"] for p in (tmp_path / "checkpoints").glob("*.ckpt")}
    assert saved == {"best-epoch=0.ckpt": 0, "last.ckpt": 2}, saved
