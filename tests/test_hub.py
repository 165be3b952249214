"""The checkpoint hub with real parts: the shipped manifest and weights, the loader, every weight source (local
path, ``file://``, a loopback HTTP server, a fake Hugging Face Hub), the sha256-verified cache and offline mode,
refusal of pickled code, and the ``pretrained`` / ``push`` / ``import-sj`` / ``import-paper`` commands."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import shlex
import socket
from pathlib import Path

import pytest
import torch
from hub_servers import FakeHub, FileServer
from safetensors.torch import load_file
from torch import nn

import psn_zoo
from psn_zoo.cli import main
from psn_zoo.hub import (
    CheckpointInfo,
    ChecksumError,
    ManifestError,
    OfflineError,
    SizeError,
    get_pretrained_info,
    list_pretrained,
    load_pretrained_weights,
    manifest_path,
)
from psn_zoo.hub.metadata import read_manifest, write_manifest
from psn_zoo.hub.publish import add_entry, make_info, model_card, push_to_hub, save_weights
from psn_zoo.hub.sources import bundled_dir, sha256_of
from psn_zoo.models import create_model, load_pretrained
from psn_zoo.models.convert import from_spikingjelly, load_paper_checkpoint
from psn_zoo.neurons import NEURONS, neurons_of
from psn_zoo.safe_load import load_torch_file
from psn_zoo.training.finetune import read_weights

SHIPPED = "paper_cifar10dvs_vgg.ndigits_psn_t4"
TINY = "paper_cifar10dvs_vgg.tiny_psn_t2"
TINY_KWARGS = {"input_size": 16, "width_mult": 0.0625}


pytestmark = pytest.mark.usefixtures("isolated_caches")  # tests/conftest.py


def cache_files(root: Path | None = None) -> list[str]:
    """Every file under the psn_zoo cache (hidden ``.part`` files included)."""
    root = root or Path(os.environ["PSN_ZOO_CACHE"])
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def free_port_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ------------------------------------------------------------------------------------------ a tiny release
@dataclasses.dataclass
class Release:
    dir: Path
    manifest: Path
    info: CheckpointInfo
    data: bytes  # the weights file
    state: dict[str, torch.Tensor]
    x: torch.Tensor
    logits: torch.Tensor

    @property
    def file(self) -> Path:
        return self.dir / self.info.weights.file

    def manifest_elsewhere(self, folder: Path, sources: tuple[str, ...] = ()) -> Path:
        """A manifest listing the entry (with ``sources``) in a folder that does not hold the weights."""
        folder.mkdir(parents=True, exist_ok=True)
        write_manifest(folder / "manifest.json", {TINY: dataclasses.replace(self.info, sources=tuple(sources))})
        return folder / "manifest.json"


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    """A real release folder (safetensors named by sha256, manifest, card) of a tiny DVS VGG, written by the
    publishing functions themselves."""
    torch.manual_seed(0)
    model = create_model("paper_cifar10dvs_vgg", neuron="psn", T=2, num_classes=3, in_channels=2, **TINY_KWARGS)
    with torch.no_grad():  # every layer fires (at init the deep layers are silent), so every tensor counts
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(1.0, 2.0)
                m.bias.uniform_(0.0, 0.3)
        for neuron in neurons_of(model):
            neuron.bias.uniform_(-0.5, 0.0)
    model.eval()
    out = tmp_path_factory.mktemp("release")
    weights = save_weights(model.state_dict(), out, TINY, fp16=False)
    info = make_info(
        name=TINY,
        model=model,
        weights=weights,
        classes=["a", "b", "c"],
        input_spec={"kind": "event_frames", "shape": [2, 2, 16, 16], "sensor_size": [16, 16, 2], "transform": {}},
        dataset={"name": "synthetic", "split": "test"},
        metrics={"top1": 0.5, "top5": 1.0},
        recipe="configs/none.yaml",
        model_kwargs=TINY_KWARGS,
        notes="A tiny test entry.",
    )
    add_entry(out, info)
    x = torch.rand(3, 2, 2, 16, 16) * 4
    with torch.no_grad():
        logits = model(x)
    assert not torch.allclose(logits[0], logits[1]), "the tiny model must not be silent"
    data = (out / weights.file).read_bytes()
    return Release(out, out / "manifest.json", info, data, copy.deepcopy(model.state_dict()), x, logits)


def assert_same_state(model: nn.Module, other: nn.Module | dict[str, torch.Tensor]) -> None:
    """Bit-identical state dicts (same keys, same tensors)."""
    mine, theirs = model.state_dict(), other if isinstance(other, dict) else other.state_dict()
    assert mine.keys() == theirs.keys()
    different = [k for k in mine if not torch.equal(mine[k], theirs[k])]
    assert not different, different[:5]


def assert_is_tiny_model(model: nn.Module, release: Release) -> None:
    assert not model.training
    assert model.pretrained_info.name == TINY
    assert_same_state(model, release.state)
    with torch.no_grad():
        assert torch.equal(model(release.x), release.logits)


# =============================================================================================== manifest
def test_shipped_manifest_lists_verified_weight_files():
    entries = read_manifest(manifest_path())
    assert SHIPPED in entries
    for name, info in entries.items():
        path = bundled_dir() / info.weights.file
        assert path.is_file(), f"{name}: {path} is not shipped"
        assert sha256_of(path) == info.weights.sha256, name
        assert path.stat().st_size == info.weights.size, name
        assert info.weights.file.startswith(f"{name}-{info.weights.sha256[:8]}"), name
        assert name == f"{info.architecture}.{info.tag}" and info.tag
        assert len(info.classes) == info.num_classes
        assert (bundled_dir() / "cards" / f"{name}.md").is_file(), f"{name} has no model card"
        tensors = load_file(str(path))
        dtypes = {str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()}
        assert dtypes == {info.weights.dtype}, name


def test_shipped_release_is_small_and_has_the_issue_s_entries():
    files = [p for p in bundled_dir().rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) <= 50 * 2**20, "checkpoints/ must stay within 50 MB"
    assert not [p for p in files if p.suffix in {".pt", ".pth", ".ckpt", ".pkl", ".bin"}], "pickle in the release"
    neurons = {(i.architecture, i.dataset["name"], i.neuron["name"]) for i in read_manifest(manifest_path()).values()}
    required = [
        ("paper_cifar10dvs_vgg", "NDigits", "psn"),
        ("paper_cifar10dvs_vgg", "NDigits", "lif"),
        ("paper_seq_cnn", "SequentialDigits", "sliding_psn"),
        ("paper_seq_cnn", "SequentialDigits", "masked_psn"),
        ("sew_resnet18", "NDigits", "psn"),
    ]
    assert set(required) <= neurons, set(required) - neurons


def test_checkpoint_info_round_trips(release, tmp_path):
    for info in [*read_manifest(manifest_path()).values(), release.info]:
        raw = info.to_dict()
        assert json.loads(json.dumps(raw)) == raw  # plain JSON
        assert CheckpointInfo.from_dict(raw) == info
    path = tmp_path / "copy.json"
    write_manifest(path, {release.info.name: release.info})
    assert read_manifest(path) == {release.info.name: release.info}


def _shipped_raw() -> dict:
    return next(e for e in json.loads(manifest_path().read_text())["entries"] if e["name"] == SHIPPED)


def _set(path: str, value):
    def mutate(raw: dict) -> None:
        *parents, last = path.split(".")
        target = raw
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value(raw) if callable(value) else value

    return mutate


_DELETE = object()
BAD_RECORDS = [
    ("T", "4", "T", "positive integer"),
    ("T", True, "T", "positive integer"),
    ("T", 0, "T", "positive integer"),
    ("num_classes", -1, "num_classes", "positive integer"),
    ("in_channels", 2.0, "in_channels", "positive integer"),
    ("params", None, "params", "positive integer"),
    ("recipe", _DELETE, "recipe", "is missing"),
    ("weights", _DELETE, "weights", "is missing"),
    ("weights.sha256", _DELETE, "weights", "sha256"),
    ("weights.sha256", lambda raw: raw["weights"]["sha256"].upper(), "weights", "64 lowercase hex"),
    ("weights.sha256", lambda raw: raw["weights"]["sha256"][:8], "weights", "64 lowercase hex"),
    ("weights.sha256", "0" * 64, "weights", "sha256 prefix"),
    ("weights.file", lambda raw: raw["weights"]["file"].replace(".safetensors", ".pth"), "weights", ".safetensors"),
    ("weights.file", lambda raw: f"../../{raw['weights']['file']}", "weights", "plain file name"),
    ("weights.size", -3, "weights", "size"),
    ("weights.dtype", "int8", "weights", "dtype"),
    ("format_version", 3, "format_version", "format versions 1 to 2"),
    ("format_version", 0, "format_version", "format versions"),
    ("format_version", "1", "format_version", "format versions"),
    ("extra_field", 1, "extra_field", "not a checkpoint field"),
    ("name", "paper_cifar10dvs_vgg", "name", "<architecture>.<tag>"),
    ("name", lambda raw: "sew_resnet18." + raw["name"].split(".", 1)[1], "name", "architecture"),
    ("architecture", "", "architecture", "non-empty string"),
    ("classes", ["0"], "classes", "class names"),
    ("classes", lambda raw: list(range(raw["num_classes"])), "classes", "strings"),
    ("metrics.top1", 98.4, "metrics", "top1 must be a fraction"),
    ("metrics.top5", -0.1, "metrics", "top5 must be a fraction"),
    ("neuron", {"k": 2}, "neuron", "name its neuron"),
    ("model_kwargs", [], "model_kwargs", "mapping"),
    ("model_kwargs.T", 8, "model_kwargs", "must not repeat ['T']"),
    ("input.kind", "video", "input", "kind must be"),
    ("input.shape", _DELETE, "input", "shape"),
    ("input.shape", lambda raw: raw["input"]["shape"][:3], "input", "4 positive integers"),
    ("input.shape", lambda raw: [4, 0, 34, 34], "input", "4 positive integers"),
    ("in_channels", lambda raw: raw["in_channels"] + 1, "input", "channels but in_channels is"),
    ("input.sensor_size", "34x34", "input", "sensor_size"),
    ("sources", "https://example.org/weights/", "sources", "list of"),
    ("sources", ["/tmp/weights/"], "sources", "list of"),
    ("license", 3, "license", "string"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "why"), BAD_RECORDS, ids=[f"{p}-{i}" for i, (p, *_) in enumerate(BAD_RECORDS)]
)
def test_from_dict_rejects_bad_records_naming_entry_and_field(path, value, field, why):
    raw = _shipped_raw()
    CheckpointInfo.from_dict(copy.deepcopy(raw))  # the unmodified record is valid
    _set(path, value)(raw)
    with pytest.raises(ManifestError) as err:
        CheckpointInfo.from_dict(raw)
    message = str(err.value)
    assert f"field {field!r}" in message, message
    assert why in message, message
    entry = raw["name"] if isinstance(raw.get("name"), str) else "<unnamed>"
    assert repr(entry) in message, message


def test_manifest_file_errors(tmp_path):
    with pytest.raises(ManifestError, match="manifest entry must be a mapping"):
        CheckpointInfo.from_dict(["not", "a", "record"])
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{ not json")
    with pytest.raises(ManifestError, match=r"cannot read checkpoint manifest .*broken\.json"):
        read_manifest(bad_json)
    no_entries = tmp_path / "empty.json"
    no_entries.write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ManifestError, match="entries"):
        read_manifest(no_entries)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"format_version": 1, "entries": [_shipped_raw(), _shipped_raw()]}))
    with pytest.raises(ManifestError, match=f"{SHIPPED!r} is listed twice"):
        read_manifest(twice)


def test_manifest_rewritten_at_once_is_reread(release, tmp_path):
    """The entry cache keys on the manifest's content: two writes within one file-system clock tick still count."""
    folder = tmp_path / "rel"
    folder.mkdir()
    manifest = folder / "manifest.json"
    write_manifest(manifest, {TINY: release.info})
    stamp = manifest.stat().st_mtime_ns
    assert list_pretrained(manifest=manifest) == [TINY]
    other = dataclasses.replace(release.info, name="paper_cifar10dvs_vgg.other")
    write_manifest(manifest, {TINY: release.info, other.name: other})
    os.utime(manifest, ns=(stamp, stamp))  # same mtime as before, as on a coarse clock
    assert list_pretrained(manifest=manifest) == sorted([TINY, other.name])


