"""The Markdown pages hold together: every relative link and image in the repository's Markdown (README, SECURITY,
docs/, the checkpoint cards) names a file that exists, and every ``#anchor`` a heading of its target page (GitHub's
heading slugs); docs/training.md's recipe table lists every shipped recipe, and the checkpoint tables show the
manifest's numbers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from psn_zoo.hub import get_pretrained_info, list_pretrained
from psn_zoo.training.recipes import list_recipes

ROOT = Path(__file__).resolve().parents[1]
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def markdown_files() -> list[Path]:
    """The tracked Markdown files (what a clone has)."""
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if line]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", page.read_text()).splitlines():
        if match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = slug(match[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    out |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", page.read_text()))
    return out


def links(page: Path) -> list[str]:
    return [m for m in _LINK.findall(_FENCE.sub("", page.read_text())) if not re.match(r"[a-z][a-z+.-]*:", m)]


FILES = markdown_files()


def test_the_markdown_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "SECURITY.md", "docs/checkpoints.md", "docs/neurons.md"} <= names


def test_slugs_follow_githubs_rule():
    assert slug("On a GPU (NVIDIA H200)") == "on-a-gpu-nvidia-h200"
    assert slug("4. Speed and efficiency") == "4-speed-and-efficiency"
    assert slug("`psn-zoo fit` with **W&B**") == "psn-zoo-fit-with-wb"


@pytest.mark.parametrize("page", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def expand(name: str) -> list[str]:
    """``seqdigits_{psn,lif}`` -> ``['seqdigits_psn', 'seqdigits_lif']`` (the table's brace shorthand)."""
    match = re.search(r"\{([^{}]*)\}", name)
    if not match:
        return [name]
    return [n for part in match[1].split(",") for n in expand(name[: match.start()] + part + name[match.end():])]


def test_the_recipe_table_lists_every_shipped_recipe():
    table = (ROOT / "docs" / "training.md").read_text().split("## Recipes", 1)[1].split("\n## ", 1)[0]
    named = set()
    for row in re.findall(r"^\| (`[^|]*`) \|", table, re.M):
        for cell in re.findall(r"`([^`]+)`", row):
            named.update(expand(cell))
    shipped = set(list_recipes())
    assert not shipped - named, f"recipes missing from docs/training.md's table: {sorted(shipped - named)}"
    assert not named - shipped, f"docs/training.md's table names recipes that do not exist: {sorted(named - shipped)}"


def table_rows(page: str) -> dict[str, list[str]]:
    """The rows of ``page``'s tables that start with a published entry's name: ``{name: [cells]}``."""
    rows = {}
    for line in (ROOT / page).read_text().splitlines():
        if match := re.match(r"\| `([a-z0-9_]+\.[a-z0-9_]+)` \|(.*)\|\s*$", line):
            rows[match[1]] = [c.strip() for c in match[2].split("|")]
    return rows


@pytest.mark.parametrize("page", ["README.md", "docs/checkpoints.md"])
def test_the_checkpoint_tables_show_the_manifests_numbers(page):
    """Every published entry has a row, and its top-1 (and on docs/checkpoints.md its firing rate and energies) are
    the manifest's, rounded as shown: a re-measured manifest makes a stale table fail here."""
    rows = table_rows(page)
    assert set(rows) == set(list_pretrained()), f"{page}: rows {sorted(rows)} vs entries {sorted(list_pretrained())}"
    for name, cells in rows.items():
        m = get_pretrained_info(name).metrics
        assert f"{100 * m['top1']:.2f}" in cells, (page, name, cells)
        if page == "docs/checkpoints.md":
            assert f"{m['mean_firing_rate']:.3f}" in cells, (page, name, cells)
            assert f"{m['energy_uj']:.1f} / {m['energy_uj_without_neurons']:.1f}" in cells, (page, name, cells)


def test_the_family_tree_in_the_neuron_docs_is_the_registrys():
    """docs/neurons.md prints ``neuron_tree()``: the same text, so a neuron or a condition added to a class shows there
    (glif and klif were missing, and FPT-LIF's conditions had changed)."""
    from psn_zoo.neurons import neuron_tree

    blocks, block = [], None
    for line in (ROOT / "docs" / "neurons.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            block = [] if block is None else blocks.append("\n".join(block))  # opens, or closes (None)
        elif block is not None:
            block.append(line)
    [shown] = [b for b in blocks if "[reset:" in b]
    assert shown == neuron_tree().rstrip("\n")
