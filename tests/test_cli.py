"""The psn-zoo command."""

from __future__ import annotations

import shutil
import subprocess
import sys

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