# ================================================================================================= loader
def test_list_pretrained_filters():
    names = psn_zoo.list_pretrained()
    assert names == sorted(names) and SHIPPED in names
    ndigits = psn_zoo.list_pretrained("*ndigits*")
    assert SHIPPED in ndigits and all("ndigits" in n for n in ndigits)
    assert psn_zoo.list_pretrained("no_such_thing*") == []


@pytest.mark.parametrize("name", list_pretrained())
def test_every_shipped_entry_loads_ready_to_use(name):
    model = psn_zoo.load_pretrained(name)
    info = model.pretrained_info
    assert info == get_pretrained_info(name)
    assert not any(m.training for m in model.modules()), "load_pretrained must return an eval-mode model"
    assert model.T == info.T and model.num_classes == info.num_classes and model.in_channels == info.in_channels
    stored = load_file(str(bundled_dir() / info.weights.file))
    own = model.state_dict()
    assert stored.keys() == own.keys()
    for key, value in stored.items():
        assert torch.equal(own[key], value.float() if value.is_floating_point() else value), key
    x = torch.rand(2, *info.input.shape) * 4  # event counts / normalised pixels of a few units
    with torch.no_grad():
        logits = model(x)
        again = model(x)
    assert logits.shape == (2, info.num_classes)
    assert torch.isfinite(logits).all()
    assert torch.equal(logits, again)  # eval mode: no dropout, no state carried between calls


