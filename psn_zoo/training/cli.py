"""``psn-zoo fit|validate|test|predict --config <recipe>``: LightningCLI over the zoo.

The model is always :class:`SpikingClassifier` (its ``model`` and ``neuron`` are checked against the registries
when the config is parsed); the data is any ``LightningDataModule`` given by class path or by name, e.g.
``--data NDigitsDataModule --data.T 4``. ``--config`` takes a file or the name of a shipped recipe
(:mod:`psn_zoo.training.recipes`).

One source for each value:

- ``T``, the class count and the input channels come from the data (``LightningCLI.link_arguments``: ``data.T``,
  ``data.num_classes``, ``data.in_channels`` -> ``model.T``, ``model.num_classes``, ``model.in_channels``). A
  config, command line or checkpoint that states one of them is accepted when it agrees with the data and
  refused, naming both values and the data argument to change, when it does not.
- The optimizer and its schedule are the model's (``--model.optimizer``, ``--model.lr``, ``--model.scheduler``...),
  so what runs is what ``save_hyperparameters`` stores and W&B logs; LightningCLI's own ``--optimizer`` and
  ``--lr_scheduler`` are refused with the flags to use.
- Every run has its own folder and never overwrites another run's files: a fit without a logger writes to
  ``runs/<recipe>/<time>/``, a ``validate|test|predict`` without one to ``runs/<recipe>/<time>-<command>/`` (a
  logger's run folder, e.g. ``runs/psn-zoo/<W&B run id>/``, otherwise). Re-running a run's saved ``config.yaml``
  starts a new folder; a fit into a folder that already holds another run's checkpoints is refused. The run saves
  its resolved configuration there (``config.yaml``, next to the checkpoints of a fit; ``config-2.yaml``... for a
  later run in the same folder), logs it to every logger, and ``predict`` writes ``predictions.csv``.
- ``fit --ckpt_path <run>/checkpoints/<x>.ckpt`` resumes that run in its own folder (the same W&B run id; another
  logger's new version keeps its checkpoints there), so its best-checkpoint tracking goes on; ``--ckpt_path last``
  is the newest ``last.ckpt`` of this recipe's runs (or of the configured folder), and refused when there is none.

``--ckpt_path`` (a path or an http(s) URL) is read once with ``weights_only=True`` before anything else happens (a
file that would unpickle code is refused with a clear error), a URL is downloaded into a private temporary folder
removed after the run, and the trainer always loads it with ``weights_only=True`` (``--weights_only false`` is
refused). A checkpoint brings its own weights, so ``model.pretrained`` is not applied when one is given.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import itertools
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from .. import datamodules  # also makes the DataModules resolvable by class name
from ..neurons import NEURONS, NeuronSpec
from ..safe_load import checked_checkpoint
from .callbacks import PredictionWriter, free_path, run_folder
from .classifier import SpikingClassifier
from .data_fingerprint import EvalDataFingerprint
from .recipes import resolve_config

# ckpt_path values Lightning resolves to the current run's own checkpoints (still loaded with weights_only=True);
# anything else, Lightning's model registry included, must be a path or an http(s) URL
_LIGHTNING_CKPT_NAMES = ("best", "last", "hpc")

#: the time stamp of a logger-less fit's folder, shared with the DDP ranks it launches
_RUN_STAMP = "PSN_ZOO_RUN_STAMP"

#: the name of a run folder psn-zoo made (``runs/<recipe>/<this>``): a time stamp, a counter, the command
_STAMPED = re.compile(r"\d{8}-\d{6}(-\d+)?(-(validate|test|predict))?")

#: model argument -> the DataModule attribute it is linked to
LINKED = {"T": "T", "num_classes": "num_classes", "in_channels": "in_channels"}

_OPTIMIZER_HELP = (
    "psn-zoo configures the optimizer through the model, so that what runs is what the checkpoint and W&B record: "
    "use --model.optimizer sgd|adamw, --model.lr, --model.momentum, --model.weight_decay and --model.scheduler "
    "cosine|step|none (--model.step_size, --model.gamma) instead of LightningCLI's {flag}"
)


class DataAttribute:
    """A ``compute_fn`` reading ``name`` off the instantiated DataModule, with a clear error when it has none.

    A module-level class, not a closure: LightningCLI keeps the parser (with its links) in the trainer's
    ``SaveConfigCallback``, and ``--trainer.strategy ddp_spawn`` pickles the trainer into every process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.__name__ = f"data_{name}"

    def __call__(self, data: L.LightningDataModule) -> Any:
        name = self.name
        value = getattr(data, name, None)
        if value is None and name == "in_channels":
            value = _channels_from_shape(data)
        if value is None:
            raise ValueError(
                f"{type(data).__name__} has no {name!r}: psn-zoo takes the model's T, num_classes and in_channels "
                f"from the DataModule (LightningCLI links), so give it attributes T, num_classes and in_channels"
                + (" (a 3-dim input_shape does not say which size is the channels)" if name == "in_channels" else "")
            )
        return int(value)

    def __repr__(self) -> str:
        return f"DataAttribute({self.name!r})"


