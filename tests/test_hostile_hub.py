"""Hostile inputs to the checkpoint hub, the checkpoint loaders and the publishing commands (issue 17, items 1, 4, 5
and 8), in the style of safetensors' and torch's ``weights_only`` tests: each case builds a real attack (a pickle
whose unpickling creates a marker file, served from 127.0.0.1; a symbolic link planted in the cache; a source that
streams far more than the manifest declares; a traversing entry name) and asserts the exact safe outcome: a clear
error that names the problem and the fix, no marker file, no file outside the cache or release folder touched,
nothing left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from hub_servers import FileServer, HostileHub, stream_padded
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file

from psn_zoo.cli import main
from psn_zoo.hub import ChecksumError, ManifestError, SizeError, load_pretrained_weights
from psn_zoo.hub import sources as hub_sources
from psn_zoo.hub.metadata import CheckpointInfo, read_manifest, write_manifest
from psn_zoo.hub.publish import add_entry, make_info, save_weights
from psn_zoo.models import create_model, load_pretrained
from psn_zoo.models import read_weights as models_read_weights
from psn_zoo.training import SpikingClassifier
from psn_zoo.training.finetune import read_weights
from psn_zoo.training.publish import publish_checkpoint

pytestmark = pytest.mark.timeout(600)

TINY = "paper_cifar10dvs_vgg.hostile_t2"
TINY_KWARGS = {"input_size": 16, "width_mult": 0.0625}
SEQ_MODEL = {
    "model": "paper_seq_cnn",
    "neuron": "psn",
    "T": 28,
    "num_classes": 10,
    "in_channels": 1,
    "model_kwargs": {"channels": 8, "length": 28, "fc_hidden": 16},
    "optimizer": "adamw",
    "lr": 0.01,
    "log_input_samples": 0,
}
DATA = {
    "class_path": "psn_zoo.datamodules.SequentialDigitsDataModule",
    "init_args": {"batch_size": 16, "images_per_class": 12},
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Own psn_zoo, torch.hub and Hugging Face caches, online, in an empty working folder."""
    monkeypatch.setenv("PSN_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for var in ("PSN_ZOO_OFFLINE", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: files by content, links by target (a symlink is never followed)."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            out[key] = path.read_bytes()
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary or partial files anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name or ".part" in p.name)


# ============================================================================================ malicious pickles
class _TouchesMarker:
    """Unpickling this creates ``marker`` (a stand-in for any code a checkpoint could run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-shaped checkpoint whose unpickling runs code."""
    state = SpikingClassifier(**SEQ_MODEL).state_dict()
    torch.save({"state_dict": state, "hyper_parameters": dict(SEQ_MODEL), "payload": _TouchesMarker(marker)}, path)
    return path


@pytest.fixture
def evil(tmp_path):
    """``(marker, local evil.ckpt, its bytes)``: the marker must never exist."""
    marker = tmp_path / "PWNED"
    path = evil_checkpoint(tmp_path / "evil.ckpt", marker)
    yield marker, path, path.read_bytes()
    assert not marker.exists(), "unpickling ran the checkpoint's code"


def cli_args(subcommand: str, ckpt: str, *extra: str) -> list[str]:
    return [
        subcommand, "--model.model", "paper_seq_cnn", "--model.T", "28", "--model.in_channels", "1",
        "--model.model_kwargs", json.dumps(SEQ_MODEL["model_kwargs"]), "--data", DATA["class_path"],
        "--trainer.logger", "false", "--trainer.accelerator", "cpu", "--ckpt_path", ckpt, *extra,
    ]  # fmt: skip


def assert_refused_pickle(err: pytest.ExceptionInfo, shown: str) -> None:
    message = str(err.value)
    assert isinstance(err.value, ValueError), repr(err.value)
    assert f"{shown} is not a plain tensor file" in message and "psn_zoo never does" in message, message
    assert "save the state dict alone" in message or "convert the file to safetensors" in message  # the fix
    assert "weights_only=False" not in message


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_cli_ckpt_path_over_http_is_never_unpickled(subcommand, evil, tmp_path):
    _, _, data = evil
    with FileServer({"evil.ckpt": data}) as server:
        url = server.url + "evil.ckpt"
        with pytest.raises(ValueError) as err:
            main(cli_args(subcommand, url))
        assert server.gets("evil.ckpt") == 1
    assert_refused_pickle(err, url)
    assert not (tmp_path / "torch_home").exists(), "nothing may be downloaded into torch.hub's cache"
    assert not (tmp_path / "work" / "runs").exists(), "the run must stop before it starts"


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_cli_ckpt_path_local_evil_file_gets_a_clear_error(subcommand, evil):
    _, path, _ = evil
    with pytest.raises(ValueError) as err:
        main(cli_args(subcommand, str(path)))
    assert_refused_pickle(err, str(path))


def test_cli_refuses_weights_only_false(evil):
    _, path, _ = evil
    with pytest.raises(ValueError, match=r"weights_only=True only .*drop --weights_only false"):
        main(cli_args("test", str(path), "--weights_only", "false"))


def test_load_from_checkpoint_and_publish_never_unpickle_a_url(evil, tmp_path):
    _, path, data = evil
    with FileServer({"evil.ckpt": data}) as server:
        url = server.url + "evil.ckpt"
        with pytest.raises(ValueError) as err:
            SpikingClassifier.load_from_checkpoint(url)
        assert_refused_pickle(err, url)
        with pytest.raises(ValueError) as err:
            publish_checkpoint(url, "unused.yaml", "paper_seq_cnn.evil", tmp_path / "release")
        assert_refused_pickle(err, url)
    with pytest.raises(ValueError, match="weights_only=True only"):
        SpikingClassifier.load_from_checkpoint(str(path), weights_only=False)
    assert not (tmp_path / "release").exists()
    assert not (tmp_path / "torch_home").exists()


