"""Writing release entries: safetensors named by sha256, the manifest record, the model card; pushing an entry to a
Hugging Face Hub repository (``hf-hub:org/repo``). Like the rest of :mod:`psn_zoo.hub`, nothing here imports the
models: a model is read through its attributes only (``neuron_spec``, ``T``, ``num_classes``...). Importing the
paper's and SpikingJelly's checkpoints builds models, so it lives in :mod:`psn_zoo.models.convert`."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .metadata import (
    CheckpointInfo,
    WeightsFile,
    check_entry_name,
    check_license,
    read_manifest,
    write_manifest,
)


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


@contextlib.contextmanager
def release_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the release folder ``out_dir`` (created if missing) for the block: one writer
    at a time reads, changes and writes its manifest, so concurrent ``publish``/``import-*`` runs lose no entry. The
    folder itself is locked (no lock file is left in it, nor can a link be planted there); closing releases it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _refuse_link(path: Path, kind: str) -> None:
    """A symbolic link, or anything but a ``kind`` (``"file"``, ``"folder"``), at ``path``: an error, never followed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if (stat.S_ISREG if kind == "file" else stat.S_ISDIR)(mode):
        return
    what = "a symbolic link" if stat.S_ISLNK(mode) else f"not a {'regular file' if kind == 'file' else kind}"
    raise FileExistsError(
        f"{path} is {what}: psn_zoo writes a release's model cards as regular files in a real cards/ folder and never "
        "through a link (it could point anywhere). Delete it and retry; nothing was written"
    )


def add_entry(out_dir: Path, info: CheckpointInfo, *, overwrite: bool = False) -> None:
    """Add ``info`` to ``out_dir/manifest.json`` and write its model card; an existing entry of that name is
    replaced (its weights file deleted) only with ``overwrite``, else :class:`EntryExistsError`.

    The release folder is locked throughout (:func:`release_lock`); the card and the manifest are written through
    fresh temporary files renamed into place, never through a link: a symbolic link at the card's path (or at
    ``cards/``) is refused with :class:`FileExistsError`, its target untouched."""
    with release_lock(out_dir):
        _add_entry(Path(out_dir), info, overwrite)


