"""Every command in README.md, docs/*.md and the demo's printed "next steps", taken from the text (``bash`` code
blocks and inline ``psn-zoo ...`` / ``python -m ...`` spans), checked from a temporary directory outside the
repository.

How each command is checked (see :func:`check`):

- **run fully, on tiny settings** (the overrides of :data:`TINY` appended: 1 epoch of 2 batches, no logger, one
  CPU device, a few N-Digits images): ``psn-zoo fit|validate|test|predict`` with a recipe whose data is embedded
  (N-Digits, sequential digits), in-process through :func:`psn_zoo.cli.main`; a documented ``--trainer.devices 2
  --trainer.strategy ddp`` is therefore replaced (DDP runs in test_training_runs.py). ``--help`` of any command,
  and of a bare mention in prose (```psn-zoo push```). The listing commands (``recipes``, ``pretrained``,
  ``neurons``, ``models``): the first through the installed ``psn-zoo`` console script, the others in-process.
  ``python -c`` snippets in a fresh interpreter.
- **parsed only**: LightningCLI commands whose data must be downloaded (ImageNet, CIFAR, CIFAR10-DVS) are parsed
  with the recipe and every documented flag (``--print_config``); the argparse commands that would download,
  publish, push or run for minutes (``demo``, ``publish``, ``import-*``, ``push``, ``bench`` and every ``python -m
  benchmarks...``) are parsed by their real parsers and stopped right after parsing. ``psn-zoo demo`` itself runs in
  test_demo.py; ``bench`` is checked to hand every argument to ``python -m benchmarks``, whose parser takes them.
- **skipped**: ``pip install``, ``ruff``, ``pytest`` (CI runs that line itself) and ``wandb sync`` (W&B's command).

Placeholders are filled in: ``{a,b}`` gives every alternative, ``[...]`` is included without its brackets, a seed
``S`` is 0, ``<...>`` in a recipe name is any recipe that fits, and a ``--ckpt_path`` with ``<...>``, ``...`` or
``*`` is a checkpoint of the same recipe fitted here.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from procs import clean_env

from psn_zoo.cli import main
from psn_zoo.training.recipes import list_recipes, recipe_path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LIGHTNING = ("fit", "validate", "test", "predict")
EMBEDDED = ("psn_zoo.datamodules.NDigitsDataModule", "psn_zoo.datamodules.SequentialDigitsDataModule")
#: appended to every fully run LightningCLI command (later flags win in LightningCLI)
TINY = [
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
    "--trainer.limit_test_batches", "2", "--trainer.limit_predict_batches", "2", "--trainer.num_sanity_val_steps", "0",
    "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
    "--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.num_nodes", "1", "--trainer.precision", "32",
    "--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0", "--data.init_args.images_per_class", "10",
]  # fmt: skip
CONSOLE = ("recipes", "pretrained", "neurons", "models")  # run through the installed psn-zoo script
SKIPPED = ("pip", "ruff", "pytest", "wandb")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


# ---------------------------------------------------------------------------------------------- extraction
def _tokens(text: str) -> list[list[str]]:
    """Shell words of each simple command in ``text`` (continuations joined, comments dropped, ``&&`` split)."""
    words = shlex.split(text.replace("\\\n", " "), comments=True)
    commands, current = [], []
    for word in words:
        if word in ("&&", ";"):
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in [*commands, current] if c]


def _normalise(words: list[str]) -> list[str] | None:
    """The psn-zoo / python argv of a documented command, or None for commands this test does not check."""
    if words[0] == "srun":
        words = words[1:]
    if words[0] == "torchrun":  # torchrun [its flags] -m psn_zoo.cli ARGS: the psn-zoo command
        i = words.index("-m")
        words = ["psn-zoo", *words[i + 2 :]] if words[i + 1] == "psn_zoo.cli" else ["python", *words[i:]]
    if words[0] in SKIPPED:
        return None
    if words[0] not in ("psn-zoo", "python"):
        raise AssertionError(f"a documented command this test does not know how to check: {shlex.join(words)}")
    return words


def doc_commands(path: Path) -> list[Command]:
    """The commands of ``bash`` blocks and the inline ``psn-zoo ...`` / ``python -m ...`` spans of one file."""
    text = path.read_text()
    found: list[Command] = []
    name = path.relative_to(ROOT).as_posix()
    for block in re.finditer(r"^```(bash|sh|shell)\n(.*?)^```", text, re.M | re.S):
        line = text[: block.start(2)].count("\n") + 1
        for offset, chunk in enumerate(re.split(r"(?<!\\)\n", block.group(2))):
            if chunk.strip().startswith("#"):
                continue
            for words in _tokens(chunk):
                if (argv := _normalise(words)) is not None:
                    found.append(Command(f"{name}:{line + offset}", tuple(argv)))
    prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.M | re.S)
    for span in re.finditer(r"`((?:psn-zoo|python -m) [^`|]+)`", prose):
        line = prose[: span.start()].count("\n") + 1
        for words in _tokens(span.group(1)):
            if (argv := _normalise(words)) is not None:
                found.append(Command(f"{name}:{line}", tuple(argv)))
    return found


def _expand(argv: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Fill the placeholders: ``<two words>`` as one, every ``{a,b}`` alternative, ``[...]`` included, seed ``S``
    = 0."""
    words: list[str] = []
    for w in argv:
        if words and words[-1].startswith("<") and ">" not in words[-1]:
            words[-1] += f" {w}"
        else:
            words.append(w)
    words = [w.strip("[]") if (w.startswith("[") or w.endswith("]")) and "=" not in w else w for w in words]
    words = ["0" if w == "S" else w for w in words]
    options = []
    for w in words:
        m = re.search(r"\{([\w.-]+(?:,[\w.-]+)+)\}", w)
        options.append([w[: m.start()] + alt + w[m.end() :] for alt in m.group(1).split(",")] if m else [w])
    return [tuple(c) for c in itertools.product(*options)]