def test_pretrained_url_is_read_with_weights_only(evil, tmp_path):
    _, _, data = evil
    good = SpikingClassifier(**SEQ_MODEL).model.state_dict()
    save_file(good, str(tmp_path / "good.safetensors"))
    files = {"evil.ckpt": data, "good.safetensors": (tmp_path / "good.safetensors").read_bytes()}
    with FileServer(files) as server:
        with pytest.raises(ValueError) as err:
            SpikingClassifier(**SEQ_MODEL, pretrained=server.url + "evil.ckpt")
        assert_refused_pickle(err, server.url + "evil.ckpt")
        # the one build path: create_model(pretrained=<url>) and psn_zoo.models.read_weights, the same refusals
        with pytest.raises(ValueError) as err:
            build = {k: SEQ_MODEL[k] for k in ("neuron", "T", "num_classes", "in_channels")}
            create_model("paper_seq_cnn", pretrained=server.url + "evil.ckpt", **build, **SEQ_MODEL["model_kwargs"])
        assert_refused_pickle(err, server.url + "evil.ckpt")
        weights = read_weights(server.url + "good.safetensors")  # a remote safetensors file is fine
        assert all(torch.equal(models_read_weights(server.url + "good.safetensors")[k], v) for k, v in good.items())
    assert weights.keys() == good.keys() and all(torch.equal(weights[k], v) for k, v in good.items())
    for reader in (read_weights, models_read_weights):
        with pytest.raises(ValueError, match=r"local paths and http\(s\):// URLs only, not s3://.*Copy the file"):
            reader("s3://bucket/model.ckpt")


# ============================================================================================ the download cache
@dataclasses.dataclass
class Release:
    manifest: Path
    info: CheckpointInfo
    data: bytes


@pytest.fixture
def release(tmp_path) -> Release:
    """A tiny entry whose manifest sits in a folder without its weights (so they must come from a source)."""
    model = create_model("paper_cifar10dvs_vgg", neuron="psn", T=2, num_classes=3, in_channels=2, **TINY_KWARGS)
    folder = tmp_path / "published"
    weights = save_weights(model.state_dict(), folder, TINY, fp16=False)
    info = make_info(
        name=TINY, model=model, weights=weights, classes=["a", "b", "c"],
        input_spec={"kind": "event_frames", "shape": [2, 2, 16, 16], "sensor_size": [16, 16, 2], "transform": {}},
        dataset={"name": "synthetic", "split": "test"}, metrics={}, recipe="none", model_kwargs=TINY_KWARGS,
    )  # fmt: skip
    data = (folder / weights.file).read_bytes()
    (folder / weights.file).unlink()
    return Release(tmp_path / "m" / "manifest.json", info, data)


def with_sources(release: Release, *sources: str) -> Path:
    release.manifest.parent.mkdir(exist_ok=True)
    write_manifest(release.manifest, {TINY: dataclasses.replace(release.info, sources=sources)})
    return release.manifest


def old_part_path(name: str) -> Path:
    """Where psn_zoo up to ea04119 wrote a partial download: predictable from the process id."""
    return Path(os.environ["PSN_ZOO_CACHE"]) / f".{name}.part-{os.getpid()}"


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(b"precious data outside the cache\n")
    return path


def mirror_of(release: Release, tmp_path: Path) -> str:
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / release.info.weights.file).write_bytes(release.data)
    return f"file://{folder}/"


@pytest.mark.parametrize("kind", ["http", "file"])
def test_symlink_planted_at_the_partial_path_is_never_written_through(release, tmp_path, victim, kind):
    name = release.info.weights.file
    cache = Path(os.environ["PSN_ZOO_CACHE"])
    cache.mkdir()
    planted = old_part_path(name)
    planted.symlink_to(victim)
    with FileServer({name: release.data}) as server:
        source = server.url if kind == "http" else mirror_of(release, tmp_path)
        model = load_pretrained(TINY, manifest=with_sources(release, source))
    assert victim.read_bytes() == b"precious data outside the cache\n", "the download wrote through the link"
    entry = cache / name
    assert not entry.is_symlink() and entry.is_file(), "the cache entry must be a regular file, never a link"
    assert entry.read_bytes() == release.data
    assert planted.is_symlink() and os.readlink(planted) == str(victim), "a planted file is left as it was"
    assert sorted(p.name for p in cache.iterdir()) == sorted([name, planted.name])
    assert model.T == 2


def test_partial_path_taken_is_a_clear_error_that_touches_nothing(release, tmp_path, victim, monkeypatch):
    name = release.info.weights.file
    cache = Path(os.environ["PSN_ZOO_CACHE"])
    cache.mkdir()
    planted = cache / f".{name}.part-planted"
    planted.symlink_to(victim)
    monkeypatch.setattr(hub_sources, "_part_path", lambda dest: planted)  # as if the attacker guessed the name
    for source in ("http", "file"):
        (tmp_path / source).mkdir()
        with FileServer({name: release.data}) as server:
            url = server.url if source == "http" else mirror_of(release, tmp_path / source)
            with pytest.raises(hub_sources.CacheError) as err:
                load_pretrained_weights(TINY, manifest=with_sources(release, url))
        message = str(err.value)
        assert f"{planted} already exists" in message and "never writes through" in message, message
        assert "Delete it and retry" in message
        assert victim.read_bytes() == b"precious data outside the cache\n"
        assert tree(cache) == {planted.name: f"-> {victim}"}


