"""The zoo's front doors at their edges: what ``psn-zoo publish`` accepts and what its records and cards claim, files
that are not checkpoints, the data helpers on every kind of entry, listings and their filters, and the small
command-line contracts (exit codes, pipes). Each test is a defect found by review; all run in seconds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hub_servers import FakeHub

import psn_zoo
from psn_zoo.cli import main
from psn_zoo.datamodules import SequentialDigitsDataModule, datamodule_for, transform_for
from psn_zoo.hub import bundled_dir, get_pretrained_info, list_pretrained, load_entry_weights, manifest_path
from psn_zoo.hub.metadata import CheckpointInfo, ManifestError, read_manifest, write_manifest
from psn_zoo.hub.publish import model_card
from psn_zoo.models import create_model, list_models, model_info, read_weights
from psn_zoo.neurons import NeuronSpec, list_neurons
from psn_zoo.training import SpikingClassifier
from psn_zoo.training.publish import publish_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SEQ_LIF = "paper_seq_cnn.seqdigits_lif_t28"
TINY_MODEL = {
    "model": "paper_seq_cnn", "neuron": "lif", "neuron_kwargs": {"tau": 2.0}, "T": 28, "num_classes": 10,
    "in_channels": 1, "model_kwargs": {"channels": 8, "length": 28, "fc_hidden": 16}, "optimizer": "adamw",
    "lr": 0.01, "log_input_samples": 0,
}  # fmt: skip
TINY_DATA = {"batch_size": 16, "images_per_class": 12, "permute_pixels": True, "permutation_seed": 1}


pytestmark = pytest.mark.usefixtures("isolated_caches")  # tests/conftest.py


def _recipe(tmp_path: Path, max_epochs: int = 2, **data: object) -> Path:
    path = tmp_path / "recipe.yaml"
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": max_epochs, "accelerator": "cpu", "logger": False, "enable_progress_bar": False},
        "model": {k: v for k, v in TINY_MODEL.items() if k not in ("T", "num_classes", "in_channels")},
        "data": {"class_path": "psn_zoo.datamodules.SequentialDigitsDataModule", "init_args": {**TINY_DATA, **data}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _checkpoint(folder: Path, data: dict | None, *, epoch: int = 0, run_config: dict | None = None,
                **model: object) -> Path:  # fmt: skip
    """A Lightning checkpoint as ``psn-zoo fit`` writes it: weights, the model's and the DataModule's
    hyperparameters (``data``: the DataModule's arguments; None: no record), the epoch; and, with ``run_config``, the
    run's ``config.yaml`` beside it."""
    import lightning

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    module = SpikingClassifier(**(TINY_MODEL | model))
    with torch.no_grad():
        module.model(torch.zeros(2, 28, 1, 28))
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": epoch,
            "pytorch-lightning_version": lightning.__version__}  # fmt: skip
    if data is not None:
        hparams = dict(SequentialDigitsDataModule(**data).hparams)
        ckpt["datamodule_hyper_parameters"] = {"_class_path": "psn_zoo.datamodules.SequentialDigitsDataModule",
                                               **hparams}  # fmt: skip
    path = folder / "best-epoch=0.ckpt"
    torch.save(ckpt, path)
    if run_config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(run_config))
    return path


# ============================================================================ 1. publish: the recipe's data only
def test_publish_refuses_a_checkpoint_trained_on_other_data_than_its_recipe(tmp_path):
    """A seed-1 run evaluated on the seed-0 recipe: most of that test split was in its training split."""
    ckpt = _checkpoint(tmp_path / "run", {**TINY_DATA, "seed": 1})
    release = tmp_path / "release"
    with pytest.raises(ValueError, match="was trained on other data than recipe") as err:
        publish_checkpoint(ckpt, _recipe(tmp_path), "paper_seq_cnn.mismatch", release)
    message = str(err.value)
    assert "seed: checkpoint 1, recipe 0" in message and str(ckpt) in message
    assert "Publish it with a recipe whose data" in message and not release.exists()


