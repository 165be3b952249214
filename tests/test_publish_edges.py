"""Release folders under pressure: concurrent publishers, links planted where the manifest and the card are written,
records that disagree with their weights, licences, and the command line's one-line errors for weights files and an
unreachable Hub (``psn-zoo validate``, ``psn-zoo push``, ``psn-zoo publish``)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hub_servers import FakeHub
from procs import clean_env
from safetensors.torch import save_file

from psn_zoo.cli import main
from psn_zoo.hub import ChecksumError, ManifestError
from psn_zoo.hub.metadata import CheckpointInfo, read_manifest, write_manifest
from psn_zoo.hub.publish import add_entry, make_info, push_to_hub, save_weights
from psn_zoo.models import create_model, load_pretrained

TINY = "paper_cifar10dvs_vgg.tiny_psn_t2"
TINY_KWARGS = {"input_size": 16, "width_mult": 0.0625}


pytestmark = pytest.mark.usefixtures("isolated_caches")  # tests/conftest.py


def tiny_release(out: Path) -> CheckpointInfo:
    """A release folder (weights, manifest, card) of a tiny DVS VGG, written by the publishing functions."""
    torch.manual_seed(0)
    model = create_model("paper_cifar10dvs_vgg", neuron="psn", T=2, num_classes=3, in_channels=2, **TINY_KWARGS)
    model.eval()
    weights = save_weights(model.state_dict(), out, TINY, fp16=False)
    info = make_info(
        name=TINY, model=model, weights=weights, classes=["a", "b", "c"],
        input_spec={"kind": "event_frames", "shape": [2, 2, 16, 16], "sensor_size": [16, 16, 2], "transform": {}},
        dataset={"name": "synthetic", "split": "test"}, metrics={"top1": 0.5, "top5": 1.0},
        recipe="configs/none.yaml", model_kwargs=TINY_KWARGS,
    )  # fmt: skip
    add_entry(out, info)
    return info


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: files by content, links by target (a symbolic link is never followed)."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


# ================================================================================== 1. concurrent publishers
_PUBLISHER = """
import dataclasses, json, sys
from pathlib import Path
from safetensors.torch import load_file
from psn_zoo.hub.metadata import CheckpointInfo
from psn_zoo.hub.publish import add_entry, write_entry

out, who, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
base = json.loads((out / "manifest.json").read_text())["entries"][0]
state = load_file(str(out / base["weights"]["file"]))
for i in range(count):
    name = f"{base['architecture']}.{who}{i}"
    if i % 2:  # a record of the shared weights file
        add_entry(out, CheckpointInfo.from_dict({**base, "name": name}))
    else:  # weights, record and card, as psn-zoo publish writes them
        write_entry(out, name, state, lambda w: CheckpointInfo.from_dict(
            {**base, "name": name, "weights": dataclasses.asdict(w)}))
