"""State-dict converters: SpikingJelly 2.0.0 models and the paper's released checkpoints -> psn_zoo models.

SpikingJelly's ``spiking_resnet*``, ``sew_resnet*`` and ``spiking_vgg*`` use the same module names as ours, so
only the neurons' own keys change (e.g. PSN's ``bias [T, 1]`` -> ``[T]``):

    ours = create_model("sew_resnet18", neuron="psn", T=4, num_classes=10)
    ours.load_state_dict(from_spikingjelly(sj_model.state_dict(), ours))

The paper's checkpoints (figshare 24454912; ``fangwei123456/Parallel-Spiking-Neuron``) are dicts holding the
weights under ``net`` (CIFAR-10) or ``model`` (CIFAR10-DVS, ImageNet); ImageNet files also pickle an
``argparse.Namespace``. :func:`load_paper_checkpoint` reads them safely (``weights_only=True`` with only
``argparse.Namespace`` allowed), recognises the experiment from the key layout, builds the matching model
(``paper_cifar10_csnn``, ``paper_cifar10dvs_vgg``, ``paper_sew_resnet18/34``) and maps the keys:

Key mapping, paper -> psn_zoo:

- CIFAR-10: ``conv.{i}.*`` and ``fc.{1,3}.*`` keep their indices; PSN ``conv.{2,5,..}.fc.weight/bias`` and
  ``fc.2.fc.*`` become ``.weight/.bias`` (bias ``[T]``);
- CIFAR10-DVS: ``features.{i}.fwd.module.{0,1}.*`` -> ``features.{i}.{0,1}.*``; sliding PSN
  ``features.{i}.weight/threshold`` -> ``.weight/.bias``; ``classifier.0.module.1.*`` -> ``classifier.1.*``;
- ImageNet: torchvision names and ``pe`` unchanged; PSN ``sn1.fc.*``, ``layerX.Y.sn{1,2}.fc.*``,
  ``layerX.0.downsample_sn.fc.*`` -> ``.weight/.bias``.

The masked PSN's λ is not stored by the paper's code; a released model has λ = 1.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..hub.metadata import CheckpointInfo, entry_name
from ..hub.publish import ensure_new_entry, make_info, write_entry
from ..neurons import compat, neurons_of
from ..safe_load import load_torch_file
from .registry import build_model

StateDict = Mapping[str, torch.Tensor]


def _neuron_prefixes(model: nn.Module) -> dict[str, str]:
    """``{module name + ".": neuron kind}`` for every neuron of ``model``."""
    names = {id(m): n for n, m in model.named_modules()}
    return {f"{names[id(m)]}.": compat.neuron_kind(m) for m in neurons_of(model)}


def _map_neurons(state: StateDict, model: nn.Module, mapper) -> dict[str, torch.Tensor]:
    prefixes = _neuron_prefixes(model)
    out: dict[str, torch.Tensor] = {}
    claimed: set[str] = set()
    for prefix, kind in prefixes.items():
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        claimed.update(prefix + k for k in own)
        out.update({prefix + k: v for k, v in mapper(kind, own).items()})
    out.update({k: v for k, v in state.items() if k not in claimed})
    return out


def from_spikingjelly(state: StateDict, model: nn.Module) -> dict[str, torch.Tensor]:
    """A SpikingJelly 2.0.0 model's state dict, keyed and shaped for the equivalent psn_zoo ``model``."""
    return _map_neurons(state, model, compat.state_from_spikingjelly)