@pytest.mark.parametrize("name", list_pretrained())
def test_create_model_with_pretrained_tag_or_name(name):
    info = get_pretrained_info(name)
    reference = load_pretrained(name).state_dict()
    for pretrained in (info.tag, name):
        model = create_model(info.architecture, pretrained=pretrained)
        assert not model.training and model.pretrained_info == info
        assert_same_state(model, reference)


@pytest.mark.parametrize("name", list_pretrained())
def test_arguments_that_contradict_the_checkpoint_are_errors(name):
    info = get_pretrained_info(name)
    wrong_neuron = "lif" if info.neuron["name"] != "lif" else "psn"
    cases = {
        "T": (info.T + 4, f"T={info.T + 4} (checkpoint: {info.T})"),
        "neuron": (wrong_neuron, f"neuron={wrong_neuron!r} (checkpoint: {info.neuron['name']!r})"),
        # num_classes is not among them: another class count re-initialises the classifier (test_pretrained_api.py)
        "in_channels": (info.in_channels + 1, f"in_channels={info.in_channels + 1}"),
        "num_clases": (11, "num_clases=11 (not an argument of"),  # a typo is not silently ignored
    }
    free = NEURONS.get(info.neuron["name"]).obj.initial_kwargs  # what the weights replace (lambda_): not fixed
    for arg, value in info.neuron.items():  # the neuron's own arguments, e.g. LIF's tau
        if arg != "name" and arg not in free and isinstance(value, int | float) and not isinstance(value, bool):
            cases[arg] = (value + 1, f"{arg}={value + 1!r} (checkpoint's neuron: {value!r})")
    for key, (value, message) in cases.items():
        with pytest.raises(ValueError, match="does not match the request") as err:
            load_pretrained(name, **{key: value})
        assert message in str(err.value)
        with pytest.raises(ValueError, match="does not match the request"):
            create_model(info.architecture, pretrained=info.tag, **{key: value})
    agreeing = {"T": info.T, "num_classes": info.num_classes, "neuron": info.neuron["name"], **info.model_kwargs}
    assert load_pretrained(name, **agreeing).pretrained_info == info  # arguments that agree are fine


@pytest.mark.parametrize("name", list_pretrained())
def test_model_card_is_a_huggingface_card_with_the_measured_numbers(name):
    from huggingface_hub import ModelCard

    info = get_pretrained_info(name)
    text = model_card(info)
    card = ModelCard(text)
    assert card.data.library_name == "psn_zoo" and card.data.model_name == name
    assert card.data.license == info.license.lower() and info.neuron["name"] in card.data.tags
    top1 = next(r for r in card.data.eval_results if r.metric_type == "accuracy")
    assert top1.metric_value == round(100 * info.metrics["top1"], 2) and top1.dataset_split == info.dataset["split"]
    assert f'create_model("{name}", pretrained=True)' in text and info.weights.sha256 in text
    if getattr(info, "eval_data", None) is not None:
        assert f"fingerprint sha256 `{info.eval_data.sha256}`" in text


