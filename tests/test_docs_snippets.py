"""Every Python snippet in docs/*.md runs as written: a page's blocks, in order, in a fresh interpreter started outside
the repository (the README's tour is tests/test_readme_tour.py; the pages' inline commands tests/test_docs_commands.py).

Only what cannot run here is changed: ``hf-hub:`` names are served from 127.0.0.1 (``HF_ENDPOINT``) with a shipped
entry's record and weights, as ``psn-zoo push`` writes them; the N-Digits data is the session's freshly generated
default split (``PSN_ZOO_DATA``); a documented fit is cut to two batches by a stated, checked substitution."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hub_servers import HostileHub
from procs import clean_env, run

from psn_zoo.hub import get_pretrained_info

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p.name for p in (ROOT / "docs").glob("*.md") if "```python" in p.read_text())
#: The one entry the pages' ``hf-hub:org/repo`` names stand for.
HUB_ENTRY = "paper_cifar10dvs_vgg.ndigits_psn_t4"
#: (page, text, replacement): what a page shows that would run for minutes here.
SHORTER = [("training.md", "L.Trainer(max_epochs=10)",
            "L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=2, logger=False, "
            "enable_checkpointing=False, enable_progress_bar=False)")]  # fmt: skip


def page_code(name: str) -> str:
    code = "\n".join(re.findall(r"```python\n(.*?)```", (ROOT / "docs" / name).read_text(), re.S))
    for page, text, replacement in SHORTER:
        if page == name:
            assert code.count(text) == 1, f"docs/{page} no longer shows {text!r}: update SHORTER"
            code = code.replace(text, replacement)
    return code


def test_the_pages_with_snippets_are_the_ones_expected():
    """A new page with Python is picked up by the parametrisation below; this pins the current set."""
    assert {"checkpoints.md", "data.md", "models.md", "neurons.md", "training.md"} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_a_docs_pages_python_runs_as_written(page, tmp_path, default_ndigits):
    info = get_pretrained_info(HUB_ENTRY)
    files = {"config.json": json.dumps(info.to_dict()).encode(),
             info.weights.file: (ROOT / "checkpoints" / info.weights.file).read_bytes()}  # fmt: skip
    work = tmp_path / "cwd"
    work.mkdir()
    with HostileHub(files) as hub:
        env = clean_env(HF_ENDPOINT=hub.url, PSN_ZOO_DATA=str(default_ndigits), PSN_ZOO_CACHE=str(tmp_path / "cache"),
                        HF_HOME=str(tmp_path / "hf_home"), WANDB_MODE="disabled")  # fmt: skip
        result = run(["-c", page_code(page) + '\nprint("page ok")'], work, 600, env)
        asked_hub = bool(hub.requests)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("page ok"), result.stdout[-3000:]
    assert asked_hub == ("hf-hub:" in page_code(page)), "the page's hf-hub: names must come from the local hub"
