"""Evaluation-data fingerprints (issue 19, item 6): every published entry records the fingerprint of the split its
numbers were measured on; a fresh local split has it, and then ``psn-zoo validate`` says so and reproduces the
published top-1 exactly; a tampered or differently configured split is reported as different, with the reason."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from procs import clean_env, run

from psn_zoo.datamodules import NDigitsDataModule, SequentialDigitsDataModule
from psn_zoo.datamodules import ndigits as nd
from psn_zoo.hub import get_pretrained_info, list_pretrained, manifest_path
from psn_zoo.hub.metadata import CheckpointInfo, EvalData, ManifestError
from psn_zoo.training import SpikingClassifier
from psn_zoo.training.data_fingerprint import EvalDataFingerprint, compare_eval_data, eval_data_of, with_eval_data

pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = list_pretrained()
_VAL_ACC = re.compile(r"val/acc\s*[│|┃]?\s+([0-9.]+)")
SMALL = {"images_per_class": 4, "recordings": 2}


def _ndigits_entry(name: str) -> bool:
    return get_pretrained_info(name).dataset["name"] == "NDigits"


@pytest.fixture
def fresh_ndigits(default_ndigits) -> Path:
    """A data_dir with the default N-Digits generated from scratch, as on a fresh clone."""
    return default_ndigits


def _datamodule(name: str, data_dir: Path | None) -> L.LightningDataModule:
    info = get_pretrained_info(name)
    args = dict(info.dataset["init_args"])
    if info.dataset["name"] == "NDigits":
        return NDigitsDataModule(data_dir=str(data_dir), **args)
    return SequentialDigitsDataModule(**args)


def test_every_published_entry_records_its_evaluation_split():
    for name in ENTRIES:
        info = get_pretrained_info(name)
        assert isinstance(info.eval_data, EvalData), name
        assert info.eval_data.split == info.dataset["split"] == "test"
        assert info.eval_data.dataset == info.dataset["name"]
        assert info.eval_data.samples == info.metrics["samples"]
    default_test = nd.FINGERPRINTS[nd.NDigitsConfig().digest()]["Test"]  # the generator's committed fingerprint
    assert {get_pretrained_info(n).eval_data.sha256 for n in ENTRIES if _ndigits_entry(n)} == {default_test}


@pytest.mark.parametrize("name", ENTRIES)
def test_fresh_local_split_matches_the_manifest(name, fresh_ndigits):
    info = get_pretrained_info(name)
    dm = _datamodule(name, fresh_ndigits)
    local = eval_data_of(dm, "test")
    assert local == info.eval_data
    check = compare_eval_data(info.eval_data, local, source=f"entry {name}", datamodule=dm,
                              expected_args=info.dataset["init_args"], top1=info.metrics["top1"])  # fmt: skip
    assert check.matches is True and not check.reasons
    assert "MATCHES" in check.message() and "should reproduce exactly" in check.message()


@pytest.mark.parametrize("name", ENTRIES)
def test_psn_zoo_validate_reports_the_match_and_reproduces_the_published_top1_exactly(name, fresh_ndigits, tmp_path):
    """A fresh clone's path: ``psn-zoo validate`` with the entry, its recipe and the freshly generated test split
    prints that the data match (the CLI's default callbacks report it) and gives the manifest's top-1 to the sample
    (not within a tolerance)."""
    info = get_pretrained_info(name)
    args = ["-m", "psn_zoo.cli", "validate", "--config", info.recipe, "--model.pretrained", name,
            "--data.init_args.val_split", "test", "--trainer.logger", "false", "--trainer.enable_progress_bar",
            "false", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    if _ndigits_entry(name):
        args += ["--data.init_args.data_dir", str(fresh_ndigits)]
    result = run(args, ROOT, 1500, clean_env(WANDB_MODE="disabled"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"sha256 {info.eval_data.sha256}" in result.stdout, result.stdout[-3000:]
    assert result.stdout.count(f"MATCHES the data entry {name} was measured on") == 1, result.stdout[-3000:]
    measured = float(_VAL_ACC.findall(result.stdout)[-1])
    samples = info.eval_data.samples
    assert round(measured * samples) == round(info.metrics["top1"] * samples), (measured, info.metrics["top1"])


# ------------------------------------------------------------------------------------------ tampered data
@pytest.fixture
def small_ndigits(tmp_path) -> NDigitsDataModule:
    dm = NDigitsDataModule(data_dir=str(tmp_path), **SMALL)
    dm.prepare_data()
    return dm


def test_ndigits_fingerprint_is_the_generators(small_ndigits):
    """One definition: the DataModule's fingerprint of a split is the generator's fingerprint of its folder."""
    dm = small_ndigits
    assert dm.fingerprint("test") == nd.folder_fingerprint(dm.tonic_root(), "Test")
    assert dm.fingerprint("test") == nd.recordings_fingerprint(dm.config, split="Test")
    assert len({dm.fingerprint(s) for s in ("train", "val", "test")}) == 3


def test_a_tampered_ndigits_file_is_reported_as_different(small_ndigits):
    dm = small_ndigits
    published = eval_data_of(dm, "test")
    victim = Path(dm.sample_sources("test")[3])
    data = bytearray(victim.read_bytes())
    data[7] ^= 0x01  # one bit of one event's timestamp
    victim.write_bytes(bytes(data))
    fresh = NDigitsDataModule(data_dir=dm.data_dir, **SMALL)  # another process reading the same folder
    local = eval_data_of(fresh, "test")
    assert local.sha256 != published.sha256 and local.samples == published.samples
    check = compare_eval_data(published, local, source="entry x.y", datamodule=fresh, expected_args=SMALL, top1=0.5)
    assert check.matches is False
    message = check.message()
    assert "DIFFERS" in message and "measured here will differ from the published top-1 50.00 %" in message
    assert "same DataModule arguments gave different data" in message and "delete the local copy" in message


def test_an_extra_ndigits_file_is_reported_with_the_sample_count(small_ndigits):
    """(A missing one is refused by the DataModule itself: MissingSampleError.)"""
    dm = small_ndigits
    published = eval_data_of(dm, "test")
    first = Path(dm.sample_sources("test")[0])
    (first.parent / "99999.bin").write_bytes(first.read_bytes())
    local = eval_data_of(NDigitsDataModule(data_dir=dm.data_dir, **SMALL), "test")
    check = compare_eval_data(published, local, source="entry x.y")
    assert check.matches is False and f"{published.samples + 1} samples here, {published.samples}" in check.message()


def test_other_datamodule_arguments_are_named_as_the_reason():
    info = get_pretrained_info("paper_seq_cnn.seqdigits_psn_t28")
    dm = SequentialDigitsDataModule(**{**info.dataset["init_args"], "seed": 1})
    check = compare_eval_data(info.eval_data, eval_data_of(dm), source="entry paper_seq_cnn.seqdigits_psn_t28",
                              datamodule=dm, expected_args=info.dataset["init_args"])  # fmt: skip
    assert check.matches is False
    assert "the DataModule's arguments differ: seed=1 here, 0 for the entry" in check.message()
    permuted = SequentialDigitsDataModule(**info.dataset["init_args"], permute_pixels=True)
    assert eval_data_of(permuted).sha256 != info.eval_data.sha256  # the reading order is part of the data


def _seq_model(name: str) -> SpikingClassifier:
    info = get_pretrained_info(name)
    return SpikingClassifier(model=info.architecture, neuron=info.neuron["name"],
                             neuron_kwargs={k: v for k, v in info.neuron.items() if k != "name"}, T=info.T,
                             num_classes=info.num_classes, in_channels=info.in_channels,
                             model_kwargs=dict(info.model_kwargs), pretrained=name, log_firing_rates=False,
                             log_input_samples=0)  # fmt: skip


def _trainer(tmp_path: Path, callback: EvalDataFingerprint, **kwargs) -> L.Trainer:
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}
    return L.Trainer(devices=1, default_root_dir=str(tmp_path), callbacks=[callback], **quiet, **kwargs)


def test_validate_on_tampered_sequential_digits_says_the_numbers_will_differ(tmp_path, monkeypatch, capsys):
    """The callback in a real ``Trainer.validate``: the entry's recipe arguments, one pixel of one test image
    changed (as other scipy/scikit-learn builds could) -> DIFFERS, with the published top-1 and the reason."""
    import psn_zoo.datamodules.seqdigits as seqdigits

    name = "paper_seq_cnn.seqdigits_psn_t28"
    info = get_pretrained_info(name)
    real = seqdigits.mnist_style_digits

    def tampered(images_per_class=None):
        images, labels = real(images_per_class)
        images[:, 14, 14] += 2.0**-10  # one pixel of every image, so of every split
        return images, labels

    monkeypatch.setattr(seqdigits, "mnist_style_digits", tampered)
    dm = SequentialDigitsDataModule(**{**info.dataset["init_args"], "val_split": "test"}, batch_size=128)
    callback = EvalDataFingerprint()
    _trainer(tmp_path, callback).validate(_seq_model(name), datamodule=dm, verbose=False)
    check = callback.check
    assert check.matches is False and check.local.samples == info.eval_data.samples
    out = capsys.readouterr().out
    assert f"It DIFFERS from the data entry {name} was measured on" in out
    assert f"will differ from the published top-1 {100 * info.metrics['top1']:.2f} %" in out
    assert "same DataModule arguments gave different data" in out


def test_validate_on_the_holdout_split_says_which_split_the_numbers_need(tmp_path, capsys):
    name = "paper_seq_cnn.seqdigits_lif_t28"
    dm = SequentialDigitsDataModule(**get_pretrained_info(name).dataset["init_args"], batch_size=128)
    callback = EvalDataFingerprint()
    _trainer(tmp_path, callback).validate(_seq_model(name), datamodule=dm, verbose=False)
    assert callback.check.matches is True  # the test split is fingerprinted, and it is the published one
    assert "--data.init_args.val_split test" in capsys.readouterr().out


def test_a_checkpoint_records_its_evaluation_data_and_validate_compares_with_it(tmp_path):
    """The checkpoint's evaluation path: ``fit`` stores the test split's fingerprint in the checkpoint, and
    ``validate --ckpt_path`` compares the local data with it (the same data: matches; other data: differs)."""
    small = {"images_per_class": 12, "batch_size": 32}
    model = SpikingClassifier(model="paper_seq_cnn", neuron="lif", T=28, num_classes=10, in_channels=1,
                              model_kwargs={"channels": 4, "length": 28, "fc_hidden": 8}, log_firing_rates=False,
                              log_input_samples=0)  # fmt: skip
    fit = _trainer(tmp_path, EvalDataFingerprint(), max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    fit.fit(model, datamodule=SequentialDigitsDataModule(**small))
    ckpt = fit.checkpoint_callback.best_model_path
    stored = torch.load(ckpt, weights_only=True)["callbacks"]
    (state,) = [s for key, s in stored.items() if "EvalDataFingerprint" in key]
    assert state["eval_data"] == eval_data_of(SequentialDigitsDataModule(**small)).to_dict()

    same = EvalDataFingerprint()
    _trainer(tmp_path, same).validate(model, datamodule=SequentialDigitsDataModule(**small), ckpt_path=ckpt,
                                      verbose=False)  # fmt: skip
    assert same.check.matches is True and same.check.source.startswith(f"checkpoint {ckpt}")
    other = EvalDataFingerprint()
    _trainer(tmp_path, other).validate(model, datamodule=SequentialDigitsDataModule(**{**small, "seed": 3}),
                                       ckpt_path=ckpt, verbose=False)  # fmt: skip
    assert other.check.matches is False and "DIFFERS" in other.check.message()


# ------------------------------------------------------------------------------------------ the manifest field
def _raw_entry() -> dict:
    return copy.deepcopy(json.loads(manifest_path().read_text())["entries"][0])


def test_manifests_without_eval_data_still_read_and_say_so():
    raw = _raw_entry()
    del raw["eval_data"]  # a manifest written before the field existed
    info = CheckpointInfo.from_dict(raw)
    assert info.eval_data is None and CheckpointInfo.from_dict(info.to_dict()) == info
    local = EvalData(dataset="NDigits", split="test", sha256="0" * 64, samples=1077)
    check = compare_eval_data(info.eval_data, local, source=f"entry {info.name}")
    assert check.matches is None and "records no evaluation-data fingerprint" in check.message()


def test_an_old_entry_is_migrated_from_its_datamodule():
    """An entry of an older manifest gets eval_data from its own DataModule: the shipped record, to the byte."""
    raw = next(e for e in json.loads(manifest_path().read_text())["entries"] if e["dataset"]["name"] != "NDigits")
    old = copy.deepcopy(raw)
    del old["eval_data"]
    info = CheckpointInfo.from_dict(old)
    migrated = with_eval_data(info, SequentialDigitsDataModule(**info.dataset["init_args"]))
    assert migrated.to_dict() == raw


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"dataset": "NDigits", "split": "test", "sha256": "abc"}, "64 lowercase hex"),
        ({"dataset": "NDigits", "split": "holdout", "sha256": "0" * 64}, "split must be one of"),
        ({"dataset": "NDigits", "split": "val", "sha256": "0" * 64}, "not the metrics' split 'test'"),
        ({"dataset": "NMNIST", "split": "test", "sha256": "0" * 64}, "not the entry's 'NDigits'"),
        ({"dataset": "NDigits", "split": "test", "sha256": "0" * 64, "samples": 0}, "positive integer"),
        ({"dataset": "NDigits", "split": "test", "sha256": "0" * 64, "md5": "x"}, "unknown key 'md5'"),
        ("cda4c9df", "must be a mapping"),
    ],
)
def test_bad_eval_data_is_refused_naming_entry_and_field(value, why):
    raw = _raw_entry()
    raw["eval_data"] = value
    with pytest.raises(ManifestError, match=re.escape(why)) as err:
        CheckpointInfo.from_dict(raw)
    assert f"checkpoint entry {raw['name']!r}: field 'eval_data'" in str(err.value)


def test_a_datamodule_without_fingerprint_is_named():
    class Plain(L.LightningDataModule):
        pass

    with pytest.raises(TypeError, match="Plain has no fingerprint"):
        eval_data_of(Plain())


def test_matching_files_read_with_other_preprocessing_may_give_other_numbers(small_ndigits):
    """The fingerprint covers the files; a DataModule argument of the entry that changes the frames (here Tonic's
    Denoise) is named, and the match no longer promises the published numbers."""
    dm = small_ndigits
    published = eval_data_of(dm, "test")
    denoised = NDigitsDataModule(data_dir=dm.data_dir, denoise_us=5000, **SMALL)
    expected = {**SMALL, "denoise_us": None, "val_split": "holdout"}
    check = compare_eval_data(published, eval_data_of(denoised, "test"), source="entry x.y", datamodule=denoised,
                              expected_args=expected, top1=0.5)  # fmt: skip
    assert check.matches is True and check.other_arguments == ("denoise_us=5000 here, None for the entry",)
    assert "may differ from the published top-1 50.00 %" in check.message()
    assert "should reproduce exactly" not in check.message()