def _all() -> list[Command]:
    """Every documented command once (the first place it appears)."""
    seen: dict[tuple[str, ...], Command] = {}
    for doc in DOCS:
        for c in doc_commands(doc):
            for argv in _expand(c.argv):
                seen.setdefault(argv, Command(c.where, argv))
    return list(seen.values())


ALL = _all()


# ---------------------------------------------------------------------------------------------- checking
class Parsed(Exception):
    """Raised right after an argparse parser accepted a command line (parse-only checks)."""


@pytest.fixture
def parse_only(monkeypatch):
    """argparse parsers stop with :class:`Parsed` once the whole command line is accepted (their real checks,
    unknown arguments included, run first)."""
    original_args, original_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    inside = []

    def parse_args(self, args=None, namespace=None):
        if type(self).__module__.startswith(("jsonargparse", "lightning")):  # LightningCLI: not an argparse command
            return original_args(self, args, namespace)
        inside.append(True)
        try:
            namespace = original_args(self, args, namespace)
        finally:
            inside.pop()
        raise Parsed(namespace)

    def parse_known_args(self, args=None, namespace=None):
        result = original_known(self, args, namespace)
        if not inside and not type(self).__module__.startswith(("jsonargparse", "lightning")):
            raise Parsed(result)
        return result

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)


def _recipe_of(argv: list[str]) -> str | None:
    for flag, value in itertools.pairwise(argv):
        if flag in ("--config", "-c"):
            return value
    return None


def _embedded(recipe: str) -> bool:
    """The recipe's data is embedded (generated offline), so a tiny run needs no download."""
    return yaml.safe_load(recipe_path(recipe).read_text())["data"]["class_path"] in EMBEDDED


def _resolve_recipe(value: str) -> str:
    """A recipe name or path with ``<...>`` placeholders -> the first shipped recipe that matches (embedded data
    first)."""
    stem = Path(value).name.removesuffix(".yaml")
    if "<" not in stem:
        return stem
    pattern = re.compile(re.sub(r"<[^>]*>", ".*", stem) + "$")
    matches = sorted((r for r in list_recipes() if pattern.match(r)), key=lambda r: not _embedded(r))
    assert matches, f"no recipe matches {value}"
    return matches[0]