def _add_entry(out_dir: Path, info: CheckpointInfo, overwrite: bool) -> None:
    """:func:`add_entry`, with the release folder's lock held by the caller."""
    from .sources import _write_atomically

    manifest = out_dir / "manifest.json"
    ensure_new_entry(out_dir, info.name, overwrite)
    entries = read_manifest(manifest) if manifest.exists() else {}
    old = entries.get(info.name)
    entries[info.name] = info
    cards = out_dir / "cards"
    card = cards / f"{info.name}.md"
    _refuse_link(cards, "folder")
    _refuse_link(card, "file")
    old_card = card.read_bytes() if card.exists() else None
    cards.mkdir(exist_ok=True)
    text = model_card(info).encode()
    try:
        _write_atomically(card, lambda out: out.write(text))
        write_manifest(manifest, entries)  # the commit point: the entry exists from here on
    except BaseException:
        if old_card is None:
            card.unlink(missing_ok=True)
        else:
            _write_atomically(card, lambda out: out.write(old_card))
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
    The release folder is locked from the check to the manifest's write (:func:`release_lock`).
    """
    out_dir = Path(out_dir)
    ensure_new_entry(out_dir, name, overwrite)  # before the folder is made or locked
    with release_lock(out_dir):
        ensure_new_entry(out_dir, name, overwrite)  # again: another writer may have added it meanwhile
        manifest = out_dir / "manifest.json"
        listed = {i.weights.file for i in read_manifest(manifest).values()} if manifest.exists() else set()
        weights = save_weights(state, out_dir, name, fp16)
        try:
            info = build(weights)
            if info.name != name:
                raise ValueError(f"entry {info.name!r} was built for the name {name!r}")
            _add_entry(out_dir, info, overwrite)
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


#: Fang et al.'s Parallel Spiking Neuron family (the card tag ``parallel-spiking-neuron``). By name: the hub imports
#: no neuron code. Other neurons that run in parallel over T (PMSN, ParaLIF, FPT-LIF) are not PSNs.
PSN_FAMILY = frozenset({"psn", "masked_psn", "sliding_psn", "channel_sliding_psn"})

_UNKNOWN = ("", "unknown", "n/a", "none")


def _dataset_name(info: CheckpointInfo) -> str | None:
    """The name of the data the entry was trained on, or None where its record does not know it (an import)."""
    name = str(info.dataset.get("name") or "")
    return None if name.lower() in _UNKNOWN else name


def _imported_from(info: CheckpointInfo) -> str | None:
    """Where weights trained outside psn_zoo came from (``training.imported_from``), else None."""
    return (info.training or {}).get("imported_from") or None


def recipe_runs(info: CheckpointInfo) -> bool:
    """Does ``info.recipe`` name a recipe (``psn-zoo fit --config <recipe>`` runs), not a note such as an import's
    ``(imported from SpikingJelly)``?"""
    return not info.recipe.lstrip().startswith("(")


def card_data(info: CheckpointInfo) -> Any:
    """The card's metadata as ``huggingface_hub.ModelCardData``: library, licence, tags, dataset and a ``model-index``
    with the measured top-1/top-5 (percent, on the entry's split). Only what the record knows: an import's unknown
    training data lists no dataset, and unmeasured metrics no results."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset = _dataset_name(info)
    metrics = (("top1", "accuracy", "top-1 accuracy (%)"), ("top5", "top_5_accuracy", "top-5 accuracy (%)"))
    results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset.lower(),
            dataset_name=dataset,
            dataset_split=str(info.dataset.get("split") or "test"),
            metric_type=metric_type,
            metric_value=round(100 * float(info.metrics[key]), 2),
            metric_name=label,
        )
        for key, metric_type, label in metrics
        if dataset is not None and isinstance(info.metrics.get(key), int | float)
    ]
    neuron = info.neuron["name"]
    family = ["parallel-spiking-neuron"] if neuron in PSN_FAMILY else []
    return ModelCardData(
        library_name="psn_zoo",
        license=info.license.lower(),
        tags=["spiking-neural-network", *family, neuron, info.architecture],
        datasets=[dataset] if dataset is not None else None,
        metrics=["accuracy"] if results else None,
        model_name=info.name,
        eval_results=results or None,
    )


def _eval_data_note(info: CheckpointInfo) -> str:
    """The paragraph naming the evaluation data's fingerprint (``eval_data``), or nothing for entries without one."""
    data = getattr(info, "eval_data", None)
    if data is None:
        return ""
    samples = f"{data.samples} samples, " if data.samples else ""
    return f"""
Evaluation data: the {data.dataset} {data.split} split, {samples}fingerprint sha256 `{data.sha256}`
(`eval_data` in the manifest). `psn-zoo validate` with the
`psn_zoo.training.data_fingerprint.EvalDataFingerprint` callback says whether your local split has it: then the
numbers below reproduce exactly.
"""


def _preprocessing(info: CheckpointInfo) -> str:
    transform = dict(info.input.transform)
    steps = transform.pop("steps", None)
    if steps is not None:
        chain = " → ".join(f"`{step['name']}`" for step in steps)
        return (
            f"{chain} (every argument is in the manifest).\nRebuild it, events in and frames out:\n"
            f"`psn_zoo.datamodules.transform_for(\"{info.name}\")`; the DataModule with the entry's arguments:\n"
            f"`psn_zoo.datamodules.datamodule_for(\"{info.name}\", data_dir=...)`."
        )
    data = dict(info.dataset.get("init_args") or {})
    permuted = bool(transform.get("permute_pixels", data.get("permute_pixels", False)))
    if info.input.kind == "sequence" and info.dataset.get("datamodule") == "SequentialDigitsDataModule":
        side = info.input.shape[-1]
        if permuted:  # also for a record whose input spec predates the permutation's (its DataModule says it)
            seed = transform.get("permutation_seed", data.get("permutation_seed", 0))
            how = (
                f"**the image's {side * side} pixels in one fixed random order, {side} per time step** "
                f"(`permute_pixels: true, permutation_seed: {seed}`; the order is "
                f"`psn_zoo.datamodules.seqdigits.pixel_permutation({seed})`), not its columns"
            )
        else:
            how = f"**the image's columns as time steps** (column t at step t, {side} pixels each)"
        return (
            f"{how}.\nRebuild it, a `[{side}, {side}]` image in and a `{list(info.input.shape)}` sequence out:\n"
            f"`psn_zoo.datamodules.transform_for(\"{info.name}\")`; the DataModule with the entry's arguments:\n"
            f"`psn_zoo.datamodules.datamodule_for(\"{info.name}\")`."
        )
    return f"`{json.dumps(transform)}`."


