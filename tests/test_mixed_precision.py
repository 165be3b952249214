"""Mixed precision on the CPU: every neuron in every backbone family trains under autocast (bf16 and fp16), and a
Lightning fit with ``precision="bf16-mixed"`` runs (it crashed with "Expected out tensor to have dtype float" when
a PSN met a half-precision input). Lightning runs ``"16-mixed"`` on the CPU as bf16 (with a warning), so fp16 is
covered by the autocast test; a GPU runs it as fp16. Every registered neuron computes a half-precision input in
fp32: its spikes are those of the fp32 run of the same values, multi-step and streaming."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from psn_zoo.datamodules import SequentialDigitsDataModule
from psn_zoo.models import create_model
from psn_zoo.neurons import list_neurons, make_neuron, neuron_info, reset_states
from psn_zoo.training.classifier import SpikingClassifier

NEURONS = ["psn", {"name": "masked_psn", "k": 2}, {"name": "sliding_psn", "k": 2}, "if", "lif", "plif", "lif_noreset",
           "klif"]  # fmt: skip
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


#: the arguments a neuron needs besides T (which the ones that need it get below)
REQUIRED = {"sliding_psn": {"k": 3}, "channel_sliding_psn": {"k": 3}, "masked_psn": {"k": 3, "lambda_": 1.0}}


def _half_vs_float(spec: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Spikes of ``x`` (half precision) and of the same values in fp32, by a neuron built from ``spec`` with the same
    parameters, multi-step and (for a streamable neuron) streamed step by step; and the fp32 run's firing rate."""
    torch.manual_seed(1)
    neuron = make_neuron(spec)
    streamable = neuron_info(spec["name"])["streamable"]
    outs, refs = [], []
    with torch.no_grad():
        for mode in ("m", "s") if streamable else ("m",):
            neuron.step_mode = mode
            for inputs, into in ((x, outs), (x.float(), refs)):
                reset_states(neuron)
                into.append(neuron(inputs) if mode == "m" else torch.stack([neuron(x_t) for x_t in inputs]))
    return torch.stack(outs), torch.stack(refs), float(refs[0].mean())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list_neurons())
def test_every_neuron_computes_a_half_precision_input_in_float32(name, dtype):
    """docs/neurons.md: half-precision inputs accumulate in fp32. A bf16/fp16 input gives the spikes of the fp32 run
    of the same values, in the input's dtype, multi-step and streamed (KLIF charged its membrane in bf16: 0.5 % of
    the spikes differed)."""
    spec = {"name": name, **REQUIRED.get(name, {})}
    if neuron_info(name)["needs_T"]:
        spec["T"] = 16
    torch.manual_seed(0)
    x = (torch.randn(16, 4, 8, 50) * 1.5 + 0.3).to(dtype)
    out, ref, rate = _half_vs_float(spec, x)
    assert out.dtype == dtype and 0.01 < rate < 0.99
    assert torch.equal(out.float(), ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "kwargs",
    [{"v_reset": None}, {}, {"scale_reset": True}, {"v_reset": None, "scale_reset": True, "detach_reset": True}],
    ids=["soft", "hard", "hard-scaled", "soft-scaled"],
)  # fmt: skip
def test_klif_keeps_its_membrane_in_float32_for_a_half_precision_input(kwargs, dtype):
    """Small currents integrated over 64 steps (τ = 16), where a bf16 membrane drifts most: the spikes equal the fp32
    run's, multi-step and streamed; and (with k = 1.5) the membrane kept between calls is fp32, so a half-precision
    run in two calls gives the fp32 run's spikes."""
    spec = {"name": "klif", "tau": 16.0, "decay_input": False, **kwargs}
    torch.manual_seed(0)
    x = (torch.rand(64, 8, 256) * 0.25 - 0.05).to(dtype)
    out, ref, rate = _half_vs_float(spec, x)
    assert out.dtype == dtype and rate > 0.01
    assert torch.equal(out.float(), ref)
    neuron = make_neuron(spec)
    with torch.no_grad():
        neuron.k.fill_(1.5)
        neuron(x[:32])
        assert neuron.v.dtype == torch.float32
        rest = neuron(x[32:])
        reset_states(neuron)
        whole = neuron(x.float())
    assert rest.dtype == dtype and torch.equal(rest.float(), whole[32:])


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