def test_unknown_name_suggests_close_matches():
    typo = SHIPPED.replace("psn", "pns")
    for call in (get_pretrained_info, load_pretrained):
        with pytest.raises(KeyError) as err:
            call(typo)
        assert f"Did you mean {SHIPPED!r}" in str(err.value)
    with pytest.raises(KeyError, match="Available: .*" + SHIPPED.replace(".", r"\.")):
        load_pretrained("zzz.qqq")
    with pytest.raises(ValueError, match=r"unknown model|no_such_arch"):
        create_model("no_such_arch", pretrained="x")


# ===================================================================================== sources and cache
def test_release_folder_and_local_path_sources(release, tmp_path):
    # weights next to the manifest that lists them (a release folder)
    assert_is_tiny_model(load_pretrained(TINY, manifest=release.manifest), release)
    assert create_model("paper_cifar10dvs_vgg", pretrained="tiny_psn_t2", manifest=release.manifest).T == 2
    elsewhere = release.manifest_elsewhere(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match=f"{release.info.weights.file} is neither in"):
        load_pretrained(TINY, manifest=elsewhere)
    # an explicit file, or the folder that holds it
    for source in (release.file, str(release.file), release.dir):
        assert_is_tiny_model(load_pretrained(TINY, manifest=elsewhere, source=source), release)
    assert cache_files() == []  # local files are used in place, not copied
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(release.data[:-1] + bytes([release.data[-1] ^ 1]))
    with pytest.raises(ChecksumError, match=f"{wrong}.*expected {release.info.weights.sha256}"):
        load_pretrained(TINY, manifest=elsewhere, source=wrong)


def test_file_url_source_is_copied_into_the_cache(release, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / release.info.weights.file).write_bytes(release.data)
    manifest = release.manifest_elsewhere(tmp_path / "m", sources=(f"file://{mirror}/",))
    assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
    assert cache_files() == [release.info.weights.file]
    (mirror / release.info.weights.file).unlink()  # now only the cache has it
    assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
    # an explicit file:// source naming the file itself
    other_cache = tmp_path / "cache2"
    monkeypatch.setenv("PSN_ZOO_CACHE", str(other_cache))
    weights = load_pretrained_weights(TINY, manifest=manifest, source=f"file://{release.file}")
    assert weights.keys() == release.state.keys()
    assert cache_files(other_cache) == [release.info.weights.file]


def test_http_download_lands_in_cache_once_with_progress(release, tmp_path, capfd):
    with FileServer({release.info.weights.file: release.data}) as server:
        manifest = release.manifest_elsewhere(tmp_path / "m", sources=(server.url,))
        assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
        assert server.gets(release.info.weights.file) == 1
        assert cache_files() == [release.info.weights.file]
        cached = Path(os.environ["PSN_ZOO_CACHE"]) / release.info.weights.file
        assert cached.read_bytes() == release.data
        err = capfd.readouterr().err
        assert f"downloading {release.info.weights.file}" in err
        assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
        weights = load_pretrained_weights(TINY, manifest=manifest)
        assert all(torch.equal(weights[k], v) for k, v in release.state.items())
        assert server.gets() == 1, "a cached file must not be downloaded again"
        assert "downloading" not in capfd.readouterr().err


def test_unreachable_sources_fall_through_to_the_next(release, tmp_path, monkeypatch):
    with FileServer({}) as empty, FileServer({release.info.weights.file: release.data}) as good:
        dead, gone = free_port_url(), f"file://{tmp_path / 'no_such_folder'}/"
        manifest = release.manifest_elsewhere(tmp_path / "m", sources=(gone, dead, empty.url, good.url))
        assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
        assert empty.gets(release.info.weights.file) == 1 and good.gets() == 1
        monkeypatch.setenv("PSN_ZOO_CACHE", str(tmp_path / "fresh"))
        failing = release.manifest_elsewhere(tmp_path / "m2", sources=(gone, dead, empty.url))
        with pytest.raises(FileNotFoundError) as err:
            load_pretrained(TINY, manifest=failing)
    message = str(err.value)
    assert f"could not get {release.info.weights.file}" in message
    assert dead + release.info.weights.file in message and "refused" in message.lower()
    assert empty.url + release.info.weights.file in message and "404" in message
    assert f"{gone}{release.info.weights.file}: no such file" in message
    assert cache_files(tmp_path / "fresh") == []


def test_wrong_bytes_from_server_are_refused_and_not_cached(release, tmp_path):
    with FileServer({release.info.weights.file: release.data}, mode="corrupt") as server:
        manifest = release.manifest_elsewhere(tmp_path / "m", sources=(server.url,))
        with pytest.raises(ChecksumError) as err:
            load_pretrained(TINY, manifest=manifest)
    message = str(err.value)
    assert server.url + release.info.weights.file in message
    assert f"expected {release.info.weights.sha256}" in message
    assert "Nothing was saved" in message
    assert cache_files() == [], "a wrong download must leave nothing (no .part file) in the cache"