def data_attribute(name: str) -> DataAttribute:
    """A picklable ``compute_fn`` reading ``name`` off the instantiated DataModule (:class:`DataAttribute`)."""
    return DataAttribute(name)


def _channels_from_shape(data: Any) -> int | None:
    """C of a 4-dim ``input_shape`` (frames ``(T, C, H, W)``); a 3-dim one is ``(C, H, W)`` or ``(T, C, L)``, which a
    size equal to T cannot tell apart, so it is never guessed (the DataModule must state ``in_channels``)."""
    shape = getattr(data, "input_shape", None)
    return int(shape[1]) if shape is not None and len(shape) == 4 else None


def _migrate_class_paths(config: dict[str, Any]) -> bool:
    """Configs saved before the DataModules moved into psn_zoo name ``datamodules.X``: read it as
    ``psn_zoo.datamodules.X`` (the top-level ``datamodules`` package no longer exists). True if one was changed."""
    data = config.get("data")
    if isinstance(data, dict) and isinstance(data.get("class_path"), str) and data["class_path"].startswith(
        "datamodules."
    ):
        data["class_path"] = "psn_zoo." + data["class_path"]
        return True
    return False


def _check_datamodule_name(value: str) -> None:
    """``--data <Name>``: a bare name must be one of the zoo's DataModules (jsonargparse's own error for a typo lists
    every type it tried, not the names)."""
    if "." in value or value.lstrip().startswith(("{", "[")) or value in ("null", "None"):
        return  # a class path or an inline config: jsonargparse checks it
    names = sorted(n for n in datamodules.__all__ if n.endswith("DataModule") and n != "EventDataModule")
    if value not in names:
        close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise SystemExit(f"psn-zoo: error: --data {value}: no such DataModule.{hint} The zoo's DataModules are "
                         f"{', '.join(names)}; another one by its class path (--data my_pkg.MyDataModule)")  # fmt: skip


