"""The psn-zoo command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from psn_zoo.cli import main
from psn_zoo.neurons import list_neurons


def test_neurons_command_lists_the_registry(capsys):
    assert main(["neurons"]) == 0
    out = capsys.readouterr().out
    for name in list_neurons():
        assert f"\n{name} " in f"\n{out}"
    assert "alias: if5" in out and "parallel-only" in out


def test_neurons_command_filters_and_reports_no_match(capsys):
    assert main(["neurons", "*psn"]) == 0
    out = capsys.readouterr().out
    assert "sliding_psn" in out and "\nlif " not in out
    assert main(["neurons", "nothing*"]) == 1


def test_console_script_is_installed():
    exe = shutil.which("psn-zoo")
    assert exe, "`pip install -e .` must provide the psn-zoo command"
    result = subprocess.run([exe, "neurons", "psn"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("psn ")


def test_models_command(capsys):
    assert main(["models", "sew*"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("sew_resnet18 ") and "neuron=psn" in out
    assert main(["models", "nope*"]) == 1


def test_a_torchvision_that_does_not_load_gets_a_clear_error_before_training_commands(monkeypatch, capsys):
    """A torchvision built for another torch (test extras, then the demo's torch pin) fails inside torchmetrics
    with 'operator torchvision::nms does not exist'; the CLI names the cause and the fix first."""
    from psn_zoo.cli import main

    working = sys.modules.get("torchvision")
    monkeypatch.setitem(sys.modules, "torchvision", None)  # its import fails, as a mismatched build's does
    for command in ("demo", "fit"):
        with pytest.raises(SystemExit, match=r"torchvision \S+ does not load with the installed torch .*2\.14\.1"):
            main([command, "--help"])
    if working is not None:  # a working torchvision: the command runs (here: its help)
        monkeypatch.setitem(sys.modules, "torchvision", working)
    else:
        monkeypatch.delitem(sys.modules, "torchvision")
    with pytest.raises(SystemExit) as ok:
        main(["demo", "--help"])
    assert ok.value.code == 0 and "demo" in capsys.readouterr().out


def test_a_misspelt_command_gets_the_closest_one_and_the_full_list(capsys):
    assert main(["fitt"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'fitt'" in err and "Did you mean `psn-zoo fit`?" in err
    assert all(name in err for name in ("fit", "validate", "test", "predict", "demo", "recipes", "bench"))
    assert main(["pretraned"]) == 2 and "Did you mean `psn-zoo pretrained`?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out
    assert "{demo,fit,validate,test,predict,bench,recipes," in usage and "LightningCLI validate" in usage


def test_bench_hands_every_argument_to_the_benchmarks(monkeypatch, tmp_path):
    """`psn-zoo bench --quick` / `--help` used to fail with 'unrecognized arguments'; relative folders are the
    caller's (the benchmarks run from the checkout)."""
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command, **kw: calls.append((command, kw)) or 0)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick", "--out", "reports", "--only=speed", "--data-dir=nd"]) == 0
    assert main(["bench", "--help"]) == 0
    (quick, kw), (helped, _) = calls
    assert quick[1:] == ["-m", "benchmarks", "--quick", "--out", str(tmp_path / "reports"), "--only=speed",
                         f"--data-dir={tmp_path / 'nd'}"]  # fmt: skip
    assert (Path(kw["cwd"]) / "benchmarks" / "__main__.py").is_file() and helped[1:] == ["-m", "benchmarks", "--help"]


def test_recipes_are_listed_and_named_from_any_directory(capsys, monkeypatch, tmp_path):
    from psn_zoo.training.recipes import list_recipes, recipe_path, resolve_config

    monkeypatch.chdir(tmp_path)
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert len(list_recipes()) >= 20 and all(f"{name} " in out for name in list_recipes())
    assert "psn-zoo fit --config" in out
    shipped = str(recipe_path("ndigits_psn_vgg"))
    for spelling in ("ndigits_psn_vgg", "ndigits_psn_vgg.yaml", "configs/ndigits_psn_vgg.yaml"):  # no such file here
        assert resolve_config(spelling) == shipped
    own = tmp_path / "configs" / "ndigits_psn_vgg.yaml"  # a file of that path wins
    own.parent.mkdir()
    own.write_text("seed_everything: 1\n")
    assert resolve_config("configs/ndigits_psn_vgg.yaml") == "configs/ndigits_psn_vgg.yaml"
    with pytest.raises(FileNotFoundError, match=r"no recipe of that name\. Did you mean ndigits_psn_vgg.*The shipped"):
        resolve_config("ndigits_psn_vg")
    with pytest.raises(FileNotFoundError, match=r"mine/run\.yaml: no such file.*psn-zoo recipes"):
        resolve_config("mine/run.yaml")
    with pytest.raises(SystemExit, match=r"psn-zoo: error: --config ndigts_psn_vgg: .*Did you mean ndigits_psn_vgg"):
        main(["fit", "--config", "ndigts_psn_vgg"])
    assert main(["recipes", "nope*"]) == 1