@pytest.mark.parametrize(
    ("trained_on", "named"),
    [
        ({"images_per_class": 4}, "images_per_class: checkpoint 4, recipe 12"),
        ({"permute_pixels": False}, "permute_pixels: checkpoint False, recipe True"),
        ({"val_split": "test"}, "val_split: checkpoint 'test', recipe 'holdout'"),  # selected on the test split
        ({"batch_size": 64, "num_workers": 2}, None),  # how the data is read: not the data
    ],
)
def test_every_data_argument_but_the_runtime_ones_must_be_the_recipe_s(trained_on, named):
    from psn_zoo.training.publish import _check_recipe_data

    recorded = {"_class_path": "psn_zoo.datamodules.SequentialDigitsDataModule", **TINY_DATA, **trained_on}
    recipe_data = SequentialDigitsDataModule(**TINY_DATA)
    if named is None:
        _check_recipe_data("run.ckpt", "recipe.yaml", recorded, recipe_data)
        return
    with pytest.raises(ValueError, match="was trained on other data than recipe") as err:
        _check_recipe_data("run.ckpt", "recipe.yaml", recorded, recipe_data)
    assert named in str(err.value)
    other = {**recorded, "_class_path": "psn_zoo.datamodules.NDigitsDataModule"}
    with pytest.raises(ValueError, match=r"was trained on NDigitsDataModule, but recipe recipe\.yaml evaluates Seq"):
        _check_recipe_data("run.ckpt", "recipe.yaml", other, recipe_data)


def test_publish_refuses_a_checkpoint_that_records_no_data(tmp_path):
    ckpt = _checkpoint(tmp_path / "run", None)
    with pytest.raises(ValueError, match=r"does not record the data it was trained on \(no datamodule_hyper_param"):
        publish_checkpoint(ckpt, _recipe(tmp_path), "paper_seq_cnn.unknown", tmp_path / "release")


def test_publish_records_how_the_run_differed_from_its_recipe_and_the_card_says_so(tmp_path):
    """Same data, other training: published, but the record and the card give the recipe with the run's overrides
    (here a learning rate and a 1-epoch run, from the checkpoint and its config.yaml), never the bare recipe."""
    recipe = _recipe(tmp_path)
    run = {"seed_everything": 0, "trainer": {"max_epochs": 1}, "data": {"init_args": dict(TINY_DATA)}}
    ckpt = _checkpoint(tmp_path / "run", dict(TINY_DATA), run_config=run, lr=0.05)
    info = publish_checkpoint(ckpt, recipe, "paper_seq_cnn.tuned", tmp_path / "release")
    training = read_manifest(tmp_path / "release" / "manifest.json")["paper_seq_cnn.tuned"].training
    assert training["follows_recipe"] is False and training["epochs"] == 1 and training["max_epochs"] == 1
    assert set(training["overrides"]) == {"--model.lr 0.05", "--trainer.max_epochs 1"}
    card = (tmp_path / "release" / "cards" / "paper_seq_cnn.tuned.md").read_text()
    assert card == model_card(info)
    how = card.split("## How it was trained")[1].split("##")[0]
    assert "Not the recipe as it stands" in how and "--model.lr 0.05" in how and "--trainer.max_epochs 1" in how
    assert f"`psn-zoo fit --config {recipe}` (psn_zoo" not in card  # the claim the run did not earn

    # the permutation the recipe's data reads with is in the input spec, and transform_for rebuilds it exactly
    transform = info.input.transform
    assert transform["permute_pixels"] is True and transform["permutation_seed"] == 1
    assert "columns" not in transform["layout"] and "fixed random order" in card
    dm = SequentialDigitsDataModule(**TINY_DATA)
    dm.setup("test")
    images, _ = dm.datasets["test"].dataset.tensors
    rebuilt = transform_for(info)
    assert all(torch.equal(rebuilt(images[i]), dm.datasets["test"][i][0]) for i in range(len(images)))