def test_truncated_download_is_an_error_and_not_cached(release, tmp_path):
    with FileServer({release.info.weights.file: release.data}, mode="truncate") as server:
        manifest = release.manifest_elsewhere(tmp_path / "m", sources=(server.url,))
        with pytest.raises(FileNotFoundError) as err:
            load_pretrained(TINY, manifest=manifest)
        assert server.gets() == 1
    message = str(err.value)
    assert "truncated" in message and f"of {len(release.data)} bytes" in message, message
    assert cache_files() == []


def test_tampered_cache_file_is_caught_on_every_load(release, tmp_path):
    with FileServer({release.info.weights.file: release.data}) as server:
        manifest = release.manifest_elsewhere(tmp_path / "m", sources=(server.url,))
        load_pretrained(TINY, manifest=manifest)
        cached = Path(os.environ["PSN_ZOO_CACHE"]) / release.info.weights.file
        data = bytearray(cached.read_bytes())
        data[len(data) // 2] ^= 0x01
        cached.write_bytes(bytes(data))
        for _ in range(2):
            with pytest.raises(ChecksumError, match=f"{cached}.*expected {release.info.weights.sha256}"):
                load_pretrained(TINY, manifest=manifest)
        assert server.gets() == 1  # the corrupt cache is reported, not silently replaced
        cached.unlink()
        assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
        assert server.gets() == 2


@pytest.mark.parametrize("variable", ["PSN_ZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode(release, tmp_path, monkeypatch, variable):
    with FileServer({release.info.weights.file: release.data}) as server:
        manifest = release.manifest_elsewhere(tmp_path / "m", sources=(server.url,))
        monkeypatch.setenv(variable, "1")
        with pytest.raises(OfflineError, match="offline") as err:
            load_pretrained(TINY, manifest=manifest)
        assert release.info.weights.file in str(err.value)
        assert server.requests == [], "offline mode must not touch the network"
        monkeypatch.delenv(variable)
        load_pretrained(TINY, manifest=manifest)  # online: fills the cache
        assert server.gets() == 1
    monkeypatch.setenv(variable, "1")  # the server is gone; the cache is enough
    assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)


# ====================================================================================== Hugging Face Hub
@pytest.fixture
def hf_stale(tmp_path, monkeypatch) -> Path:
    """huggingface_hub's import-time settings pointed elsewhere (as if HF_HOME/HF_ENDPOINT had changed since it was
    imported): a dead endpoint, so the real Hub is never contacted, and a cache folder that must stay empty."""
    from huggingface_hub import constants

    stale = tmp_path / "hf_import_time_home"
    monkeypatch.setattr(constants, "HF_HOME", str(stale))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(stale / "hub"))
    dead = "http://127.0.0.1:9"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    return stale


@pytest.mark.parametrize("upload", ["lfs", "regular"])
def test_push_to_hub_then_download_through_hf_source(release, tmp_path, monkeypatch, capsys, hf_stale, upload):
    """``lfs``: the Hub asks for git-LFS (Xet disabled) and gets the weights by a basic PUT to its storage host;
    ``regular``: the Hub asks for plain git blobs, committed inline (by the Xet pipeline when hf_xet is installed)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", upload == "lfs")
    repo = "psn-org/tiny-vgg"
    with FakeHub(lfs_patterns=("*.safetensors",) if upload == "lfs" else ()) as hub:
        if upload == "lfs":
            source = push_to_hub(TINY, repo, manifest_dir=release.dir, endpoint=hub.url, token="hf_push_token")
        else:  # through the command line
            argv = ["push", TINY, "--repo", repo, "--out", str(release.dir), "--endpoint", hub.url]
            assert main([*argv, "--token", "hf_push_token"]) == 0
            source = capsys.readouterr().out.split(" -> ")[1].split()[0]
        commit = hub.repos[repo].refs["main"]
        assert source == f"hf://{repo}@{commit}"
        # what the Hub received
        pushed = hub.file_bytes(repo, release.info.weights.file)
        assert hashlib.sha256(pushed).hexdigest() == release.info.weights.sha256 and pushed == release.data
        assert json.loads(hub.file_bytes(repo, "config.json")) == release.info.to_dict()
        assert hub.file_bytes(repo, "README.md").decode() == model_card(release.info)
        lfs_puts = hub.count("PUT", "/cdn/upload/")
        if upload == "lfs":
            assert lfs_puts == 1 and release.info.weights.sha256 in hub.lfs_objects
            lfs_line = {"path": release.info.weights.file, "algo": "sha256", "oid": release.info.weights.sha256}
            lfs_line["size"] = len(release.data)
            assert {"key": "lfsFile", "value": lfs_line} in hub.commit_payloads[-1]
        else:
            assert lfs_puts == 0 and not hub.lfs_objects
        api_calls = [h for (m, p), h in zip(hub.requests, hub.headers_seen, strict=True) if p.startswith("/api/")]
        assert api_calls and all(h.get("authorization") == "Bearer hf_push_token" for h in api_calls)

        # download: HF_ENDPOINT is honoured even though huggingface_hub was imported long ago; the weights go to
        # psn_zoo's own cache, verified as any download, never through huggingface_hub's (whose paths the server names)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        manifest = release.manifest_elsewhere(tmp_path / "m", sources=(source,))
        before = len(hub.requests)
        assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
        assert cache_files() == [release.info.weights.file]
        assert (Path(os.environ["PSN_ZOO_CACHE"]) / release.info.weights.file).read_bytes() == release.data
        assert not hf_stale.exists() and not (tmp_path / "hf_home" / "hub").exists()
        resolve = [(m, p) for m, p in hub.requests[before:] if "/resolve/" in p]
        assert resolve and all(p == f"/{repo}/resolve/{commit}/{release.info.weights.file}" for _, p in resolve)
        downloads = hub.headers_seen[before:]
        assert any(h.get("authorization") == "Bearer hf_test_download_token" for h in downloads)
        count = len(hub.requests)
        assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
        assert len(hub.requests) == count, "a pinned, cached revision needs no request"

        # the repository alone is enough: hf-hub:org/repo, through create_model and load_pretrained
        for model in (create_model(f"hf-hub:{repo}"), load_pretrained(f"hf-hub:{repo}@{commit}")):
            assert_is_tiny_model(model, release)
            assert model.pretrained_cfg.sources == (f"hf://{repo}@{commit}",)  # weights pinned to the config's commit
            assert dataclasses.replace(model.pretrained_cfg, sources=release.info.sources) == release.info
        assert create_model("paper_cifar10dvs_vgg", pretrained=f"hf-hub:{repo}").pretrained_cfg.name == TINY
        untrained = create_model(f"hf-hub:{repo}", pretrained=False)
        assert untrained.pretrained_cfg is None and untrained.T == release.info.T
        assert not all(torch.equal(v, release.state[k]) for k, v in untrained.state_dict().items())
        with pytest.raises(ValueError, match="is a paper_cifar10dvs_vgg, not a sew_resnet18"):
            create_model("sew_resnet18", pretrained=f"hf-hub:{repo}")
        # the model card is huggingface_hub's, with a model-index holding the measured numbers
        from huggingface_hub import ModelCard

        card_file = tmp_path / "README.md"
        card_file.write_bytes(hub.file_bytes(repo, "README.md"))
        card = ModelCard.load(card_file)
        assert card.data.library_name == "psn_zoo" and card.data.model_name == TINY
        results = {r.metric_type: r for r in card.data.eval_results}
        assert results["accuracy"].metric_value == round(100 * release.info.metrics["top1"], 2)
        assert results["top_5_accuracy"].metric_value == round(100 * release.info.metrics["top5"], 2)
        assert results["accuracy"].dataset_name == release.info.dataset["name"]
        assert results["accuracy"].dataset_split == release.info.dataset["split"]
    # offline, with the Hub gone: the Hugging Face cache serves it; a file it never had is an OfflineError
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
    other = release.manifest_elsewhere(tmp_path / "m2", sources=("hf://psn-org/never-downloaded",))
    monkeypatch.setenv("PSN_ZOO_CACHE", str(tmp_path / "empty_cache"))  # the cache is by content: one without it
    with pytest.raises(OfflineError, match=r"offline mode.*never-downloaded"):
        load_pretrained(TINY, manifest=other)


def test_hf_hub_repositories_are_verified_and_validated(release, tmp_path, monkeypatch, hf_stale):
    """``hf-hub:`` loads check the weights against the repository's config.json, validate that record like a
    manifest entry, refuse an oversized one, and work offline from the Hugging Face cache."""
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        api = HfApi(endpoint=hub.url, token="t")
        push_to_hub(TINY, "psn-org/good", manifest_dir=release.dir, endpoint=hub.url, token="t")
        push_to_hub(TINY, "psn-org/swapped", manifest_dir=release.dir, endpoint=hub.url, token="t")
        other = bytearray(release.data)
        other[len(other) // 2] ^= 0x01
        api.upload_file(path_or_fileobj=bytes(other), path_in_repo=release.info.weights.file, repo_id="psn-org/swapped")
        with pytest.raises(ChecksumError, match=f"expected {release.info.weights.sha256}"):
            create_model("hf-hub:psn-org/swapped")
        bad = {
            "psn-org/not-json": b"{not json",
            "psn-org/no-sha": json.dumps({k: v for k, v in release.info.to_dict().items() if k != "weights"}).encode(),
            "psn-org/huge": b" " * (1 << 20) + b"{}",
        }
        for repo, config in bad.items():
            hub.add_repo(repo)
            api.upload_file(path_or_fileobj=config, path_in_repo="config.json", repo_id=repo)
        with pytest.raises(ManifestError, match=r"config\.json of hf-hub:psn-org/not-json is not JSON"):
            create_model("hf-hub:psn-org/not-json")
        with pytest.raises(ManifestError, match=f"checkpoint entry {TINY!r}: field 'weights' is missing"):
            load_pretrained("hf-hub:psn-org/no-sha")
        with pytest.raises(SizeError, match="not a psn_zoo metadata file"):
            create_model("hf-hub:psn-org/huge")
        hub.add_repo("psn-org/empty")
        with pytest.raises(OSError, match=r"config\.json"):
            create_model("hf-hub:psn-org/empty")
        with pytest.raises(ValueError, match="is not a Hugging Face Hub repository"):
            create_model("hf-hub:no-slash")
        assert_is_tiny_model(create_model("hf-hub:psn-org/good"), release)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Hub is gone: the Hugging Face cache serves config and weights
    assert_is_tiny_model(create_model("hf-hub:psn-org/good"), release)
    with pytest.raises(OfflineError, match=r"offline mode: config\.json of psn-org/never"):
        create_model("hf-hub:psn-org/never")


def test_hf_source_errors_and_fallback(release, tmp_path, monkeypatch, hf_stale):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with FakeHub() as hub, FileServer({release.info.weights.file: release.data}) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        # a missing repository, then a missing file: both pass on to the next source
        hub.add_repo("psn-org/empty")
        sources = ("hf://psn-org/missing", "hf://psn-org/empty", mirror.url)
        manifest = release.manifest_elsewhere(tmp_path / "m", sources=sources)
        assert_is_tiny_model(load_pretrained(TINY, manifest=manifest), release)
        assert mirror.gets() == 1
        monkeypatch.setenv("PSN_ZOO_CACHE", str(tmp_path / "fresh"))
        only_hf = release.manifest_elsewhere(tmp_path / "m2", sources=sources[:2])
        with pytest.raises(FileNotFoundError) as err:
            load_pretrained(TINY, manifest=only_hf)
        assert "hf://psn-org/missing" in str(err.value) and "hf://psn-org/empty" in str(err.value)
        assert "offline" not in str(err.value)
        # the Hub serves other bytes under the name: refused
        api_repo = "psn-org/tampered"
        hub.add_repo(api_repo)
        from huggingface_hub import HfApi

        HfApi(endpoint=hub.url, token="t").upload_file(
            path_or_fileobj=release.data[::-1], path_in_repo=release.info.weights.file, repo_id=api_repo
        )
        tampered = release.manifest_elsewhere(tmp_path / "m3", sources=(f"hf://{api_repo}",))
        with pytest.raises(ChecksumError, match=f"expected {release.info.weights.sha256}"):
            load_pretrained(TINY, manifest=tampered)
    # an endpoint that is not a Hub (online, not offline mode) is not reported as offline mode
    with FileServer({}) as not_a_hub:
        monkeypatch.setenv("HF_ENDPOINT", not_a_hub.url.rstrip("/"))
        monkeypatch.setenv("PSN_ZOO_CACHE", str(tmp_path / "fresh2"))
        elsewhere = release.manifest_elsewhere(tmp_path / "m4", sources=("hf://psn-org/elsewhere",))
        with pytest.raises(FileNotFoundError) as err:
            load_pretrained(TINY, manifest=elsewhere)
        assert not_a_hub.requests, "the Hub endpoint must come from HF_ENDPOINT at call time"
    assert not isinstance(err.value, OfflineError), err.value
    assert f"of psn-org/elsewhere from {not_a_hub.url.rstrip('/')}" in str(err.value)
    assert "offline" not in str(err.value)


# =============================================================================================== security
class _RunsCode:
    """Unpickling this runs a shell command (a stand-in for a malicious checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _WritesFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload", [_RunsCode, _WritesFile])
def test_pickled_code_is_never_run(tmp_path, capsys, payload):
    marker = tmp_path / "PWNED"
    evil_pth = tmp_path / "checkpoint_max.pth"
    torch.save({"net": {"conv.0.weight": torch.zeros(1)}, "payload": payload(marker)}, evil_pth)
    evil_ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"model.fc.weight": torch.zeros(1)}, "hyper_parameters": payload(marker)}, evil_ckpt)
    evil_sj = tmp_path / "sj_state.pth"
    torch.save({"model": {"fc.weight": torch.zeros(1)}, "extra": payload(marker)}, evil_sj)
    out = tmp_path / "release"

    with pytest.raises(ValueError, match=r"is not a plain tensor file.*never does") as err:
        load_paper_checkpoint(evil_pth)
    assert str(evil_pth) in str(err.value)
    with pytest.raises(ValueError, match=r"is not a plain tensor file.*never does"):
        main(["import-paper", str(evil_pth), "--tag", "evil", "--out", str(out)])
    # the hub's own loader: a short, clear refusal that names the file (and does not advise weights_only=False)
    for call in (
        lambda: load_torch_file(evil_sj),
        lambda: main(["import-sj", str(evil_sj), "--arch", "sew_resnet18", "--tag", "evil", "--neuron", "psn",
                      "--T", "2", "--num-classes", "3", "--out", str(out)]),
    ):  # fmt: skip
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert str(evil_sj) in message and "not a plain tensor file" in message, message
        assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    # fine-tuning sources (psn_zoo.training.finetune.read_weights): Lightning .ckpt and .pth state dicts refused too
    for evil in (evil_ckpt, evil_pth):
        with pytest.raises(ValueError) as err:
            read_weights(str(evil))
        assert str(evil) in str(err.value) and "not a plain tensor file" in str(err.value)

    assert not marker.exists(), "unpickling ran the payload"
    assert not (out / "manifest.json").exists()