def test_a_misspelt_datamodule_gets_the_closest_one():
    expected = r"--data NDigitDataModule: no such DataModule\. Did you mean NDigitsDataModule\? The zoo's DataModules"
    with pytest.raises(SystemExit, match=expected):
        main(["fit", "--data", "NDigitDataModule", "--trainer.logger", "false"])


def test_neurons_command_shows_the_family_tree_and_flags(capsys):
    assert main(["neurons", "--tree"]) == 0
    tree = capsys.readouterr().out
    assert "fpt_lif [reset: fixed_point" in tree and "└─ lif [reset: exact" in tree  # FPT generalises the LIF
    assert main(["neurons", "sliding_psn"]) == 0
    listing = capsys.readouterr().out
    assert "reset: none" in listing and "streamable" in listing


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--trainer.enable_checkpointing", "false"], "enable_checkpointing=False` but found `ModelCheckpoint`"),
        (["--model.neuron_kwargs", '{"T": 0}'], "neuron spec fixes T=0 but the model runs T=28"),
    ],
    ids=["lightning-misconfiguration", "bad-neuron-argument"],
)
def test_a_training_command_error_is_one_line_on_the_command_line(extra, message, tmp_path):
    """`psn-zoo fit` with a setting Lightning refuses or a neuron argument psn_zoo refuses: one line naming it,
    exit 2, no traceback (PSN_ZOO_TRACEBACK=1 shows it), and no LightningCLI warning about being given both an
    argument list and a command line (the recipe name is resolved into a list on every console run)."""
    exe = shutil.which("psn-zoo")
    assert exe, "the console script is installed with the package"
    command = [exe, "fit", "--config", "seqdigits_psn", *extra, "--trainer.fast_dev_run", "1",
               "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("psn-zoo fit: error: ") and message in last and "PSN_ZOO_TRACEBACK=1" in last, last
    assert "Traceback" not in done.stderr and "args parameter is intended" not in done.stderr, done.stderr[-2000:]
    traced = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PSN_ZOO_TRACEBACK": "1"})  # fmt: skip
    assert traced.returncode != 0 and "Traceback" in traced.stderr and message in traced.stderr


def test_a_corrupt_sample_read_by_a_dataloader_worker_is_one_line_naming_the_file(tmp_path):
    """`psn-zoo test` on a truncated N-MNIST file read by DataLoader workers: one line naming the file, exit 2, no
    traceback and no "Caught CorruptSampleError in DataLoader worker process" preamble (was: a traceback, exit 1)."""
    import yaml
    from native_fixtures import write_nmnist

    write_nmnist(tmp_path / "data", per_class=1)
    victim = tmp_path / "data" / "NMNIST" / "Test" / "3" / "00300.bin"
    victim.write_bytes(victim.read_bytes()[:-3])
    data = {"data_dir": str(tmp_path / "data"), "T": 4, "num_workers": 2, "cache": "none", "val_fraction": 0.0}
    config = {
        "trainer": {"accelerator": "cpu", "logger": False, "enable_progress_bar": False},
        "model": {"model_kwargs": {"input_size": 34, "width_mult": 0.125}, "log_input_samples": 0},
        "data": {"class_path": "psn_zoo.datamodules.NMNISTDataModule", "init_args": {**data, "batch_size": 4}},
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(config))
    exe = shutil.which("psn-zoo")
    assert exe, "the console script is installed with the package"
    command = [exe, "test", "--config", str(tmp_path / "test.yaml"), "--trainer.default_root_dir", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"psn-zoo test: error: cannot read sample 3 of NMNIST from {victim}: "), last
    assert "truncated or corrupt" in last and "PSN_ZOO_TRACEBACK=1" in last
    assert "Traceback" not in done.stderr and "Caught" not in done.stderr, done.stderr[-3000:]
