"""Published checkpoints: ``list_pretrained``, ``load_pretrained`` and their metadata.

::

    import psn_zoo
    psn_zoo.list_pretrained("*ndigits*")
    model = psn_zoo.load_pretrained("paper_cifar10dvs_vgg.ndigits_psn_t4")   # ready: right neuron, T, classes
    model.pretrained_info.metrics["top1"], model.pretrained_info.input.transform

Weights are safetensors (never pickle) named with their sha256 prefix; the sha256 is checked on every load.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
from pathlib import Path
from typing import Any

import torch

from .metadata import CheckpointInfo, ManifestError, read_manifest
from .sources import CacheError, ChecksumError, OfflineError, SizeError, bundled_dir, cache_dir, fetch

__all__ = [
    "CacheError",
    "CheckpointInfo",
    "ChecksumError",
    "ManifestError",
    "OfflineError",
    "SizeError",
    "cache_dir",
    "get_pretrained_info",
    "list_pretrained",
    "load_pretrained",
    "load_pretrained_weights",
    "manifest_path",
]


def manifest_path() -> Path:
    return bundled_dir() / "manifest.json"


_CACHE: dict[str, Any] = {}


def _entries(manifest: str | Path | None = None) -> dict[str, CheckpointInfo]:
    path = Path(manifest) if manifest is not None else manifest_path()
    if not path.exists():
        return {}
    # keyed by content: a manifest rewritten within one mtime tick (coarse file-system clocks) is still re-read
    key = (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest())
    if _CACHE.get("key") != key:
        _CACHE["key"], _CACHE["entries"] = key, read_manifest(path)
    return _CACHE["entries"]


def list_pretrained(pattern: str | None = None, *, manifest: str | Path | None = None) -> list[str]:
    """Published checkpoint names (``<architecture>.<tag>``), optionally fnmatch-filtered."""
    names = sorted(_entries(manifest))
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def get_pretrained_info(name: str, *, manifest: str | Path | None = None) -> CheckpointInfo:
    entries = _entries(manifest)
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"no published checkpoint {name!r}.{hint} Available: {', '.join(sorted(entries)) or 'none'}")


def load_pretrained_weights(
    name: str, *, source: str | Path | None = None, manifest: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The float32 state dict of a published checkpoint (file located and sha256-verified)."""
    from safetensors.torch import load_file

    info = get_pretrained_info(name, manifest=manifest)
    local = None
    sources = info.sources
    if source is not None:
        text = str(source)
        if text.startswith(("http://", "https://", "file://", "hf://")):
            sources = (text,)
        else:
            local = source
    release_dir = Path(manifest).parent if manifest is not None else None
    path = fetch(
        info.weights.file, info.weights.sha256, sources, local=local, release_dir=release_dir, size=info.weights.size
    )
    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}


def load_pretrained(
    name: str, *, source: str | Path | None = None, manifest: str | Path | None = None, **expected: Any
) -> torch.nn.Module:
    """A ready model for a published checkpoint, with its metadata as ``model.pretrained_info``.

    ``expected`` (e.g. ``T=4``, ``num_classes=10``, ``neuron="psn"``, ``in_channels=2``) must match the
    checkpoint: a mismatch is an error (re-head a loaded model with ``reset_classifier``, or fine-tune with
    ``SpikingClassifier(pretrained=...)``).
    """
    from ..models import create_model, model_info
    from ..neurons import NeuronSpec

    info = get_pretrained_info(name, manifest=manifest)
    build = info.build_kwargs()
    defaults = model_info(info.architecture)["defaults"]
    wrong = []
    for key, value in expected.items():
        if value is None:
            continue
        if key == "neuron":
            spec = NeuronSpec.parse(value).to_dict()  # canonical name (aliases resolved); unknown names raise
            want = spec["name"]
            if want != info.neuron["name"] and want not in _aliases(info.neuron["name"]):
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
            f"pretrained checkpoint {name!r} does not match the request: {', '.join(wrong)}. A checkpoint fixes "
            "its architecture, T, neuron and classes; drop those arguments, then re-head with "
            "model.reset_classifier(n) or fine-tune with SpikingClassifier(pretrained=...)"
        )
    model = create_model(info.architecture, **build)
    model.load_state_dict(load_pretrained_weights(name, source=source, manifest=manifest))
    model.pretrained_info = info
    return model.eval()


def _aliases(neuron: str) -> list[str]:
    from ..neurons import NEURONS

    return NEURONS.aliases(neuron)