def test_a_link_at_a_cache_entry_is_refused_not_followed(release, tmp_path, victim):
    name = release.info.weights.file
    cache = Path(os.environ["PSN_ZOO_CACHE"])
    cache.mkdir()
    outside = tmp_path / "outside" / name
    outside.write_bytes(release.data)  # even the right bytes: the cache holds only files it wrote itself
    (cache / name).symlink_to(outside)
    with pytest.raises(hub_sources.CacheError) as err:
        load_pretrained_weights(TINY, manifest=with_sources(release))
    message = str(err.value)
    assert f"{cache / name} is a symbolic link" in message and "never follows links" in message, message
    assert "Delete it (the file will be downloaded again)" in message
    assert tree(cache) == {name: f"-> {outside}"} and outside.read_bytes() == release.data


class StreamingServer(FileServer):
    """Sends the right file, then ``extra`` more bytes (with or without a ``Content-Length`` announcing them);
    :attr:`sent` counts what the client accepted before it hung up."""

    def __init__(self, files: dict[str, bytes], extra: int, announce: bool) -> None:
        self.extra, self.announce, self.sent = extra, announce, 0
        self.done = threading.Event()
        super().__init__(files)

    def handle(self, handler) -> None:
        data = self.files[handler.path.lstrip("/")]
        handler.send_response(200)
        if self.announce:
            handler.send_header("Content-Length", str(len(data) + self.extra))
        handler.end_headers()
        stream_padded(handler, data, self.extra, self)


@pytest.mark.parametrize("announce", [False, True], ids=["no-length", "length-400MB"])
def test_an_oversized_download_stops_at_the_declared_size(release, tmp_path, announce):
    name, size = release.info.weights.file, release.info.weights.size
    extra = 400 * (1 << 20)
    with StreamingServer({name: release.data}, extra, announce) as server:
        start = time.perf_counter()
        with pytest.raises(ChecksumError) as err:
            load_pretrained_weights(TINY, manifest=with_sources(release, server.url))
        elapsed = time.perf_counter() - start
        assert server.done.wait(30)
    message = str(err.value)
    if announce:
        assert f"announces {size + extra} bytes but its manifest declares {size}: refused before reading" in message
    else:
        assert f"more than the {size} bytes its manifest declares: reading stopped after {size + 1} bytes" in message
    assert "nothing was saved in the cache" in message and server.url + name in message, message
    assert server.sent < 64 * (1 << 20), f"the client read {server.sent} bytes"  # socket buffers, not 400 MB
    assert elapsed < 20
    assert tree(Path(os.environ["PSN_ZOO_CACHE"])) == {}


def test_an_oversized_file_url_is_not_copied_in_full(release, tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / release.info.weights.file).write_bytes(release.data + b"\0" * (3 << 20))
    with pytest.raises(ChecksumError, match=rf"reading stopped after {release.info.weights.size + 1} bytes"):
        load_pretrained_weights(TINY, manifest=with_sources(release, f"file://{folder}/"))
    assert tree(Path(os.environ["PSN_ZOO_CACHE"])) == {}


# ============================================================================================ names and publishing
@pytest.mark.parametrize(
    "name",
    ["paper_cifar10dvs_vgg.../../../x", "paper_cifar10dvs_vgg.a/../../x", "paper_cifar10dvs_vgg.a\\b",
     "paper_cifar10dvs_vgg.", "paper_cifar10dvs_vgg.-x", "paper_cifar10dvs_vgg.a b", "paper_cifar10dvs_vgg.a.b",
     "paper_cifar10dvs_vgg.ok\n"],
)  # fmt: skip
def test_manifest_names_outside_the_one_pattern_are_refused(release, name):
    raw = dataclasses.replace(release.info, name=name).to_dict()
    with pytest.raises(ManifestError) as err:
        CheckpointInfo.from_dict(raw)
    message = str(err.value)
    assert f"checkpoint entry {name!r}: field 'name' must be '<architecture>.<tag>'" in message, message
    assert "no '/', '..'" in message


def paper_state_file(tmp_path: Path) -> Path:
    """A tiny checkpoint laid out as the paper's CIFAR-10 ``checkpoint_max.pth``."""
    from test_hub import _paper_cifar10_state

    path = tmp_path / "checkpoint_max.pth"
    torch.save({"net": _paper_cifar10_state(channels=8, T=4, hidden=16, side=16)}, path)
    return path


@pytest.mark.parametrize("tag", ["a/../../x", "../../x", "a/b", "x y", ".hidden", "a.b"])
@pytest.mark.parametrize("command", ["import-paper", "import-sj"])
def test_import_tag_cannot_leave_the_release_folder(tmp_path, tag, command):
    source = paper_state_file(tmp_path)
    out = tmp_path / "deep" / "release"
    (out / "paper_cifar10_csnn.a").mkdir(parents=True)  # lets a/../../x resolve, as an existing folder would
    (out / "sew_resnet18.a").mkdir()
    before = tree(tmp_path)
    argv = [command, str(source), "--tag", tag, "--out", str(out)]
    if command == "import-sj":
        argv += ["--arch", "sew_resnet18", "--neuron", "psn", "--T", "2", "--num-classes", "3"]
    with pytest.raises(ValueError) as err:
        main(argv)
    message = str(err.value)
    assert f"invalid tag {tag!r}" in message and "letters, digits, '_' and '-'" in message, message
    assert tree(tmp_path) == before, "nothing may be written anywhere"


