"""Mixed precision on the CPU: every neuron in every backbone family trains under autocast (bf16 and fp16), and a
Lightning fit with ``precision="bf16-mixed"`` runs (it crashed with "Expected out tensor to have dtype float" when
a PSN met a half-precision input). Lightning runs ``"16-mixed"`` on the CPU as bf16 (with a warning), so fp16 is
covered by the autocast test; a GPU runs it as fp16."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from psn_zoo.datamodules import SequentialDigitsDataModule
from psn_zoo.models import create_model
from psn_zoo.training.classifier import SpikingClassifier

NEURONS = ["psn", {"name": "masked_psn", "k": 2}, {"name": "sliding_psn", "k": 2}, "if", "lif", "plif", "lif_noreset"]
BACKBONES = [
    ("paper_seq_cnn", {"T": 28, "in_channels": 1, "channels": 8, "length": 28, "fc_hidden": 16}, (2, 28, 1, 28)),
    ("paper_cifar10dvs_vgg", {"T": 4, "in_channels": 2, "input_size": 34, "width_mult": 0.25}, (2, 4, 2, 34, 34)),
    ("sew_resnet18", {"T": 4, "in_channels": 2}, (2, 4, 2, 34, 34)),
]


def _name(spec) -> str:
    return spec if isinstance(spec, str) else spec["name"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("neuron", NEURONS, ids=_name)
@pytest.mark.parametrize(("arch", "kwargs", "shape"), BACKBONES, ids=[b[0] for b in BACKBONES])
def test_training_step_under_autocast(arch, kwargs, shape, neuron, dtype):
    torch.manual_seed(0)
    model = create_model(arch, neuron=neuron, num_classes=10, **kwargs)
    x = torch.rand(*shape)
    with torch.autocast("cpu", dtype=dtype):
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([1, 7]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("precision", ["bf16-mixed"])
@pytest.mark.parametrize(
    ("neuron", "neuron_kwargs"),
    [("psn", {}), ("masked_psn", {"k": 4}), ("sliding_psn", {"k": 2}), ("lif", {})],
    ids=["psn", "masked_psn", "sliding_psn", "lif"],
)
def test_lightning_fit_in_mixed_precision(neuron, neuron_kwargs, precision, tmp_path):
    L.seed_everything(0)
    module = SpikingClassifier(
        model="paper_seq_cnn", neuron=neuron, neuron_kwargs=neuron_kwargs, T=28, num_classes=10, in_channels=1,
        model_kwargs={"channels": 8, "length": 28, "fc_hidden": 16}, lr=0.05,
    )  # fmt: skip
    data = SequentialDigitsDataModule(batch_size=16, images_per_class=6)  # scikit-learn's bundled digits, in memory
    trainer = L.Trainer(
        accelerator="cpu", precision=precision, max_epochs=1, limit_train_batches=3, limit_val_batches=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
    )  # fmt: skip
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer.fit(module, datamodule=data)
    assert trainer.state.finished
    changed = [n for n, p in module.named_parameters() if not torch.equal(p, before[n])]
    assert any("neuron" in n or "weight" in n for n in changed), changed  # it trained
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in module.parameters())
    assert trainer.callback_metrics and all(torch.isfinite(v).all() for v in trainer.callback_metrics.values()), dict(
        trainer.callback_metrics
    )


RECIPES = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "psn_zoo" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_trains_a_step_in_mixed_precision(recipe, tmp_path, monkeypatch):
    """Each shipped recipe, built by the CLI with ``--trainer.precision bf16-mixed`` (its model, neuron, T, classes
    and channels as it states or links them), runs a training step inside Lightning's own precision context on one
    sample of its data's input shape; ``16-mixed`` builds too (Lightning runs it as bf16 on the CPU)."""
    from psn_zoo.training.cli import run_cli

    monkeypatch.chdir(tmp_path)
    common = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
              "--trainer.logger", "false", "--trainer.sync_batchnorm", "false"]  # fmt: skip
    half = run_cli(["--config", recipe, "--trainer.precision", "16-mixed", *common], run=False)
    assert half.trainer.precision == "bf16-mixed"  # Lightning's CPU mapping of 16-mixed
    cli = run_cli(["--config", recipe, "--trainer.precision", "bf16-mixed", *common], run=False)
    model, shape = cli.model, tuple(cli.datamodule.input_shape)
    torch.manual_seed(0)
    x = torch.rand(1, *shape)
    y = torch.zeros(1, dtype=torch.long)
    with cli.trainer.precision_plugin.forward_context():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
    loss.backward()
    assert torch.isfinite(loss), recipe
    assert all(p.dtype == torch.float32 for p in model.parameters())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