"""


def test_two_processes_publishing_into_one_release_folder_lose_no_entry(tmp_path):
    """Two publishers at once (each reads, changes and writes the manifest): every entry of both is listed, with its
    card and weights file, and no temporary file is left (was: entries lost, FileNotFoundError on the fixed
    ``.manifest.json.tmp``)."""
    out = tmp_path / "release"
    base = tiny_release(out)
    count = 30
    script = tmp_path / "publisher.py"
    script.write_text(_PUBLISHER)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(out), who, str(count)], env=clean_env(), **pipes)
        for who in ("a", "b")
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    entries = read_manifest(out / "manifest.json")
    expected = {TINY} | {f"paper_cifar10dvs_vgg.{who}{i}" for who in "ab" for i in range(count)}
    assert set(entries) == expected, f"lost: {sorted(expected - set(entries))}"
    for info in entries.values():
        assert (out / "cards" / f"{info.name}.md").is_file() and (out / info.weights.file).is_file(), info.name
    assert {info.weights.file for info in entries.values()} == {p.name for p in out.glob("*.safetensors")}
    assert sum(info.weights.file == base.weights.file for info in entries.values()) == 1 + count
    assert [p.name for p in out.rglob(".*")] == [], "no temporary or lock file is left in the release folder"


# ========================================================================== 2. links where files are written
def test_a_link_planted_at_the_old_temporary_manifest_name_is_not_followed(tmp_path):
    out = tmp_path / "release"
    info = tiny_release(out)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / ".manifest.json.tmp").symlink_to(victim)
    other = dataclasses.replace(info, name="paper_cifar10dvs_vgg.other")
    add_entry(out, other)
    write_manifest(out / "manifest.json", {TINY: info, other.name: other})
    assert victim.read_text() == "precious"
    assert not (out / "manifest.json").is_symlink() and set(read_manifest(out / "manifest.json")) == {TINY, other.name}
    assert os.readlink(out / ".manifest.json.tmp") == str(victim)  # a file psn_zoo did not write is left alone
    assert [p.name for p in out.glob(".*") if p.name != ".manifest.json.tmp"] == []


@pytest.mark.parametrize("where", ["card", "cards folder"])
def test_a_link_at_the_card_path_is_refused_and_never_followed(tmp_path, where):
    """A symbolic link at ``cards/<name>.md`` (or at ``cards/``) is refused with one clear error naming it: the
    card is never written through it (its target stays as it was) and the entry is not added."""
    out = tmp_path / "release"
    info = tiny_release(out)
    other = dataclasses.replace(info, name="paper_cifar10dvs_vgg.other")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / f"{other.name}.md"
    victim.write_text("precious")
    if where == "card":
        link = out / "cards" / f"{other.name}.md"
        link.symlink_to(victim)
    else:
        link = out / "cards"
        for card in link.iterdir():
            card.unlink()
        link.rmdir()
        link.symlink_to(elsewhere)
    before = tree(out)
    with pytest.raises(FileExistsError, match=rf"{link} is a symbolic link: .*never through a link.*Delete it"):
        add_entry(out, other)
    assert victim.read_text() == "precious" and tree(out) == before
    assert set(read_manifest(out / "manifest.json")) == {TINY}


# =================================================================== 3. weights-file errors on the command line
def _one_line(capsys, argv: list[str], monkeypatch) -> str:
    """``psn-zoo ARGV`` run as from the command line: the one line it printed (it must exit 2 with one line)."""
    monkeypatch.setattr(sys, "argv", ["psn-zoo", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err, err
    assert err[-1].startswith(f"psn-zoo {argv[0]}: error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def test_a_corrupt_weights_file_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    """``psn-zoo validate --model.pretrained`` a file named for another sha256, and ``psn-zoo push`` of an entry
    whose weights were modified: one line naming the file and the fix, exit 2 (was: a ChecksumError traceback)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    torch.manual_seed(0)
    model = create_model("paper_seq_cnn", neuron="lif", T=28, num_classes=10, in_channels=1, channels=8, length=28,
                         fc_hidden=16)  # fmt: skip
    named = tmp_path / "w-deadbeef.safetensors"
    save_file(model.state_dict(), str(named))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "trainer": {"accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                    "default_root_dir": str(tmp_path / "runs")},
        "model": {"model": "paper_seq_cnn", "neuron": "lif", "T": 28, "num_classes": 10, "in_channels": 1,
                  "model_kwargs": {"channels": 8, "length": 28, "fc_hidden": 16}},
        "data": {"class_path": "psn_zoo.datamodules.SequentialDigitsDataModule",
                 "init_args": {"batch_size": 16, "images_per_class": 2}},
    }))  # fmt: skip
    line = _one_line(capsys, ["validate", "--config", str(recipe), "--model.pretrained", str(named)], monkeypatch)
    assert f"{named} is named for sha256 deadbeef" in line and "corrupt or was modified" in line, line

    out = tmp_path / "release"
    info = tiny_release(out)
    data = bytearray((out / info.weights.file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / info.weights.file).write_bytes(bytes(data))
    line = _one_line(capsys, ["push", TINY, "--repo", "me/x", "--out", str(out), "--endpoint", "http://127.0.0.1:9"],
                     monkeypatch)  # fmt: skip
    assert f"expected {info.weights.sha256}" in line and "restore the original" in line, line
    monkeypatch.setenv("PSN_ZOO_TRACEBACK", "1")  # ... and the traceback when asked for
    monkeypatch.setattr(sys, "argv", ["psn-zoo", "push", TINY, "--repo", "me/x", "--out", str(out)])
    with pytest.raises(ChecksumError):
        main()


# ========================================================================================= 4. Hub unreachable
def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_push_to_an_unreachable_or_malformed_endpoint_is_a_connection_error(tmp_path, monkeypatch, capsys):
    """A closed port and an endpoint without http(s)://: ConnectionError naming the endpoint and the fix (was: the
    HTTP client's ConnectError / UnsupportedProtocol, no OSError, so a traceback on the command line)."""
    out = tmp_path / "release"
    tiny_release(out)
    for endpoint in (_closed_port_url(), "htp:/not-a-url"):
        fix = r"check --endpoint / \$HF_ENDPOINT"
        with pytest.raises(ConnectionError, match=rf"could not reach {re.escape(endpoint)}: .*{fix}"):
            push_to_hub(TINY, "me/x", manifest_dir=out, endpoint=endpoint, token="t")
        line = _one_line(capsys, ["push", TINY, "--repo", "me/x", "--out", str(out), "--endpoint", endpoint],
                         monkeypatch)  # fmt: skip
        assert f"could not reach {endpoint}: " in line and "--endpoint" in line, line


# ================================================================= 5. records that disagree with their weights
def _wrong(info: CheckpointInfo, **changes) -> CheckpointInfo:
    raw = info.to_dict()
    for key, value in changes.items():
        if key.startswith("weights_"):
            raw["weights"][key.removeprefix("weights_")] = value
        else:
            raw[key] = value
    return CheckpointInfo.from_dict(raw)


def test_a_manifest_whose_size_is_not_its_weights_is_refused(tmp_path):
    out = tmp_path / "release"
    info = tiny_release(out)
    for size in (10, info.weights.size + 10):
        write_manifest(out / "manifest.json", {TINY: _wrong(info, weights_size=size)})
        with pytest.raises(ManifestError, match=rf"'weights.size' is {size} but .* has {info.weights.size} bytes"):
            load_pretrained(TINY, manifest=out)
    write_manifest(out / "manifest.json", {TINY: info})
    assert load_pretrained(TINY, manifest=out).pretrained_cfg.weights.size == info.weights.size


def test_an_hf_hub_config_whose_size_is_not_its_weights_is_refused(tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    out = tmp_path / "release"
    info = tiny_release(out)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        push_to_hub(TINY, "psn-org/big", manifest_dir=out, endpoint=hub.url, token="t")
        config = json.dumps(_wrong(info, weights_size=10**6).to_dict()).encode()
        HfApi(endpoint=hub.url, token="t").upload_file(path_or_fileobj=config, path_in_repo="config.json",
                                                       repo_id="psn-org/big")  # fmt: skip
        with pytest.raises(ManifestError, match=rf"'weights.size' is 1000000 but .* has {info.weights.size} bytes"):
            create_model("hf-hub:psn-org/big")


def test_check_weights_record_compares_size_dtype_and_params_with_the_file(tmp_path):
    """The record's ``weights.size``, ``weights.dtype`` and ``params`` against the safetensors file: a wrong one is
    an error naming the field, the record's value and the file's (to be called wherever weights are loaded)."""
    from psn_zoo.hub.sources import check_weights_record

    out = tmp_path / "release"
    info = tiny_release(out)
    path = out / info.weights.file
    check_weights_record(info, path)  # the true record passes
    stored = sum(t.numel() for t in load_pretrained(TINY, manifest=out).state_dict().values() if t.is_floating_point())
    cases = {
        "weights.dtype": (_wrong(info, weights_dtype="float16"), r"is 'float16' but .* holds float32 tensors"),
        "params": (_wrong(info, params=1), rf"is 1 but .* holds between \d+ and {stored} parameters"),
        "params ": (_wrong(info, params=stored + 1), rf"is {stored + 1} but .* holds between \d+ and {stored}"),
        "weights.size": (_wrong(info, weights_size=10), rf"is 10 but .* has {info.weights.size} bytes"),
    }
    for field, (record, why) in cases.items():
        with pytest.raises(ManifestError, match=rf"entry {TINY!r}: field {field.strip()!r} {why}"):
            check_weights_record(record, path)
    half = tmp_path / "half"
    fp16 = save_weights(load_pretrained(TINY, manifest=out).state_dict(), half, TINY, fp16=True)
    check_weights_record(dataclasses.replace(info, weights=fp16), half / fp16.file)
    with pytest.raises(ManifestError, match=r"'weights.dtype' is 'float32' but .* holds float16 tensors"):
        check_weights_record(dataclasses.replace(info, weights=dataclasses.replace(fp16, dtype="float32")),
                             half / fp16.file)  # fmt: skip


def test_a_record_whose_dtype_or_params_are_not_its_weights_is_refused_on_load(tmp_path):
    """``load_pretrained`` checks the whole record against the verified file: a manifest entry with another dtype or
    parameter count than its weights is refused (``pretrained_cfg`` would otherwise report the record's word)."""
    out = tmp_path / "release"
    info = tiny_release(out)
    for wrong, why in ((_wrong(info, weights_dtype="float16"), "'weights.dtype' is 'float16'"),
                       (_wrong(info, params=1), "'params' is 1 but")):  # fmt: skip
        write_manifest(out / "manifest.json", {TINY: wrong})
        with pytest.raises(ManifestError, match=why):
            load_pretrained(TINY, manifest=out)
    write_manifest(out / "manifest.json", {TINY: info})
    assert load_pretrained(TINY, manifest=out).pretrained_cfg.params == info.params


# ================================================================================================ 6. licences
@pytest.mark.parametrize("license", ["not a licence", "MIT License", "", "mit;rm", "a/b", "-mit"])
def test_a_licence_that_is_no_identifier_is_refused(tmp_path, license):
    out = tmp_path / "release"
    info = tiny_release(out)
    model = create_model("paper_cifar10dvs_vgg", neuron="psn", T=2, num_classes=3, in_channels=2, **TINY_KWARGS)
    with pytest.raises(ValueError, match=rf"invalid licence {license!r}: give a Hugging Face licence identifier"):
        make_info(name=TINY, model=model, weights=info.weights, classes=list(info.classes),
                  input_spec=dataclasses.asdict(info.input), dataset=dict(info.dataset), metrics={},
                  recipe=info.recipe, model_kwargs=TINY_KWARGS, license=license)  # fmt: skip


@pytest.mark.parametrize("license", ["mit", "MIT", "apache-2.0", "cc-by-nc-sa-4.0", "openrail++", "other", "unknown"])
def test_licence_identifiers_are_accepted(tmp_path, license):
    out = tmp_path / "release"
    info = tiny_release(out)
    model = create_model("paper_cifar10dvs_vgg", neuron="psn", T=2, num_classes=3, in_channels=2, **TINY_KWARGS)
    made = make_info(name=TINY, model=model, weights=info.weights, classes=list(info.classes),
                     input_spec=dataclasses.asdict(info.input), dataset=dict(info.dataset), metrics={},
                     recipe=info.recipe, model_kwargs=TINY_KWARGS, license=license)  # fmt: skip
    assert made.license == license


@pytest.mark.parametrize("command", ["publish", "import-paper", "import-sj"])
def test_a_bad_licence_on_the_command_line_is_a_usage_error_before_any_work(tmp_path, capsys, command):
    extra = {
        "publish": ["--recipe", "seqdigits_lif", "--name", "paper_seq_cnn.x"],
        "import-paper": ["--tag", "t"],
        "import-sj": ["--arch", "sew_resnet18", "--tag", "t", "--neuron", "lif", "--T", "4", "--num-classes", "10"],
    }[command]
    missing = tmp_path / "never-read.ckpt"  # not there: the licence is refused before the file is looked at
    with pytest.raises(SystemExit) as stop:
        main([command, str(missing), *extra, "--out", str(tmp_path / "out"), "--license", "not a licence"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --license: invalid licence 'not a licence'" in err, err
    assert not (tmp_path / "out").exists()