def test_a_failed_import_leaves_nothing_behind(tmp_path, monkeypatch):
    source = paper_state_file(tmp_path)
    out = tmp_path / "release"
    real_replace = os.replace

    def disk_full(src, dst, *args, **kwargs):
        if str(dst).endswith(".safetensors"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        main(["import-paper", str(source), "--tag", "t", "--out", str(out)])
    monkeypatch.setattr(os, "replace", real_replace)
    assert leftovers(tmp_path) == [] and tree(out) == {}
    # a manifest that cannot be read: refused before any weights are written
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read checkpoint manifest"):
        main(["import-paper", str(source), "--tag", "t", "--out", str(out)])
    assert tree(out) == {"manifest.json": b"{not json"}


def test_import_under_an_existing_name_needs_overwrite(tmp_path):
    source = paper_state_file(tmp_path)
    out = tmp_path / "release"
    assert main(["import-paper", str(source), "--tag", "t", "--out", str(out)]) == 0
    name = "paper_cifar10_csnn.t"
    first = read_manifest(out / "manifest.json")[name]
    before = tree(out)
    other = torch.load(source, weights_only=True)
    other["net"] = {k: v + 1 if v.is_floating_point() else v for k, v in other["net"].items()}
    torch.save(other, source)
    with pytest.raises(FileExistsError) as err:
        main(["import-paper", str(source), "--tag", "t", "--out", str(out)])
    message = str(err.value)
    assert f"already lists {name!r} (weights {first.weights.file}); nothing was written" in message, message
    assert "pass --overwrite" in message
    assert tree(out) == before and leftovers(tmp_path) == []
    assert main(["import-paper", str(source), "--tag", "t", "--out", str(out), "--overwrite"]) == 0
    second = read_manifest(out / "manifest.json")[name]
    assert second.weights.file != first.weights.file
    assert sorted(p.name for p in out.glob("*.safetensors")) == [second.weights.file]
    with pytest.raises(FileExistsError, match="pass --overwrite"):  # the library function refuses too
        add_entry(out, dataclasses.replace(first))


# ============================================================================================ self-contained ckpts
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "accelerator": "cpu",
                    "logger": False, "enable_progress_bar": False, "default_root_dir": str(tmp_path / "runs")},
        "model": dict(SEQ_MODEL),
        "data": DATA,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_fine_tuned_checkpoint_does_not_need_its_pretrained_file(tmp_path):
    pretrained = tmp_path / "start.safetensors"
    torch.manual_seed(1)
    save_file(SpikingClassifier(**SEQ_MODEL).model.state_dict(), str(pretrained))
    config = recipe(tmp_path)
    main(["fit", "--config", str(config), "--model.pretrained", str(pretrained)])
    (ckpt,) = (tmp_path / "runs").rglob("*.ckpt")
    pretrained.unlink()  # the checkpoint must carry everything

    module = SpikingClassifier.load_from_checkpoint(str(ckpt))
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    stored = torch.load(ckpt, weights_only=True)
    trained = {k.removeprefix("model."): v for k, v in stored["state_dict"].items() if k.startswith("model.")}
    assert all(torch.equal(module.model.state_dict()[k], v) for k, v in trained.items())
    assert stored["hyper_parameters"]["pretrained"] is None  # stored self-contained ...
    assert stored["fine_tuned_from"] == str(pretrained)  # ... with its origin recorded

    # a checkpoint written before the fix (pretrained stored in its hparams) loads too
    old = tmp_path / "old.ckpt"
    torch.save({**stored, "hyper_parameters": {**stored["hyper_parameters"], "pretrained": str(pretrained)}}, old)
    assert SpikingClassifier.load_from_checkpoint(str(old)).hparams.pretrained is None
    main(["validate", "--config", str(config), "--ckpt_path", str(old)])

    out = tmp_path / "release"
    assert main(["publish", str(old), "--recipe", str(config), "--name", "paper_seq_cnn.tuned", "--out", str(out)]) == 0
    published = read_manifest(out / "manifest.json")["paper_seq_cnn.tuned"]
    before = tree(out)
    with pytest.raises(FileExistsError, match=r"already lists 'paper_seq_cnn.tuned'.*pass --overwrite"):
        publish_checkpoint(ckpt, config, "paper_seq_cnn.tuned", out)
    assert tree(out) == before and (out / published.weights.file).is_file()
    with pytest.raises(ValueError, match=r"invalid checkpoint name 'paper_seq_cnn.a/../x'"):
        publish_checkpoint(ckpt, config, "paper_seq_cnn.a/../x", out)
    assert tree(out) == before and leftovers(tmp_path) == []


# ===================================================================== sources, fine-tuning files, recipe arguments
class BadLengthServer(FileServer):
    """Sends the right bytes under a ``Content-Length`` that is not a number (a broken server or proxy)."""

    def __init__(self, files: dict[str, bytes], header: str) -> None:
        self.header = header
        super().__init__(files)

    def handle(self, handler) -> None:
        data = self.files[handler.path.lstrip("/")]
        handler.send_response(200)
        handler.send_header("Content-Length", self.header)
        handler.end_headers()
        handler.wfile.write(data)


