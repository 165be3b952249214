"""What ``pip install`` gets: the wheel built from this checkout ships the recipes, adds no new top-level import
name, and declares the extras ([vision], [export], and [test] holding both)."""

from __future__ import annotations

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
    assert top == {"psn_zoo", "datamodules", "checkpoints"}, top  # configs/ is the repository's link, not a package
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