class Runner:
    """Runs the commands from ``workdir`` (outside the repository), keeping one fitted checkpoint per recipe."""

    def __init__(self, workdir: Path, data_dir: Path) -> None:
        self.workdir, self.data_dir = workdir, data_dir
        self.checkpoints: dict[str, Path] = {}  # recipe -> a checkpoint of it as shipped (no --model overrides)
        self.runs = 0
        self.console_checked = False

    def tiny(self, recipe: str) -> tuple[list[str], Path]:
        """The tiny overrides for ``recipe`` and the run's own folder."""
        ndigits = "NDigits" in yaml.safe_load(recipe_path(recipe).read_text())["data"]["class_path"]
        data_dir = ["--data.init_args.data_dir", str(self.data_dir)] if ndigits else []
        self.runs += 1
        folder = self.workdir / "runs" / f"{self.runs:02d}-{recipe}"
        return [*TINY, *data_dir, "--trainer.default_root_dir", str(folder)], folder

    def checkpoint(self, recipe: str) -> Path:
        """A checkpoint of ``recipe`` fitted here (tiny), or the one a documented fit of it left."""
        if recipe not in self.checkpoints:
            tiny, folder = self.tiny(recipe)
            assert main(["fit", "--config", recipe, *tiny]) == 0
            self.checkpoints[recipe] = folder / "checkpoints" / "last.ckpt"
        return self.checkpoints[recipe]

    def lightning(self, argv: list[str]) -> str:
        if len(argv) == 1:  # a bare mention (`psn-zoo validate`): its help
            argv = [*argv, "--help"]
        if "--help" in argv or "-h" in argv:
            with pytest.raises(SystemExit) as done:
                main(argv)
            assert done.value.code == 0
            return "run: help"
        value = _recipe_of(argv)
        assert value is not None, f"a LightningCLI command without --config: {argv}"
        recipe = _resolve_recipe(value)
        argv = [recipe if a == value else a for a in argv]
        if "--ckpt_path" in argv:
            i = argv.index("--ckpt_path") + 1
            if any(mark in argv[i] for mark in ("<", "...", "*")):
                argv[i] = str(self.checkpoint(recipe))
        if not _embedded(recipe) or "--print_config" in argv:  # parse the recipe and every flag (no download)
            with pytest.raises(SystemExit) as done:
                main([*argv, *([] if "--print_config" in argv else ["--print_config"])])
            assert done.value.code == 0
            return "parsed: --print_config"
        tiny, folder = self.tiny(recipe)
        resumed = ["--trainer.max_epochs", "2"] if argv[0] == "fit" and "--ckpt_path" in argv else []  # 1 more epoch
        assert main([*argv, *tiny, *resumed]) == 0
        if argv[0] == "fit":
            assert (folder / "checkpoints" / "last.ckpt").is_file(), "fit saved no checkpoint"
            assert (folder / "checkpoints" / "config.yaml").is_file()
            if resumed:  # it continued from the checkpoint's epoch 0
                assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
            if not any(a.startswith("--model.") for a in argv) and "--ckpt_path" not in argv:
                self.checkpoints.setdefault(recipe, folder / "checkpoints" / "last.ckpt")
        return "run: tiny"

    def console(self, argv: list[str]) -> str:
        """A listing command: the first one through the installed ``psn-zoo`` script, the others in-process."""
        if self.console_checked:
            assert main(argv) == 0
            return "run: in-process"
        self.console_checked = True
        exe = shutil.which("psn-zoo")
        assert exe, "`pip install -e .` must provide the psn-zoo command"
        done = subprocess.run([exe, *argv], cwd=self.workdir, env=clean_env(), capture_output=True, text=True,
                              timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return "run: console script"

    def bench(self, argv: list[str], monkeypatch) -> str:
        handed = []
        monkeypatch.setattr(subprocess, "call", lambda command, **kw: handed.append((command, kw)) or 0)
        assert main(argv) == 0
        ((command, kw),) = handed
        assert command[1:3] == ["-m", "benchmarks"] and Path(kw["cwd"]) == ROOT
        return self.python_module(command[1:], cwd=ROOT)

    def python_module(self, argv: list[str], cwd: Path | None = None) -> str:
        """``python -m pkg.mod ARGS``: the benchmarks live in the checkout (``docs/benchmarks.md``), so from it."""
        module, args = argv[1], argv[2:]
        os.chdir(cwd or ROOT)
        sys.path.insert(0, str(ROOT))
        saved = sys.argv
        sys.argv = [module, *args]
        try:
            with pytest.raises(SystemExit if "--help" in args else Parsed) as done:
                runpy.run_module(module, run_name="__main__", alter_sys=False)
            assert "--help" not in args or done.value.code == 0
        finally:
            sys.argv = saved
            sys.path.remove(str(ROOT))
            os.chdir(self.workdir)
        return "parsed: argparse"

    def python_c(self, argv: list[str]) -> str:
        done = subprocess.run([sys.executable, *argv[1:]], cwd=self.workdir, env=clean_env(), capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return "run: python -c"


def check(runner: Runner, argv: list[str], monkeypatch, request) -> str:
    """Check one documented command; returns how (``run: ...`` or ``parsed: ...``)."""
    if argv[0] == "python":
        if argv[1] == "-c":
            return runner.python_c(argv)
        assert argv[1] == "-m", argv
        if argv[2] == "psn_zoo.cli":
            return check(runner, ["psn-zoo", *argv[3:]], monkeypatch, request)
        request.getfixturevalue("parse_only")
        return runner.python_module(argv[1:])
    args = argv[1:]
    if args[0] in LIGHTNING:
        return runner.lightning(args)
    if args[0] in CONSOLE:
        return runner.console(args)
    if len(args) == 1 and args[0] not in ("demo", "bench"):  # a bare mention (`psn-zoo push`): its help
        args = [*args, "--help"]
    request.getfixturevalue("parse_only")
    if args[0] == "bench":
        return runner.bench(args, monkeypatch)
    if "--help" in args:
        with pytest.raises(SystemExit) as done:
            main(args)
        assert done.value.code == 0
        return "run: help"
    with pytest.raises(Parsed):
        main(args)
    return "parsed: argparse"


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    workdir = tmp_path_factory.mktemp("elsewhere")
    assert ROOT not in workdir.parents and workdir != ROOT
    return Runner(workdir, tmp_path_factory.mktemp("ndigits"))


@pytest.fixture
def elsewhere(runner, monkeypatch):
    monkeypatch.chdir(runner.workdir)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    return runner


def test_the_docs_hold_the_commands_this_test_checks():
    """The extraction finds the documented commands (a parsing regression must not empty the list)."""
    argvs = {c.argv for c in ALL}
    assert ("psn-zoo", "fit", "--help") in argvs
    assert ("psn-zoo", "bench", "--quick") in argvs
    assert any(a[:2] == ("psn-zoo", "test") and "--ckpt_path" in a for a in argvs)
    assert any(a[0] == "python" and a[1:3] == ("-m", "benchmarks") for a in argvs)
    assert sum(a[1] in LIGHTNING for a in argvs if a[0] == "psn-zoo") >= 10


@pytest.mark.timeout(900)
@pytest.mark.parametrize("command", ALL, ids=str)
def test_documented_command_works_from_another_directory(command, elsewhere, monkeypatch, request):
    how = check(elsewhere, list(command.argv), monkeypatch, request)
    print(f"{how}: {command}")


@pytest.mark.timeout(900)
def test_demo_next_steps_work_from_another_directory(elsewhere, monkeypatch, request):
    """The commands ``psn-zoo demo`` prints as next steps (its report, with a checkpoint fitted here)."""
    from psn_zoo.hub import get_pretrained_info
    from psn_zoo.training.demo import DEFAULT_ENTRY, DemoResult, report

    info = get_pretrained_info(DEFAULT_ENTRY)
    recipe = Path(info.recipe).stem
    result = DemoResult(DEFAULT_ENTRY, 0.99, 0.98, 0.97, elsewhere.checkpoint(recipe), None, 1.0, elsewhere.data_dir,
                        ("--data.init_args.images_per_class", "10"))  # fmt: skip
    text = report(result, info.recipe)
    steps = text.split("next steps:", 1)[1]
    commands = [_normalise(words) for line in steps.splitlines() for words in _tokens(line)]
    assert len(commands) >= 5 and commands[0][:2] == ["psn-zoo", "test"]
    for argv in commands:
        assert argv is not None
        check(elsewhere, argv, monkeypatch, request)