@pytest.mark.parametrize("header", ["abc", "10, 10", "-5", "²"])
def test_a_malformed_content_length_passes_to_the_next_source(release, tmp_path, header):
    name = release.info.weights.file
    with BadLengthServer({name: release.data}, header) as bad, FileServer({name: release.data}) as good:
        state = load_pretrained_weights(TINY, manifest=with_sources(release, bad.url, good.url))
        assert bad.gets(name) == 1 and good.gets(name) == 1
        assert set(state) == set(safetensors_load(release.data))
        shutil.rmtree(os.environ["PSN_ZOO_CACHE"])
        with pytest.raises(FileNotFoundError, match="malformed Content-Length") as err:
            load_pretrained_weights(TINY, manifest=with_sources(release, bad.url))
    assert "Traceback" not in str(err.value)


def test_a_source_url_naming_the_file_itself_is_used_whatever_its_name(release, tmp_path, monkeypatch):
    """A mirror may store the weights under another name: a URL ending in .safetensors is the file, still verified."""
    folder = tmp_path / "renamed"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(release.data)
    manifest = with_sources(release)
    with FileServer({"weights.safetensors": release.data}) as server:
        for url in (server.url + "weights.safetensors", f"file://{folder}/weights.safetensors"):
            shutil.rmtree(os.environ["PSN_ZOO_CACHE"], ignore_errors=True)
            state = load_pretrained_weights(TINY, manifest=manifest, source=url)
            assert set(state) == set(safetensors_load(release.data))
        (folder / "weights.safetensors").write_bytes(release.data[:-1] + b"\0")  # another file under that name
        shutil.rmtree(os.environ["PSN_ZOO_CACHE"])
        with pytest.raises(ChecksumError):
            load_pretrained_weights(TINY, manifest=manifest, source=f"file://{folder}/weights.safetensors")


def test_offline_mode_reads_a_file_url_but_downloads_nothing(release, tmp_path, monkeypatch):
    monkeypatch.setenv("PSN_ZOO_OFFLINE", "1")
    with FileServer({release.info.weights.file: release.data}) as server:
        with pytest.raises(OSError, match="offline mode: not downloading"):
            load_pretrained_weights(TINY, manifest=with_sources(release, server.url))
        assert server.gets() == 0
    state = load_pretrained_weights(TINY, manifest=with_sources(release, mirror_of(release, tmp_path)))
    assert state  # a local file is no download


def test_fine_tuning_verifies_the_sha256_a_file_name_carries(release, tmp_path):
    """``--model.pretrained x-<sha>.safetensors`` is checked as ``create_model(arch, pretrained=x-<sha>...)`` is."""
    sha = release.info.weights.sha256
    good = tmp_path / f"tiny-{sha[:8]}.safetensors"
    good.write_bytes(release.data)
    bad = tmp_path / f"tampered-{sha[:8]}.safetensors"
    bad.write_bytes(release.data[:-4] + b"\0\0\0\0")
    kwargs = {"model": "paper_cifar10dvs_vgg", "neuron": "psn", "T": 2, "num_classes": 3, "in_channels": 2,
              "model_kwargs": TINY_KWARGS, "log_input_samples": 0}  # fmt: skip
    SpikingClassifier(**kwargs, pretrained=str(good))
    for load in (lambda: SpikingClassifier(**kwargs, pretrained=str(bad)), lambda: read_weights(str(bad))):
        with pytest.raises(ChecksumError, match=f"named for sha256 {sha[:8]}"):
            load()


@pytest.mark.parametrize(
    "args, refused",
    [
        (["-c", "other.yaml"], "-c"),
        (["--config", "other.yaml"], "--config"),
        (["--data.init_args.data_dir", "/d", "--model.T", "8"], "--model.T"),
        (["--data.init_args.batch_size=64", "--data.init_args.permute_pixels=true"], "permute_pixels"),
        (["--data.init_args.num_workers", "2", "stray"], "stray"),
    ],
)
def test_publish_recipe_args_refuse_all_but_where_and_how_data_is_read(args, refused):
    from psn_zoo.training.publish import _check_recipe_args

    with pytest.raises(ValueError, match="only where and how data is read may be set here") as err:
        _check_recipe_args(args)
    assert refused in str(err.value).split(":")[0]


def test_publish_recipe_args_accept_runtime_flags_in_both_forms():
    from psn_zoo.training.publish import _check_recipe_args

    _check_recipe_args(["--data.init_args.data_dir", "/d", "--data.num_workers=2", "--data.init_args.batch_size", "8"])


@pytest.mark.parametrize("content", ["list", "hparams-list", "state-list"])
def test_cli_ckpt_path_that_is_not_a_lightning_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "odd.ckpt"
    value = {"list": [1, 2], "hparams-list": {"state_dict": {}, "hyper_parameters": [1]},
             "state-list": {"state_dict": [torch.zeros(1)]}}[content]  # fmt: skip
    torch.save(value, path)
    with pytest.raises(ValueError, match=r"is not a Lightning checkpoint .*use --model.pretrained instead"):
        main(cli_args("validate", str(path)))


def test_import_sj_errors_name_the_file_and_the_flags(tmp_path):
    out = tmp_path / "release"
    argv = ["--tag", "t", "--out", str(out), "--arch", "sew_resnet18", "--neuron", "lif", "--T", "2", "--num-classes"]
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match=f"{listed} holds no state dict: save SpikingJelly's model with"):
        main(["import-sj", str(listed), *argv, "3"])
    wrong = tmp_path / "ok.pth"  # a SEW-ResNet with the default cnf, imported as if it were another
    torch.save(create_model("sew_resnet18", neuron="lif", T=2, num_classes=3).state_dict(), wrong)
    with pytest.raises(ValueError, match=r"the classifier in .* has another number of classes .* --num-classes"):
        main(["import-sj", str(wrong), *argv, "5"])
    with pytest.raises(ValueError, match=r"do not fit this SpikingVGG .*Give --arch, --neuron, --T"):
        main(["import-sj", str(wrong), *argv[:5], "spiking_vgg11_bn", *argv[6:], "3"])
    assert not out.exists()


