"""The data a checkpoint expects, rebuilt from its metadata: the DataModule (name + arguments) and the exact event
transform (plain steps, never a ``repr`` string); format-1 manifests still read."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from psn_zoo.datamodules import (
    NDigitsDataModule,
    SequentialDigitsDataModule,
    build_transform,
    datamodule_for,
    transform_for,
    transform_spec,
)
from psn_zoo.datamodules.pretrained import datamodule_class
from psn_zoo.datamodules.transform_spec import TransformSpecError, step_spec
from psn_zoo.hub import get_pretrained_info, list_pretrained, manifest_path
from psn_zoo.hub.metadata import FORMAT_VERSION, CheckpointInfo, ManifestError

EVENT_ENTRIES = [n for n in list_pretrained() if get_pretrained_info(n).input.kind == "event_frames"]
ENTRY = "paper_cifar10dvs_vgg.ndigits_psn_t4"


def _raw(name: str) -> dict:
    return copy.deepcopy(next(e for e in json.loads(manifest_path().read_text())["entries"] if e["name"] == name))


def test_the_shipped_manifest_stores_names_and_plain_steps():
    raw = json.loads(manifest_path().read_text())
    assert raw["format_version"] == FORMAT_VERSION == 2 and len(EVENT_ENTRIES) >= 3
    for entry in raw["entries"]:
        assert "." not in entry["dataset"]["datamodule"]  # a name, not an import path
        assert "pipeline" not in json.dumps(entry["input"]["transform"])  # no repr strings
    for name in EVENT_ENTRIES:
        steps = get_pretrained_info(name).input.transform["steps"]
        assert [s["name"] for s in steps] == ["ValidEvents", "ToFrame", "ToFloatFrames"]


@pytest.mark.parametrize("name", EVENT_ENTRIES)
def test_stored_steps_are_what_the_entrys_datamodule_builds(name, tmp_path):
    info = get_pretrained_info(name)
    dm = datamodule_for(name, data_dir=tmp_path)  # building it reads nothing
    assert type(dm) is NDigitsDataModule and dm.T == info.T and dm.input_shape == tuple(info.input.shape)
    assert transform_spec(dm) == json.loads(json.dumps(info.input.transform["steps"]))
    rebuilt = transform_for(name)
    assert [step_spec(step) for step in rebuilt.steps] == info.input.transform["steps"]  # round trip


def test_the_rebuilt_transform_gives_the_frames_the_model_was_evaluated_on(tmp_path):
    """Raw events of the entry's own test recordings, through ``transform_for``, equal the frames its DataModule
    feeds the model (cached preprocessing + evaluation access steps), and the model gives the same logits."""
    import psn_zoo

    dm = datamodule_for(ENTRY, data_dir=tmp_path, images_per_class=4, batch_size=4, num_workers=0)
    dm.prepare_data()
    dm.setup("test")
    _, members = dm._members["test"]
    events = dm._open("test", transform=None)
    transform = transform_for(ENTRY)
    model = psn_zoo.create_model(ENTRY, pretrained=True)
    checked = 0
    for i in range(0, len(members), max(1, len(members) // 6)):
        evaluated, label = dm.datasets["test"][i]
        raw_events, raw_label = events[members[i]]
        assert raw_events.dtype.names and {"x", "y", "t", "p"} <= set(raw_events.dtype.names)  # events in
        frames = transform(raw_events)
        assert frames.dtype == torch.float32
        assert frames.shape == evaluated.shape == tuple(model.pretrained_cfg.input.shape)
        assert torch.equal(frames, evaluated) and int(raw_label) == label
        with torch.no_grad():
            assert torch.equal(model(frames[None]), model(evaluated[None]))
        checked += 1
    assert checked >= 5


SEQUENCE_ENTRIES = [n for n in list_pretrained() if get_pretrained_info(n).input.kind == "sequence"]


@pytest.mark.parametrize("name", SEQUENCE_ENTRIES)
def test_sequence_entries_rebuild_their_datamodule_and_their_exact_reading_order(name):
    """``transform_for`` of a sequential-digits entry is the image -> sequence step its metrics were measured with:
    the columns, or for a permuted entry the pixels in its fixed order (following the column layout on a permuted
    entry gives chance-level accuracy). On the entry's own test images it gives the DataModule's samples, bit for
    bit; the input spec and the card say which."""
    from psn_zoo.hub.publish import model_card

    info = get_pretrained_info(name)
    dm = datamodule_for(name, images_per_class=3, data_dir="ignored: the digits are embedded")
    assert type(dm) is SequentialDigitsDataModule and dm.input_shape == tuple(info.input.shape)
    dm.setup("test")
    images, _ = dm.datasets["test"].dataset.tensors
    transform = transform_for(name)
    for i in range(len(images)):
        assert torch.equal(transform(images[i]), dm.datasets["test"][i][0])
    permuted = info.dataset["init_args"].get("permute_pixels", False)
    assert permuted == ("permuted" in name)
    assert info.input.transform.get("permute_pixels", False) == permuted
    columns = images[0].t().unsqueeze(1)
    assert torch.equal(transform(images[0]), columns) != permuted
    card = model_card(info)
    assert ("fixed random order" in card and "permutation_seed: 0" in card) == permuted
    assert ("columns as time steps" in card) != permuted


def test_an_entry_without_a_stored_transform_says_so():
    raw = _raw("paper_seq_cnn.seqdigits_psn_t28")
    raw["dataset"]["datamodule"] = "SequentialCIFAR10DataModule"
    with pytest.raises(ValueError, match="no stored transform"):
        transform_for(CheckpointInfo.from_dict(raw))


def test_a_format_1_entry_still_reads_and_rebuilds_the_same_transform():
    raw = _raw(ENTRY)
    raw["format_version"] = 1
    raw["dataset"]["datamodule"] = "datamodules.NDigitsDataModule"
    raw["input"]["transform"] = {
        "ToFrame": {"n_time_bins": 4}, "spatial_factor": 1.0, "denoise_us": None,
        "pipeline": "Compose(steps=[RequireEvents(), ToFrame(sensor_size=(34, 34, 2), n_time_bins=4)])",
    }  # fmt: skip
    info = CheckpointInfo.from_dict(raw)
    assert info.format_version == FORMAT_VERSION and info.dataset["datamodule"] == "NDigitsDataModule"
    assert "pipeline" not in info.input.transform and "steps" not in info.input.transform
    assert transform_for(info) == transform_for(ENTRY)  # derived from the DataModule and its arguments
    assert CheckpointInfo.from_dict(info.to_dict()) == info  # written back as format 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["input"]["transform"].update(pipeline="Compose(...)"), "repr string"),
        (lambda r: r["input"]["transform"].update(steps="ToFrame()"), "list of"),
        (lambda r: r["input"]["transform"].update(steps=[{"name": "os.system", "kwargs": {}}]), "list of"),
        (lambda r: r["input"]["transform"].update(steps=[{"name": "ToFrame"}]), "list of"),
        (lambda r: r["dataset"].update(datamodule="os.path"), "class name"),
    ],
)
def test_malformed_transform_or_datamodule_metadata_is_refused_when_read(edit, message):
    raw = _raw(ENTRY)
    edit(raw)
    with pytest.raises(ManifestError, match=message):
        CheckpointInfo.from_dict(raw)


def test_only_known_steps_and_datamodules_are_ever_built():
    with pytest.raises(TransformSpecError, match=r"(?i)unknown transform step 'system'.*Valid choices: .*toframe"):
        build_transform([{"name": "system", "kwargs": {"command": "rm -rf /"}}])
    with pytest.raises(TransformSpecError, match=r"step 0 \(ToFrame\) cannot be built.*n_time_bin"):
        build_transform([{"name": "ToFrame", "kwargs": {"n_time_bin": 4}}])
    with pytest.raises(TransformSpecError, match="list of"):
        build_transform("Compose(steps=[ToFrame()])")
    with pytest.raises(ValueError, match=r"only psn_zoo's DataModules.*Did you mean 'NDigitsDataModule'"):
        datamodule_class("NDigitDataModule")
    with pytest.raises(ValueError, match="only psn_zoo's DataModules"):
        datamodule_class("subprocess.Popen")

    class Custom:
        def __call__(self, x):
            return x

    with pytest.raises(TransformSpecError, match="cannot be stored as plain data"):
        step_spec(Custom())


def test_a_numpy_dtype_argument_survives_the_round_trip():
    dtype = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "u1")])
    from psn_zoo.datamodules.validation import ValidEvents

    spec = step_spec(ValidEvents(34, 34, (0, 1), True, dtype))
    json.dumps(spec)  # plain data
    (rebuilt,) = build_transform([spec]).steps
    assert rebuilt.dtype == dtype and rebuilt.polarities == (0, 1)