def test_publish_of_a_run_that_followed_its_recipe_says_so(tmp_path):
    recipe = _recipe(tmp_path)
    run = {"seed_everything": 0, "trainer": {"max_epochs": 2}, "data": {"init_args": dict(TINY_DATA)}}
    ckpt = _checkpoint(tmp_path / "run", dict(TINY_DATA), epoch=1, run_config=run)
    info = publish_checkpoint(ckpt, recipe, "paper_seq_cnn.faithful", tmp_path / "release", license="apache-2.0")
    assert info.training == {"follows_recipe": True, "overrides": [], "epochs": 2, "max_epochs": 2,
                             "fine_tuned_from": None}  # fmt: skip
    card = (tmp_path / "release" / "cards" / "paper_seq_cnn.faithful.md").read_text()
    assert f"`psn-zoo fit --config {recipe}` (psn_zoo" in card and "after epoch 2 of 2" in card
    assert "license: apache-2.0" in card and info.license == "apache-2.0"


# ====================================================================== 2. what the shipped records and cards say
@pytest.mark.parametrize("name", list_pretrained())
def test_every_shipped_card_is_what_its_record_generates_and_claims_only_what_it_knows(name):
    info = get_pretrained_info(name)
    card = (bundled_dir() / "cards" / f"{name}.md").read_text()
    assert card == model_card(info), f"regenerate the card of {name} (hub.publish.add_entry)"
    header = card.split("## Use")[0]
    assert "(test)." not in header and f"measured on its {info.dataset['split']} split" in header
    tags = yaml.safe_load(card.split("---")[1])["tags"]
    assert ("parallel-spiking-neuron" in tags) == (info.neuron["name"] in ("psn", "masked_psn", "sliding_psn",
                                                                            "channel_sliding_psn"))  # fmt: skip
    permuted = bool(info.dataset["init_args"].get("permute_pixels"))
    assert bool(info.input.transform.get("permute_pixels")) == permuted
    assert ("image columns as time steps" in json.dumps(dict(info.input.transform))) == (
        info.input.kind == "sequence" and not permuted
    )