def _trained_on(info: CheckpointInfo) -> str:
    """The card's first paragraph on the data: what it was trained on, where the numbers were measured."""
    dataset, split = _dataset_name(info), info.dataset.get("split") or "test"
    imported = _imported_from(info)
    if imported is not None:
        data = f"trained on **{dataset}** outside psn_zoo" if dataset else "trained outside psn_zoo, on data unrecorded"
        return f"{data}, imported from {imported}"
    datamodule = info.dataset.get("datamodule")
    args = f" (`{datamodule}`, its arguments in the manifest)" if datamodule else ""
    return f"trained on the training split of **{dataset}**{args}; the numbers below are measured on its {split} split"


def _how_trained(info: CheckpointInfo) -> str:
    """The card's "How it was trained": only what the record shows (never a recipe the run did not follow)."""
    training = dict(info.training or {})
    imported = training.get("imported_from")
    if imported:
        text = f"Not trained with psn_zoo: the weights were imported from {imported}."
        if recipe_runs(info):
            text += f" `psn-zoo fit --config {info.recipe}` is psn_zoo's recipe for the same experiment."
        return text
    command = f"psn-zoo fit --config {info.recipe}"
    if not training:  # published before psn_zoo recorded it
        return f"`{command}` (psn_zoo {info.library_version})."
    epochs, total = training.get("epochs"), training.get("max_epochs")
    of = f" of {total}" if total else ""
    saved = f" The weights are those saved after epoch {epochs}{of}." if epochs else ""
    tuned = training.get("fine_tuned_from")
    origin = f" Fine-tuned from `{tuned}`." if tuned else ""
    if training.get("follows_recipe"):
        return (
            f"`{command}` (psn_zoo {info.library_version}): the data and training arguments the checkpoint records are "
            f"the recipe's.{saved}{origin}"
        )
    overrides = " ".join(training.get("overrides") or ())
    return (
        f"Not the recipe as it stands: `{command} {overrides}` (the arguments the checkpoint records where they differ "
        f"from the recipe's; psn_zoo {info.library_version}). `--config {info.recipe}` rebuilds the model and its data "
        f"(validate, fine-tune), but trains differently.{saved}{origin}"
    )


def _fine_tune(info: CheckpointInfo) -> str:
    if recipe_runs(info):
        return f"""```bash
psn-zoo fit --config {info.recipe} --model.pretrained {info.name} --trainer.max_epochs 5
```

The class count, T and input channels come from the data (`--data ...`): data with another class count replaces the
classifier; `--model.freeze_backbone true` trains only that."""
    return f"""psn_zoo has no recipe for this entry's data. In Python, for your own training loop:

```python
import psn_zoo

model = psn_zoo.create_model("{info.name}", num_classes=10)  # another class count re-initialises the classifier
psn_zoo.freeze_backbone(model)  # optional: train only the new classifier
```

or `psn-zoo fit` with your recipe and `--model.pretrained {info.name}` (its model: {info.architecture}, T = {info.T},
neuron `{json.dumps(dict(info.neuron))}`)."""


def _numbers(info: CheckpointInfo) -> str:
    """The card's measured numbers, or what measures them when none were (an import)."""
    m = info.metrics
    if not isinstance(m.get("top1"), int | float):
        how = (
            f"`psn-zoo validate --config {info.recipe} --model.pretrained {info.name}` measures them on psn_zoo's "
            "data for the experiment."
            if recipe_runs(info)
            else "psn_zoo has no recipe for its data."
        )
        return f"## Numbers\n\nNot measured by psn_zoo: {how}"
    rates = m.get("firing_rate", {})
    rate_rows = "\n".join(f"| `{k}` | {v:.4f} |" for k, v in rates.items()) or "| (not measured) | |"
    return f"""## Numbers (measured on the {info.dataset.get("split", "test")} split)
{_eval_data_note(info)}
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
{rate_rows}"""


