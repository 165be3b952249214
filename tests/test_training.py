"""Training: the LightningModule, losses, callbacks, fine-tuning, the CLI and its recipes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml

from psn_zoo.datamodules import SequentialDigitsDataModule
from psn_zoo.models import load_backbone_weights as load_state
from psn_zoo.models import read_weights
from psn_zoo.neurons import MaskedPSN
from psn_zoo.training import MaskedPSNSchedule, SpikingClassifier, load_backbone_weights, paper_lambda
from psn_zoo.training.cli import run_cli
from psn_zoo.training.losses import mix_batch, tet_loss
from psn_zoo.training.recipes import recipes_dir

CONFIGS = sorted(recipes_dir().glob("*.yaml"))


def tiny_classifier(**kwargs) -> SpikingClassifier:
    defaults = {
        "model": "paper_seq_cnn",
        "neuron": "psn",
        "T": 28,
        "in_channels": 1,
        "model_kwargs": {"channels": 8, "length": 28, "fc_hidden": 16},
        "lr": 0.05,
        "log_input_samples": 0,
    }
    return SpikingClassifier(**{**defaults, **kwargs})


def tiny_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_epochs=kwargs.pop("max_epochs", 1),
        limit_train_batches=3,
        limit_val_batches=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_tet_loss_matches_its_definition():
    steps, y = torch.randn(4, 6, 10), torch.randint(0, 10, (6,))
    ce = sum(torch.nn.functional.cross_entropy(steps[t], y) for t in range(4)) / 4
    mse = ((steps - 1.0) ** 2).mean()
    torch.testing.assert_close(tet_loss(steps, y, lamb=0.2, means=1.0), 0.8 * ce + 0.2 * mse)
    torch.testing.assert_close(tet_loss(steps, y, lamb=0.0), ce)


def test_mixing_gives_soft_targets():
    x, y = torch.rand(8, 4, 2, 16, 16), torch.arange(8) % 3
    for kwargs in ({"mixup_alpha": 0.4, "cutmix_alpha": 0.0}, {"mixup_alpha": 0.0, "cutmix_alpha": 1.0}):
        mixed, soft = mix_batch(x, y, 3, **kwargs)
        assert mixed.shape == x.shape and soft.shape == (8, 3)
        torch.testing.assert_close(soft.sum(1), torch.ones(8))


def test_hyperparameters_are_primitives_and_checkpoints_load_safely(tmp_path):
    module = tiny_classifier(neuron="sliding_psn", neuron_kwargs={"k": 3})
    trainer = tiny_trainer(tmp_path)
    trainer.fit(module, SequentialDigitsDataModule(batch_size=16, images_per_class=12))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # no pickled objects in it
    assert ckpt["hyper_parameters"]["neuron_kwargs"] == {"k": 3}
    again = SpikingClassifier.load_from_checkpoint(path, weights_only=True)
    assert again.model.neuron_layers()[0].k == 3
    x = torch.rand(2, 28, 1, 28)
    assert torch.equal(again.eval()(x), module.eval()(x))


def test_firing_rates_are_logged_per_layer(tmp_path):
    module = tiny_classifier()
    data = SequentialDigitsDataModule(batch_size=16, images_per_class=12)
    for m in module.modules():  # batch-norm statistics of the data (an untrained BN's eval mode silences all)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        for x, _ in data.train_dataloader():
            module.model(x)
    trainer = tiny_trainer(tmp_path)
    trainer.validate(module, data)
    layers = [n for n, m in module.model.named_modules() if m in module.firing.names]
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("firing_rate/")}
    assert set(logged) == {f"firing_rate/{n}" for n in layers} and len(layers) == 7
    assert (
        all(0.0 <= v <= 1.0 for v in logged.values()) and 0.0 < float(trainer.callback_metrics["val/firing_rate"]) < 1
    )


def test_masked_psn_lambda_schedule_and_checkpoint(tmp_path):
    assert [round(paper_lambda(e, 256), 3) for e in (0, 31, 32, 200)] == [0.0, 0.973, 1.0, 1.0]
    module = tiny_classifier(neuron="masked_psn", neuron_kwargs={"k": 4, "lambda_": 0.0})
    schedule = MaskedPSNSchedule()
    seen = []

    class Spy(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(float(next(m for m in pl_module.modules() if isinstance(m, MaskedPSN)).lambda_))

    trainer = tiny_trainer(tmp_path, max_epochs=3, callbacks=[schedule, Spy()])
    trainer.fit(module, SequentialDigitsDataModule(batch_size=16, images_per_class=12))
    assert seen == pytest.approx([0.0, 1.0, 1.0])  # 8·e/(E−1) with E = 3
    path = tmp_path / "masked.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert float(ckpt["state_dict"]["model.conv.2.lambda_"]) == 1.0
    assert any(s.get("lambda_") == 1.0 for s in ckpt["callbacks"].values())


def test_masked_psn_best_checkpoint_is_chosen_among_causal_epochs_only(tmp_path):
    """val/acc_causal is 0 while λ < 1, so the monitored best model is always a causal one."""
    module = tiny_classifier(neuron="masked_psn", neuron_kwargs={"k": 4, "lambda_": 0.0})
    scores = []

    class Spy(L.Callback):
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                lam = float(next(m for m in pl_module.modules() if isinstance(m, MaskedPSN)).lambda_)
                scores.append((lam, float(trainer.callback_metrics["val/acc"]),
                               float(trainer.callback_metrics["val/acc_causal"])))  # fmt: skip

    best = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val/acc_causal", mode="max")
    # factor 2 over 4 epochs: λ = 0, 0.67, 1, 1 (the spy runs before the checkpoint, after the schedule)
    trainer = tiny_trainer(tmp_path, max_epochs=4, callbacks=[MaskedPSNSchedule(factor=2.0), Spy(), best])
    trainer.fit(module, SequentialDigitsDataModule(batch_size=16, images_per_class=12))
    assert [round(lam, 2) for lam, _, _ in scores] == [0.0, 0.67, 1.0, 1.0]
    assert [c for _, _, c in scores[:2]] == [0.0, 0.0] and all(a > 0 for _, a, _ in scores[:2])
    assert [c for _, _, c in scores[2:]] == [a for _, a, _ in scores[2:]]
    assert int(torch.load(best.best_model_path, weights_only=True)["epoch"]) >= 2


def test_finetuning_replaces_the_head_and_can_freeze_the_backbone(tmp_path):
    source = tiny_classifier(num_classes=10)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(source, SequentialDigitsDataModule(batch_size=16, images_per_class=12))
    path = tmp_path / "src.ckpt"
    trainer.save_checkpoint(path)
    tuned = tiny_classifier(num_classes=4, pretrained=str(path), freeze_backbone=True)
    for (name, a), b in zip(source.model.state_dict().items(), tuned.model.state_dict().values(), strict=True):
        if not name.startswith("fc.3"):
            assert torch.equal(a, b), name
    assert tuned.model.get_classifier().out_features == 4
    trainable = {n for n, p in tuned.model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.3.weight", "fc.3.bias"}
    with pytest.raises(ValueError, match=r"belong to another model: T=28 \(this model: T=14\)"):
        load_backbone_weights(tiny_classifier(T=14).model, str(path))  # the checkpoint's hyperparameters say T=28
    with pytest.raises(ValueError, match=r"do not fit this SequentialCNN \(T=14.*shape mismatches"):
        load_state(tiny_classifier(T=14).model, read_weights(str(path)))  # and the PSN's weights' shapes too


def test_model_and_data_must_agree(tmp_path):
    trainer = tiny_trainer(tmp_path)
    with pytest.raises(ValueError, match=r"the model and the data disagree: num_classes: data has 10, model 7"):
        trainer.fit(tiny_classifier(num_classes=7), SequentialDigitsDataModule(images_per_class=4))


def test_static_images_with_as_many_channels_as_steps_are_never_read_as_frames(monkeypatch):
    """B == T or C == T is never used to guess the layout: the model's input kind and the rank decide."""
    image = SpikingClassifier(model="paper_cifar10_csnn", neuron="lif", T=3, in_channels=3, num_classes=10,
                              log_input_samples=0)  # fmt: skip
    assert not image._is_sequence((3, 32, 32))  # a static RGB image with T = 3: one image, not 3 frames
    assert image._is_sequence((3, 2, 32, 32))  # event frames [T, C, H, W]
    sequence = tiny_classifier(T=1)
    assert sequence._is_sequence((1, 1, 28))  # a sequence [T, C, L], whatever its sizes

    class ThreeChannelImages(L.LightningDataModule):  # in_channels not stated: read from input_shape
        num_classes, T, input_shape = 10, 2, (2, 32, 32)  # 2 channels, and T = 2

    monkeypatch.setattr(SpikingClassifier, "trainer", property(lambda self: SimpleNamespace(datamodule=dm)))
    dm = ThreeChannelImages()
    with pytest.raises(ValueError, match="in_channels: data has 2, model 3"):
        image.setup("fit")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_recipe_parses_and_builds(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    text = config.read_text()
    assert "aim" in text.lower() or "paper" in text.lower()  # each recipe states what it reproduces
    cli = run_cli(["--config", str(config), "--trainer.logger", "false"], run=False)
    module, data = cli.model, cli.datamodule
    assert isinstance(module, SpikingClassifier) and module.hparams.num_classes == data.num_classes
    spec = yaml.safe_load(text)
    assert module.hparams.neuron == spec["model"]["neuron"]


def test_unknown_neuron_is_rejected_when_parsing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        run_cli(["--config", str(CONFIGS[0]), "--model.neuron", "izhikevich"], run=False)
    err = capsys.readouterr().err
    assert "izhikevich" in err and "psn" in err and "sliding_psn" in err


# ---------------------------------------------------------------------------------------------- one source per value
SEQ_KWARGS = '{"channels": 8, "length": 28, "fc_hidden": 16}'
SEQ = ["--config", "seqdigits_psn", "--data.init_args.images_per_class", "12", "--data.init_args.batch_size", "16",
       "--model.model_kwargs", SEQ_KWARGS, "--trainer.logger", "false"]  # fmt: skip


def test_recipes_state_t_classes_and_channels_once_the_model_takes_them_from_the_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for config in CONFIGS:
        assert not {"T", "num_classes", "in_channels"} & set(yaml.safe_load(config.read_text())["model"]), config.name
    cli = run_cli(SEQ, run=False)
    assert (cli.model.hparams.T, cli.model.hparams.num_classes, cli.model.hparams.in_channels) == (28, 10, 1)
    # the data's T changes the model's (the N-Digits recipe at T = 6: a PSN with a 6 x 6 weight)
    cli = run_cli(["--config", "ndigits_psn_vgg", "--data.init_args.T", "6", "--trainer.logger", "false"], run=False)
    assert cli.model.hparams.T == 6 and cli.model.model.neuron_layers()[0].weight.shape == (6, 6)
    assert cli.model.hparams.in_channels == 2 and cli.model.hparams.num_classes == 10
    # a value that agrees with the data is accepted; one that does not is refused with the data argument to change
    assert run_cli([*SEQ, "--model.T", "28", "--model.in_channels=1"], run=False).model.hparams.T == 28
    with pytest.raises(ValueError, match=r"--model.T 8 but the data gives T=28.*SequentialDigitsDataModule fixes "
                       r"T=28 \(it has no T argument\)"):  # fmt: skip
        run_cli([*SEQ, "--model.T", "8"], run=False)
    stated = tmp_path / "stated.yaml"
    stated.write_text(yaml.safe_dump({"model": {"num_classes": 7}}))
    with pytest.raises(ValueError, match=r"model.num_classes: 7 in .*stated.yaml but the data gives num_classes=10"):
        run_cli([*SEQ, "--config", str(stated)], run=False)


def test_a_checkpoint_for_other_data_is_refused_naming_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "t14.ckpt"
    hparams = dict(tiny_classifier(T=14).hparams)
    torch.save({"state_dict": tiny_classifier(T=14).state_dict(), "hyper_parameters": hparams}, path)
    with pytest.raises(ValueError, match=r"the checkpoint .*t14.ckpt has T=14 but the data gives T=28"):
        run_cli(["test", *SEQ, "--ckpt_path", str(path)])


@pytest.mark.parametrize(
    ("flags", "shown"),
    [(["--optimizer", "AdamW"], "--optimizer"), (["--lr_scheduler.class_path", "StepLR"], "--lr_scheduler.class_path"),
     (["--optimizer=torch.optim.Adam"], "--optimizer")],
)  # fmt: skip
def test_lightning_optimizer_flags_are_refused_naming_the_model_flags(flags, shown, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=rf"instead of LightningCLI's {shown}") as err:
        run_cli(["fit", *SEQ, *flags], run=False)
    assert "--model.optimizer sgd|adamw" in str(err.value) and "--model.scheduler" in str(err.value)
    config = tmp_path / "opt.yaml"
    config.write_text(yaml.safe_dump({"optimizer": {"class_path": "torch.optim.AdamW"}}))
    with pytest.raises(SystemExit, match=r"opt.yaml sets `optimizer:`.*--model.optimizer"):
        run_cli(["fit", *SEQ, "--config", str(config)], run=False)


def test_the_optimizer_that_runs_is_the_saved_one_and_each_run_keeps_its_config(tmp_path, monkeypatch):
    """Two runs with a versioned logger: each trains with the model's optimizer settings, saves them in its
    checkpoint's hyperparameters, and writes its own resolved config.yaml next to its checkpoints."""
    monkeypatch.chdir(tmp_path)
    tiny = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir", str(tmp_path / "logs")]  # fmt: skip
    for run, (optimizer, lr) in enumerate((("adamw", 0.003), ("sgd", 0.02))):
        cli = run_cli(["fit", *SEQ, *tiny, "--model.optimizer", optimizer, "--model.lr", str(lr),
                       "--model.scheduler", "step"], run=True)  # fmt: skip
        ran = cli.trainer.optimizers[0]
        assert type(ran).__name__ == {"adamw": "AdamW", "sgd": "SGD"}[optimizer]
        assert ran.param_groups[0]["initial_lr"] == lr
        assert type(cli.trainer.lr_scheduler_configs[0].scheduler).__name__ == "StepLR"
        folder = tmp_path / "logs" / "lightning_logs" / f"version_{run}" / "checkpoints"
        ckpt = folder / "last.ckpt"
        hp = torch.load(ckpt, weights_only=True)["hyper_parameters"]
        assert (hp["optimizer"], hp["lr"], hp["scheduler"]) == (optimizer, lr, "step")
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert (saved["model"]["optimizer"], saved["model"]["lr"]) == (optimizer, lr)
    assert not (tmp_path / "runs" / "config.yaml").exists()


def test_learning_rate_monitor_logs_with_a_logger_and_is_skipped_without(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from psn_zoo.training import LearningRateMonitor

    data = SequentialDigitsDataModule(batch_size=16, images_per_class=12)
    silent = tiny_trainer(tmp_path, callbacks=[LearningRateMonitor()])  # logger=False: Lightning's would raise
    silent.fit(tiny_classifier(), data)
    assert silent.state.finished
    logger = CSVLogger(tmp_path / "csv")
    logged = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=logger, log_every_n_steps=1,
                       callbacks=[LearningRateMonitor()], enable_progress_bar=False)  # fmt: skip
    logged.fit(tiny_classifier(lr=0.04), data)
    metrics = (Path(logger.log_dir) / "metrics.csv").read_text()
    assert "lr-SGD" in metrics and "0.04" in metrics


def test_finetuning_from_another_architecture_names_the_model_to_set(tmp_path):
    source = tiny_classifier()
    path = tmp_path / "seq.ckpt"
    tiny_trainer(tmp_path).fit(source, SequentialDigitsDataModule(batch_size=16, images_per_class=12))
    source.trainer.save_checkpoint(path)
    with pytest.raises(ValueError) as err:
        SpikingClassifier(model="paper_cifar10dvs_vgg", neuron="psn", T=4, in_channels=2, pretrained=str(path),
                          model_kwargs={"input_size": 34, "width_mult": 0.25})  # fmt: skip
    message = str(err.value)
    assert "belong to another model: architecture paper_seq_cnn (this model: paper_cifar10dvs_vgg)" in message
    assert f"--model.model paper_seq_cnn --model.model_kwargs '{SEQ_KWARGS}'" in message
    assert "with data of T=28" in message and "missing" not in message
    # a published entry: its metadata names the architecture
    expected = r"architecture paper_cifar10dvs_vgg \(this model: sew_resnet18\).*--model.model paper_cifar10dvs_vgg"
    expected += " --model.model_kwargs"
    with pytest.raises(ValueError, match=expected + r" '\{\"input_size\": 34"):
        SpikingClassifier(model="sew_resnet18", neuron="psn", T=4, in_channels=2,
                          pretrained="paper_cifar10dvs_vgg.ndigits_psn_t4")  # fmt: skip


def test_logger_less_fits_each_get_their_own_folder(tmp_path, monkeypatch):
    """Without a logger Lightning puts every run's checkpoints in runs/checkpoints/; here each fit gets
    runs/<recipe>/<time>/ with its own checkpoints and config.yaml."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PSN_ZOO_RUN_STAMP", raising=False)
    tiny = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    for lr in ("0.01", "0.02"):
        run_cli(["fit", *SEQ, *tiny, "--model.lr", lr])
    folders = sorted((tmp_path / "runs" / "seqdigits_psn").iterdir())
    assert len(folders) == 2 and not (tmp_path / "runs" / "checkpoints").exists()
    for folder, lr in zip(folders, (0.01, 0.02), strict=True):
        assert yaml.safe_load((folder / "checkpoints" / "config.yaml").read_text())["model"]["lr"] == lr
        assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["lr"] == lr


def test_a_config_saved_before_the_datamodules_moved_into_psn_zoo_still_runs(tmp_path):
    """Runs' saved config.yaml name ``datamodules.X`` (the old top-level package): read as ``psn_zoo.datamodules.X``."""
    import subprocess
    import sys

    config = yaml.safe_load(recipes_dir().joinpath("seqdigits_psn.yaml").read_text())
    config["data"]["class_path"] = "datamodules.SequentialDigitsDataModule"
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "psn_zoo.cli", "fit", "--config", str(old), "--print_config"], cwd=tmp_path,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    assert printed["data"]["class_path"] == "psn_zoo.datamodules.SequentialDigitsDataModule"


