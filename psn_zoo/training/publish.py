"""Turn a trained Lightning checkpoint into a published entry: check that it was trained on its recipe's data,
evaluate it on the recipe's test split, count its operations, store the weights as safetensors (fp16 when that
changes nothing measurable), write the manifest record and the model card (which says how the weights were trained:
the recipe, or the recipe with the overrides the checkpoint records)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import shlex
from pathlib import Path
from typing import Any

import torch
import yaml
from torchmetrics.classification import MulticlassAccuracy

from ..datamodules.pretrained import RUNTIME_ARGS, datamodule_class, datamodule_names
from ..datamodules.transform_spec import transform_spec
from ..efficiency import measure_efficiency
from ..hub.metadata import CheckpointInfo
from ..hub.publish import ensure_new_entry, make_info, write_entry
from ..safe_load import checked_checkpoint, load_torch_file
from .classifier import SpikingClassifier
from .cli import run_cli
from .data_fingerprint import eval_data_of
from .recipes import resolve_config


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, num_classes: int) -> dict[str, float]:
    model.eval()
    top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
    top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
    for x, y in loader:
        logits = model(x)
        top1.update(logits, y)
        top5.update(logits, y)
    return {"top1": float(top1.compute()), "top5": float(top5.compute())}


def _input_spec(dm: Any) -> dict[str, Any]:
    """What the model expects, as plain data; an event DataModule's evaluation transform is stored step by step
    (``psn_zoo.datamodules.transform_for`` rebuilds it)."""
    hp = dict(getattr(dm, "hparams", {}))
    if hasattr(dm, "preprocessing"):  # a Tonic event DataModule
        kind = "sequence" if len(dm.input_shape) == 3 else "event_frames"
        return {
            "kind": kind,
            "shape": list(dm.input_shape),
            "sensor_size": list(dm.sensor_size),
            "transform": {"steps": transform_spec(dm)},
        }
    if len(dm.input_shape) == 3 and getattr(dm, "T", None):
        extra = {k: v for k, v in hp.items() if k == "augment"}
        if hp.get("permute_pixels", getattr(dm, "permute_pixels", False)):  # what each step holds is the order's
            seed = int(hp.get("permutation_seed", getattr(dm, "permutation_seed", 0)))
            layout = f"pixels in one fixed random order (permutation_seed {seed}), {dm.input_shape[-1]} per time step"
            transform = {"layout": layout, "permute_pixels": True, "permutation_seed": seed, **extra}
        else:
            transform = {"layout": "image columns as time steps", **extra}
        return {"kind": "sequence", "shape": list(dm.input_shape), "sensor_size": None, "transform": transform}
    return {"kind": "static_image", "shape": list(dm.input_shape), "sensor_size": None, "transform": {}}


MODEL_KEYS = ("model", "neuron", "neuron_kwargs", "model_kwargs", "T", "num_classes", "in_channels")


def _model_spec(hparams: Any) -> dict[str, Any]:
    """What builds the network, comparable across a saved checkpoint and a fresh CLI build (None kwargs = {})."""
    spec = {k: hparams.get(k) for k in MODEL_KEYS}
    for key in ("neuron_kwargs", "model_kwargs"):
        spec[key] = dict(spec[key] or {})
    return spec


def _check_recipe_args(data_args: list[str]) -> None:
    """The entry names its recipe so that ``psn-zoo validate --config <recipe> --model.pretrained <entry>`` rebuilds
    it: extra arguments may set only where and how data is read (``RUNTIME_ARGS``), never the model or what the test
    split holds."""
    allowed = {f"--data.init_args.{name}" for name in RUNTIME_ARGS} | {f"--data.{name}" for name in RUNTIME_ARGS}
    refused, i = [], 0
    while i < len(data_args):  # each item an allowed "--flag=value", or an allowed "--flag" and then its value
        flag, eq, _ = data_args[i].partition("=")
        if flag not in allowed:
            refused.append(flag)  # a model flag, a config file (-c/--config), a stray value
        has_value = flag.startswith("-") and not eq and i + 1 < len(data_args)
        i += 2 if has_value and not data_args[i + 1].startswith("--") else 1
    if refused:
        raise ValueError(
            f"--recipe-args {' '.join(refused)}: only where and how data is read may be set here "
            f"({', '.join(sorted(allowed))}); anything that changes the model or the test split belongs in the "
            "recipe the entry names (add one under psn_zoo/recipes)"
        )


def _check_recipe_rebuilds(recipe: str | Path, module: Any, cli: Any) -> None:
    """The recipe must build the checkpoint's model (the entry names it as what rebuilds it)."""
    built, trained = _model_spec(cli.model.hparams), _model_spec(module.hparams)
    if built != trained:
        diff = ", ".join(f"{k}: recipe {built[k]!r}, checkpoint {trained[k]!r}" for k in MODEL_KEYS
                         if built[k] != trained[k])  # fmt: skip
        raise ValueError(
            f"recipe {recipe} does not build this checkpoint's model ({diff}): publish it with the recipe it was "
            "trained with (add one under psn_zoo/recipes when it was trained with --model overrides)"
        )


