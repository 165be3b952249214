"""Start a model from pretrained weights: a published zoo entry, a Lightning ``.ckpt`` or a ``.safetensors`` file.

The classifier is replaced when the number of classes differs (fine-tuning to a new task); any other
mismatch (another architecture, T or neuron) is an error that says what differs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..models.base import SpikingModel
from ..safe_load import load_torch_file, local_copy, suffix_of


def read_weights(source: str) -> dict[str, torch.Tensor]:
    """The backbone state dict in ``source``: a Lightning ``.ckpt``, a ``.pt``/``.pth`` state dict or a
    ``.safetensors`` file (a path or an ``http(s)://`` URL), or a published entry name (keys as in the bare model).

    Torch files are read with ``weights_only=True`` only: one that would unpickle code is refused.
    """
    suffix = suffix_of(source)
    if suffix in (".ckpt", ".pt", ".pth"):
        with local_copy(source) as path:
            return _torch_file_state(path, str(source))
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        with local_copy(source, what="weights file") as path:
            return load_file(str(path))
    from ..hub import load_pretrained_weights

    return load_pretrained_weights(source)


def _torch_file_state(path: Path, shown: str) -> dict[str, torch.Tensor]:
    try:
        ckpt = load_torch_file(path)  # weights_only: a file that would unpickle code is refused
    except ValueError as err:
        raise ValueError(str(err).replace(str(path), shown, 1)) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{shown} holds no state dict (a Lightning checkpoint or torch.save(model.state_dict()))")
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")} or dict(state)


def load_backbone_weights(model: SpikingModel, source: str) -> list[str]:
    """Load ``source`` into ``model``; returns the keys left at their initial values (a replaced classifier)."""
    state = read_weights(source)
    own = model.state_dict()
    head = {f"{n}" for n, _ in _prefixed(model, model.get_classifier())}
    replaced: list[str] = []
    if any(k in state and state[k].shape != own[k].shape for k in head):
        state = {k: v for k, v in state.items() if k not in head}
        replaced = sorted(head)
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = sorted(set(own) - set(state) - set(replaced))
    unexpected = sorted(set(state) - set(own))
    if mismatched or missing or unexpected:
        raise ValueError(
            f"the weights in {source} do not fit this {type(model).__name__} "
            f"(T={model.T}, neuron={model.neuron_spec}): "
            + "; ".join(
                part
                for part in (
                    f"shape mismatches {mismatched[:4]}" if mismatched else "",
                    f"missing {missing[:6]}" if missing else "",
                    f"unexpected {unexpected[:6]}" if unexpected else "",
                )
                if part
            )
            + ". Build the model with the checkpoint's architecture, T and neuron (see its metadata)"
        )
    model.load_state_dict(state, strict=not replaced)
    return replaced


def _prefixed(model: nn.Module, sub: nn.Module):
    prefix = next(name for name, m in model.named_modules() if m is sub)
    return [(f"{prefix}.{n}", p) for n, p in sub.state_dict().items()]
