"""Writing release entries: safetensors named by sha256, the manifest record, the model card; pushing to the
Hugging Face Hub; importing the paper's and SpikingJelly's checkpoints."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..safe_load import load_torch_file
from .metadata import CheckpointInfo, WeightsFile, check_entry_name, entry_name, read_manifest, write_manifest


class EntryExistsError(FileExistsError):
    """Publishing or importing under a name the release folder already lists, without ``overwrite``."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_weights(state: Mapping[str, torch.Tensor], out_dir: Path, stem: str, fp16: bool) -> WeightsFile:
    """Write ``<stem>-<sha256[:8]>.safetensors`` atomically; float tensors in fp16 when asked.

    ``stem`` is an entry name (checked against the one pattern, so the file stays in ``out_dir``); a failed write
    leaves no temporary file behind.
    """
    from safetensors.torch import save

    check_entry_name(stem)

    tensors = {
        k: (v.detach().to(torch.float16) if fp16 and v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in state.items()
    }
    data = save(tensors)
    digest = _sha256(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{stem}-{digest[:8]}.safetensors"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return WeightsFile(file=final.name, sha256=digest, size=len(data), dtype="float16" if fp16 else "float32")


def ensure_new_entry(out_dir: Path, name: str, overwrite: bool = False) -> None:
    """Refuse (:class:`EntryExistsError`) a ``name`` that ``out_dir``'s manifest already lists, unless ``overwrite``."""
    check_entry_name(name)
    manifest = Path(out_dir) / "manifest.json"
    if overwrite or not manifest.exists():
        return
    old = read_manifest(manifest).get(name)
    if old is not None:
        raise EntryExistsError(
            f"{manifest} already lists {name!r} (weights {old.weights.file}); nothing was written. Choose another "
            "name, or pass --overwrite (overwrite=True) to replace the entry and delete its weights file"
        )


def add_entry(out_dir: Path, info: CheckpointInfo, *, overwrite: bool = False) -> None:
    """Add ``info`` to ``out_dir/manifest.json`` and write its model card; an existing entry of that name is
    replaced (its weights file deleted) only with ``overwrite``, else :class:`EntryExistsError`."""
    manifest = out_dir / "manifest.json"
    ensure_new_entry(out_dir, info.name, overwrite)
    entries = read_manifest(manifest) if manifest.exists() else {}
    old = entries.get(info.name)
    entries[info.name] = info
    card = out_dir / "cards" / f"{info.name}.md"
    card_existed = card.exists()
    card.parent.mkdir(exist_ok=True)
    try:
        card.write_text(model_card(info))
        write_manifest(manifest, entries)  # the commit point: the entry exists from here on
    except BaseException:
        if not card_existed:
            card.unlink(missing_ok=True)
        raise
    if old is not None and old.weights.file != info.weights.file:
        (out_dir / old.weights.file).unlink(missing_ok=True)


def write_entry(
    out_dir: str | Path,
    name: str,
    state: Mapping[str, torch.Tensor],
    build: Callable[[WeightsFile], CheckpointInfo],
    *,
    fp16: bool = False,
    overwrite: bool = False,
) -> CheckpointInfo:
    """Weights, manifest record and model card of entry ``name`` in ``out_dir``, all or nothing.

    ``build`` turns the written weights into the entry's :class:`CheckpointInfo`. The name is checked and an existing
    entry refused (unless ``overwrite``) before anything is written; on any failure the new weights file is removed.
    """
    out_dir = Path(out_dir)
    ensure_new_entry(out_dir, name, overwrite)
    manifest = out_dir / "manifest.json"
    listed = {i.weights.file for i in read_manifest(manifest).values()} if manifest.exists() else set()
    weights = save_weights(state, out_dir, name, fp16)
    try:
        info = build(weights)
        if info.name != name:
            raise ValueError(f"entry {info.name!r} was built for the name {name!r}")
        add_entry(out_dir, info, overwrite=overwrite)
    except BaseException:
        if weights.file not in listed:
            (out_dir / weights.file).unlink(missing_ok=True)
        raise
    return info


def _pct(value: Any) -> str:
    return f"{100 * value:.2f} %" if isinstance(value, int | float) else "n/a"


def _num(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec`` (e.g. ``",.0f"``), or ``n/a`` when it was not measured."""
    return format(value, spec) if isinstance(value, int | float) else "n/a"


def model_card(info: CheckpointInfo) -> str:
    """A Hugging Face style model card: YAML front matter, then what it is, how it was trained, its numbers."""
    m = info.metrics
    rates = m.get("firing_rate", {})
    rate_rows = "\n".join(f"| `{k}` | {v:.4f} |" for k, v in rates.items()) or "| (not measured) | |"
    dataset = info.dataset
    return f"""---
library_name: psn_zoo
tags: [spiking-neural-network, parallel-spiking-neuron, {info.neuron["name"]}, {info.architecture}]
datasets: [{dataset.get("name", "unknown")}]
license: {info.license.lower()}
metrics: [accuracy]
---

# {info.name}

**{info.architecture}** with **{info.neuron["name"]}** neurons (`{json.dumps(dict(info.neuron))}`),
T = {info.T}, {info.num_classes} classes, {info.params:,} parameters, trained on **{dataset.get("name")}**
({dataset.get("split", "")}).
{info.notes}

## Use

```python
import psn_zoo

model = psn_zoo.load_pretrained("{info.name}")  # sha256-verified, eval mode
logits = model(x)  # x: {info.input.kind} {list(info.input.shape)} per sample
```

Input: `{info.input.kind}`, one sample `{list(info.input.shape)}`, sensor `{info.input.sensor_size}`, preprocessing
`{json.dumps(dict(info.input.transform))}`.

## Numbers (measured on the {dataset.get("split", "test")} split)

| metric | value |
|---|---|
| top-1 | {_pct(m.get("top1"))} |
| top-5 | {_pct(m.get("top5"))} |
| mean firing rate | {_num(m.get("mean_firing_rate"), ".4f")} |
| synaptic ACs (SOPs) per sample | {_num(m.get("synaptic_acs"), ",.0f")} |
| synaptic MACs per sample (non-spike inputs) | {_num(m.get("synaptic_macs"), ",.0f")} |
| neuron-side MACs per sample | {_num(m.get("neuron_macs"), ",.0f")} |
| energy per sample, 45 nm, neurons counted | {_num(m.get("energy_uj"), ".3f")} µJ |
| energy per sample without the neurons | {_num(m.get("energy_uj_without_neurons"), ".3f")} µJ |

Per-layer firing rates:

| layer | rate |
|---|---|
{rate_rows}

## How it was trained

`psn-zoo fit --config {info.recipe}` (psn_zoo {info.library_version}).

## Fine-tune it

```bash
psn-zoo fit --config {info.recipe} --model.pretrained {info.name} --model.num_classes <N> --trainer.max_epochs 5
```

A different class count replaces the classifier; `--model.freeze_backbone true` trains only that.

Weights: `{info.weights.file}` ({info.weights.dtype}, sha256 `{info.weights.sha256}`).
"""


def make_info(
    *,
    name: str,
    model: torch.nn.Module,
    weights: WeightsFile,
    classes: list[str],
    input_spec: Mapping[str, Any],
    dataset: Mapping[str, Any],
    metrics: Mapping[str, Any],
    recipe: str,
    model_kwargs: Mapping[str, Any],
    notes: str = "",
    sources: tuple[str, ...] = (),
) -> CheckpointInfo:
    """A validated :class:`CheckpointInfo` for a psn_zoo ``model`` and its written ``weights``."""
    from .. import __version__

    raw = {
        "name": name,
        "architecture": name.split(".", 1)[0],
        "model_kwargs": dict(model_kwargs),
        "neuron": dict(model.neuron_spec) | _neuron_state(model),
        "T": model.T,
        "num_classes": model.num_classes,
        "in_channels": model.in_channels,
        "classes": list(classes),
        "input": dict(input_spec),
        "dataset": dict(dataset),
        "metrics": dict(metrics),
        "recipe": recipe,
        "weights": {"file": weights.file, "sha256": weights.sha256, "size": weights.size, "dtype": weights.dtype},
        "params": model.num_params,
        "library_version": __version__,
        "created": _dt.date.today().isoformat(),
        "notes": notes,
        "sources": list(sources),
    }
    return CheckpointInfo.from_dict(json.loads(json.dumps(raw)))


def _neuron_state(model: torch.nn.Module) -> dict[str, Any]:
    """The masked PSN's λ as trained (the spec holds its starting value)."""
    from ..neurons import MaskedPSN

    masked = [m for m in model.modules() if isinstance(m, MaskedPSN)]
    return {"lambda_": float(masked[0].lambda_)} if masked else {}


def push_to_hub(name: str, repo_id: str, *, manifest_dir: Path, endpoint: str | None = None,
                token: str | None = None) -> str:  # fmt: skip
    """Upload an entry (weights, ``config.json`` metadata, ``README.md`` card) to a Hugging Face Hub repo.

    Returns the ``hf://repo@commit`` source string to add to the entry's ``sources``.
    """
    from huggingface_hub import HfApi

    manifest = Path(manifest_dir) / "manifest.json"
    entries = read_manifest(manifest)
    if name not in entries:
        raise KeyError(f"{manifest} lists no entry {name!r}; it lists: {', '.join(sorted(entries)) or 'none'}")
    info = entries[name]
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging)
        (folder / info.weights.file).write_bytes((manifest_dir / info.weights.file).read_bytes())
        (folder / "config.json").write_text(json.dumps(info.to_dict(), indent=2))
        (folder / "README.md").write_text(model_card(info))
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=f"psn_zoo: {name}")
    return f"hf://{repo_id}@{commit.oid}"


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
    from ..models.convert import load_paper_checkpoint

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
    from ..models import create_model
    from ..models.convert import from_spikingjelly

    name = entry_name(architecture, tag)
    ensure_new_entry(Path(out_dir), name, overwrite)
    state = load_torch_file(path)
    state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
    extra = dict(model_kwargs or {})
    model = create_model(architecture, neuron=neuron, T=T, num_classes=num_classes, in_channels=in_channels, **extra)
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