def test_load_torch_file_allows_only_what_it_is_told(tmp_path):
    path = tmp_path / "with_args.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(T=4)}, path)
    with pytest.raises(ValueError, match=r"not a plain tensor file.*argparse\.Namespace"):
        load_torch_file(path)
    loaded = load_torch_file(path, allowed=(argparse.Namespace,))
    assert loaded["args"].T == 4 and torch.equal(loaded["model"]["w"], torch.ones(2))


# =============================================================================================== commands
def test_pretrained_command_lists_entries(capsys):
    assert main(["pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in list_pretrained():
        info = get_pretrained_info(name)
        line = next(line for line in lines if line.startswith(f"{name}  "))
        assert f"T={info.T}" in line and info.neuron["name"] in line and f"{info.params:,} params" in line
        if isinstance(info.metrics.get("top1"), float):
            assert f"top-1 {100 * info.metrics['top1']:.2f} %" in line
    assert main(["pretrained", "*ndigits*"]) == 0
    out = capsys.readouterr().out
    assert SHIPPED in out and all("ndigits" in line.split()[0] for line in out.splitlines())
    assert main(["pretrained", "no_such*"]) == 1
    assert "no published checkpoint matches 'no_such*'" in capsys.readouterr().out


@pytest.mark.parametrize("cnf", ["ADD", "IAND"])
def test_import_sj_command_gives_the_converter_logits(tmp_path, capsys, cnf):
    from spikingjelly.activation_based import functional as sjf
    from spikingjelly.activation_based import neuron as sjn
    from spikingjelly.activation_based import surrogate as sjs
    from spikingjelly.activation_based.model import sew_resnet as sj_sew

    torch.manual_seed(0)
    theirs = sj_sew.sew_resnet18(num_classes=3, cnf=cnf, spiking_neuron=sjn.PSN, T=2, surrogate_function=sjs.ATan())
    sjf.set_step_mode(theirs, "m")
    with torch.no_grad():  # every layer fires, so every tensor (and its key mapping) counts
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.8, 1.5)
                m.bias.uniform_(0.0, 0.3)
            if isinstance(m, sjn.PSN):
                m.bias.uniform_(-0.5, 0.0)
    state = theirs.state_dict()
    path = tmp_path / "sj.pth"
    torch.save(state, path)
    out = tmp_path / "release"
    argv = ["import-sj", str(path), "--arch", "sew_resnet18", "--tag", "sj_psn_t2", "--neuron", "psn", "--T", "2"]
    if cnf != "ADD":  # the connect function is not in the state dict: it must be named
        argv += ["--model-kwargs", json.dumps({"cnf": cnf})]
    assert main([*argv, "--num-classes", "3", "--out", str(out)]) == 0
    name = "sew_resnet18.sj_psn_t2"
    assert f"imported {name}" in capsys.readouterr().out
    assert list_pretrained(manifest=out / "manifest.json") == [name]
    assert (out / "cards" / f"{name}.md").is_file()

    model = load_pretrained(name, manifest=out / "manifest.json")
    info = model.pretrained_info
    assert (info.T, info.num_classes, info.neuron["name"], info.in_channels) == (2, 3, "psn", 3)
    assert dict(info.model_kwargs) == ({} if cnf == "ADD" else {"cnf": cnf})
    ours = create_model("sew_resnet18", neuron="psn", T=2, num_classes=3, cnf=cnf).eval()
    ours.load_state_dict(from_spikingjelly(state, ours))
    assert_same_state(model, ours)
    x = torch.rand(2, 3, 32, 32) * 3
    with torch.no_grad():
        got, expected = model(x), ours(x)
        theirs.eval()
        sjf.reset_net(theirs)
        sj_logits = theirs(x.unsqueeze(0).repeat(2, 1, 1, 1, 1)).mean(0)
    assert got.shape == (2, 3) and not torch.allclose(got[0], got[1]), "the network must not be silent"
    assert torch.equal(got, expected)
    torch.testing.assert_close(got, sj_logits, rtol=1e-5, atol=1e-5)


class _PaperPSN(nn.Module):
    """The paper's PSN keys: ``fc = nn.Linear(T, T)``."""

    def __init__(self, T: int) -> None:
        super().__init__()
        self.fc = nn.Linear(T, T)
        with torch.no_grad():  # thresholds that let every layer fire (the paper's init, -1, silences a tiny net)
            self.fc.weight.add_(torch.randn(T, T) * 0.3)
            self.fc.bias.uniform_(-0.5, 0.0)


def _paper_cifar10_state(channels: int, T: int, hidden: int, side: int) -> dict[str, torch.Tensor]:
    """A state dict with the key layout of the paper's CIFAR-10 ``checkpoint_max.pth`` (psn-paper.md §5)."""
    conv: list[nn.Module] = []
    for stage in range(2):
        for i in range(3):
            cin = 3 if stage == i == 0 else channels
            conv += [nn.Conv2d(cin, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), _PaperPSN(T)]
        conv.append(nn.AvgPool2d(2, 2))
    net = nn.Module()
    net.conv = nn.Sequential(*conv)
    flat = channels * (side // 4) ** 2
    net.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), _PaperPSN(T), nn.Linear(hidden, 10))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(1.0, 2.0)
                m.bias.uniform_(0.0, 0.3)
    return net.state_dict()