#: The SpikingClassifier arguments that say how a model is trained (not what it is: MODEL_KEYS); a checkpoint whose
#: values differ from the recipe's was not trained by the recipe as it stands, and its card says so
TRAINING_KEYS = ("loss", "label_smoothing", "tet_lambda", "tet_means", "mixup_alpha", "cutmix_alpha", "optimizer",
                 "lr", "momentum", "weight_decay", "scheduler", "step_size", "gamma", "freeze_backbone")  # fmt: skip
#: Trainer settings that change what a run trains (compared when the run's config.yaml is next to its checkpoint)
TRAINER_KEYS = ("max_epochs", "max_steps", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
                "precision", "limit_train_batches", "overfit_batches")  # fmt: skip


def _plain(value: Any) -> Any:
    """``value`` as comparable plain data (tuples and lists alike, numbers as JSON has them)."""
    return json.loads(json.dumps(value, default=str))


def _data_arguments(cls: type, hparams: Any) -> dict[str, Any]:
    """What selects and prepares the data of a DataModule's hyperparameters: every argument but the runtime ones
    (``RUNTIME_ARGS``: where and how it is read), defaults filled in from ``cls``'s signature (a checkpoint written
    before an argument existed records none: it had the default)."""
    params = inspect.signature(cls).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    values = {**defaults, **{k: v for k, v in dict(hparams or {}).items() if not str(k).startswith("_")}}
    return {k: _plain(v) for k, v in values.items() if k not in RUNTIME_ARGS}


def _check_recipe_data(ckpt: str | Path, recipe: str | Path, recorded: Any, dm: Any) -> None:
    """The checkpoint must have been trained on the data the recipe evaluates: the same DataModule with the same
    arguments (the split seed, the images, the reading order...). Otherwise the recipe's test split may hold its
    training images (another data seed) or be another task (permuted pixels): refused, naming what differs."""
    fix = (
        "Publish it with a recipe whose data arguments are the checkpoint's (the one it was trained with; add a "
        "recipe file under psn_zoo/recipes when it was trained with --data overrides, as seqdigits_permuted_pmsn is)"
    )
    if not isinstance(recorded, dict):
        raise ValueError(
            f"{ckpt} does not record the data it was trained on (no datamodule_hyper_parameters: not written by "
            "psn-zoo fit or Lightning's Trainer with a LightningDataModule), so psn_zoo cannot check that the test "
            f"split of {recipe} was not in its training data. {fix}"
        )
    theirs = str(recorded.get("_class_path") or "").rpartition(".")[2]
    if theirs and theirs != type(dm).__name__:
        raise ValueError(
            f"{ckpt} was trained on {theirs}, but recipe {recipe} evaluates {type(dm).__name__}. {fix}"
        )
    trained, evaluated = _data_arguments(type(dm), recorded), _data_arguments(type(dm), dm.hparams)
    differ = [k for k in sorted(set(trained) | set(evaluated)) if trained.get(k) != evaluated.get(k)]
    if differ:
        diff = ", ".join(f"{k}: checkpoint {trained.get(k)!r}, recipe {evaluated.get(k)!r}" for k in differ)
        raise ValueError(
            f"{ckpt} was trained on other data than recipe {recipe} evaluates ({type(dm).__name__} {diff}): the "
            "recipe's test split is not the held-out data of its training (another split seed shares images with "
            f"it), so its numbers there would not be a test. {fix}"
        )


