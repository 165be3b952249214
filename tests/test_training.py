"""Training: the LightningModule, losses, callbacks, fine-tuning, the CLI and its recipes."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from datamodules import SequentialDigitsDataModule
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
    with pytest.raises(ValueError, match=r"do not fit this SequentialCNN \(T=14.*shape mismatches"):
        load_backbone_weights(tiny_classifier(T=14).model, str(path))


def test_model_and_data_must_agree(tmp_path):
    trainer = tiny_trainer(tmp_path)
    with pytest.raises(ValueError, match=r"the model and the data disagree: num_classes: data has 10, model 7"):
        trainer.fit(tiny_classifier(num_classes=7), SequentialDigitsDataModule(images_per_class=4))


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
