"""Published checkpoints as files and metadata: the catalog (manifests, ``hf-hub:`` repos), sources, cache and sha256.

::

    import psn_zoo
    psn_zoo.list_pretrained("*ndigits*")
    info = psn_zoo.get_pretrained_info("paper_cifar10dvs_vgg.ndigits_psn_t4")   # typed metadata
    state = psn_zoo.hub.load_pretrained_weights("paper_cifar10dvs_vgg.ndigits_psn_t4")  # sha256-verified tensors

Weights are safetensors (never pickle) named with their sha256 prefix; the sha256 is checked on every load. This
package knows nothing of models: building a network with these weights is :func:`psn_zoo.create_model` /
:func:`psn_zoo.load_pretrained` (:mod:`psn_zoo.models._builder`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .._registry import Pattern, match_names
from .metadata import CheckpointInfo, ManifestError, read_manifest, split_hf_source
from .sources import (
    CacheError,
    ChecksumError,
    OfflineError,
    SizeError,
    bundled_dir,
    cache_dir,
    check_weights_record,
    fetch,
    hf_metadata_file,
)

__all__ = [
    "HF_HUB_PREFIX",
    "CacheError",
    "CheckpointInfo",
    "ChecksumError",
    "ManifestError",
    "OfflineError",
    "SizeError",
    "cache_dir",
    "default_pretrained",
    "get_pretrained_info",
    "hf_hub_info",
    "list_pretrained",
    "load_entry_weights",
    "load_pretrained_weights",
    "manifest_path",
    "release_folder",
    "resolve_manifest",
]

#: The prefix of a Hugging Face Hub repository written by ``psn-zoo push``: ``hf-hub:org/repo[@revision]`` (timm's).
HF_HUB_PREFIX = "hf-hub:"


def manifest_path() -> Path:
    return bundled_dir() / "manifest.json"


def resolve_manifest(manifest: str | Path | None = None) -> Path:
    """The manifest file that ``manifest=`` names: None is the bundled one (:func:`manifest_path`); a release folder
    (as ``psn-zoo publish --out`` writes it) is its ``manifest.json``. A path that does not exist, or a folder
    without a manifest, is a :class:`FileNotFoundError` that says so (never an empty catalog)."""
    if manifest is None:
        return manifest_path()
    path = Path(manifest).expanduser()
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(
                f"manifest={str(manifest)!r} is a folder without manifest.json: pass a manifest file, or a release "
                "folder written by psn-zoo publish / import-sj / import-paper (--out)"
            )
        return path / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"manifest={str(manifest)!r} does not exist: pass the path of a manifest.json (or of the release folder "
            "holding it), or leave manifest out for the published checkpoints"
        )
    return path


def release_folder(manifest: str | Path | None = None) -> Path | None:
    """The folder holding the weights of the entries ``manifest`` lists (None: the bundled release)."""
    return None if manifest is None else resolve_manifest(manifest).parent


_CACHE: dict[str, Any] = {}


def _entries(manifest: str | Path | None = None) -> dict[str, CheckpointInfo]:
    path = resolve_manifest(manifest)
    if manifest is None and not path.exists():  # an installation without the bundled release lists nothing
        return {}
    # keyed by content: a manifest rewritten within one mtime tick (coarse file-system clocks) is still re-read
    key = (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest())
    if _CACHE.get("key") != key:
        _CACHE["key"], _CACHE["entries"] = key, read_manifest(path)
    return _CACHE["entries"]


def list_pretrained(pattern: Pattern = None, *, manifest: str | Path | None = None) -> list[str]:
    """Published checkpoint names (``<architecture>.<tag>``), optionally filtered: an fnmatch pattern or a list of
    them, case-insensitive (``"SEW*"`` finds ``sew_resnet18.ndigits_psn_t4``), as every psn_zoo listing."""
    return match_names(_entries(manifest), pattern)


def get_pretrained_info(name: str, *, manifest: str | Path | None = None) -> CheckpointInfo:
    entries = _entries(manifest)
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"no published checkpoint {name!r}.{hint} Available: {', '.join(sorted(entries)) or 'none'}")


def default_pretrained(architecture: str, *, manifest: str | Path | None = None) -> str:
    """The entry ``pretrained=True`` picks for ``architecture``: its best measured top-1 (on the entry's own split);
    ties, and entries without a top-1, go by name. :class:`KeyError` when the architecture has no entry."""
    entries = [info for info in _entries(manifest).values() if info.architecture == architecture]
    if not entries:
        listed = sorted({info.architecture for info in _entries(manifest).values()})
        raise KeyError(
            f"no published checkpoint for {architecture!r}, so pretrained=True has nothing to load. Architectures "
            f"with checkpoints: {', '.join(listed) or 'none'}; or pass a path or 'hf-hub:org/repo' as pretrained"
        )

    def rank(info: CheckpointInfo) -> tuple[float, str]:
        top1 = info.metrics.get("top1")
        return (-float(top1) if isinstance(top1, int | float) else 1.0, info.name)

    return min(entries, key=rank).name


def _hf_repo(spec: str) -> str:
    """``hf-hub:owner/name[@rev]`` (or ``owner/name[@rev]``) -> ``hf://owner/name[@rev]``, the manifest's source form,
    with the repository id and the revision checked strictly (:func:`.metadata.split_hf_source`)."""
    source = f"hf://{spec.removeprefix(HF_HUB_PREFIX)}"
    try:
        split_hf_source(source)
    except ValueError as err:
        raise ValueError(
            f"{spec!r} is not a Hugging Face Hub repository: write 'hf-hub:owner/name' or 'hf-hub:owner/name@rev' "
            f"({err})"
        ) from None
    return source


def _hf_record(data: bytes, spec: str, sources: list[str]) -> CheckpointInfo:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"config.json of {spec} is not JSON ({err}); is it a psn_zoo repository?") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"config.json of {spec} is not a psn_zoo checkpoint record (a JSON object)")
    return CheckpointInfo.from_dict({**raw, "sources": sources})


def hf_hub_info(spec: str, *, endpoint: str | None = None) -> CheckpointInfo:
    """The metadata of a repository written by ``psn-zoo push`` (``hf-hub:owner/name[@revision]``), validated as a
    manifest entry (before it is cached), with ``sources`` pinned to the commit it was read at (so the weights come
    from the same one).

    Its ``weights.sha256`` is the repository's own: a download is checked against it, so a corrupt or swapped file
    is refused, but trust in the repository is yours (pin ``@revision``, or list the entry in a manifest).
    """
    source = _hf_repo(spec)
    data, commit = hf_metadata_file(
        source, "config.json", endpoint=endpoint, check=lambda data: _hf_record(data, spec, [])
    )
    return _hf_record(data, spec, [f"{source.partition('@')[0]}@{commit}"])


def load_entry_weights(
    info: CheckpointInfo, *, source: str | Path | None = None, release_dir: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The float32 state dict of ``info``'s weights file, located (see :mod:`.sources`) and sha256-verified.

    ``source``: a local file or folder, or a URL (``http(s)://``, ``file://``, ``hf://``) used instead of the entry's
    own sources. ``release_dir``: the folder of the manifest that lists the entry.
    """
    from ..safe_load import load_safetensors

    local = None
    sources = info.sources
    if source is not None:
        text = str(source)
        if text.startswith(("http://", "https://", "file://", "hf://")):
            sources = (text,)
        else:
            local = source
    path = fetch(
        info.weights.file, info.weights.sha256, sources, local=local, release_dir=release_dir, size=info.weights.size
    )
    state = load_safetensors(path, shown=f"{path} (the weights of {info.name})")
    check_weights_record(info, path)  # the record's size, dtype and parameter count are the file's
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_pretrained_weights(
    name: str, *, source: str | Path | None = None, manifest: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The float32 state dict of a published checkpoint (a manifest entry or ``hf-hub:org/repo``), sha256-verified."""
    if name.startswith(HF_HUB_PREFIX):
        return load_entry_weights(hf_hub_info(name), source=source)
    info = get_pretrained_info(name, manifest=manifest)
    return load_entry_weights(info, source=source, release_dir=release_folder(manifest))