def _run_config(ckpt: str | Path, recorded: dict[str, Any]) -> dict[str, Any] | None:
    """The ``config.yaml`` psn-zoo fit saved next to a local checkpoint (its trainer settings), if it is there and
    belongs to this run (its data arguments are the checkpoint's)."""
    path = Path(str(ckpt)).expanduser().parent / "config.yaml"
    if "://" in str(ckpt) or not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(config, dict):
        return None
    config = config.get("fit", config)  # a config saved with its subcommand
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    args = data.get("init_args", data) if isinstance(data.get("init_args", data), dict) else {}
    mine = {k: _plain(v) for k, v in args.items() if k not in RUNTIME_ARGS}
    theirs = {k: _plain(v) for k, v in recorded.items() if k in mine}
    return config if mine == theirs else None


def _overrides(ckpt: str | Path, raw: dict[str, Any], module: Any, cli: Any) -> dict[str, Any]:
    """How the checkpoint's training differs from the recipe's (``training`` of the entry): the model's training
    arguments, the origin of fine-tuned weights and, when the run's config.yaml is next to the checkpoint, the
    trainer settings and seed."""
    overrides: list[str] = []
    recipe_hp, ckpt_hp = dict(cli.model.hparams), dict(module.hparams)
    for key in TRAINING_KEYS:
        if key in ckpt_hp and _plain(ckpt_hp[key]) != _plain(recipe_hp.get(key)):
            overrides.append(f"--model.{key} {shlex.quote(str(ckpt_hp[key]))}")
    tuned = raw.get("fine_tuned_from") or ckpt_hp.get("pretrained")
    if tuned and str(tuned) != str(recipe_hp.get("pretrained")):
        overrides.append(f"--model.pretrained {shlex.quote(str(tuned))}")
    config = _run_config(ckpt, dict(raw.get("datamodule_hyper_parameters") or {}))
    recipe = cli.config.get("trainer") or {}
    max_epochs = None
    if config is not None:
        run = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
        for key in TRAINER_KEYS:
            if key in run and _plain(run[key]) != _plain(recipe.get(key)):
                overrides.append(f"--trainer.{key} {shlex.quote(str(run[key]))}")
        max_epochs = run.get("max_epochs") if isinstance(run.get("max_epochs"), int) else None
        seed = config.get("seed_everything")
        if "seed_everything" in config and _plain(seed) != _plain(cli.config.get("seed_everything")):
            overrides.append(f"--seed_everything {shlex.quote(str(seed))}")
    epoch = raw.get("epoch")
    return {
        "follows_recipe": not overrides,
        "overrides": overrides,
        "epochs": epoch + 1 if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0 else None,
        "max_epochs": max_epochs,
        "fine_tuned_from": str(tuned) if tuned else None,
    }


def _datamodule_name(dm: Any) -> str:
    """The manifest's ``dataset.datamodule``: the class name of one of psn_zoo's DataModules."""
    name = type(dm).__name__
    if name not in datamodule_names() or datamodule_class(name) is not type(dm):
        raise ValueError(
            f"{type(dm).__module__}.{name} is not one of psn_zoo's DataModules ({', '.join(datamodule_names())}): "
            "a published entry must name data that psn_zoo can rebuild (psn_zoo.datamodules.datamodule_for)"
        )
    return name