# ============================================================================================ Hugging Face Hub
def hf_files(release: Release, **record: object) -> dict[str, bytes]:
    """A pushed repository's files: ``config.json`` (the entry's record, with ``record``'s fields) and the weights."""
    raw = {**release.info.to_dict(), **record}
    return {"config.json": json.dumps(raw).encode(), release.info.weights.file: release.data}


def caches(tmp_path: Path) -> dict[str, dict[str, bytes | str]]:
    """Everything in psn_zoo's cache and in the Hugging Face one (which psn_zoo must never write)."""
    return {"psn_zoo": tree(Path(os.environ["PSN_ZOO_CACHE"])), "hf": tree(tmp_path / "hf_home")}


BAD_REVISIONS = ["../../../../OUTSIDE/ref", "a/../../b", "..", "/etc", "main/", "a//b", "a..b", ".hidden", "a\\b",
                 "a\nb", "a b", "v1.lock", "", "a@b", "a:b", "x" * 256]  # fmt: skip
BAD_REPOS = ["evil", "evil/..", "../m", "evil/m/x", "ev--il/m", "evil/m.git", "évil/m", "evil/.m", "evil/m\n", "/m"]


@pytest.mark.parametrize("rev", BAD_REVISIONS, ids=lambda rev: repr(rev if len(rev) < 40 else rev[:8] + "..."))
def test_an_hf_revision_that_could_name_a_path_is_refused_before_any_request(release, tmp_path, monkeypatch, rev):
    """``hf-hub:org/repo@<rev>`` and a manifest's ``hf://org/repo@<rev>``: huggingface_hub wrote ``refs/<rev>``, so
    ``../../../../OUTSIDE/ref`` wrote the server's X-Repo-Commit outside its cache. A revision is a commit or a strict
    branch/tag name, checked before anything is asked or written."""
    with HostileHub(hf_files(release), commit="../../../../OUTSIDE/commit") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        for load in (lambda: create_model(f"hf-hub:evil/m@{rev}"), lambda: load_pretrained(f"hf-hub:evil/m@{rev}")):
            with pytest.raises(ValueError, match=r"is not a Hugging Face Hub repository.*invalid Hugging Face Hub "
                               r"revision .*a revision is a 40-hex commit or a branch or tag name"):  # fmt: skip
                load()
        with pytest.raises(ManifestError, match=r"field 'sources' has a bad Hugging Face Hub source.*invalid"):
            load_pretrained_weights(TINY, manifest=with_sources(release, f"hf://evil/m@{rev}"))
        with pytest.raises(ValueError, match="invalid Hugging Face Hub revision"):
            load_pretrained_weights(TINY, manifest=with_sources(release), source=f"hf://evil/m@{rev}")
        with pytest.raises(ValueError, match="invalid Hugging Face Hub revision"):
            hub_sources.fetch(release.info.weights.file, release.info.weights.sha256, (f"hf://evil/m@{rev}",))
        assert hub.requests == [], "nothing may be asked of the Hub for such a name"
    assert not (tmp_path / "OUTSIDE").exists()
    assert caches(tmp_path) == {"psn_zoo": {}, "hf": {}}


@pytest.mark.parametrize("repo", BAD_REPOS, ids=repr)
def test_an_hf_repository_id_is_checked_as_huggingface_hub_checks_it(release, tmp_path, monkeypatch, repo):
    with HostileHub(hf_files(release)) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(ValueError, match="is not a Hugging Face Hub repository"):
            create_model(f"hf-hub:{repo}")
        with pytest.raises(ManifestError, match=r"field 'sources' has a bad Hugging Face Hub source"):
            load_pretrained_weights(TINY, manifest=with_sources(release, f"hf://{repo}@main"))
        assert hub.requests == []
    assert caches(tmp_path) == {"psn_zoo": {}, "hf": {}}


def test_good_hf_names_still_parse():
    from psn_zoo.hub.metadata import split_hf_source

    commit = "0123456789abcdef0123456789abcdef01234567"
    for source, parsed in [("hf://org/name", ("org/name", None)), ("hf://o-1/n_2.x@main", ("o-1/n_2.x", "main")),
                           ("hf://org/name@v1.0", ("org/name", "v1.0")), (f"hf://org/n@{commit}", ("org/n", commit)),
                           ("hf://org/n@refs/pr/12", ("org/n", "refs/pr/12")),
                           ("hf://Org/N@rel_2024-01", ("Org/N", "rel_2024-01"))]:  # fmt: skip
        assert split_hf_source(source) == parsed
        CheckpointInfo.from_dict({**dataclasses.asdict(_any_info()), "sources": [source]})


def _any_info() -> CheckpointInfo:
    return next(iter(read_manifest(hub_sources.bundled_dir() / "manifest.json").values()))


