"""What ``pip install`` gets: the wheel built from this checkout ships the recipes, installs one top-level import
name (``psn_zoo``: the repository's ``datamodules/`` and ``checkpoints/`` go inside it), and declares the extras
([vision], [export], and [test] holding both). Nothing a user has in the working directory shadows it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from psn_zoo.training.recipes import list_recipes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel of a copy of the checkout (the build writes build/ and *.egg-info next to its sources)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info")
    for name in ("psn_zoo", "datamodules", "checkpoints"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (path,) = out.glob("psn_zoo-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_every_recipe_and_no_new_top_level_name(wheel):
    names = wheel.namelist()
    shipped = sorted(Path(n).stem for n in names if n.startswith("psn_zoo/recipes/") and n.endswith(".yaml"))
    assert shipped == list_recipes() and len(shipped) >= 20
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"psn_zoo"}, top  # configs/ is the repository's link; datamodules/ and checkpoints/ go inside
    assert "psn_zoo/datamodules/ndigits.py" in names and "psn_zoo/checkpoints/manifest.json" in names
    weights = [n for n in names if n.startswith("psn_zoo/checkpoints/") and n.endswith(".safetensors")]
    assert len(weights) == len(json.loads(wheel.read("psn_zoo/checkpoints/manifest.json"))["entries"])
    assert "psn_zoo/neurons/csrc/psn_cpu.c" in names
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "psn-zoo = psn_zoo.cli:main" in wheel.read(entry).decode()


def test_the_wheel_declares_the_extras(wheel):
    metadata = Parser().parsestr(wheel.read(next(n for n in wheel.namelist() if n.endswith("METADATA"))).decode())
    assert {"vision", "export", "test"} <= set(metadata.get_all("Provides-Extra"))
    requires = metadata.get_all("Requires-Dist")
    extras = ("vision", "export", "test")
    by_extra = {e: {r.split(";")[0].strip() for r in requires if f'extra == "{e}"' in r} for e in extras}
    assert any(r.startswith("torchvision") for r in by_extra["vision"])
    assert {r.split(">")[0] for r in by_extra["export"]} == {"onnx", "onnxscript", "onnxruntime"}
    assert any(r.startswith("psn-zoo[") and "export" in r and "vision" in r for r in by_extra["test"])
    core = [r for r in requires if "extra ==" not in r]
    assert not any(r.startswith(("onnx", "torchvision", "spikingjelly")) for r in core)  # only for some users


def test_every_package_of_the_checkout_is_in_the_wheel(wheel):
    """pyproject lists the packages explicitly (two of them live outside psn_zoo/): none may be forgotten."""
    names = set(wheel.namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "psn_zoo").rglob("__init__.py")}
    expected |= {"psn_zoo/datamodules/__init__.py", "psn_zoo/checkpoints/__init__.py"}
    assert expected <= names, sorted(expected - names)
    for module in (ROOT / "datamodules").glob("*.py"):
        assert f"psn_zoo/datamodules/{module.name}" in names


_SHADOW_CHECK = """
import importlib.util, sys
from psn_zoo import list_pretrained, load_pretrained
from psn_zoo.datamodules import NDigitsDataModule
import psn_zoo.datamodules, psn_zoo.checkpoints
assert psn_zoo.datamodules.__file__.startswith(sys.argv[1]) and psn_zoo.checkpoints.__file__.startswith(sys.argv[1])
names = list_pretrained()
assert len(names) >= 7, names
model = load_pretrained(names[0])
assert NDigitsDataModule.__module__ == "psn_zoo.datamodules.ndigits"
assert "datamodules" not in sys.modules and "checkpoints" not in sys.modules
print("unshadowed", len(names))
"""


@pytest.mark.parametrize("clutter", ["module", "packages"])
def test_the_users_working_directory_shadows_nothing(tmp_path, clutter):
    """A user's own ./datamodules.py with an empty ./checkpoints/ folder (``module``), or ./datamodules/ and
    ./checkpoints/ packages of their own (``packages``; both would fail if imported), change nothing: psn_zoo's
    DataModules and checkpoints are found inside psn_zoo, by the API and by the psn-zoo command."""
    poison = "raise ImportError('the user\\'s own module was imported instead of psn_zoo\\'s')\n"
    (tmp_path / "checkpoints").mkdir()
    if clutter == "module":
        (tmp_path / "datamodules.py").write_text(poison)
    else:
        (tmp_path / "datamodules").mkdir()
        (tmp_path / "datamodules" / "__init__.py").write_text(poison)
        (tmp_path / "checkpoints" / "__init__.py").write_text(poison)
    import psn_zoo

    installed = str(Path(psn_zoo.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", _SHADOW_CHECK, installed], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0 and "unshadowed" in result.stdout, result.stderr[-3000:]
    if clutter == "module":
        cli = subprocess.run(
            [sys.executable, "-m", "psn_zoo.cli", "pretrained"], cwd=tmp_path, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert cli.returncode == 0 and "ndigits_psn_t4" in cli.stdout, cli.stderr[-3000:]
