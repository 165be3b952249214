"""Building a model, with or without pretrained weights: the one path (timm's ``_builder``).

::

    create_model("sew_resnet18", neuron="psn", T=4, num_classes=11)           # fresh weights
    create_model("paper_cifar10dvs_vgg.ndigits_psn_t4")                       # a published entry (arch.tag)
    create_model("paper_cifar10dvs_vgg", pretrained=True)                     # the architecture's default entry
    create_model("paper_cifar10dvs_vgg", pretrained="ndigits_psn_t4", num_classes=5)  # re-headed for 5 classes
    create_model("hf-hub:org/repo")                                           # a repo written by ``psn-zoo push``
    create_model("sew_resnet18", pretrained="runs/best.ckpt", num_classes=11)  # a local file or URL

Files and their integrity are :mod:`psn_zoo.hub`'s (which never imports this package); this module turns them
into models: it checks the request against the checkpoint, builds the architecture, loads the weights (the
classifier re-initialised when ``num_classes`` differs) and records the metadata as ``model.pretrained_cfg``.
Fine-tuning reads weights through :func:`read_weights` and :func:`load_backbone_weights` here too.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..hub import (
    HF_HUB_PREFIX,
    CheckpointInfo,
    ChecksumError,
    ManifestError,
    default_pretrained,
    get_pretrained_info,
    hf_hub_info,
    list_pretrained,
    load_entry_weights,
    load_pretrained_weights,
)
from ..neurons import NEURONS, NeuronSpec, size_from_state_dict
from ..safe_load import load_torch_file, local_copy, suffix_of
from .registry import MODELS, build_model, list_architectures, model_info

__all__ = [
    "create_model",
    "freeze_backbone",
    "list_models",
    "load_backbone_weights",
    "load_pretrained",
    "read_weights",
    "unfreeze",
]

_logger = logging.getLogger("psn_zoo")

Pretrained = bool | str | os.PathLike | None
_TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")
_WEIGHT_SUFFIXES = (".safetensors", *_TORCH_SUFFIXES)
_SHA_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.safetensors$")


# ============================================================================================ entry points
def create_model(
    name: str,
    pretrained: Pretrained = None,
    *,
    num_classes: int | None = None,
    manifest: str | Path | None = None,
    source: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model, timm-style.

    ``name``: an architecture (``"sew_resnet18"``, see :func:`list_models`), a published entry ``"arch.tag"`` (see
    ``list_models(pretrained=True)``) or a Hugging Face Hub repository ``"hf-hub:org/repo[@revision]"``.

    ``pretrained``: ``None`` (the default) loads the weights a name names (an entry or a repository) and builds
    an architecture fresh; ``False`` never loads (an entry's architecture, T and neuron, fresh weights); ``True``
    loads the entry of the name or, for an architecture, its default entry (the best measured top-1, ties by name:
    :func:`psn_zoo.hub.default_pretrained`); a tag (``"ndigits_psn_t4"``) or entry name of this architecture; an
    ``"hf-hub:org/repo"``; or a path or URL: a ``.safetensors``/``.ckpt``/``.pt``/``.pth`` file (read with
    ``weights_only``, never unpickled; a ``-<sha256 prefix>.safetensors`` name is verified) or a folder written by
    ``psn-zoo push`` (``config.json`` + weights, sha256-verified).

    Loaded weights fix the architecture, T, neuron and input channels: ``kwargs`` that contradict the checkpoint are
    an error. ``num_classes`` may differ: the classifier is then re-initialised and everything else loaded (listed in
    ``model.reinitialized`` and logged); ``num_classes=0`` removes it (features). A loaded model is in eval mode and
    carries the entry's metadata as ``model.pretrained_cfg``. ``manifest``/``source``: another manifest file, or a
    local file, folder or URL for the entry's weights.
    """
    if not isinstance(name, str):
        raise TypeError(f"create_model: the name must be a string, got {type(name).__name__}")
    if pretrained is not None and not isinstance(pretrained, bool | str | os.PathLike):
        raise TypeError(
            f"create_model({name!r}): pretrained must be True/False, a tag, 'hf-hub:org/repo' or a path, got "
            f"{type(pretrained).__name__}"
        )
    if name.startswith(HF_HUB_PREFIX):
        _only_the_name_names_weights(name, pretrained)
        info = hf_hub_info(name)
        return _from_entry(info, load=pretrained is not False, num_classes=num_classes, source=source, **kwargs)
    arch, _, tag = name.partition(".")
    if tag:
        _only_the_name_names_weights(name, pretrained)
        info = get_pretrained_info(name, manifest=manifest)
        release_dir = Path(manifest).parent if manifest is not None else None
        return _from_entry(
            info, load=pretrained is not False, num_classes=num_classes, source=source, release_dir=release_dir,
            **kwargs,
        )  # fmt: skip
    arch = _architecture(arch)
    if pretrained is None or pretrained is False:
        return build_model(arch, **_with_classes(kwargs, num_classes))
    if pretrained is True:
        info = get_pretrained_info(default_pretrained(arch, manifest=manifest), manifest=manifest)
    elif isinstance(pretrained, str) and pretrained.startswith(HF_HUB_PREFIX):
        info = hf_hub_info(pretrained)
    elif _is_path(pretrained):
        return _from_path(arch, pretrained, num_classes=num_classes, **kwargs)
    else:
        entry = pretrained if "." in pretrained else f"{arch}.{pretrained}"
        if entry.partition(".")[0] != arch:
            raise ValueError(
                f"create_model({arch!r}, pretrained={pretrained!r}): that entry is of another architecture; use "
                f"create_model({pretrained!r}) or a tag of {arch} ({', '.join(list_pretrained(f'{arch}.*')) or 'none'})"
            )
        info = get_pretrained_info(entry, manifest=manifest)
    if info.architecture != arch:
        raise ValueError(
            f"create_model({arch!r}, pretrained={pretrained!r}): the checkpoint is a {info.architecture}, not a {arch}"
        )
    release_dir = Path(manifest).parent if manifest is not None else None
    return _from_entry(info, load=True, num_classes=num_classes, source=source, release_dir=release_dir, **kwargs)