def to_spikingjelly(state: StateDict, model: nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of :func:`from_spikingjelly` (``model`` is the psn_zoo model the state belongs to)."""
    return _map_neurons(state, model, compat.state_to_spikingjelly)


# ------------------------------------------------------------------------------------ paper checkpoints
_DVS_LAYER = re.compile(r"^features\.(\d+)\.fwd\.module\.(\d+)\.(.+)$")
_DVS_HEAD = re.compile(r"^classifier\.0\.module\.1\.(.+)$")


def detect_paper_experiment(state: StateDict) -> str:
    """``"cifar10"``, ``"cifar10dvs"`` or ``"imagenet"`` from the key layout of a paper checkpoint's weights."""
    keys = set(state)
    if any(_DVS_LAYER.match(k) for k in keys):
        return "cifar10dvs"
    if "pe" in keys and "conv1.weight" in keys:
        return "imagenet"
    if "conv.0.weight" in keys and "fc.1.weight" in keys:
        return "cifar10"
    raise ValueError(
        "unrecognised checkpoint layout: expected the paper's CIFAR-10 (conv.*/fc.*), CIFAR10-DVS "
        f"(features.*.fwd.module.*) or ImageNet (conv1.*, pe) keys; got e.g. {sorted(keys)[:6]}"
    )


def paper_model_kwargs(state: StateDict, experiment: str) -> tuple[str, dict[str, Any]]:
    """The registered model and builder arguments that reproduce a paper checkpoint's architecture."""
    if experiment == "cifar10":
        channels, in_channels = state["conv.0.weight"].shape[:2]
        T = state["conv.2.fc.weight"].shape[0]
        hidden, flat = state["fc.1.weight"].shape
        side = round((flat / channels) ** 0.5) * 4
        return "paper_cifar10_csnn", {
            "neuron": "psn",
            "T": T,
            "channels": channels,
            "in_channels": in_channels,
            "fc_hidden": hidden,
            "input_size": side,
            "num_classes": state["fc.3.weight"].shape[0],
        }
    if experiment == "cifar10dvs":
        k = state["features.1.weight"].shape[0]
        classes, flat = state["classifier.0.module.1.weight"].shape
        return "paper_cifar10dvs_vgg", {
            "neuron": {"name": "sliding_psn", "k": k},
            "num_classes": classes,
            "in_channels": state["features.0.fwd.module.0.weight"].shape[1],
            "input_size": round((flat / 512) ** 0.5) * 16,
        }
    blocks3 = len({k.split(".")[1] for k in state if k.startswith("layer3.")})
    return ("paper_sew_resnet34" if blocks3 == 6 else "paper_sew_resnet18"), {
        "neuron": "psn",
        "T": state["pe"].shape[0],
        "num_classes": state["fc.weight"].shape[0],
        "in_channels": state["conv1.weight"].shape[1],
    }


def from_paper(state: StateDict, model: nn.Module, experiment: str | None = None) -> dict[str, torch.Tensor]:
    """A paper checkpoint's weights, keyed and shaped for the matching psn_zoo ``model``."""
    experiment = experiment or detect_paper_experiment(state)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if experiment == "cifar10dvs":
            if m := _DVS_LAYER.match(key):
                key = f"features.{m[1]}.{m[2]}.{m[3]}"
            elif m := _DVS_HEAD.match(key):
                key = f"classifier.1.{m[1]}"
        renamed[key] = value
    return _map_neurons(renamed, model, compat.state_from_paper)


def _read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """The paper's ``.pth`` files hold tensors plus an ``argparse.Namespace``; nothing else is unpickled."""
    return load_torch_file(path, allowed=(argparse.Namespace,))


def load_paper_checkpoint(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Build the matching paper network and load one of the paper's released ``.pth`` checkpoints into it."""
    ckpt = _read_checkpoint(path)
    state = ckpt.get("net", ckpt.get("model", ckpt)) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: no state dict under 'net' or 'model'; keys: {sorted(ckpt)[:8]}")
    experiment = detect_paper_experiment(state)
    if model is None:
        name, kwargs = paper_model_kwargs(state, experiment)
        model = build_model(name, **kwargs)
    model.load_state_dict(from_paper(state, model, experiment))
    return model


# ------------------------------------------------------------------------------------- release entries
# Importing a checkpoint builds the model, so it lives here, not in psn_zoo.hub (which knows nothing of models); the
# files, manifest record and card are written by psn_zoo.hub.publish.

_PAPER = {  # architecture -> (dataset, input kind, transform, recipe); the sample shape comes from the model
    "paper_cifar10_csnn": ("CIFAR-10", "static_image", {"normalize": "CIFAR-10 mean/std"},
                           "configs/cifar10_csnn_psn.yaml"),
    "paper_cifar10dvs_vgg": ("CIFAR10-DVS", "event_frames", {"ToFrame": "n_event_bins=T", "size": 48},
                             "configs/cifar10dvs_vgg_sliding_t10.yaml"),
    "paper_sew_resnet18": ("ImageNet", "static_image", {"eval": "Resize(256), CenterCrop(224)"},
                           "configs/imagenet_sew_resnet18_psn.yaml"),
    "paper_sew_resnet34": ("ImageNet", "static_image", {"eval": "Resize(256), CenterCrop(224)"},
                           "configs/imagenet_sew_resnet34_psn.yaml"),
}  # fmt: skip


def import_paper_checkpoint(
    path: str | Path, tag: str, out_dir: str | Path, notes: str = "", *, overwrite: bool = False
) -> CheckpointInfo:
    """A released ``.pth`` of the paper's code (read with ``weights_only=True``) -> a psn_zoo entry.

    The metrics are left to be measured (``psn-zoo validate``); the paper's own number is in the recipe. An entry
    already listed under the name is replaced only with ``overwrite``.
    """
    entry_name("paper", tag)  # a bad tag fails before the file is read
    model = load_paper_checkpoint(path)
    arch = next(name for name in _PAPER if _matches(model, name))
    name = entry_name(arch, tag)
    ensure_new_entry(Path(out_dir), name, overwrite)
    dataset, kind, transform, recipe = _PAPER[arch]
    model_kwargs = _model_kwargs(model)
    side = model_kwargs.get("input_size", 224)
    shape = [model.in_channels, side, side] if kind == "static_image" else [model.T, model.in_channels, side, side]
    if kind == "event_frames":
        transform = {**transform, "size": side}
    return write_entry(
        out_dir,
        name,
        model.state_dict(),
        lambda weights: make_info(
            name=name,
            model=model,
            weights=weights,
            classes=[str(i) for i in range(model.num_classes)],
            input_spec={"kind": kind, "shape": shape, "sensor_size": None, "transform": transform},
            dataset={"name": dataset, "split": "test (the paper's protocol)", "source": str(path)},
            metrics={},
            recipe=recipe,
            model_kwargs=model_kwargs,
            notes=notes or "Imported from the paper's released checkpoint.",
        ),
        overwrite=overwrite,
    )


def import_spikingjelly_state(
    path: str | Path, architecture: str, tag: str, out_dir: str | Path, *, neuron: str | Mapping[str, Any], T: int,
    num_classes: int, in_channels: int = 3, model_kwargs: Mapping[str, Any] | None = None, image_size: int = 224,
    notes: str = "", overwrite: bool = False,
) -> CheckpointInfo:  # fmt: skip
    """A SpikingJelly 2.0.0 model state dict (``torch.save``d, read with ``weights_only=True``) -> an entry.

    ``neuron`` is a spec (``"lif"`` or ``{"name": "lif", "tau": 2.0}``); ``model_kwargs`` are the builder's other
    arguments as SpikingJelly's model was built (e.g. ``{"cnf": "IAND"}`` for a SEW-ResNet): they are not in the
    state dict, so they must be given. An entry already listed under the name is replaced only with ``overwrite``.
    """
    name = entry_name(architecture, tag)
    ensure_new_entry(Path(out_dir), name, overwrite)
    state = load_torch_file(path)
    state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
    extra = dict(model_kwargs or {})
    model = build_model(architecture, neuron=neuron, T=T, num_classes=num_classes, in_channels=in_channels, **extra)
    model.load_state_dict(from_spikingjelly(state, model))
    return write_entry(
        out_dir,
        name,
        model.state_dict(),
        lambda weights: make_info(
            name=name,
            model=model,
            weights=weights,
            classes=[str(i) for i in range(num_classes)],
            input_spec={
                "kind": "static_image",
                "shape": [in_channels, image_size, image_size],
                "sensor_size": None,
                "transform": {},
            },
            dataset={"name": "unknown", "split": "n/a", "source": str(path)},
            metrics={},
            recipe="(imported from SpikingJelly)",
            model_kwargs=extra,
            notes=notes or "Imported from a SpikingJelly 2.0.0 state dict.",
        ),
        overwrite=overwrite,
    )


def _matches(model: torch.nn.Module, arch: str) -> bool:
    return {"CifarCSNN": "paper_cifar10_csnn", "DvsVGG": "paper_cifar10dvs_vgg"}.get(type(model).__name__) == arch or (
        type(model).__name__ == "SpikingResNet" and arch == f"paper_sew_resnet{18 if len(model.layer3) == 2 else 34}"
    )


def _model_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """The builder arguments (besides neuron, T, classes, channels) that rebuild an imported paper network."""
    name = type(model).__name__
    if name == "CifarCSNN":
        channels = model.conv[0].out_channels
        side = round((model.fc[1].in_features / channels) ** 0.5)  # two 2x2 pools
        return {"channels": channels, "fc_hidden": model.fc[1].out_features, "input_size": 4 * side}
    if name == "DvsVGG":
        width = [m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels
        return {"input_size": 16 * round((model.classifier[1].in_features / width) ** 0.5)}  # four 2x2 pools
    return {}
