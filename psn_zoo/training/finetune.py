"""Start a model from pretrained weights: a published zoo entry, a Lightning ``.ckpt`` or a ``.safetensors`` file.

The classifier is replaced when the number of classes differs (fine-tuning to a new task); any other
mismatch (another architecture, T or neuron) is an error that says what differs and, when the source records it (a
published entry's metadata, a Lightning checkpoint's hyperparameters), the ``--model.*`` values to set.
"""

from __future__ import annotations

import json
from typing import Any

from ..models import load_backbone_weights as load
from ..models import read_checkpoint, read_weights
from ..models.base import SpikingModel

__all__ = ["load_backbone_weights", "read_weights"]  # read_weights: the models' one, re-exported for training code


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
    state, described = read_checkpoint(source)
    fix = _fix(described, architecture, model)
    return load(model, state, origin=str(source), fix=fix, architecture=architecture, described=described)