def publish_checkpoint(
    ckpt: str | Path,
    recipe: str | Path,
    name: str,
    out_dir: str | Path,
    *,
    data_args: list[str] | None = None,
    fp16: bool | None = None,
    notes: str = "",
    overwrite: bool = False,
    license: str = "MIT",
) -> CheckpointInfo:
    """Evaluate ``ckpt`` on the test split of ``recipe``'s data and publish it as ``name`` into ``out_dir``.

    The checkpoint must have been trained on the recipe's data (its recorded DataModule arguments are the
    recipe's) and be the recipe's model; training arguments that differ from the recipe's (learning rate, epochs,
    fine-tuning...) are recorded in the entry's ``training`` and on its card. ``fp16=None`` stores fp16 weights if
    they lose nothing: their top-1 is at least the fp32 weights'. The manifest's numbers are always those of the
    weights as stored. The checkpoint (a path or an http(s) URL) is read with ``weights_only=True`` only; an entry
    already listed under ``name`` is replaced only with ``overwrite``.
    """
    ensure_new_entry(Path(out_dir), name, overwrite)  # the name checked, before the (long) evaluation
    with checked_checkpoint(ckpt) as path:  # a URL is downloaded once, read with weights_only
        raw = load_torch_file(path)
        module = SpikingClassifier.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
    try:
        config = resolve_config(str(recipe))
    except FileNotFoundError as err:  # its message names the flag of the training commands
        raise FileNotFoundError(str(err).replace("--config ", "--recipe ", 1)) from None
    model = module.model.eval()
    if name.split(".", 1)[0] != module.hparams.model:
        raise ValueError(f"entry name {name!r} must start with the architecture {module.hparams.model!r}")
    _check_recipe_args(data_args or [])
    cli = run_cli(["--config", config, "--trainer.logger", "false", *(data_args or [])], run=False)
    _check_recipe_rebuilds(recipe, module, cli)
    dm = cli.datamodule
    _check_recipe_data(ckpt, recipe, raw.get("datamodule_hyper_parameters"), dm)
    training = _overrides(ckpt, raw, module, cli)
    dm.prepare_data()
    dm.setup("test")
    loader = dm.test_dataloader()
    metrics = evaluate(model, loader, module.hparams.num_classes)
    use_fp16 = False
    if fp16 is None or fp16:
        halved = {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
        probe = SpikingClassifier(**module.hparams).model
        probe.load_state_dict(halved)
        fp16_metrics = evaluate(probe, loader, module.hparams.num_classes)
        use_fp16 = fp16 if fp16 is not None else fp16_metrics["top1"] >= metrics["top1"]
        if use_fp16:  # every number in the manifest is that of the weights as published
            model, metrics = probe.eval(), fp16_metrics
    efficiency = measure_efficiency(model, loader).as_dict()
    metrics |= {k: v for k, v in efficiency.items() if k not in ("T", "samples")}
    metrics["samples"] = efficiency["samples"]
    classes = [str(c) for c in getattr(dm, "classes", range(module.hparams.num_classes))]
    data_hp = {k: v for k, v in dict(dm.hparams).items() if k not in RUNTIME_ARGS and not k.startswith("_")}
    # the evaluation split's fingerprint, where the DataModule can give one (psn-zoo validate compares it)
    eval_data = eval_data_of(dm, "test") if callable(getattr(dm, "fingerprint", None)) else None
    return write_entry(
        out_dir,
        name,
        model.state_dict(),
        lambda weights: dataclasses.replace(make_info(
            name=name,
            model=model,
            weights=weights,
            classes=classes,
            input_spec=_input_spec(dm),
            dataset={
                "name": getattr(dm, "name", type(dm).__name__),
                "datamodule": _datamodule_name(dm),
                "init_args": data_hp,
                "split": "test",
            },
            metrics=metrics,
            recipe=str(recipe),
            model_kwargs=dict(module.hparams.model_kwargs or {}),
            notes=notes,
            license=license,
            training=training,
        ), eval_data=eval_data),
        fp16=use_fp16,
        overwrite=overwrite,
    )
