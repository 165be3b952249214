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

import functools
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

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
    release_folder,
)
from ..neurons import NEURONS, NeuronSpec, require_materialised, size_from_state_dict
from ..safe_load import load_safetensors, load_torch_file, local_copy, suffix_of
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
        return _from_entry(
            info, load=pretrained is not False, num_classes=num_classes, source=source,
            release_dir=release_folder(manifest), shipped=manifest is None,
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
    shipped = manifest is None and not (isinstance(pretrained, str) and pretrained.startswith(HF_HUB_PREFIX))
    return _from_entry(
        info, load=True, num_classes=num_classes, source=source, release_dir=release_folder(manifest),
        shipped=shipped, **kwargs,
    )  # fmt: skip


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


def _check_request(info: CheckpointInfo, requested: Mapping[str, Any]) -> dict[str, Any]:
    """Every requested argument must be the checkpoint's (``num_classes`` is handled by re-heading); a neuron
    argument equal to the neuron's default is the checkpoint's when its record leaves it out. What the loaded weights
    replace stays free: the neuron class's ``initial_kwargs`` (the surrogate, initial values such as the masked PSN's
    ``lambda_`` or the sliding PSN's ``exp_init``). Returns those, to build the model with."""
    build = info.build_kwargs()
    defaults = model_info(info.architecture)["defaults"]
    stored = NeuronSpec.parse(info.neuron)
    neuron_args = [k for k in NEURONS.get(stored.name).accepted_kwargs() if k not in ("T", "step_mode")]
    wrong: list[str] = []
    for key, value in requested.items():
        if value is None or key in neuron_args or key == "neuron":
            continue
        if key in build or key in defaults:
            have = build[key] if key in build else defaults[key]
            if have != value:
                wrong.append(f"{key}={value!r} (checkpoint: {have!r})")
        else:
            wrong.append(
                f"{key}={value!r} (not an argument of {info.architecture} or of its {stored.name!r} neuron, which "
                f"takes {', '.join(neuron_args) or 'nothing'})"
            )
    loose = {k: v for k, v in requested.items() if k in neuron_args and v is not None}
    free: dict[str, Any] = {}
    if requested.get("neuron") is not None or loose:
        asked = NeuronSpec.parse(requested["neuron"]) if requested.get("neuron") is not None else stored
        asked = NeuronSpec.parse({"name": asked.name, **asked.kwargs, **loose})
        for diff in stored.differences(asked, given_only=True, pinned_only=True):
            whose = "(checkpoint:" if diff.startswith("neuron=") else "(checkpoint's neuron:"
            wrong.append(diff.replace("(here:", whose))
        if asked.name == stored.name:
            initial = set(stored.neuron_class.initial_kwargs)
            free = {k: v for k, v in asked.kwargs.items() if k in initial}
    if wrong:
        raise ValueError(
            f"pretrained checkpoint {info.name!r} does not match the request: {', '.join(wrong)}. A checkpoint fixes "
            "its architecture, T, neuron and input channels: drop those arguments (num_classes=N re-initialises the "
            "classifier), or build its architecture with other settings and no weights: "
            f"create_model({info.name!r}, pretrained=False, ...)"
        )
    return free


def _from_entry(
    info: CheckpointInfo,
    *,
    load: bool,
    num_classes: int | None,
    source: str | Path | None = None,
    release_dir: str | Path | None = None,
    shipped: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """The entry's architecture, with its weights when ``load`` (a catalog entry or a pushed repository); without
    them, ``kwargs`` override the entry's settings. ``shipped``: the record is from the release that ships with
    psn_zoo, trusted as its code is; any other (a manifest given by path, a pushed folder, an ``hf-hub:``
    repository) is checked against its weights before the model is built (:func:`_check_record_fits_weights`)."""
    classes = info.num_classes if num_classes is None else num_classes
    if not load:
        return build_model(info.architecture, **{**info.build_kwargs(), **kwargs, "num_classes": classes})
    free = _check_request(info, kwargs)  # the neuron's initial values and surrogate: the weights replace the former
    build = info.build_kwargs()
    build["neuron"] = {**build["neuron"], **free}
    build["num_classes"] = classes or info.num_classes
    # the weights first (verified, read only up to their declared size), then the record is checked against them on a
    # skeleton: what the real model allocates is bounded by its verified weights, never by a record's word
    state = load_entry_weights(info, source=source, release_dir=release_dir)
    if not shipped:  # (a skeleton's first meta kernels import torch._dynamo: about a second, once per process)
        _check_record_fits_weights(info, build, state)
    model = build_model(info.architecture, **build)
    reinitialized = load_backbone_weights(model, state, origin=info.name)
    if classes == 0:
        model.reset_classifier(0)
    return _loaded(model, info, reinitialized)


class _Skeleton(TorchFunctionMode):
    """Builds a model's skeleton: tensors made from sizes (``torch.empty``, ``zeros``, ``ones``, ``full``, ``arange``,
    ...) go to the meta device, so a constructor asked for a ``[T, T]`` weight gets its shape and no memory; tensors
    made from data (``torch.tensor(x)``) stay real, as their data exists already (a constructor may check values)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _size_constructors() and kwargs.get("device") is None:
            kwargs = {**kwargs, "device": torch.device("meta")}
        return func(*args, **kwargs)


@functools.cache
def _size_constructors() -> frozenset[Any]:
    from torch.utils._device import _device_constructors

    return frozenset(_device_constructors()) - {torch.tensor, torch.as_tensor, torch.asarray, torch.scalar_tensor}


def _check_record_fits_weights(
    info: CheckpointInfo, build: Mapping[str, Any], state: Mapping[str, torch.Tensor]
) -> None:
    """Check that ``info``'s record (its architecture, ``build`` arguments: T, widths, neuron) describes a model that
    ``state``, its verified weights, fits, on a skeleton (:class:`_Skeleton`) before the real model is built: a record
    whose T or widths its weights do not have is refused without allocating what it asks for (a 2 KB config.json
    with ``T: 200000`` would otherwise have a PSN ask for 160 GB). The same errors as :func:`load_backbone_weights`."""
    with torch.random.fork_rng(devices=[]), _Skeleton():  # with the record's classes: its head must fit too
        skeleton = build_model(info.architecture, **{**build, "num_classes": info.num_classes})
    _, replaced = _fitted_state(skeleton, dict(state), info.name, _RECORD_FIX)
    if replaced:
        raise ValueError(
            f"the weights in {info.name} have another classifier than the {info.num_classes} classes of its record "
            f"({', '.join(f'{k}: {tuple(state[k].shape)}' for k in replaced if k in state) or 'none'}). {_RECORD_FIX}"
        )
    stored = set(skeleton.state_dict())
    unstored = sum(b.numel() for name, b in skeleton.named_buffers() if name not in stored)
    budget = max(sum(v.numel() for v in state.values()), 1 << 20)
    if unstored > budget:
        raise ValueError(
            f"the record of {info.name} builds a {type(skeleton).__name__} with {unstored} elements of buffers its "
            f"weights do not hold (more than their {budget}): {_RECORD_FIX}"
        )


_RECORD_FIX = (
    "The entry's record (config.json or manifest entry) does not describe its own weights: it is wrong or hostile, "
    "and nothing was built"
)


def _from_path(arch: str, path: str | os.PathLike, *, num_classes: int | None, **kwargs: Any) -> nn.Module:
    """``arch`` with the weights of a local file or URL, or of a folder written by ``psn-zoo push``."""
    folder = Path(path).expanduser() if "://" not in str(path) else None
    if folder is not None and folder.is_dir():
        info = _folder_info(folder)
        if info.architecture != arch:
            raise ValueError(f"{folder} holds a {info.architecture} checkpoint ({info.name}), not a {arch}")
        return _from_entry(info, load=True, num_classes=num_classes, source=folder, **kwargs)
    model = build_model(arch, **_with_classes(kwargs, num_classes))
    reinitialized = load_backbone_weights(model, str(path), architecture=arch)
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
#: What a checkpoint records about the model its weights belong to: ``model`` (architecture), ``model_kwargs``,
#: ``T``, ``neuron`` (name) and ``neuron_kwargs`` (a published entry's metadata, a Lightning checkpoint's
#: hyperparameters); None for a bare state dict or ``.safetensors`` file.
Described = dict[str, Any] | None


def read_weights(source: str | Path, *, manifest: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The model state dict in ``source``: a Lightning ``.ckpt``, a ``.pt``/``.pth`` state dict or a
    ``.safetensors`` file (a path or an ``http(s)://`` URL), or a published entry name / ``hf-hub:org/repo``
    (sha256-verified; keys as in the bare model).

    Torch files are read with ``weights_only=True`` only: one that would unpickle code is refused. A safetensors file
    named ``<stem>-<hex>.safetensors`` must have a sha256 starting with ``<hex>`` (torch.hub's convention).
    """
    return read_checkpoint(source, manifest=manifest)[0]


def read_checkpoint(
    source: str | Path, *, manifest: str | Path | None = None
) -> tuple[dict[str, torch.Tensor], Described]:
    """:func:`read_weights`, and what the source records about its model (:data:`Described`)."""
    suffix = suffix_of(source)
    if suffix in _TORCH_SUFFIXES:
        with local_copy(source) as path:
            return _torch_file_state(path, str(source))
    if suffix == ".safetensors":
        with local_copy(source, what="weights file") as path:
            _check_sha_in_name(path, str(source))
            return load_safetensors(path, shown=str(source)), None
    name = str(source)
    info = hf_hub_info(name) if name.startswith(HF_HUB_PREFIX) else get_pretrained_info(name, manifest=manifest)
    state = load_entry_weights(info, release_dir=release_folder(manifest))
    neuron = dict(info.neuron)
    described = {"model": info.architecture, "model_kwargs": dict(info.model_kwargs), "T": info.T}
    return state, described | {"neuron": neuron.pop("name"), "neuron_kwargs": neuron}


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


def _torch_file_state(path: Path, shown: str) -> tuple[dict[str, torch.Tensor], Described]:
    try:
        ckpt = load_torch_file(path)  # weights_only: a file that would unpickle code is refused
    except ValueError as err:
        raise ValueError(str(err).replace(str(path), shown, 1)) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{shown} holds no state dict (a Lightning checkpoint or torch.save(model.state_dict()))")
    state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")} or dict(state)
    return state, _hparams_described(ckpt.get("hyper_parameters"), shown)


def _hparams_described(hparams: Any, shown: str) -> Described:
    """A Lightning checkpoint's record of its SpikingClassifier (None for another module's)."""
    if not isinstance(hparams, Mapping) or not isinstance(hparams.get("model"), str):
        return None
    described = {k: hparams.get(k) for k in ("model", "model_kwargs", "T", "neuron", "neuron_kwargs")}
    shapes = {"model_kwargs": (Mapping, type(None)), "T": (int, type(None)), "neuron": (str, type(None)),
              "neuron_kwargs": (Mapping, type(None))}  # fmt: skip
    bad = [k for k, kinds in shapes.items() if not isinstance(described[k], kinds)]
    if bad:
        raise ValueError(f"{shown}: its hyper_parameters {bad} are not a SpikingClassifier's; is it a psn_zoo run?")
    return described


def classifier_keys(model: nn.Module, state: Mapping[str, torch.Tensor] | None = None) -> list[str]:
    """The keys of ``state`` (default: the model's own state dict) under ``model.get_classifier()``."""
    prefix = model.classifier_path + "."
    return sorted(k for k in (model.state_dict() if state is None else state) if k.startswith(prefix))


def _described_mismatch(model: nn.Module, described: Mapping[str, Any], architecture: str | None) -> list[str]:
    """How the model a checkpoint records differs from ``model`` (built as ``architecture``), in what the weights
    do not pin by their shapes: architecture, T, the neuron and its pinned arguments."""
    wrong = []
    if architecture is not None and described.get("model") not in (None, architecture):
        wrong.append(f"architecture {described['model']} (this model: {architecture})")
    if described.get("T") is not None and described["T"] != model.T:
        wrong.append(f"T={described['T']} (this model: T={model.T})")
    if described.get("neuron"):
        try:
            theirs = NeuronSpec.parse({**(described.get("neuron_kwargs") or {}), "name": described["neuron"]})
        except (TypeError, ValueError) as err:
            return [*wrong, f"a neuron this version cannot build ({err})"]
        mine = NeuronSpec.parse(model.neuron_spec)
        wrong += [d.replace("(here:", "(this model:") for d in mine.differences(theirs, pinned_only=True)]
    return wrong


def load_backbone_weights(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    origin: str | None = None,
    fix: str = "Build the model with the checkpoint's architecture, T and neuron (see its metadata)",
    architecture: str | None = None,
    described: Described = None,
) -> list[str]:
    """Load ``source`` (anything :func:`read_weights` reads, or a state dict) into ``model`` (built as the registered
    ``architecture``, when given), strictly except for the classifier: when the checkpoint's has another shape (another
    ``num_classes``) or none (a features-only checkpoint), it keeps its initial values; a model without one
    (``num_classes=0``) takes no classifier. Returns the keys left at their initial values.

    Any other mismatch is an error that says what differs: shapes, and what the checkpoint records about its model
    (:func:`read_checkpoint`; ``described`` for a state dict) -- its architecture, T and neuron, which a LIF's weights,
    say, do not show. To load weights regardless (e.g. a LIF's at another T), pass their state dict:
    ``load_backbone_weights(model, read_weights(path))``.
    """
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        state, described = read_checkpoint(source)
    shown = origin or (str(source) if not isinstance(source, Mapping) else "the state dict")
    wrong = _described_mismatch(model, described, architecture) if described else []
    if wrong:
        raise ValueError(
            f"the weights in {shown} belong to another model: {'; '.join(wrong)}. {fix}. (To load them anyway, "
            "pass their state dict: psn_zoo.models.load_backbone_weights(model, psn_zoo.models.read_weights(path)))"
        )
    state, replaced = _fitted_state(model, state, shown, fix)
    model.load_state_dict(state, strict=not replaced)
    return replaced


def _fitted_state(
    model: nn.Module, state: dict[str, torch.Tensor], shown: str, fix: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` as ``model`` takes it (the classifier dropped where it does not fit) and the keys left at their
    initial values; an error that says what differs for anything else (shapes, missing or unexpected keys)."""
    size_from_state_dict(model, state)  # channel-wise neurons not yet sized by an input take the checkpoint's size
    own = model.state_dict()
    head, theirs = set(classifier_keys(model, own)), set(classifier_keys(model, state))
    replaced: list[str] = []
    if not head:  # num_classes=0: the model has no classifier to fill
        state = {k: v for k, v in state.items() if k not in theirs}
    elif not theirs or any(k in state and state[k].shape != own[k].shape for k in head):
        state = {k: v for k, v in state.items() if k not in theirs}
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
    return state, replaced


# =========================================================================================== fine-tuning
def freeze_backbone(model: nn.Module) -> list[str]:
    """Train only the classifier: every parameter outside ``model.get_classifier()`` gets ``requires_grad=False``
    (the definition ``--model.freeze_backbone`` uses). Returns the frozen parameters' names.

    BatchNorm running statistics still update in training mode; call ``.eval()`` on those layers to fix them too.
    """
    require_materialised(model, "freeze it")
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
