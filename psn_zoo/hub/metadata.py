"""Typed metadata of published checkpoints and the manifest that lists them (validated when read)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: 2: ``dataset.datamodule`` is a DataModule's name and an event entry's ``input.transform`` is ``{"steps": [...]}``
#: (plain data, see psn_zoo.datamodules.transform_spec); format-1 entries are migrated when read (:func:`_migrate`).
FORMAT_VERSION = 2
_STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DTYPES = ("float32", "float16", "bfloat16")
_INPUT_RANK = {"event_frames": 4, "static_image": 3, "sequence": 3}  # [T, C, H, W], [C, H, W], [T, C, L]
_SCHEMES = ("http://", "https://", "file://", "hf://")
# The one pattern for entry names, ``<architecture>.<tag>``: every name and tag (manifest entries, ``--name``,
# ``--tag``) is checked against it before anything is written, so a name is always a safe file-name stem.
_ARCH = r"[A-Za-z0-9][A-Za-z0-9_]{0,63}"
_TAG = r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}"
ENTRY_NAME = re.compile(rf"(?P<architecture>{_ARCH})\.(?P<tag>{_TAG})")  # always used with fullmatch
NAME_RULE = (
    "'<architecture>.<tag>': the architecture is letters, digits and '_', the tag letters, digits, '_' and '-' "
    "(starting with a letter or digit, at most 100 characters); no '/', '..', spaces or other dots"
)


# Hugging Face Hub sources, ``hf://<owner>/<name>[@<revision>]`` (and ``hf-hub:<owner>/<name>[@<revision>]`` names):
# both parts end up in URLs and cache paths, so both are checked strictly wherever one is parsed (split_hf_source).
HF_COMMIT = re.compile(r"[0-9a-f]{40}")  # a git commit, as the Hub's X-Repo-Commit header gives it
_HF_REF_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9_-])?"  # no leading or trailing '.', no '/'
_HF_REVISION = re.compile(rf"{_HF_REF_PART}(?:/{_HF_REF_PART})*")  # always used with fullmatch
HF_REVISION_RULE = (
    "a revision is a 40-hex commit or a branch or tag name: letters, digits, '_', '-', '.' and '/' between parts, "
    "each part starting with a letter, digit or '_' and not ending with '.'; no '..', no leading '/', no spaces, "
    "backslashes or control characters, at most 255 characters"
)


def check_hf_repo_id(repo_id: object) -> str:
    """``repo_id`` if it is a Hub repository ``<owner>/<name>`` that huggingface_hub's own ``validate_repo_id``
    accepts (ASCII; letters, digits, ``-``, ``_``, ``.``; no ``--`` or ``..``), else :class:`ValueError`."""
    if not isinstance(repo_id, str) or not repo_id.isascii() or repo_id.count("/") != 1:
        raise ValueError(f"{repo_id!r} is not a Hugging Face Hub repository '<owner>/<name>'")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{repo_id!r} is not a Hugging Face Hub repository '<owner>/<name>': {err}") from None
    return repo_id


def check_hf_revision(revision: object) -> str:
    """``revision`` if it is a commit or a strict branch/tag name (:data:`HF_REVISION_RULE`), else ValueError."""
    if (
        not isinstance(revision, str)
        or len(revision) > 255
        or not _HF_REVISION.fullmatch(revision)
        or ".." in revision
        or revision.endswith(".lock")
    ):
        raise ValueError(f"invalid Hugging Face Hub revision {revision!r}: {HF_REVISION_RULE}")
    return revision


def split_hf_source(source: str) -> tuple[str, str | None]:
    """``hf://<owner>/<name>[@<revision>]`` -> ``(repo_id, revision or None)``, both checked
    (:func:`check_hf_repo_id`, :func:`check_hf_revision`); anything else is a :class:`ValueError` saying why."""
    if not isinstance(source, str) or not source.startswith("hf://"):
        raise ValueError(f"{source!r} is not an hf://<owner>/<name>[@<revision>] source")
    repo, at, revision = source.removeprefix("hf://").partition("@")
    check_hf_repo_id(repo)
    if at:
        check_hf_revision(revision)
    return repo, revision if at else None


class InvalidNameError(ValueError):
    """An entry name or tag that does not match :data:`ENTRY_NAME`."""


def check_entry_name(name: object) -> str:
    """``name`` if it is a valid ``<architecture>.<tag>``, else :class:`InvalidNameError` saying the rule."""
    if not isinstance(name, str) or not ENTRY_NAME.fullmatch(name):
        raise InvalidNameError(f"invalid checkpoint name {name!r}: a name is {NAME_RULE}")
    return name


def entry_name(architecture: str, tag: str) -> str:
    """The entry name for ``architecture`` and ``tag``, both checked against the one pattern."""
    if not isinstance(tag, str) or not re.fullmatch(_TAG, tag):
        raise InvalidNameError(f"invalid tag {tag!r}: the entry name is {NAME_RULE}")
    return check_entry_name(f"{architecture}.{tag}")


#: A licence identifier as the Hugging Face Hub writes them (``mit``, ``apache-2.0``, ``cc-by-nc-sa-4.0``,
#: ``openrail++``, ``other``, ``unknown``...): lowercase letters and digits, then also ``-``, ``.`` and ``+``.
_LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
LICENSE_RULE = (
    "a Hugging Face licence identifier such as mit, apache-2.0, cc-by-4.0 or bsd-3-clause (letters, digits, '-', "
    "'.', '+'; at most 64 characters), or 'other' / 'unknown'"
)


def check_license(license: object) -> str:
    """``license`` if it is a licence identifier (:data:`LICENSE_RULE`, any case), else :class:`ValueError`."""
    if not isinstance(license, str) or not _LICENSE.fullmatch(license.lower()):
        raise ValueError(f"invalid licence {license!r}: give {LICENSE_RULE}")
    return license


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class ManifestError(ValueError):
    """The manifest (or one entry of it) is malformed; the message names the entry and the field."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What the model expects: ``kind`` (``event_frames``, ``static_image``, ``sequence``), one sample's
    ``shape`` (``[T, C, H, W]``, ``[C, H, W]`` or ``[T, C, L]``), the sensor, and the preprocessing."""

    kind: str
    shape: tuple[int, ...]
    sensor_size: tuple[int, ...] | None = None
    transform: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    file: str
    sha256: str
    size: int
    dtype: str


_SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class EvalData:
    """The data an entry's metrics were measured on: ``split`` of ``dataset`` (a DataModule's ``name``), identified
    by ``sha256``, the DataModule's ``fingerprint(split)`` (see :mod:`psn_zoo.training.data_fingerprint`), and its
    number of ``samples``. Equal fingerprints: the published metrics reproduce exactly on that data."""

    dataset: str
    split: str
    sha256: str
    samples: int | None = None

    @classmethod
    def from_dict(cls, raw: Any, fail: Any = None) -> EvalData:
        """Validated; ``fail(why)`` makes the error (default: :class:`ManifestError` naming ``eval_data``)."""
        fail = fail or (lambda why: ManifestError(f"field 'eval_data' {why}"))
        if not isinstance(raw, Mapping):
            raise fail(f"must be a mapping {{'dataset', 'split', 'sha256', 'samples'}}, got {raw!r}")
        unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise fail(f"has unknown key {unknown[0]!r} (known: dataset, split, sha256, samples)")
        if not isinstance(raw.get("dataset"), str) or not raw["dataset"]:
            raise fail("dataset must be the DataModule's name, a non-empty string")
        if raw.get("split") not in _SPLITS:
            raise fail(f"split must be one of {', '.join(_SPLITS)}, got {raw.get('split')!r}")
        if not isinstance(raw.get("sha256"), str) or not _SHA256.match(raw["sha256"]):
            raise fail("sha256 must be 64 lowercase hex digits (the DataModule's fingerprint of the split)")
        samples = raw.get("samples")
        if samples is not None and not _positive_int(samples):
            raise fail(f"samples must be a positive integer or null, got {samples!r}")
        return cls(dataset=raw["dataset"], split=raw["split"], sha256=raw["sha256"], samples=samples)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """Everything needed to use a published checkpoint.

    ``name`` is ``<architecture>.<tag>``. ``metrics`` holds ``top1``/``top5`` (fractions, on ``dataset.split``),
    ``mean_firing_rate``, per-layer ``firing_rate``, ``synaptic_acs`` (SOPs), ``synaptic_macs``, ``neuron_macs``
    and ``energy_uj`` (45 nm estimate with the neurons' own MACs counted, see :mod:`psn_zoo.efficiency`).
    ``eval_data`` fingerprints the split the metrics were measured on (:class:`EvalData`); optional, so manifests
    written before it existed still read (``None``: nothing to compare the local data with).
    """

    name: str
    architecture: str
    model_kwargs: Mapping[str, Any]
    neuron: Mapping[str, Any]
    T: int
    num_classes: int
    in_channels: int
    classes: tuple[str, ...]
    input: InputSpec
    dataset: Mapping[str, Any]
    metrics: Mapping[str, Any]
    recipe: str
    weights: WeightsFile
    params: int
    library_version: str
    format_version: int = FORMAT_VERSION
    sources: tuple[str, ...] = ()
    license: str = "MIT"
    created: str = ""
    notes: str = ""
    eval_data: EvalData | None = None
    #: How the weights were made, where ``psn-zoo publish`` / ``import-*`` could tell (:data:`TRAINING_KEYS`):
    #: ``follows_recipe`` (the checkpoint's recorded data and training arguments are ``recipe``'s), ``overrides``
    #: (``--model.lr 0.01``, ``--trainer.max_epochs 1``...: what the run changed from the recipe), ``epochs`` (epochs
    #: done when the weights were saved), ``max_epochs`` (the run's, when recorded), ``fine_tuned_from``,
    #: ``imported_from`` (weights trained outside psn_zoo). None: not recorded (entries published before it existed).
    training: Mapping[str, Any] | None = None

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1] if "." in self.name else ""

    def build_kwargs(self) -> dict[str, Any]:
        """Arguments of ``create_model(architecture, **kwargs)`` that rebuild the network."""
        return {
            "neuron": dict(self.neuron),
            "T": self.T,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            **dict(self.model_kwargs),
        }

    def to_dict(self) -> dict[str, Any]:
        raw = json.loads(json.dumps(dataclasses.asdict(self)))
        if raw.get("training") is None:  # optional and unrecorded: left out, as in records written before it
            raw.pop("training", None)
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CheckpointInfo:
        """Validate types and values; every problem names the entry and the field."""
        name = raw.get("name", "<unnamed>") if isinstance(raw, Mapping) else "<not a mapping>"

        def fail(field: str, why: str) -> ManifestError:
            return ManifestError(f"checkpoint entry {name!r}: field {field!r} {why}")

        if not isinstance(raw, Mapping):
            raise ManifestError(f"a manifest entry must be a mapping, got {type(raw).__name__}")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}  # fmt: skip
        for key in sorted(required - set(raw)):
            raise fail(key, "is missing")
        unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise fail(unknown[0], "is not a checkpoint field")
        version = raw.get("format_version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise fail("format_version", f"is {version!r}; this psn_zoo reads format versions 1 to {FORMAT_VERSION}")
        if version < FORMAT_VERSION:
            raw = _migrate(raw, version)
        for key in ("name", "architecture", "recipe", "library_version"):
            if not isinstance(raw[key], str) or not raw[key]:
                raise fail(key, "must be a non-empty string")
        match = ENTRY_NAME.fullmatch(raw["name"])
        if not match:
            raise fail("name", f"must be {NAME_RULE}")
        if match["architecture"] != raw["architecture"]:
            raise fail("name", f"must start with its architecture {raw['architecture']!r}")
        for key in ("license", "created", "notes"):
            if key in raw and not isinstance(raw[key], str):
                raise fail(key, "must be a string")
        for key in ("T", "num_classes", "in_channels", "params"):
            if not _positive_int(raw[key]):
                raise fail(key, f"must be a positive integer, got {raw[key]!r}")
        for key in ("model_kwargs", "neuron", "dataset", "metrics"):
            if not isinstance(raw[key], Mapping):
                raise fail(key, "must be a mapping")
        if not isinstance(raw["neuron"].get("name"), str) or not raw["neuron"]["name"]:
            raise fail("neuron", "must name its neuron type ({'name': ...})")
        fixed = sorted({"neuron", "T", "num_classes", "in_channels"} & set(raw["model_kwargs"]))
        if fixed:
            raise fail("model_kwargs", f"must not repeat {fixed} (fields of their own)")
        classes = raw["classes"]
        if not isinstance(classes, list | tuple) or len(classes) != raw["num_classes"]:
            raise fail("classes", f"must list the {raw['num_classes']} class names")
        if not all(isinstance(c, str) for c in classes):
            raise fail("classes", "must be strings")
        for metric in ("top1", "top5"):
            value = raw["metrics"].get(metric)
            if value is not None and not (
                isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0
            ):
                raise fail("metrics", f"{metric} must be a fraction in [0, 1], got {value!r}")
        w = raw["weights"]
        if not isinstance(w, Mapping) or not {"file", "sha256", "size", "dtype"} <= set(w):
            raise fail("weights", "must give file, sha256, size and dtype")
        if not _SHA256.match(str(w["sha256"])):
            raise fail("weights", "sha256 must be 64 lowercase hex digits")
        file = w["file"]
        if not isinstance(file, str) or not file.endswith(".safetensors") or w["sha256"][:8] not in file:
            raise fail("weights", "file must be a .safetensors named with its sha256 prefix")
        if file != Path(file).name or "\\" in file or file.startswith("."):
            raise fail("weights", f"file must be a plain file name (no folders), got {file!r}")
        if not _positive_int(w["size"]):
            raise fail("weights", f"size must be a positive integer (bytes), got {w['size']!r}")
        if w["dtype"] not in _DTYPES:
            raise fail("weights", f"dtype must be one of {', '.join(_DTYPES)}, got {w['dtype']!r}")
        i = raw["input"]
        if not isinstance(i, Mapping) or i.get("kind") not in _INPUT_RANK:
            raise fail("input", "kind must be event_frames, static_image or sequence")
        shape, rank = i.get("shape"), _INPUT_RANK[i["kind"]]
        if not isinstance(shape, list | tuple) or len(shape) != rank or not all(_positive_int(n) for n in shape):
            raise fail("input", f"shape of {i['kind']} must be {rank} positive integers, got {shape!r}")
        channels = shape[0] if i["kind"] == "static_image" else shape[1]
        if channels != raw["in_channels"]:
            raise fail("input", f"shape {list(shape)} has {channels} channels but in_channels is {raw['in_channels']}")
        if i["kind"] != "static_image" and shape[0] != raw["T"]:
            raise fail("input", f"shape {list(shape)} has {shape[0]} time steps but T is {raw['T']}")
        sensor = i.get("sensor_size")
        if sensor is not None and (not isinstance(sensor, list | tuple) or not all(_positive_int(n) for n in sensor)):
            raise fail("input", f"sensor_size must be positive integers or null, got {sensor!r}")
        if not isinstance(i.get("transform", {}), Mapping):
            raise fail("input", "transform must be a mapping")
        if "pipeline" in i.get("transform", {}):
            raise fail("input", "transform must not hold a 'pipeline' repr string: store its 'steps' as plain data")
        steps = i.get("transform", {}).get("steps")
        if steps is not None and not (
            isinstance(steps, list)
            and all(
                isinstance(step, Mapping)
                and set(step) == {"name", "kwargs"}
                and isinstance(step["name"], str)
                and _STEP_NAME.match(step["name"])
                and isinstance(step["kwargs"], Mapping)
                for step in steps
            )
        ):
            raise fail("input", "transform steps must be a list of {'name': <step class>, 'kwargs': {...}}")
        datamodule = raw["dataset"].get("datamodule")
        if datamodule is not None and not (isinstance(datamodule, str) and _STEP_NAME.match(datamodule)):
            raise fail("dataset", f"datamodule must be a DataModule's class name, got {datamodule!r}")
        eval_data = raw.get("eval_data")
        if eval_data is not None:
            eval_data = EvalData.from_dict(eval_data, lambda why: fail("eval_data", why))
            if eval_data.split != raw["dataset"].get("split", eval_data.split):
                raise fail(
                    "eval_data", f"split {eval_data.split!r} is not the metrics' split {raw['dataset']['split']!r}"
                )
            if eval_data.dataset != raw["dataset"].get("name", eval_data.dataset):
                raise fail("eval_data", f"dataset {eval_data.dataset!r} is not the entry's {raw['dataset']['name']!r}")
        training = raw.get("training")
        if training is not None:
            training = _training(training, lambda why: fail("training", why))
        sources = raw.get("sources", [])
        if not isinstance(sources, list | tuple) or not all(
            isinstance(src, str) and src.startswith(_SCHEMES) for src in sources
        ):
            raise fail("sources", f"must be a list of {', '.join(_SCHEMES)} URLs, got {sources!r}")
        for src in sources:
            if src.startswith("hf://"):
                try:
                    split_hf_source(src)
                except ValueError as err:
                    raise fail("sources", f"has a bad Hugging Face Hub source {src!r}: {err}") from None
        return cls(
            **{
                **raw,
                "classes": tuple(classes),
                "input": InputSpec(
                    kind=i["kind"],
                    shape=tuple(i["shape"]),
                    sensor_size=tuple(i["sensor_size"]) if i.get("sensor_size") else None,
                    transform=dict(i.get("transform", {})),
                ),
                "weights": WeightsFile(**{k: w[k] for k in ("file", "sha256", "size", "dtype")}),
                "sources": tuple(raw.get("sources", ())),
                "eval_data": eval_data,
                "training": training,
            }
        )


#: The keys of a record's ``training`` and the types of their values (see :attr:`CheckpointInfo.training`).
TRAINING_KEYS: dict[str, tuple[type, ...]] = {
    "follows_recipe": (bool,),
    "overrides": (list, tuple),
    "epochs": (int, type(None)),
    "max_epochs": (int, type(None)),
    "fine_tuned_from": (str, type(None)),
    "imported_from": (str, type(None)),
}


def _training(raw: Any, fail: Any) -> dict[str, Any]:
    """A validated ``training`` record (plain data; every key optional)."""
    if not isinstance(raw, Mapping):
        raise fail(f"must be a mapping with keys among {', '.join(TRAINING_KEYS)}, got {raw!r}")
    unknown = sorted(set(raw) - set(TRAINING_KEYS))
    if unknown:
        raise fail(f"has unknown key {unknown[0]!r} (known: {', '.join(TRAINING_KEYS)})")
    for key, kinds in TRAINING_KEYS.items():
        value = raw.get(key)
        if key in raw and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            raise fail(f"{key} has the wrong type: {value!r}")
    if not all(isinstance(item, str) for item in raw.get("overrides", ())):
        raise fail("overrides must be command-line arguments (strings)")
    return {**raw, **({"overrides": list(raw["overrides"])} if "overrides" in raw else {})}


def _migrate(raw: Mapping[str, Any], version: int) -> dict[str, Any]:
    """A format-1 entry in format 2: the DataModule's dotted path becomes its name, and the transform's ``repr``
    string (``pipeline``) is dropped (with no ``steps``, the transform is rebuilt from the DataModule and its
    arguments: ``psn_zoo.datamodules.transform_for``)."""
    out = json.loads(json.dumps(dict(raw)))
    if version == 1:
        dataset, transform = out.get("dataset"), (out.get("input") or {}).get("transform")
        if isinstance(dataset, dict) and isinstance(dataset.get("datamodule"), str):
            dataset["datamodule"] = dataset["datamodule"].rpartition(".")[2]
        if isinstance(transform, dict):
            transform.pop("pipeline", None)
    out["format_version"] = FORMAT_VERSION
    return out


def read_manifest(path: str | Path) -> dict[str, CheckpointInfo]:
    """``{name: CheckpointInfo}`` from a manifest file, validated (unique names, known format)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ManifestError(f"cannot read checkpoint manifest {path}: {err}") from None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("entries"), list):
        raise ManifestError(f"{path}: a manifest is {{'format_version': ..., 'entries': [...]}}")
    entries: dict[str, CheckpointInfo] = {}
    for item in raw["entries"]:
        info = CheckpointInfo.from_dict(item)
        if info.name in entries:
            raise ManifestError(f"{path}: checkpoint {info.name!r} is listed twice")
        entries[info.name] = info
    return entries


def write_manifest(path: str | Path, entries: Mapping[str, CheckpointInfo]) -> None:
    """Write ``entries`` to the manifest ``path`` at once: through a fresh, uniquely named temporary file next to it
    (created with ``O_EXCL | O_NOFOLLOW``, so never through an existing file or a link planted there), renamed into
    place. Concurrent writers of one release folder must hold :func:`psn_zoo.hub.publish.release_lock`."""
    from .sources import _write_atomically  # (sources imports this module)

    payload = {"format_version": FORMAT_VERSION, "entries": [entries[n].to_dict() for n in sorted(entries)]}
    data = (json.dumps(payload, indent=2) + "\n").encode()
    _write_atomically(Path(path), lambda out: out.write(data))