class RunConfig(SaveConfigCallback):
    """Save the resolved configuration in the run's own folder and log it to the run's loggers.

    A fit saves it as ``config.yaml`` next to its checkpoints (``runs/psn-zoo/<W&B run id>/checkpoints/`` with the
    recipes' logger), once the checkpoint folder is known; ``validate|test|predict`` in the run folder
    (:func:`psn_zoo.training.callbacks.run_folder`). A file an earlier run left there is never overwritten: a resumed
    fit saves ``config-2.yaml`` next to the first run's ``config.yaml`` (LightningCLI's default writes every run's
    config to the same ``runs/config.yaml``). Every logger gets the whole configuration as hyperparameters, flat
    (``seed_everything``, ``trainer.max_epochs``, ``trainer.callbacks.0.init_args.monitor``, ``data.class_path``...),
    next to the model's own.

    A fit refuses to start in a checkpoint folder that already holds checkpoints, unless it resumes from one of
    them: it would overwrite them (``last.ckpt``, ``best-epoch=N.ckpt``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path: Path | None = None
        self.resume_from: str | None = None  # the fit's --ckpt_path (set by ZooCLI)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Nothing yet: the checkpoint callbacks resolve their folder in their own ``setup``, which runs later."""

    def _folder(self, trainer: L.Trainer) -> Path:
        if trainer.state.fn == "fit":
            folder = next((c.dirpath for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)), None)
            if folder:
                return Path(folder)
        return run_folder(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if self.already_saved:
            return
        folder = self._folder(trainer)
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            self.path = free_path(folder, self.config_filename)
            self.parser.save(self.config, str(self.path), skip_none=False, overwrite=True, multifile=self.multifile)
            if trainer.loggers:
                hparams = flat_config(yaml.safe_load(self.parser.dump(self.config, skip_none=False)))
                for logger in trainer.loggers:
                    logger.log_hyperparams(hparams)
        self.already_saved = True

    def _resumed(self, trainer: L.Trainer) -> Path | None:
        ckpt = trainer.ckpt_path or self.resume_from
        return Path(ckpt).resolve() if ckpt and Path(ckpt).is_file() else None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Resuming in the checkpoint's own folder: Lightning's ``ModelCheckpoint`` keeps its best-model tracking
        only when its folder is spelled exactly as when it was saved; the same folder reached another way (an
        absolute path, another working directory) is recognised and the saved paths are read as this folder's."""
        resumed = self._resumed(trainer)
        if trainer.state.fn != "fit" or resumed is None:
            return
        for callback in trainer.checkpoint_callbacks:
            state = (checkpoint.get("callbacks") or {}).get(callback.state_key)
            dirpath = getattr(callback, "dirpath", None)
            if not isinstance(state, dict) or not dirpath or not _same_dir(dirpath, resumed.parent):
                continue
            old = state.get("dirpath")
            if not old or old == dirpath or not _names_folder(old, resumed.parent):
                continue
            state["dirpath"] = dirpath
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                state[key] = _moved(state.get(key), old, dirpath)
            if isinstance(state.get("best_k_models"), dict):
                state["best_k_models"] = {_moved(k, old, dirpath): v for k, v in state["best_k_models"].items()}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resumed = self._resumed(trainer)
        for callback in trainer.checkpoint_callbacks:
            dirpath = getattr(callback, "dirpath", None)
            if not dirpath or not Path(dirpath).is_dir():
                continue
            existing = sorted(p.name for p in Path(dirpath).glob("*.ckpt"))
            # a resume from one of them (or, as Lightning's SLURM requeue does, from the run folder above them)
            own = resumed is not None and any(_same_dir(resumed.parent, d) for d in (dirpath, Path(dirpath).parent))
            if existing and not own:
                shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
                raise ValueError(
                    f"{dirpath} already holds another run's checkpoints ({shown}) and this fit would overwrite them. "
                    f"To continue that run, resume it: --ckpt_path {Path(dirpath) / 'last.ckpt'}; to start a new "
                    "run, give it another folder (drop --trainer.default_root_dir, or another logger version or "
                    "ModelCheckpoint dirpath)"
                )
        self._save(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._save(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)


def _refuse_class_paths(value: Any, ckpt: str, where: str = "hyper_parameters") -> None:
    """A checkpoint's hyperparameters are plain data: the command-line parser would import (and instantiate) any
    ``class_path`` it meets in them, even inside a free-form ``model_kwargs`` or a string holding YAML, so any
    mention of one is refused before they are parsed."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        here = f"{where}.{key}"
        if (isinstance(key, str) and "class_path" in key) or (isinstance(item, str) and "class_path" in item):
            raise ValueError(
                f"the checkpoint {ckpt} names a class in {here}: a checkpoint's hyperparameters are plain data, and "
                "parsing a class path would import code it names. Use checkpoints psn-zoo wrote, or load the weights "
                "alone: --model.pretrained <file> (read with weights_only=True, hyperparameters checked, none parsed)"
            )
        _refuse_class_paths(item, ckpt, here)


def _plain(value: Any) -> Any:
    """A parsed config value as plain data (jsonargparse's Namespace as a dict), for comparing it."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _differs(key: str, given: Any, stored: Any, neuron: Any) -> bool:
    """Does the model argument ``key`` given as ``given`` build or train another model than the checkpoint's
    ``stored``? Neuron names by their canonical name, neuron arguments with their defaults filled in (``neuron``: the
    checkpoint's neuron), a missing dict as an empty one."""
    given, stored = _plain(given), _plain(stored)
    if key == "neuron" and isinstance(given, str) and isinstance(stored, str):
        try:
            return NEURONS.get(given).name != NEURONS.get(stored).name
        except KeyError:
            return given != stored
    if key in ("neuron_kwargs", "model_kwargs"):
        given, stored = given or {}, stored or {}
        if key == "neuron_kwargs" and isinstance(neuron, str) and isinstance(given, dict) and isinstance(stored, dict):
            try:
                return bool(NeuronSpec.parse({**stored, "name": neuron}).differences({**given, "name": neuron}))
            except (TypeError, ValueError, KeyError):
                return given != stored
    return given != stored


def flat_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"max_epochs": 3, "callbacks": [{"class_path": ...}]}}`` -> ``{"trainer.max_epochs": 3,
    "trainer.callbacks.0.class_path": ...}`` (dicts and lists of dicts flattened, other lists kept as values); the
    list of ``--config`` files is left out (the values they gave are in)."""
    flat: dict[str, Any] = {}
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        if not prefix and key == "config":
            continue
        nested = isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value))
        if nested and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _same_dir(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _names_folder(saved: str, folder: Path) -> bool:
    """Does the ``dirpath`` a checkpoint saved name ``folder`` (as it was reached then: the same folder now, or a
    relative path from another working directory that ends the same way)?"""
    return _same_dir(saved, folder) or (not Path(saved).is_absolute() and folder.resolve().as_posix().endswith(
        "/" + Path(os.path.normpath(saved)).as_posix()))  # fmt: skip


def _moved(path: Any, old: str, new: str) -> Any:
    if isinstance(path, str) and path and os.path.normpath(path).startswith(os.path.normpath(old) + os.sep):
        return os.path.join(new, os.path.relpath(os.path.normpath(path), os.path.normpath(old)))
    return path


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (as psn-zoo's own folders are written)."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _class_of(spec: Any) -> type | None:
    """The class a ``{class_path, init_args}`` config value names, or None."""
    class_path = spec.get("class_path") if isinstance(spec, (dict, Namespace)) else None
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return None


class ZooCLI(LightningCLI):
    def __init__(self, *args: Any, resources: contextlib.ExitStack | None = None, **kwargs: Any) -> None:
        self._resources = resources if resources is not None else contextlib.ExitStack()
        self._stated: list[tuple[str, Any, str]] = []  # (model argument, value, where it was stated)
        self._given: dict[str, str] = {}  # model argument -> where the command line (or a --model config) gives it
        self._run_name = "run"  # the (last) recipe's name: a logger-less run's folder
        self._resume_from: str | None = None  # fit --ckpt_path: the checkpoint it resumes
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.default_root_dir": "runs"})
        for argument, attribute in LINKED.items():
            parser.link_arguments("data", f"model.{argument}", compute_fn=data_attribute(attribute),
                                  apply_on="instantiate")  # fmt: skip

    # ------------------------------------------------------------------ arguments
    def parse_arguments(self, parser, args) -> None:
        if args is None or isinstance(args, (list, tuple)):
            args = self._prepare_args(list(sys.argv[1:] if args is None else args))
        argv, sys.argv = sys.argv, sys.argv[:1]  # the prepared list is the command line: LightningCLI would warn
        try:  # that it got both (on every console run)
            super().parse_arguments(parser, args)
        finally:
            sys.argv = argv

    def _prepare_args(self, args: list[str]) -> list[str]:
        """Resolve recipe names, refuse LightningCLI's optimizer flags, and take the linked model values out of the
        command line and the config files (they are checked against the data once it exists)."""
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            flag, eq, inline = arg.partition("=")
            for banned in ("--optimizer", "--lr_scheduler"):
                if flag == banned or flag.startswith(banned + "."):
                    raise SystemExit(f"psn-zoo: error: {_OPTIMIZER_HELP.format(flag=flag)}")
            value = inline if eq else (args[i + 1] if i + 1 < len(args) else None)
            step = 1 if eq else 2
            linked = flag.removeprefix("--model.").removeprefix("init_args.")
            if flag.startswith("--model.") and value is not None and linked.split(".")[0] not in LINKED:
                self._give(linked.split(".")[0], f"{flag} {value}")
            if flag.startswith("--model.") and linked in LINKED and value is not None:
                self._stated.append((linked, value, f"{flag} {value}"))
                i += step
                continue
            if flag in ("--model", "--model.init_args") and value is not None:
                out += [flag, self._strip_model(flag, value)]
                i += step
                continue
            if flag == "--data" and value is not None:
                _check_datamodule_name(value)
            if flag in ("--config", "-c") and value is not None:
                try:
                    config = resolve_config(value)
                except FileNotFoundError as err:
                    raise SystemExit(f"psn-zoo: error: {err}") from None
                self._run_name = Path(config).stem if Path(config).is_file() else self._run_name
                out += [flag, self._strip_config(config)]
                i += step
                continue
            out.append(arg)
            i += 1
        return out

    def _strip_config(self, path: str) -> str:
        """``path`` (a file or inline YAML), or a copy without the model's linked values (recorded for the check) and
        refusing a top-level ``optimizer`` / ``lr_scheduler``."""
        inline = not Path(path).is_file()
        try:
            config = yaml.safe_load(path if inline else Path(path).read_text())
        except yaml.YAMLError:
            return path  # jsonargparse reports the syntax error with its position
        if not isinstance(config, dict):
            return path
        migrated = _migrate_class_paths(config)
        for banned in ("optimizer", "lr_scheduler"):
            if banned in config:
                where = "--config" if inline else path
                raise SystemExit(f"psn-zoo: error: {where} sets `{banned}:`. " + _OPTIMIZER_HELP.format(flag=banned))
        model = config.get("model")
        found = self._take_linked(model, "--config" if inline else path, "model.") if isinstance(model, dict) else 0
        if not found and not migrated:
            return path
        if inline:
            return json.dumps(config)
        folder = self._resources.enter_context(tempfile.TemporaryDirectory(prefix="psn-zoo-config-"))
        stripped = Path(folder) / Path(path).name
        stripped.write_text(yaml.safe_dump(config, sort_keys=False))
        return str(stripped)

    def _strip_model(self, flag: str, value: str) -> str:
        """``--model <inline YAML/JSON or file>``: its linked values are stated ones too (checked against the data),
        as ``--model.T`` is; the rest goes on as inline JSON."""
        is_file = Path(value).is_file()
        try:
            model = yaml.safe_load(Path(value).read_text() if is_file else value)
        except (yaml.YAMLError, OSError):
            return value  # jsonargparse reports it
        if not isinstance(model, dict):
            return value
        where = value if is_file else flag
        args = model.get("init_args") if isinstance(model.get("init_args"), dict) else model
        for key, item in args.items():
            if key not in LINKED:
                self._give(str(key), f"model.{key}: {item} in {where}" if is_file else f"{where} {{{key}: {item}}}")
        if not self._take_linked(model, where, "model." if is_file else ""):
            return value
        return json.dumps(model)

    def _give(self, key: str, where: str) -> None:
        """Record a model argument the command line gives (the last place that gives it, in command-line order)."""
        self._given.pop(key, None)
        self._given[key] = where

    def _take_linked(self, model: dict[str, Any], where: str, prefix: str) -> int:
        """Pop the linked keys (T, num_classes, in_channels) of a model config (or its ``init_args``) into the
        stated values; how many there were."""
        args = model.get("init_args") if isinstance(model.get("init_args"), dict) else model
        found = [k for k in LINKED if k in args]
        for key in found:
            value = args.pop(key)
            shown = f"model.{key}: {value} in {where}" if prefix else f"{where} {{{key}: {value}}}"
            self._stated.append((key, value, shown))
        return len(found)

    def _check_stated(self) -> None:
        """Every stated T / num_classes / in_channels must be the data's (which the model was built with). The error
        names the DataModule argument that changes the value, or says that the DataModule fixes it."""
        hp = self.model.hparams
        wrong, keys = [], {}
        for key, value, where in self._stated:
            try:
                same = int(value) == hp[key]
            except (TypeError, ValueError):
                same = False
            if not same:
                wrong.append(f"{where} but the data gives {key}={hp[key]}")
                keys.setdefault(key, value)
        if not wrong:
            return
        data = type(self.datamodule).__name__
        config = self.config[self.subcommand] if self.subcommand else self.config
        init_args = (config.get("data") or {}).get("init_args")
        init_args = init_args.keys() if isinstance(init_args, (dict, Namespace)) else ()
        try:
            accepted = set(init_args) or set(inspect.signature(type(self.datamodule)).parameters)
        except (TypeError, ValueError):
            accepted = set()
        fixes = []
        for key, value in keys.items():
            if key in accepted:
                fixes.append(f"--data.init_args.{key} {value} sets {data}'s {key}")
            else:
                fixes.append(f"{data} fixes {key}={hp[key]} (it has no {key} argument), so use a DataModule that gives "
                             f"{key}={value}")  # fmt: skip
        raise ValueError(
            "the model takes T, num_classes and in_channels from the data (LightningCLI links data.T, "
            f"data.num_classes, data.in_channels -> model): {'; '.join(wrong)}. Drop the model's value (the data "
            f"sets it), or change the data: {'; '.join(fixes)}"
        )

    # ------------------------------------------------------------------ run folders
    def _stamp_parent(self, root: Any) -> Path | None:
        """Where a run gets a new time-stamped folder: ``runs/<recipe>`` when ``default_root_dir`` is the default
        ``runs``, or a psn-zoo run folder ``runs/<recipe>/<time>`` (as a run's saved config.yaml states it: re-running
        it must not write into that run); None for a folder the user chose."""
        if root is None:
            return None
        if str(root) == "runs":
            return Path("runs") / self._run_name
        parts = Path(str(root)).parts
        if len(parts) == 3 and parts[0] == "runs" and _STAMPED.fullmatch(parts[2]):
            return Path(*parts[:2])
        return None

    @staticmethod
    def _new_stamp(parent: Path, subcommand: str) -> str:
        """A new folder name in ``parent``: the time, a counter if taken, ``-<command>`` for an evaluation."""
        if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(_RUN_STAMP):  # a DDP rank: rank 0's folder
            return os.environ[_RUN_STAMP]
        base = time.strftime("%Y%m%d-%H%M%S")
        suffix = "" if subcommand == "fit" else f"-{subcommand}"
        stamp = f"{base}{suffix}"
        for n in itertools.count(2):
            if not (parent / stamp).exists():
                break
            stamp = f"{base}-{n}{suffix}"
        os.environ[_RUN_STAMP] = stamp  # inherited by the ranks Lightning's DDP launcher starts
        return stamp

    @staticmethod
    def _logger_folder(trainer: Namespace) -> tuple[Namespace, Path, str] | None:
        """The first configured logger's init arguments, the folder its runs go to (``<save_dir>/<name>``, where
        Lightning's ModelCheckpoint puts ``<version>/checkpoints``) and the argument that names the run in it
        (``id`` for W&B, ``version`` for the CSV and TensorBoard loggers); None for another kind of logger."""
        logger = trainer.get("logger")
        first = logger[0] if isinstance(logger, list) and logger else logger
        cls = _class_of(first)
        if cls is None:
            return None
        args = first.get("init_args")
        if args is None:
            args = first["init_args"] = Namespace()
        root = trainer.get("default_root_dir") or os.getcwd()
        if issubclass(cls, WandbLogger):
            project = args.get("project") or os.environ.get("WANDB_PROJECT") or "lightning_logs"
            return args, Path(args.get("save_dir") or args.get("dir") or root) / project, "id"
        if "version" in inspect.signature(cls).parameters:
            name = args.get("name", "lightning_logs")
            return args, Path(args.get("save_dir") or root) / (name or ""), "version"
        return None

    def before_instantiate_classes(self) -> None:
        """Every run gets its own folder. Without a logger, ``runs/<recipe>/<time>/`` for a fit and
        ``runs/<recipe>/<time>-<command>/`` for ``validate|test|predict``, as a W&B run has ``runs/psn-zoo/<run id>/``
        (Lightning would put every logger-less run's files in the same ``runs/``); a ``--trainer.default_root_dir``
        other than ``runs`` (or a run folder that a saved config.yaml states) is kept. A fit that resumes a checkpoint
        of a run folder (``<run>/checkpoints/x.ckpt``) continues in that folder, so Lightning's best-checkpoint tracking
        goes on: logger-less, or in the same W&B run (its id is the folder's name); with another logger, which starts
        a new version, the checkpoints go on in the checkpoint's folder."""
        subcommand = self.subcommand
        if subcommand is None:
            return
        config = self.config[subcommand]
        trainer = config["trainer"]
        ckpt = config.get("ckpt_path")
        run = None
        if subcommand == "fit" and ckpt and Path(ckpt).is_file():
            self._resume_from = str(ckpt)
            folder = Path(ckpt).resolve().parent
            run = folder.parent if folder.name == "checkpoints" else None
        if trainer.get("logger") is False:
            parent = self._stamp_parent(trainer.get("default_root_dir"))
            if parent is None:
                return
            if run is not None:
                trainer["default_root_dir"] = _shown(run)
            else:
                trainer["default_root_dir"] = str(parent / self._new_stamp(parent, subcommand))
            return
        if run is None:
            return
        layout = self._logger_folder(trainer)
        if layout is not None:
            args, parent, key = layout
            if args.get(key) is not None or args.get("version") is not None:
                return  # a logger run the user named: its folder is kept
            if key == "id" and _same_dir(run.parent, parent):  # W&B: the same run (and folder), if it was its run
                args["id"] = run.name
                if args.get("resume") is None:
                    args["resume"] = "allow"
                return
        # another logger starts a new version for its logs (Lightning's CSVLogger would delete an existing
        # metrics.csv), and the checkpoints go on in the checkpoint's folder
        callbacks = trainer.get("callbacks") or []
        for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
            cls = _class_of(callback)
            if cls is not None and issubclass(cls, ModelCheckpoint):
                args = callback.get("init_args")
                if args is None:
                    args = callback["init_args"] = Namespace()
                if not args.get("dirpath"):
                    args["dirpath"] = _shown(run / "checkpoints")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self._check_stated()
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunConfig):
                callback.resume_from = self._resume_from

    # ------------------------------------------------------------------ checkpoints
    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is not None and config.get("weights_only") is False:
            raise ValueError(
                "psn-zoo loads checkpoints with weights_only=True only (unpickling a checkpoint could run code); "
                "drop --weights_only false"
            )
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if not ckpt_path:
            return
        if str(ckpt_path) == "best":
            raise ValueError(
                f"--ckpt_path best means the best checkpoint of a fit in the same process, and psn-zoo {subcommand} "
                "starts a new one: give the checkpoint's path (--ckpt_path runs/<recipe>/<time>/checkpoints/"
                "best-epoch=<N>.ckpt, or runs/psn-zoo/<W&B run id>/checkpoints/...)"
            )
        if str(ckpt_path) == "last":
            config["ckpt_path"] = ckpt_path = self._last_checkpoint(config["trainer"])
        if str(ckpt_path) not in _LIGHTNING_CKPT_NAMES:
            config["ckpt_path"] = str(self._resources.enter_context(checked_checkpoint(ckpt_path)))
        path = Path(config["ckpt_path"])
        if path.is_file():  # Lightning's own parsing of the checkpoint's hparams, minus the linked values
            hparams = torch.load(path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
            hparams.pop("_instantiator", None)
            _refuse_class_paths(hparams, str(ckpt_path))
            for key in LINKED:
                if key in hparams:
                    value = hparams.pop(key)
                    self._stated.append((key, value, f"the checkpoint {ckpt_path} has {key}={value}"))
            self._check_given(hparams, config["model"], str(ckpt_path))
            if hparams:
                try:
                    self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
                except SystemExit:
                    sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
                    raise
        self.config[subcommand]["model"]["pretrained"] = None  # the checkpoint's weights replace it anyway

    def _check_given(self, hparams: dict[str, Any], model: Namespace, ckpt: str) -> None:
        """The checkpoint's hyperparameters replace the model's configuration: a model argument given on the command
        line (or in a ``--model`` config) with another value than the checkpoint's would be dropped without a word,
        so it is refused, naming both values. ``pretrained`` is not compared: a checkpoint's weights replace it."""
        wrong = []
        for key, where in self._given.items():
            if key == "pretrained" or key not in hparams or key not in model:
                continue
            if _differs(key, model[key], hparams[key], hparams.get("neuron")):
                wrong.append(f"{where} but the checkpoint has {key}={hparams[key]!r}")
        if wrong:
            raise ValueError(
                f"--ckpt_path {ckpt} builds the model from the checkpoint's hyperparameters, "
                f"which would replace what you gave: {'; '.join(wrong)}. Drop the flag(s) to use the checkpoint as "
                f"it is, or train from its weights with the new values: psn-zoo fit --model.pretrained {ckpt} "
                "(a fine-tune)"
            )

    def _last_checkpoint(self, trainer: Namespace) -> str:
        """``--ckpt_path last``: the newest ``last*.ckpt`` of this run's checkpoint folders (a ModelCheckpoint's
        ``dirpath``; without a logger ``<default_root_dir>/checkpoints``, or every ``runs/<recipe>/<time>/checkpoints``
        when the run would get a new time-stamped folder; with a logger whose version / W&B id is set, its folder).
        Lightning would look only in the new run's own folder, find nothing and silently start from scratch."""
        found: list[Path] = []
        where: list[str] = []
        callbacks = trainer.get("callbacks") or []
        checkpoints = [c for c in (callbacks if isinstance(callbacks, list) else [callbacks])
                       if (cls := _class_of(c)) is not None and issubclass(cls, ModelCheckpoint)]  # fmt: skip
        dirpaths = [(c.get("init_args") or {}).get("dirpath") for c in checkpoints]
        for dirpath in filter(None, dirpaths):
            found += Path(dirpath).glob("last*.ckpt")
            where.append(str(dirpath))
        # a ModelCheckpoint without a dirpath (or Lightning's default one) writes to the run's folder
        implicit = None in dirpaths or (not checkpoints and trainer.get("enable_checkpointing") is not False)
        if implicit and trainer.get("logger") is False:
            root = trainer.get("default_root_dir")
            parent = self._stamp_parent(root)
            if parent is not None:
                found += parent.glob("*/checkpoints/last*.ckpt")
                where.append(f"{parent}/<time>/checkpoints")
            else:
                folder = Path(root or os.getcwd()) / "checkpoints"
                found += folder.glob("last*.ckpt")
                where.append(str(folder))
        elif implicit:
            layout = self._logger_folder(trainer)
            if layout is not None:
                args, parent, key = layout
                version = args.get(key) or args.get("version")
                if version is not None:
                    version = version if isinstance(version, str) else f"version_{version}"
                    found += (parent / version / "checkpoints").glob("last*.ckpt")
                    where.append(str(parent / version / "checkpoints"))
                else:
                    logged = sorted(parent.glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
                    newest = f"; the newest there is {logged[-1]}" if logged else ""
                    where.append(f"{parent}/<run>/checkpoints: a logged run gets a new folder every time, so 'last' "
                                 f"cannot name the previous one{newest}")  # fmt: skip
        if not found:
            searched = "; ".join(where) if where else "no checkpoint folder is configured"
            raise ValueError(
                f"--ckpt_path last: no last checkpoint to resume from ({searched}). Give the checkpoint's path "
                "(--ckpt_path <run>/checkpoints/last.ckpt), or drop --ckpt_path to start a new run"
            )
        return str(max(found, key=lambda p: p.stat().st_mtime))

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            kwargs["weights_only"] = True
        return kwargs


def _default_prediction_writer() -> PredictionWriter:
    writer = PredictionWriter()
    writer.fallback = True
    return writer


def run_cli(args: Sequence[str] | None = None, run: bool = True) -> ZooCLI:
    """``args=None`` reads ``sys.argv`` (the console script); code passes a list."""
    argv = sys.argv
    if args is not None:
        sys.argv = argv[:1]  # an explicit list replaces the command line (and LightningCLI's warning about both)
    try:
        with contextlib.ExitStack() as resources:  # a downloaded --ckpt_path lives until the run ends
            return ZooCLI(
                SpikingClassifier,
                L.LightningDataModule,
                subclass_mode_data=True,
                save_config_callback=RunConfig,
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
                # validate/test: is the data the entry's? predict: write the predictions in the run's folder
                trainer_defaults={"callbacks": [EvalDataFingerprint(), _default_prediction_writer()]},
                args=None if args is None else list(args),
                run=run,
                resources=resources,
            )
    finally:
        sys.argv = argv