_DDP_EVAL = """
import json, sys
from pathlib import Path
import lightning as L
from psn_zoo.datamodules import NMNISTDataModule
from psn_zoo.training import SpikingClassifier

class Seen(L.Callback):
    def __init__(self):
        self.n, self.indices = 0, []
    def on_test_epoch_start(self, trainer, pl_module):
        self.indices = list(iter(trainer.test_dataloaders.sampler))
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.n += len(batch[1])

out = Path(sys.argv[2])
dm = NMNISTDataModule(data_dir=sys.argv[1], T=4, batch_size=2, cache="none", val_fraction=0.0)
model = SpikingClassifier(T=4, num_classes=10, in_channels=2, model_kwargs={"input_size": 34, "width_mult": 0.125},
                          log_input_samples=0)
seen = Seen()
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                    enable_model_summary=False, callbacks=[seen])
trainer.test(model, dm, verbose=False)
loss = float(trainer.callback_metrics["test/loss"])
predicted = trainer.predict(model, dm)
(out / f"rank{trainer.global_rank}.json").write_text(json.dumps({
    "n": seen.n, "indices": seen.indices, "loss": loss,
    "predicted": sum(len(p["pred"]) for p in predicted), "test_size": len(dm.datasets["test"]),
}))
"""


def test_ddp_evaluation_counts_every_test_sample_once(tmp_path):
    """Two CPU DDP processes on a 9-sample test split: Lightning's DistributedSampler padded it to 10 (a sample
    counted twice); every sample is evaluated (and predicted) exactly once, and the test loss is the ranks' one."""
    import json

    from native_fixtures import write_nmnist
    from procs import clean_env, run

    write_nmnist(tmp_path / "data", per_class=1)
    (tmp_path / "data" / "NMNIST" / "Test" / "0" / "00000.bin").unlink()  # 9 test recordings
    (tmp_path / "data" / "NMNIST" / "Test" / ".pad" / "pad_extra.bin").symlink_to("_empty")  # (Tonic's file count)
    (tmp_path / "eval.py").write_text(_DDP_EVAL)
    (tmp_path / "out").mkdir()
    args = [str(tmp_path / "eval.py"), str(tmp_path / "data"), str(tmp_path / "out")]
    done = run(args, tmp_path, 300, clean_env(WANDB_MODE="disabled"))
    assert done.returncode == 0, done.stdout[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["test_size"] == 9
    assert ranks[0]["n"] + ranks[1]["n"] == 9 == ranks[0]["predicted"] + ranks[1]["predicted"]
    assert sorted(ranks[0]["indices"] + ranks[1]["indices"]) == list(range(9))
    assert ranks[0]["loss"] == ranks[1]["loss"]  # logged with sync_dist: one value over both ranks


def test_evaluation_loaders_under_a_distributed_trainer_shard_without_repeats():
    dm = SequentialDigitsDataModule(images_per_class=5, batch_size=4)
    dm.trainer = SimpleNamespace(  # what Lightning attaches: a DDP trainer's rank 1 of 3
        distributed_sampler_kwargs={"num_replicas": 3, "rank": 1},
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True),
    )
    assert list(dm.test_dataloader().sampler) == [1, 4, 7] and len(dm.datasets["test"]) == 10
    assert type(dm.train_dataloader().sampler).__name__ == "EpochShuffle"  # training: Lightning shards it
    dm.trainer._accelerator_connector.use_distributed_sampler = False  # the user shards themselves
    assert list(dm.test_dataloader().sampler) == list(range(10))