def load_pretrained(
    name: str, *, source: str | Path | None = None, manifest: str | Path | None = None, **kwargs: Any
) -> nn.Module:
    """A ready model for a published checkpoint (``"arch.tag"``, an architecture's default entry, or
    ``"hf-hub:org/repo"``), sha256-verified, in eval mode, with its metadata as ``model.pretrained_cfg``.

    The same as ``create_model(name, pretrained=True, ...)``: ``kwargs`` must agree with the checkpoint, except
    ``num_classes``, which re-initialises the classifier.
    """
    return create_model(name, pretrained=True, source=source, manifest=manifest, **kwargs)


def list_models(
    pattern: str | None = None,
    *,
    pretrained: bool = False,
    paper: bool | None = None,
    manifest: str | Path | None = None,
) -> list[str]:
    """Registered architectures (fnmatch ``pattern``, e.g. ``"sew*"``) or, with ``pretrained=True``, the published
    entries ``arch.tag`` (the pattern matches the whole name). ``paper=True``/``False``: the paper's networks only /
    all but them."""
    if not pretrained:
        return list_architectures(pattern, paper=paper)
    names = list_pretrained(pattern, manifest=manifest)
    if paper is None:
        return names
    return [n for n in names if bool(MODELS.get(n.partition(".")[0]).meta.get("paper", False)) == paper]


# =============================================================================================== building
def _architecture(arch: str) -> str:
    try:
        return MODELS.get(arch).name
    except KeyError as err:
        raise ValueError(err.args[0]) from None


def _only_the_name_names_weights(name: str, pretrained: Pretrained) -> None:
    if pretrained is not None and not isinstance(pretrained, bool):
        raise ValueError(
            f"create_model({name!r}, pretrained={pretrained!r}): the name already names its weights; pass "
            "pretrained=True/False, or name the architecture alone with pretrained=<tag, path or hf-hub:>"
        )


def _with_classes(kwargs: Mapping[str, Any], num_classes: int | None) -> dict[str, Any]:
    return {**kwargs, "num_classes": num_classes} if num_classes is not None else dict(kwargs)


def _is_path(value: str | os.PathLike) -> bool:
    if isinstance(value, os.PathLike):
        return True
    return "://" in value or "/" in value or os.sep in value or suffix_of(value) in _WEIGHT_SUFFIXES