def test_an_imported_entry_claims_no_recipe_dataset_or_licence_it_does_not_have(tmp_path, capsys):
    path = tmp_path / "sj_state.pth"
    torch.save(create_model("sew_resnet18", neuron="lif", T=2, num_classes=3).state_dict(), path)
    out = tmp_path / "release"
    argv = ["import-sj", str(path), "--arch", "sew_resnet18", "--tag", "sj", "--neuron", "lif", "--T", "2",
            "--num-classes", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    info = read_manifest(out / "manifest.json")["sew_resnet18.sj"]
    card = (out / "cards" / "sew_resnet18.sj.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert info.license == "unknown" and meta["license"] == "unknown"
    assert "datasets" not in meta and "model-index" not in meta  # no "unknown" dataset, no unmeasured results
    assert "parallel-spiking-neuron" not in meta["tags"]
    assert "psn-zoo fit --config (imported" not in card and "imported from a SpikingJelly 2.0.0 state dict" in card
    assert info.training == {"imported_from": "a SpikingJelly 2.0.0 state dict (sj_state.pth)"}
    assert main([*argv, "--overwrite", "--license", "cc-by-4.0"]) == 0
    assert read_manifest(out / "manifest.json")["sew_resnet18.sj"].license == "cc-by-4.0"


def test_the_training_record_is_validated(tmp_path):
    raw = json.loads(manifest_path().read_text())["entries"][0]
    for bad, why in (({"epochs": "5"}, "epochs has the wrong type"), ({"seed": 1}, "unknown key 'seed'"),
                     ({"overrides": [3]}, "overrides must be"), ("yes", "must be a mapping")):  # fmt: skip
        with pytest.raises(ManifestError, match=f"field 'training' .*{re.escape(why)}"):
            CheckpointInfo.from_dict({**raw, "training": bad})


# ============================================================================ 3. files that are not checkpoints
def test_files_that_are_not_checkpoints_are_one_clear_error_naming_them(tmp_path):
    text = tmp_path / "notackpt.ckpt"
    text.write_text("hello\n")
    passwd = tmp_path / "passwd.pth"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes(b"vm\n")
    for path in (text, passwd):
        for call in (
            lambda p=path: publish_checkpoint(p, _recipe(tmp_path), "paper_seq_cnn.x", tmp_path / "release"),
            lambda p=path: create_model("paper_seq_cnn", pretrained=str(p)),
            lambda p=path: read_weights(p),
        ):
            with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not a torch checkpoint \("):
                call()
    for call in (
        lambda: read_weights(torn),
        lambda: create_model("paper_seq_cnn", pretrained=str(torn)),
        lambda: SpikingClassifier(**TINY_MODEL, pretrained=str(torn)),  # --model.pretrained
    ):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(torn))} is not a safetensors file \("):
            call()


def test_a_corrupt_weights_file_that_matches_its_record_is_one_clear_error(tmp_path):
    """The sha256 says the bytes are the publisher's; they may still not be safetensors (a bad upload)."""
    garbage = b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}" + b"\0" * 64
    sha = hashlib.sha256(garbage).hexdigest()
    info = get_pretrained_info(SEQ_LIF)
    file = f"{info.name}-{sha[:8]}.safetensors"
    weights = dataclasses.replace(info.weights, file=file, sha256=sha, size=len(garbage))
    (tmp_path / weights.file).write_bytes(garbage)
    with pytest.raises(ValueError, match=rf"{re.escape(weights.file)} \(the weights of {info.name}\) is not a safe"):
        load_entry_weights(dataclasses.replace(info, weights=weights), release_dir=tmp_path)


def test_publish_of_a_text_file_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    text = tmp_path / "notackpt.ckpt"
    text.write_text("hello\n")
    monkeypatch.setattr(sys, "argv", ["psn-zoo", "publish", str(text), "--recipe", "seqdigits_lif", "--name",
                                      "paper_seq_cnn.x", "--out", str(tmp_path / "out")])  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"{text} is not a torch checkpoint" in err and "101" not in err.split("(")[0]


# ======================================================================= 4, 6. data helpers for every kind of entry
def test_datamodule_for_gives_a_sequential_entry_only_the_arguments_it_takes(tmp_path):
    dm = datamodule_for(SEQ_LIF, data_dir=tmp_path, batch_size=8, num_workers=0, images_per_class=3)
    assert type(dm) is SequentialDigitsDataModule and dm.batch_size == 8 and dm.images_per_class == 3
    with pytest.raises(ValueError, match=r"SequentialDigitsDataModule takes no 'bogus'; its arguments are .*seed"):
        datamodule_for(SEQ_LIF, bogus=1)


def test_the_demo_runs_on_a_sequential_digits_entry(tmp_path, capsys):
    from psn_zoo.training.demo import run_demo

    result = run_demo(
        SEQ_LIF, out_dir=str(tmp_path / "runs"), images_per_class=3, limit_train_batches=1, batch_size=16,
        wandb=False, progress=False,
    )  # fmt: skip
    out = capsys.readouterr().out
    assert result.data_dir is None and result.checkpoint.is_file()
    assert "on the SequentialDigits test split" in out and "N-Digits" not in out
    (line,) = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("psn-zoo test ")]
    assert "data_dir" not in line and line.endswith("--data.init_args.images_per_class 3")


