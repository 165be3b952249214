"""From training to a release entry and back: ``psn-zoo fit`` -> ``psn-zoo publish`` -> ``load_pretrained`` and
``psn-zoo validate`` give the manifest's numbers; and the shipped entries reproduce through ``psn-zoo validate``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from procs import clean_env, run
from safetensors.torch import load_file
from torchmetrics.classification import MulticlassAccuracy

from psn_zoo.datamodules import SequentialDigitsDataModule
from psn_zoo.hub import get_pretrained_info, list_pretrained
from psn_zoo.models import load_pretrained
from psn_zoo.training import SpikingClassifier

pytestmark = pytest.mark.timeout(900)

RECIPE = {
    "seed_everything": 0,
    "trainer": {"max_epochs": 2, "accelerator": "cpu", "logger": False, "enable_progress_bar": False},
    "model": {
        "model": "paper_seq_cnn",
        "neuron": "sliding_psn",
        "neuron_kwargs": {"k": 4},
        "T": 28,
        "num_classes": 10,
        "in_channels": 1,
        "model_kwargs": {"channels": 8, "length": 28, "fc_hidden": 16},
        "optimizer": "adamw",
        "lr": 0.01,
    },
    "data": {
        "class_path": "psn_zoo.datamodules.SequentialDigitsDataModule",
        "init_args": {"batch_size": 16, "images_per_class": 12},
    },
}
_VAL_ACC = re.compile(r"val/acc\s+([0-9.]+)")


def _top1(model: torch.nn.Module, dm: SequentialDigitsDataModule) -> float:
    metric = MulticlassAccuracy(10, average="micro")
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            metric.update(model(x), y)
    return float(metric.compute())


def test_fit_publish_load_and_validate_agree(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    config = dict(RECIPE, trainer=dict(RECIPE["trainer"], default_root_dir=str(tmp_path / "runs")))
    recipe.write_text(yaml.safe_dump(config))
    env = clean_env(WANDB_MODE="disabled")
    fitted = run(["-m", "psn_zoo.cli", "fit", "--config", str(recipe)], tmp_path, 600, env)
    assert fitted.returncode == 0, fitted.stdout[-3000:]
    (ckpt,) = list((tmp_path / "runs").rglob("*.ckpt"))

    release, name = tmp_path / "release", "paper_seq_cnn.tiny_sliding_psn"
    published = run(
        ["-m", "psn_zoo.cli", "publish", str(ckpt), "--recipe", str(recipe), "--name", name, "--out", str(release),
         "--notes", "a test entry"],
        tmp_path, 600, env,
    )  # fmt: skip
    assert published.returncode == 0, published.stdout[-3000:]
    entry = json.loads((release / "manifest.json").read_text())["entries"][0]
    assert entry["name"] == name and entry["neuron"] == {"name": "sliding_psn", "k": 4}
    assert entry["dataset"]["datamodule"] == "SequentialDigitsDataModule"  # a name, rebuilt by datamodule_for
    assert entry["dataset"]["split"] == "test" and not any(k.startswith("_") for k in entry["dataset"]["init_args"])
    assert entry["input"]["kind"] == "sequence" and entry["input"]["shape"] == [28, 1, 28]
    # the evaluation split's fingerprint is recorded, as psn-zoo validate compares it
    expected = SequentialDigitsDataModule(**RECIPE["data"]["init_args"]).fingerprint("test")
    assert entry["eval_data"]["split"] == "test" and entry["eval_data"]["sha256"] == expected
    metrics = entry["metrics"]
    assert {"top1", "top5", "mean_firing_rate", "synaptic_acs", "neuron_macs", "energy_uj"} <= set(metrics)
    # sliding PSN, k = 4: k·T − k(k−1)/2 MACs per neuron and sample
    assert metrics["neuron_macs"] > 0 and metrics["energy_uj"] > metrics["energy_uj_without_neurons"]
    weights = release / entry["weights"]["file"]
    assert weights.suffix == ".safetensors" and entry["weights"]["sha256"][:8] in weights.name
    assert (release / "cards" / f"{name}.md").read_text().count("a test entry") == 1
    dtype = torch.float16 if entry["weights"]["dtype"] == "float16" else torch.float32
    assert load_file(str(weights))["fc.1.weight"].dtype == dtype

    # the loaded model reproduces the manifest's top-1 on the recipe's test split, exactly
    model = load_pretrained(name, manifest=release / "manifest.json")
    dm = SequentialDigitsDataModule(**RECIPE["data"]["init_args"])
    dm.setup("test")
    assert _top1(model, dm) == pytest.approx(metrics["top1"], abs=1e-6)
    trained = SpikingClassifier.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True).model.eval()
    assert abs(_top1(trained, dm) - metrics["top1"]) <= 1 / len(dm.datasets["test"]) + 1e-6  # fp16 may flip one

    # ... and so does psn-zoo validate from the published weights file
    validated = run(
        ["-m", "psn_zoo.cli", "validate", "--config", str(recipe), "--model.pretrained", str(weights),
         "--data.init_args.val_split", "test"],
        tmp_path, 600, env,
    )  # fmt: skip
    assert validated.returncode == 0, validated.stdout[-3000:]
    assert float(_VAL_ACC.findall(validated.stdout)[-1]) == pytest.approx(metrics["top1"], abs=1e-6)


SEQUENTIAL = [n for n in list_pretrained() if get_pretrained_info(n).architecture == "paper_seq_cnn"]


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_shipped_sequential_entry_reproduces_with_psn_zoo_validate(name, tmp_path):
    """The issue's end-to-end check on the fast entries: the recipe + the entry give the manifest's top-1."""
    info = get_pretrained_info(name)
    root = Path(__file__).resolve().parents[1]
    args = ["-m", "psn_zoo.cli", "validate", "--config", info.recipe, "--model.pretrained", name,
            "--data.init_args.val_split", "test", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    result = run(args, root, 600, clean_env(WANDB_MODE="disabled"))
    assert result.returncode == 0, result.stdout[-3000:]
    measured = float(_VAL_ACC.findall(result.stdout)[-1])
    assert abs(measured - info.metrics["top1"]) * 100 <= 0.5, (measured, info.metrics["top1"])


def _unfitted_checkpoint(tmp_path: Path, **model: object) -> Path:
    """A Lightning checkpoint of an untrained classifier (what publish reads: hyper-parameters and weights)."""
    import lightning

    module = SpikingClassifier(**{k: v for k, v in RECIPE["model"].items()} | model)
    with torch.no_grad():
        module.model(torch.zeros(2, 28, 1, 28))  # lazy parameters take their shapes
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, path)  # fmt: skip
    return path


def test_publish_refuses_a_recipe_that_would_not_rebuild_the_entry(tmp_path):
    """An entry names its recipe so that ``psn-zoo validate --config <recipe> --model.pretrained <entry>`` rebuilds
    it: a checkpoint trained with --model overrides, or evaluated on data the recipe does not make, is refused with
    the fix, before anything is written."""
    from psn_zoo.training.publish import publish_checkpoint

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    release = tmp_path / "release"
    other = _unfitted_checkpoint(tmp_path, neuron="pmsn", neuron_kwargs={"n": 2})
    with pytest.raises(ValueError, match=r"does not build this checkpoint's model \(neuron: recipe 'sliding_psn'"):
        publish_checkpoint(other, recipe, "paper_seq_cnn.mismatch", release)
    same = _unfitted_checkpoint(tmp_path)
    for args in (["--data.init_args.permute_pixels", "true"], ["--model.neuron", "pmsn"], ["--model.T=8"]):
        with pytest.raises(ValueError, match=rf"--recipe-args {args[0].split('=')[0]}: only where and how data"):
            publish_checkpoint(same, recipe, "paper_seq_cnn.mismatch", release, data_args=args)
    longer = _unfitted_checkpoint(tmp_path, T=32)  # trained at another T: the recipe would validate it at 28
    with pytest.raises(ValueError, match=r"\(T: recipe 28, checkpoint 32\)"):
        publish_checkpoint(longer, recipe, "paper_seq_cnn.mismatch", release)
    assert not (release / "manifest.json").exists()
