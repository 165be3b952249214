"""The README's five-minute tour runs as written: its Python blocks, in order, in a fresh interpreter started
outside the repository (the front door's timm-style calls work from an installed psn_zoo)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_five_minute_tours_python_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    tour = readme.split("## Five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", tour, re.S)
    assert len(blocks) >= 3
    check = """
assert tuple(logits.shape) == (8, 11) and spikes.shape == (4, 32, 128)
assert info.name == "paper_cifar10dvs_vgg.ndigits_psn_t4" and [s.__class__.__name__ for s in transform.steps] == [
    "ValidEvents", "ToFrame", "ToFloatFrames"]
print("tour ok")
"""
    result = subprocess.run([sys.executable, "-c", "\n".join(blocks) + check], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0 and "tour ok" in result.stdout, result.stderr[-3000:]