def test_hf_hub_entries_get_their_data_and_push_works_from_any_directory(tmp_path, monkeypatch, capsys):
    """``push`` reads the shipped release wherever it runs from; ``transform_for`` / ``datamodule_for`` take the
    ``hf-hub:`` names that ``create_model`` takes."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.chdir(tmp_path)  # no ./checkpoints here
    with FakeHub() as hub:
        assert main(["push", SEQ_LIF, "--repo", "org/lif", "--endpoint", hub.url, "--token", "hf_push"]) == 0
        assert "pushed paper_seq_cnn.seqdigits_lif_t28 -> hf://org/lif@" in capsys.readouterr().out
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert type(datamodule_for("hf-hub:org/lif", data_dir=tmp_path)) is SequentialDigitsDataModule
        assert transform_for("hf-hub:org/lif").steps[0].order is None  # the columns


# ==================================================================================== 8, 9. catalogs and listings
def test_a_manifest_argument_is_a_file_or_a_release_folder_never_silently_nothing(tmp_path):
    for missing in (tmp_path / "nope" / "manifest.json", tmp_path / "nope"):
        with pytest.raises(FileNotFoundError, match=r"does not exist: pass the path of a manifest\.json"):
            list_pretrained(manifest=missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"is a folder without manifest\.json"):
        psn_zoo.list_models(pretrained=True, manifest=tmp_path / "empty")
    release = tmp_path / "release"
    release.mkdir()
    info = get_pretrained_info(SEQ_LIF)
    write_manifest(release / "manifest.json", {SEQ_LIF: info})
    (release / info.weights.file).write_bytes((bundled_dir() / info.weights.file).read_bytes())
    assert list_pretrained(manifest=release) == [SEQ_LIF]
    model = create_model(SEQ_LIF, manifest=release)  # weights next to the manifest of the folder
    assert model.pretrained_cfg == info and not model.training


def test_every_listing_is_one_case_insensitive_filter_taking_a_pattern_or_a_list(capsys):
    assert list_models("SEW*") == list_models("sew*") == ["sew_resnet18", "sew_resnet34", "sew_resnet50"]
    entries = list_models("*ndigits*", pretrained=True)
    assert entries and list_models("*NDIGITS*", pretrained=True) == entries
    assert list_pretrained("SEW*") == list_pretrained("sew*") == ["sew_resnet18.ndigits_psn_t4"]
    assert list_models(["sew*", "spiking_vgg11"]) == ["sew_resnet18", "sew_resnet34", "sew_resnet50", "spiking_vgg11"]
    both = ["paper_cifar10dvs_vgg.ndigits_lif_t4", "sew_resnet18.ndigits_psn_t4"]
    assert list_pretrained(("SEW*", "*lif_t4")) == both
    assert list_neurons("*PSN") == list_neurons("*psn")
    with pytest.raises(TypeError, match="an fnmatch pattern or a list of them"):
        list_models(3)
    assert main(["pretrained", "SEW*"]) == 0 and "sew_resnet18.ndigits_psn_t4" in capsys.readouterr().out
    assert main(["recipes", "SEQDIGITS_LIF"]) == 0 and capsys.readouterr().out.startswith("seqdigits_lif ")


# ========================================================================== 10, 11. what a model is, what stays free
def test_models_show_the_neuron_each_builder_builds(capsys):
    from psn_zoo.models.registry import MODELS, build_model, register_model

    unset = [name for name in list_models() if model_info(name)["defaults"]["neuron"] is None]
    assert unset == ["paper_cifar10dvs_vgg", "paper_cifar10dvs_vggsnn"]
    for name in unset:
        built = build_model(name, width_mult=0.125, input_size=16, T=2)
        assert NeuronSpec.parse(model_info(name)["neuron"]).differences(built.neuron_spec) == []
    assert main(["models", "paper_cifar10dvs*"]) == 0
    out = capsys.readouterr().out
    assert "neuron=None" not in out and "neuron=sliding_psn(k=2, exp_init=True)" in out
    assert "neuron=lif(tau=1.333" in out
    with pytest.raises(TypeError, match="register it with default_neuron"):
        register_model("no_default_neuron_test")(lambda *, neuron=None, T=4: None)
    assert "no_default_neuron_test" not in MODELS


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("paper_seq_cnn.seqdigits_masked_psn_t28", {"lambda_": 0.5}),
        ("paper_seq_cnn.seqdigits_sliding_psn_t28", {"exp_init": False}),
        ("paper_seq_cnn.seqdigits_psn_t28", {"surrogate": "sigmoid"}),
    ],
)
def test_what_the_weights_replace_stays_free_as_documented(name, kwargs):
    reference = create_model(name)
    model = create_model(name, **kwargs)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
    assert model.trained_neuron_spec.get("lambda_") == reference.trained_neuron_spec.get("lambda_")
    if "surrogate" in kwargs:  # no weight holds it: the one asked for is the one used
        assert model.neuron_spec["surrogate"] == "sigmoid"
    with pytest.raises(ValueError, match="does not match the request"):  # what the weights fix stays fixed
        create_model(name, **kwargs, T=8)
    docs = (ROOT / "docs" / "checkpoints.md").read_text()
    assert "stays free, for an entry as for a file" in docs


# ================================================================================================ 11. docs vs code
def test_the_docs_count_and_measure_what_the_manifest_lists():
    names = list_pretrained()
    reproduced = json.loads((ROOT / "docs" / "benchmarks" / "reproduce.json").read_text())
    assert sorted(r["name"] for r in reproduced["records"]) == names  # python -m benchmarks.reproduce measured all
    summary = (ROOT / "docs" / "benchmarks" / "summary.md").read_text()
    assert re.search(rf"\| {len(names)}/{len(names)} +\|", summary)
    assert f"all {len(names)} published entries" in (ROOT / "docs" / "benchmarks.md").read_text()
    table = [line for line in (ROOT / "docs" / "checkpoints.md").read_text().splitlines() if line.startswith("| `")]
    for name in names:  # the sizes are MiB, and say so
        info = get_pretrained_info(name)
        (row,) = [line for line in table if line.startswith(f"| `{name}`")]
        assert row.endswith(f"{info.weights.dtype}, {info.weights.size / 2**20:.1f} MiB |"), row


# ======================================================================================== 12. the command line
def _console(tmp_path: Path, monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["psn-zoo", *argv])
    try:
        code = main()
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def test_usage_errors_exit_2_and_name_the_flag_given(tmp_path, monkeypatch, capsys):
    ckpt = _checkpoint(tmp_path / "run", dict(TINY_DATA))
    code, err = _console(tmp_path, monkeypatch, capsys, "publish", str(ckpt), "--recipe", "nothere", "--name",
                         "paper_seq_cnn.x", "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and "--recipe nothere: no such file" in err and "--config" not in err, err
    code, err = _console(tmp_path, monkeypatch, capsys, "fit", "--config", "typo")
    assert code == 2 and "--config typo: no such file and no recipe of that name" in err, err


def test_a_reader_that_leaves_early_ends_the_listing_quietly(monkeypatch, capsys):
    """``psn-zoo neurons | head``: the reader goes before the output is written; no "error: [Errno 32] Broken pipe",
    the status of a process that SIGPIPE ends, and stdout pointed where a later flush (at exit) cannot fail."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line
    stdout, captured = os.fdopen(write, "w"), sys.stdout
    monkeypatch.setattr(sys, "argv", ["psn-zoo", "neurons"])
    sys.stdout = stdout
    try:
        assert main() == 141
        print("written at exit")
        sys.stdout.flush()  # what the interpreter does at exit: no second error
    finally:
        sys.stdout = captured
        stdout.close()
    assert capsys.readouterr().err == ""


