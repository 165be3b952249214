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

from ..neurons import compat, neurons_of
from ..safe_load import load_torch_file
from .registry import create_model

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
        model = create_model(name, **kwargs)
    model.load_state_dict(from_paper(state, model, experiment))
    return model