def model_card(info: CheckpointInfo) -> str:
    """A Hugging Face model card (``huggingface_hub.ModelCard``): :func:`card_data` as YAML front matter, then what
    the checkpoint is, how to load it, its numbers and how it was trained."""
    from huggingface_hub import ModelCard

    sample = ", ".join(map(str, info.input.shape))
    body = f"""# {info.name}

**{info.architecture}** with **{info.neuron["name"]}** neurons (`{json.dumps(dict(info.neuron))}`),
T = {info.T}, {info.num_classes} classes, {info.params:,} parameters, {_trained_on(info)}.
{info.notes}

## Use

```python
import psn_zoo

model = psn_zoo.create_model("{info.name}", pretrained=True)  # sha256-verified, eval mode
# or, from a Hugging Face Hub repository written by `psn-zoo push`: psn_zoo.create_model("hf-hub:<org>/<repo>")
logits = model(x)  # x: {info.input.kind}, batch-first [B, {sample}]
```

Input: `{info.input.kind}`, one sample `{list(info.input.shape)}`, sensor `{info.input.sensor_size}`, preprocessing
{_preprocessing(info)}

{_numbers(info)}

## How it was trained

{_how_trained(info)}

## Fine-tune it

{_fine_tune(info)}

Weights: `{info.weights.file}` ({info.weights.dtype}, sha256 `{info.weights.sha256}`), licence `{info.license}`.
"""
    return str(ModelCard(f"---\n{card_data(info).to_yaml()}\n---\n\n{body}"))


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
    license: str = "MIT",
    training: Mapping[str, Any] | None = None,
) -> CheckpointInfo:
    """A validated :class:`CheckpointInfo` for a psn_zoo ``model`` and its written ``weights``. ``license``: the
    weights' (a Hugging Face licence identifier; ``unknown`` when their origin states none); ``training``: how they
    were made (:attr:`CheckpointInfo.training`)."""
    from .. import __version__

    check_license(license)
    raw = {
        "name": name,
        "architecture": name.split(".", 1)[0],
        "model_kwargs": dict(model_kwargs),
        "neuron": dict(getattr(model, "trained_neuron_spec", model.neuron_spec)),
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
        "license": license,
        **({"training": dict(training)} if training is not None else {}),
    }
    return CheckpointInfo.from_dict(json.loads(json.dumps(raw)))


def push_to_hub(name: str, repo_id: str, *, manifest_dir: Path, endpoint: str | None = None,
                token: str | None = None) -> str:  # fmt: skip
    """Upload an entry to a Hugging Face Hub repository through ``huggingface_hub`` (``create_repo`` +
    ``upload_folder``): the sha256-named safetensors, ``config.json`` (the entry's record, validated again on load)
    and ``README.md`` (:func:`model_card`, with a ``model-index``). The weights are checked against the manifest's
    sha256 before anything is sent.

    ``psn_zoo.create_model("hf-hub:<repo_id>")`` loads the result. Returns the ``hf://repo@commit`` source string to
    add to the entry's ``sources``.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    from .sources import verify

    manifest_dir = Path(manifest_dir)
    manifest = manifest_dir / "manifest.json"
    entries = read_manifest(manifest)
    if name not in entries:
        raise KeyError(f"{manifest} lists no entry {name!r}; it lists: {', '.join(sorted(entries)) or 'none'}")
    info = entries[name]
    weights = verify(manifest_dir / info.weights.file, info.weights.sha256)
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging)
        (folder / info.weights.file).write_bytes(weights.read_bytes())
        (folder / "config.json").write_text(json.dumps(info.to_dict(), indent=2))
        (folder / "README.md").write_text(model_card(info))
        try:
            api.create_repo(repo_id, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=f"psn_zoo: {name}")
        except HfHubHTTPError:  # the Hub answered (401, 404...): an OSError that says what it refused
            raise
        except HTTPError as err:  # no answer (the HTTP client's request errors: refused, bad URL, timeout...)
            why = str(err).rstrip(".")
            raise ConnectionError(f"could not reach {api.endpoint}: {why}; check --endpoint / $HF_ENDPOINT") from None
    return f"hf://{repo_id}@{commit.oid}"