def _check_request(info: CheckpointInfo, requested: Mapping[str, Any]) -> None:
    """Every requested argument must be the checkpoint's (``num_classes`` is handled by re-heading)."""
    build = info.build_kwargs()
    defaults = model_info(info.architecture)["defaults"]
    wrong = []
    for key, value in requested.items():
        if value is None:
            continue
        if key == "neuron":
            spec = NeuronSpec.parse(value).to_dict()  # canonical name (aliases resolved); unknown names raise
            want = spec["name"]
            if want != info.neuron["name"] and want not in NEURONS.aliases(info.neuron["name"]):
                wrong.append(f"neuron={want!r} (checkpoint: {info.neuron['name']!r})")
            for arg, given in spec.items():
                if arg != "name" and info.neuron.get(arg) != given:
                    wrong.append(f"neuron {arg}={given!r} (checkpoint: {info.neuron.get(arg)!r})")
        elif key in build or key in defaults:
            have = build[key] if key in build else defaults[key]
            if have != value:
                wrong.append(f"{key}={value!r} (checkpoint: {have!r})")
        elif key in info.neuron:
            if info.neuron[key] != value:
                wrong.append(f"{key}={value!r} (checkpoint's neuron: {info.neuron[key]!r})")
        else:
            wrong.append(f"{key}={value!r} (not an argument of {info.architecture} or of its neuron)")
    if wrong:
        raise ValueError(
            f"pretrained checkpoint {info.name!r} does not match the request: {', '.join(wrong)}. A checkpoint fixes "
            "its architecture, T, neuron and input channels; drop those arguments (num_classes=N re-initialises the "
            "classifier), or build the architecture without weights (pretrained=False)"
        )


def _from_entry(
    info: CheckpointInfo,
    *,
    load: bool,
    num_classes: int | None,
    source: str | Path | None = None,
    release_dir: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The entry's architecture, with its weights when ``load`` (a catalog entry or a pushed repository)."""
    _check_request(info, kwargs)
    classes = info.num_classes if num_classes is None else num_classes
    model = build_model(info.architecture, **{**info.build_kwargs(), "num_classes": classes or info.num_classes})
    if not load:
        return model
    state = load_entry_weights(info, source=source, release_dir=release_dir)
    reinitialized = load_backbone_weights(model, state, origin=info.name)
    if classes == 0:
        model.reset_classifier(0)
    return _loaded(model, info, reinitialized)


def _from_path(arch: str, path: str | os.PathLike, *, num_classes: int | None, **kwargs: Any) -> nn.Module:
    """``arch`` with the weights of a local file or URL, or of a folder written by ``psn-zoo push``."""
    folder = Path(path).expanduser() if "://" not in str(path) else None
    if folder is not None and folder.is_dir():
        info = _folder_info(folder)
        if info.architecture != arch:
            raise ValueError(f"{folder} holds a {info.architecture} checkpoint ({info.name}), not a {arch}")
        return _from_entry(info, load=True, num_classes=num_classes, source=folder, **kwargs)
    model = build_model(arch, **_with_classes(kwargs, num_classes))
    reinitialized = load_backbone_weights(model, str(path))
    return _loaded(model, None, reinitialized)


def _folder_info(folder: Path) -> CheckpointInfo:
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{folder} is a folder without config.json: pass the weights file itself, or a folder written by "
            "psn-zoo push (config.json + weights)"
        )
    if config.stat().st_size > 1 << 20:
        raise ManifestError(f"{config} is over 1 MiB: not a psn_zoo checkpoint record")
    try:
        raw = json.loads(config.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"{config} is not JSON ({err})") from None
    return CheckpointInfo.from_dict(raw)


def _loaded(model: nn.Module, info: CheckpointInfo | None, reinitialized: list[str]) -> nn.Module:
    model.pretrained_cfg = info
    model.reinitialized = tuple(reinitialized)
    if reinitialized:
        _logger.warning(
            "%s: the classifier was re-initialised for num_classes=%d (checkpoint: %s); the rest was loaded. "
            "Re-initialised: %s",
            info.name if info is not None else type(model).__name__,
            model.num_classes,
            info.num_classes if info is not None else "another class count",
            ", ".join(reinitialized),
        )
    return model.eval()


