"""The import graph: the checkpoint store (``psn_zoo.hub``) never imports the models, so there is no cycle between
them (the models import the hub to build pretrained networks; the hub stores and verifies files only)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import psn_zoo

PACKAGE = Path(psn_zoo.__file__).parent
# Function-level imports the static check may excuse (none: the hub's old forwarders to the models are gone).
TRANSITIONAL: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = ["psn_zoo", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str | None = None) -> list[tuple[str, str | None]]:
    """``(imported module, enclosing top-level function or None)`` for every import statement in ``path``, at module
    level or inside functions, relative imports resolved. ``from psn_zoo import name`` counts as the module that
    ``psn_zoo`` forwards ``name`` to."""
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            scope = function
            if function is None and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                scope = child.name
            if isinstance(child, ast.Import):
                found.extend((alias.name, scope) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package.split(".")
                target = ".".join(base[: len(base) - child.level + 1] + ([child.module] if child.module else []))
                target = child.module if child.level == 0 else target
                for alias in child.names:
                    forwarded = psn_zoo._EXPORTS.get(alias.name) if target == "psn_zoo" else None
                    found.append((forwarded or target, scope))
            visit(child, scope)

    visit(ast.parse(path.read_text()), None)
    return found


def _subpackage(module: str) -> str | None:
    """``psn_zoo.hub.sources`` -> ``hub``; ``psn_zoo.safe_load`` -> ``safe_load``; outside psn_zoo -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "psn_zoo" and len(parts) > 1 else None


def _graph(allow_transitional: bool) -> dict[str, set[str]]:
    """Which psn_zoo subpackage (or top-level module) imports which, anywhere in its files."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        source = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else None
        if source is None:
            continue
        for target, function in _imports(path):
            if allow_transitional and (rel.as_posix(), function) in TRANSITIONAL:
                continue
            sub = _subpackage(target)
            if sub is not None and sub != source:
                graph.setdefault(source, set()).add(sub)
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_hub_imports_nothing_that_leads_to_the_models():
    graph = _graph(allow_transitional=True)
    assert "hub" in _reachable(graph, "models"), "the models build pretrained networks through the hub"
    reachable = _reachable(graph, "hub")
    assert "models" not in reachable and "training" not in reachable, (reachable, graph.get("hub"))
    offenders = [
        (path.relative_to(PACKAGE).as_posix(), target, function)
        for path in sorted((PACKAGE / "hub").glob("*.py"))
        for target, function in _imports(path)
        if _subpackage(target) in ("models", "training", "neurons")
        and (path.relative_to(PACKAGE).as_posix(), function) not in TRANSITIONAL
    ]
    assert offenders == []


def test_the_check_sees_imports_inside_functions_and_through_the_package(tmp_path):
    """The static check is not blind: it sees function-level imports, resolves relative imports, and ``from ..
    import create_model`` to the models; with nothing excused, the hub still reaches no model code."""
    strict = _graph(allow_transitional=False)
    assert "models" not in strict.get("hub", set()) and strict == _graph(allow_transitional=True)
    probe = tmp_path / "probe.py"
    probe.write_text("import json\nfrom ..models import convert\n\n\ndef f():\n    from .. import create_model\n")
    assert _imports(probe, module="psn_zoo.hub.probe") == [
        ("json", None),
        ("psn_zoo.models", None),
        ("psn_zoo.models", "f"),
    ]


@pytest.mark.parametrize("module", ["psn_zoo.hub", "psn_zoo.hub.publish", "psn_zoo.hub.sources", "psn_zoo.safe_load"])
def test_importing_the_hub_loads_no_model_code(module):
    code = (
        f"import sys, {module}\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('psn_zoo.models', 'psn_zoo.training', "
        "'psn_zoo.neurons')))\n"
        "print(loaded)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_models_import_the_hub_and_the_hub_no_longer_builds_models():
    code = (
        "import sys\n"
        "import psn_zoo\n"
        "assert 'psn_zoo.models' not in sys.modules\n"
        "psn_zoo.create_model\n"
        "assert 'psn_zoo.hub' in sys.modules and 'psn_zoo.models._builder' in sys.modules\n"
        "import psn_zoo.hub, psn_zoo.hub.publish\n"
        "assert not hasattr(psn_zoo.hub, 'load_pretrained'), 'use psn_zoo.load_pretrained'\n"
        "assert not hasattr(psn_zoo.hub.publish, 'import_paper_checkpoint'), 'use psn_zoo.models.convert'\n"
        "from psn_zoo.models.convert import import_paper_checkpoint, import_spikingjelly_state\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
