"""Turn a trained Lightning checkpoint into a published entry: evaluate it on its recipe's test split, count its
operations, store the weights as safetensors (fp16 when that changes nothing measurable), write the manifest
record and the model card."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torchmetrics.classification import MulticlassAccuracy

from ..datamodules.pretrained import RUNTIME_ARGS, datamodule_class, datamodule_names
from ..datamodules.transform_spec import transform_spec
from ..efficiency import measure_efficiency
from ..hub.metadata import CheckpointInfo
from ..hub.publish import ensure_new_entry, make_info, write_entry
from .classifier import SpikingClassifier
from .cli import run_cli
from .data_fingerprint import eval_data_of


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
        transform = {"layout": "image columns as time steps", **{k: v for k, v in hp.items() if k == "augment"}}
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
) -> CheckpointInfo:
    """Evaluate ``ckpt`` on the test split of ``recipe``'s data and publish it as ``name`` into ``out_dir``.

    ``fp16=None`` stores fp16 weights if they lose nothing: their top-1 is at least the fp32 weights'. The
    manifest's numbers are always those of the weights as stored. The checkpoint (a path or an http(s) URL) is read
    with ``weights_only=True`` only; an entry already listed under ``name`` is replaced only with ``overwrite``.
    """
    ensure_new_entry(Path(out_dir), name, overwrite)  # the name checked, before the (long) evaluation
    module = SpikingClassifier.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True)
    model = module.model.eval()
    if name.split(".", 1)[0] != module.hparams.model:
        raise ValueError(f"entry name {name!r} must start with the architecture {module.hparams.model!r}")
    _check_recipe_args(data_args or [])
    cli = run_cli(["--config", str(recipe), "--trainer.logger", "false", *(data_args or [])], run=False)
    _check_recipe_rebuilds(recipe, module, cli)
    dm = cli.datamodule
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
        ), eval_data=eval_data),
        fp16=use_fp16,
        overwrite=overwrite,
    )