# ========================================================================================= weights in
def read_weights(source: str | Path, *, manifest: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The model state dict in ``source``: a Lightning ``.ckpt``, a ``.pt``/``.pth`` state dict or a
    ``.safetensors`` file (a path or an ``http(s)://`` URL), or a published entry name / ``hf-hub:org/repo``
    (sha256-verified; keys as in the bare model).

    Torch files are read with ``weights_only=True`` only: one that would unpickle code is refused. A safetensors file
    named ``<stem>-<hex>.safetensors`` must have a sha256 starting with ``<hex>`` (torch.hub's convention).
    """
    suffix = suffix_of(source)
    if suffix in _TORCH_SUFFIXES:
        with local_copy(source) as path:
            return _torch_file_state(path, str(source))
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        with local_copy(source, what="weights file") as path:
            _check_sha_in_name(path, str(source))
            return load_file(str(path))
    return load_pretrained_weights(str(source), manifest=manifest)


def _check_sha_in_name(path: Path, shown: str) -> None:
    match = _SHA_IN_NAME.search(Path(shown).name)
    if match is None:
        return
    from ..hub.sources import sha256_of

    actual = sha256_of(path)
    if not actual.startswith(match[1]):
        raise ChecksumError(
            f"{shown} is named for sha256 {match[1]}... but its sha256 is {actual}: the file is corrupt or was modified"
        )


def _torch_file_state(path: Path, shown: str) -> dict[str, torch.Tensor]:
    try:
        ckpt = load_torch_file(path)  # weights_only: a file that would unpickle code is refused
    except ValueError as err:
        raise ValueError(str(err).replace(str(path), shown, 1)) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{shown} holds no state dict (a Lightning checkpoint or torch.save(model.state_dict()))")
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")} or dict(state)


def classifier_keys(model: nn.Module) -> list[str]:
    """The state-dict keys of ``model.get_classifier()``."""
    head = model.get_classifier()
    prefix = next(name for name, m in model.named_modules() if m is head)
    return [f"{prefix}.{n}" for n in head.state_dict()]


def load_backbone_weights(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    origin: str | None = None,
    fix: str = "Build the model with the checkpoint's architecture, T and neuron (see its metadata)",
) -> list[str]:
    """Load ``source`` (anything :func:`read_weights` reads, or a state dict) into ``model``, strictly except for
    the classifier: when its shape differs (another ``num_classes``) it keeps its initial values. Returns those keys.

    Any other mismatch (another architecture, T or neuron) is an error that says what differs.
    """
    state = dict(source) if isinstance(source, Mapping) else read_weights(source)
    shown = origin or (str(source) if not isinstance(source, Mapping) else "the state dict")
    size_from_state_dict(model, state)  # channel-wise neurons not yet sized by an input take the checkpoint's size
    own = model.state_dict()
    head = set(classifier_keys(model))
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
        parts = (
            f"shape mismatches {mismatched[:4]}" if mismatched else "",
            f"missing {missing[:6]}" if missing else "",
            f"unexpected {unexpected[:6]}" if unexpected else "",
        )
        raise ValueError(
            f"the weights in {shown} do not fit this {type(model).__name__} "
            f"(T={model.T}, neuron={model.neuron_spec}): " + "; ".join(p for p in parts if p) + f". {fix}"
        )
    model.load_state_dict(state, strict=not replaced)
    return replaced


# =========================================================================================== fine-tuning
def freeze_backbone(model: nn.Module) -> list[str]:
    """Train only the classifier: every parameter outside ``model.get_classifier()`` gets ``requires_grad=False``
    (the definition ``--model.freeze_backbone`` uses). Returns the frozen parameters' names.

    BatchNorm running statistics still update in training mode; call ``.eval()`` on those layers to fix them too.
    """
    head = {id(p) for p in model.get_classifier().parameters()}
    frozen = []
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in head)
        if id(p) not in head:
            frozen.append(name)
    return frozen


def unfreeze(model: nn.Module) -> None:
    """Undo :func:`freeze_backbone`: every parameter trains again."""
    for p in model.parameters():
        p.requires_grad_(True)