def test_import_paper_command_with_namespace(tmp_path, capsys):
    state = _paper_cifar10_state(channels=8, T=4, hidden=16, side=16)
    assert "conv.2.fc.weight" in state and "fc.2.fc.bias" in state and "fc.3.weight" in state
    path = tmp_path / "checkpoint_max.pth"
    args = argparse.Namespace(T=4, lr=0.1, epochs=900, data_dir="/data/cifar10")
    torch.save({"net": state, "optimizer": {}, "epoch": 899, "max_test_acc": 0.95, "args": args}, path)
    out = tmp_path / "release"
    assert main(["import-paper", str(path), "--tag", "tiny_psn_t4", "--out", str(out)]) == 0
    name = "paper_cifar10_csnn.tiny_psn_t4"
    assert f"imported {name}" in capsys.readouterr().out
    info = get_pretrained_info(name, manifest=out / "manifest.json")
    assert info.model_kwargs == {"channels": 8, "fc_hidden": 16, "input_size": 16}
    assert list(info.input.shape) == [3, 16, 16] and info.T == 4 and info.neuron["name"] == "psn"

    model = load_pretrained(name, manifest=out / "manifest.json")
    converted = load_paper_checkpoint(path).eval()
    assert_same_state(model, converted)
    x = torch.rand(2, *info.input.shape) * 3
    with torch.no_grad():
        got = model(x)
        assert got.shape == (2, 10) and not torch.allclose(got[0], got[1]), "the network must not be silent"
        assert torch.equal(got, converted(x))