@pytest.mark.parametrize("header", ["etag", "commit"])
def test_what_a_hub_sends_never_names_a_path(release, tmp_path, monkeypatch, header):
    """A hostile endpoint (``HF_ENDPOINT``, a mirror) made huggingface_hub write the download to ``blobs/<ETag>`` and
    link ``snapshots/<X-Repo-Commit>``: ``ETag: "../../../OUTSIDE/blob"`` put the bytes outside its cache before any
    check. psn_zoo downloads hub files itself: the ETag plays no part, a commit must be 40 hex digits."""
    repo_dir = tmp_path / "hf_home" / "hub" / "models--evil--y"
    target = tmp_path / "OUTSIDE" / "written"
    evil = os.path.relpath(target, repo_dir / ("blobs" if header == "etag" else "snapshots"))
    with HostileHub(hf_files(release), **{header: evil}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        if header == "etag":  # an honest commit: the loads work, verified as ever
            model = create_model("hf-hub:evil/y")
            assert model.T == 2 and model.pretrained_cfg.sources == (f"hf://evil/y@{'c' * 40}",)
            state = load_pretrained_weights(TINY, manifest=with_sources(release, "hf://evil/y"))
            assert set(state) == set(safetensors_load(release.data))
        else:
            with pytest.raises(ConnectionError, match=r"answered with commit '\.\./.*not a Hugging Face Hub endpoint"):
                create_model("hf-hub:evil/y")
    assert not (tmp_path / "OUTSIDE").exists(), "a server's header named a path outside the cache"
    cached = caches(tmp_path)
    assert cached["hf"] == {}, "huggingface_hub's cache is never used"
    if header == "etag":
        config = hf_files(release)["config.json"]
        commit = "c" * 40
        assert cached["psn_zoo"] == {
            release.info.weights.file: release.data,
            f"hf/evil/y/{commit}/config.json": config,
            "hf/evil/y/refs/main": commit.encode(),
        }
    else:
        assert cached["psn_zoo"] == {}


def test_the_hub_token_goes_to_the_hub_only(release, tmp_path, monkeypatch):
    """The token goes with requests to the Hub's own origin, never to the storage host it redirects a file to (nor
    to a non-http URL)."""
    name = release.info.weights.file
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    with FileServer({name: release.data}) as cdn, HostileHub(hf_files(release), redirect=cdn.url) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        state = load_pretrained_weights(TINY, manifest=with_sources(release, "hf://evil/t"))
        assert set(state) == set(safetensors_load(release.data)) and cdn.gets(name) == 1
        assert hub.headers_seen and all(h.get("authorization") == "Bearer hf_secret_token" for h in hub.headers_seen)
        assert all("authorization" not in h for h in cdn.headers_seen), "the token went to another host"
        shutil.rmtree(os.environ["PSN_ZOO_CACHE"])
        hub.redirect = "ftp://127.0.0.1:9/"  # urllib itself would follow it
        with pytest.raises(FileNotFoundError, match="only http\\(s\\) redirects are followed"):
            load_pretrained_weights(TINY, manifest=with_sources(release, "hf://evil/t"))


@pytest.mark.parametrize("announce", [False, True], ids=["no-length", "length"])
def test_an_oversized_hf_config_is_not_read_past_1_MiB_and_leaves_nothing(tmp_path, monkeypatch, announce):
    with HostileHub({"config.json": b"{" + b" " * 100}, extra=48 << 20, announce=announce) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        start = time.perf_counter()
        with pytest.raises(SizeError, match=r"config\.json of hf://evil/big is over 1 MiB .*not a psn_zoo metadata"):
            create_model("hf-hub:evil/big")
        assert time.perf_counter() - start < 20 and hub.done.wait(30)
    assert hub.sent < 16 << 20, f"the client read {hub.sent} bytes"
    assert caches(tmp_path) == {"psn_zoo": {}, "hf": {}}


@pytest.mark.parametrize("fault", ["longer-announced", "longer-unannounced", "other-bytes"])
def test_bad_hf_weights_stop_at_the_declared_size_and_are_never_cached(release, tmp_path, monkeypatch, fault):
    """A manifest entry's ``hf://`` source sending more than the declared size is cut off there, and wrong bytes are
    kept nowhere: huggingface_hub's cache kept them under the server's ETag, so every retry failed the same way."""
    name, size, sha = release.info.weights.file, release.info.weights.size, release.info.weights.sha256
    data = release.data[:-4] + b"\0\0\0\0" if fault == "other-bytes" else release.data
    extra = 0 if fault == "other-bytes" else 48 << 20
    with HostileHub({name: data}, etag=sha, extra=extra, announce=fault != "longer-unannounced") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        manifest = with_sources(release, "hf://evil/w")
        with pytest.raises(ChecksumError) as err:
            load_pretrained_weights(TINY, manifest=manifest)
        assert hub.done.wait(30) and hub.sent < 16 << 20, f"the client read {hub.sent} bytes"
        expected = {"longer-announced": f"announces {size + extra} bytes but its manifest declares {size}",
                    "longer-unannounced": f"reading stopped after {size + 1} bytes",
                    "other-bytes": f"expected {sha}"}[fault]  # fmt: skip
        message = str(err.value)
        assert expected in message and hub.url in message and "othing was saved" in message, message
        assert caches(tmp_path) == {"psn_zoo": {}, "hf": {}}
        hub.files[name], hub.extra = release.data, 0  # the source is mended: nothing bad was kept to fail again
        assert set(load_pretrained_weights(TINY, manifest=manifest)) == set(safetensors_load(release.data))
    assert caches(tmp_path) == {"psn_zoo": {name: release.data}, "hf": {}}


# ------------------------------------------------------------------- records checked against their weights
HOSTILE_RECORDS = {
    "T": lambda raw: {"T": 100_000, "input": {**raw["input"], "shape": [100_000, *raw["input"]["shape"][1:]]}},
    "width": lambda raw: {"model_kwargs": {**raw["model_kwargs"], "width_mult": 64.0}},
    "classes": lambda raw: {"num_classes": 100_000, "classes": ["a"] * 100_000},
}


@pytest.fixture
def no_real_builds(monkeypatch):
    """Fail when a model is built for real (not as a skeleton on the meta device) during the test."""
    from psn_zoo.models import _builder

    real = _builder.build_model

    def build(architecture, **kwargs):
        if not torch.empty(0).is_meta:
            raise AssertionError(f"a {architecture} was built from a record ({kwargs}) before it was checked")
        return real(architecture, **kwargs)

    monkeypatch.setattr(_builder, "build_model", build)


@pytest.mark.parametrize("field", sorted(HOSTILE_RECORDS))
@pytest.mark.parametrize("where", ["folder", "manifest", "hf-hub"])
def test_a_record_is_checked_against_its_weights_before_a_model_is_built(release, tmp_path, monkeypatch, where,
                                                                          field, request):  # fmt: skip
    """A few-KB record (a pushed folder's or hf-hub: config.json, a manifest entry) asking for T=100000 made a PSN
    allocate T x T weights before its weights were looked at (160 GB at T=200000): the verified weights come first,
    and the record must describe them on a skeleton (meta device) before anything is allocated."""
    raw = release.info.to_dict()
    hostile = {**raw, **HOSTILE_RECORDS[field](raw)}
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / release.info.weights.file).write_bytes(release.data)
    (folder / "config.json").write_text(json.dumps(hostile))
    write_manifest(folder / "manifest.json", {TINY: CheckpointInfo.from_dict(hostile)})
    request.getfixturevalue("no_real_builds")
    with HostileHub(hf_files(release, **HOSTILE_RECORDS[field](raw))) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        load = {"folder": lambda: create_model("paper_cifar10dvs_vgg", pretrained=folder),
                "manifest": lambda: load_pretrained(TINY, manifest=folder),
                "hf-hub": lambda: create_model("hf-hub:evil/record")}[where]  # fmt: skip
        with pytest.raises(ValueError, match=r"does not describe its own weights: it is wrong or hostile"):
            load()


