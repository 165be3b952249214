"""Start a model from pretrained weights: a published zoo entry, a Lightning ``.ckpt`` or a ``.safetensors`` file.

The classifier is replaced when the number of classes differs (fine-tuning to a new task); any other
mismatch (another architecture, T or neuron) is an error that says what differs and, when the source records it (a
published entry's metadata, a Lightning checkpoint's hyperparameters), the ``--model.*`` values to set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..models.base import SpikingModel
from ..safe_load import load_torch_file, local_copy, suffix_of


def read_weights(source: str) -> dict[str, torch.Tensor]:
    """The backbone state dict in ``source``: a Lightning ``.ckpt``, a ``.pt``/``.pth`` state dict or a
    ``.safetensors`` file (a path or an ``http(s)://`` URL), or a published entry name (keys as in the bare model).

    Torch files are read with ``weights_only=True`` only: one that would unpickle code is refused.
    """
    return _read(source)[0]


def _read(source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The state dict and, when the source records it, the model it belongs to (``model``, ``model_kwargs``,
    ``neuron``, ``T``)."""
    suffix = suffix_of(source)
    if suffix in (".ckpt", ".pt", ".pth"):
        with local_copy(source) as path:
            return _torch_file_state(path, str(source))
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        with local_copy(source, what="weights file") as path:
            return load_file(str(path)), None
    from ..hub import get_pretrained_info, load_pretrained_weights

    state = load_pretrained_weights(source)
    try:
        info = get_pretrained_info(source)
    except (KeyError, ValueError, OSError):  # e.g. an hf-hub: source, described by its own config
        return state, None
    described = {"model": info.architecture, "model_kwargs": dict(info.model_kwargs), "T": info.T}
    return state, described | {"neuron": info.neuron.get("name"), "neuron_kwargs": _kwargs(info.neuron)}


def _kwargs(neuron: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in neuron.items() if k != "name"}


def _torch_file_state(path: Path, shown: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    try:
        ckpt = load_torch_file(path)  # weights_only: a file that would unpickle code is refused
    except ValueError as err:
        raise ValueError(str(err).replace(str(path), shown, 1)) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{shown} holds no state dict (a Lightning checkpoint or torch.save(model.state_dict()))")
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    described = None
    if isinstance(hparams, dict) and isinstance(hparams.get("model"), str):
        described = {k: hparams.get(k) for k in ("model", "model_kwargs", "T", "neuron", "neuron_kwargs")}
    state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")} or dict(state)
    return state, described


def _fix(described: dict[str, Any] | None, architecture: str | None, model: SpikingModel) -> str:
    """The ``--model.*`` values that build the source's model (what the error tells the user to set)."""
    if not described:
        return "Build the model with the checkpoint's architecture, T and neuron (see its metadata)"
    flags = [f"--model.model {described['model']}"]
    if described.get("model_kwargs"):
        flags.append(f"--model.model_kwargs '{json.dumps(described['model_kwargs'])}'")
    if described.get("neuron"):
        flags.append(f"--model.neuron {described['neuron']}")
    if described.get("neuron_kwargs"):
        flags.append(f"--model.neuron_kwargs '{json.dumps(described['neuron_kwargs'])}'")
    theirs = f"a {described['model']} (T={described.get('T')}, neuron={described.get('neuron')})"
    ours = f"{architecture or type(model).__name__} (T={model.T}, neuron={model.neuron_spec})"
    data_t = f" with data of T={described['T']}" if described.get("T") not in (None, model.T) else ""
    return (
        f"They are {theirs}, this model is {ours}: fine-tune them with {' '.join(flags)}{data_t} "
        "(SpikingClassifier(model=..., model_kwargs=..., neuron=...) in Python)"
    )


def load_backbone_weights(model: SpikingModel, source: str, architecture: str | None = None) -> list[str]:
    """Load ``source`` into ``model`` (built as the registered ``architecture``, named in errors) through the one
    build path (:func:`psn_zoo.models.load_backbone_weights`); a mismatch names the ``--model.*`` flags that build
    the source's model. Returns the keys left at their initial values (a replaced classifier)."""
    from ..models import load_backbone_weights as load

    state, described = _read(source)
    try:
        return load(model, state, origin=str(source), fix=_fix(described, architecture, model))
    except ValueError:
        if described and architecture and described["model"] != architecture:
            raise ValueError(
                f"the weights in {source} belong to another architecture ({described['model']}), not to "
                f"{architecture}. " + _fix(described, architecture, model)
            ) from None
        raise
