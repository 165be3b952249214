"""The training recipes that ship with the package (``psn_zoo/recipes/*.yaml``; ``configs/`` in the repository).

``--config ndigits_psn_vgg`` names a recipe; ``--config path/to/file.yaml`` is a file. A path that does not exist
but whose name is a shipped recipe (``configs/ndigits_psn_vgg.yaml``, as the docs and the checkpoint manifest
write it) is the shipped recipe, so those commands work from any directory.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

_SUFFIXES = (".yaml", ".yml")


def recipes_dir() -> Path:
    """The folder of the shipped recipes."""
    return Path(str(resources.files("psn_zoo") / "recipes"))


def list_recipes() -> list[str]:
    """The shipped recipes' names, sorted (``psn-zoo recipes``)."""
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def recipe_summary(name: str) -> str:
    """The first comment line of a recipe (what it reproduces)."""
    for line in recipe_path(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def recipe_path(name: str) -> Path:
    """The file of the shipped recipe ``name`` (with or without ``.yaml``); unknown names list the recipes."""
    stem = Path(name).name
    for suffix in _SUFFIXES:
        stem = stem.removesuffix(suffix)
    path = recipes_dir() / f"{stem}.yaml"
    if path.is_file():
        return path
    raise FileNotFoundError(_unknown(name, stem))


def resolve_config(value: str) -> str:
    """What a ``--config`` value means: an existing file as is, a recipe name (or a missing ``configs/<name>.yaml``)
    as the shipped recipe, anything else a clear error. Inline YAML (``--config '{...}'``) passes through."""
    text = value.strip()
    if not text or text.startswith(("{", "[")) or "\n" in text or Path(value).expanduser().exists():
        return value
    path = Path(value)
    looks_like_recipe = path.suffix in ("", *_SUFFIXES) and path.parent.name in ("", "configs", "recipes")
    stem = path.name
    for suffix in _SUFFIXES:
        stem = stem.removesuffix(suffix)
    if looks_like_recipe and (recipes_dir() / f"{stem}.yaml").is_file():
        return str(recipes_dir() / f"{stem}.yaml")
    if path.suffix in _SUFFIXES and not looks_like_recipe:
        raise FileNotFoundError(f"--config {value}: no such file. Give an existing YAML file or a recipe name "
                                f"({', '.join(list_recipes()[:4])}, ...; `psn-zoo recipes` lists them)")  # fmt: skip
    raise FileNotFoundError(_unknown(value, stem))


def _unknown(value: str, stem: str) -> str:
    names = list_recipes()
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return (
        f"--config {value}: no such file and no recipe of that name.{hint} The shipped recipes are: "
        f"{', '.join(names)} (`psn-zoo recipes` describes them); or give the path of a YAML file."
    )