@pytest.mark.parametrize("neuron", ["channel_sliding_psn", "fpt_lif", "glif", "if", "klif", "lif", "lif_noreset",
                                    "masked_psn", "paralif", "plif", "pmsn", "psn", "sliding_psn"])  # fmt: skip
def test_every_neuron_builds_as_a_skeleton_with_its_real_shapes(neuron):
    """The check above builds a record's model on the meta device: every neuron must build there, with the shapes of
    the real model (a neuron that cannot would make every record with it unloadable)."""
    from psn_zoo.models import _builder
    from psn_zoo.models.registry import build_model
    from psn_zoo.neurons import NEURONS

    assert neuron in NEURONS.names(), "a neuron was renamed or removed: update the list"
    spec = {"name": neuron, **({"k": 2} if neuron in ("channel_sliding_psn", "masked_psn", "sliding_psn") else {})}
    kwargs = {"neuron": spec, "T": 4, "num_classes": 3, "in_channels": 1, "channels": 4, "length": 8, "fc_hidden": 8}
    real = build_model("paper_seq_cnn", **kwargs).eval()
    real(torch.rand(2, 4, 1, 8))  # sizes the channel-wise neurons
    with _builder._Skeleton():
        skeleton = build_model("paper_seq_cnn", **kwargs)
    _, replaced = _builder._fitted_state(skeleton, real.state_dict(), neuron, "")
    assert replaced == []
    assert sum(p.numel() for p in skeleton.parameters() if not p.is_meta) <= 64  # only scalars made from data


def test_every_registered_neuron_is_in_the_skeleton_test():
    from psn_zoo.neurons import NEURONS

    listed = test_every_neuron_builds_as_a_skeleton_with_its_real_shapes.pytestmark[0].args[1]
    assert sorted(NEURONS.names()) == sorted(listed)


def test_a_tiny_hostile_record_cannot_make_psn_zoo_allocate_gigabytes(release, tmp_path):
    """The reviewer's case, for real, in a process that may not map more than 8 GB: a pushed folder whose 2 KB
    config.json says T=200000 for a PSN model (2 x 160 GB of [T, T] weights) is refused at once."""
    raw = release.info.to_dict()
    folder = tmp_path / "pushed"
    folder.mkdir()
    (folder / release.info.weights.file).write_bytes(release.data)
    hostile = {**raw, "T": 200_000, "input": {**raw["input"], "shape": [200_000, 2, 16, 16]}}
    (folder / "config.json").write_text(json.dumps(hostile))
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))\n"
        "import psn_zoo\n"
        "try:\n"
        f"    psn_zoo.create_model('paper_cifar10dvs_vgg', pretrained={str(folder)!r})\n"
        "except ValueError as err:\n"
        "    print('REFUSED', err)\n"
        "    sys.exit(0)\n"
        "except BaseException as err:\n"
        "    print('FAILED', type(err).__name__, err)\n"
        "    sys.exit(1)\n"
        "sys.exit(2)\n"
    )
    import psn_zoo

    here = str(Path(psn_zoo.__file__).resolve().parents[1])  # the psn_zoo under test, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "REFUSED" in result.stdout and "(T=200000" in result.stdout and "does not describe its own weights" in (
        result.stdout
    )