def test_neurons_tree_filters_and_summaries_are_whole_sentences(capsys):
    assert main(["neurons", "--tree", "sliding_psn"]) == 0
    tree = capsys.readouterr().out
    names = {re.match(r"\s*(?:└─ )?(\w+)", line)[1] for line in tree.splitlines()}
    assert names == {"channel_sliding_psn", "sliding_psn", "psn", "masked_psn"}  # itself, above, below
    assert main(["neurons", "--tree", "nothing*"]) == 1
    capsys.readouterr()
    assert main(["neurons", "paralif"]) == 0
    paralif = " ".join(capsys.readouterr().out.split())
    assert "the stochastic SPSN); any T, streaming." in paralif
    assert main(["neurons", "pmsn"]) == 0
    assert "all parallel over T (any T)." in " ".join(capsys.readouterr().out.split())


def test_benchmark_selections_that_select_nothing_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import __main__ as suite
    from benchmarks import frontier

    def never(*args, **kwargs):
        raise AssertionError("an empty --only started the suite")

    monkeypatch.setattr(suite, "run_suite", never)
    with pytest.raises(SystemExit) as stop:
        suite.main(["--only", "", "--out", str(tmp_path / "bench")])
    assert stop.value.code == 2 and "--only '' names no part" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        frontier.main(["--list", "--only", "nosuch"])
    assert stop.value.code == 2 and "matches no run id" in capsys.readouterr().err
    assert frontier.main(["--list", "--only", "*-pmsn-s0"]) in (0, None)
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 3 and all("-pmsn-s0" in line for line in listed)
