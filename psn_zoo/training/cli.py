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
- Each run saves its resolved configuration as ``config.yaml`` next to its checkpoints; a fit without a logger
  gets its own folder ``runs/<recipe>/<time>/``.

``--ckpt_path`` (a path or an http(s) URL) is read once with ``weights_only=True`` before anything else happens (a
file that would unpickle code is refused with a clear error), a URL is downloaded into a private temporary folder
removed after the run, and the trainer always loads it with ``weights_only=True`` (``--weights_only false`` is
refused). A checkpoint brings its own weights, so ``model.pretrained`` is not applied when one is given.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from .. import datamodules  # also makes the DataModules resolvable by class name
from ..safe_load import checked_checkpoint
from .classifier import SpikingClassifier
from .data_fingerprint import EvalDataFingerprint
from .recipes import resolve_config

# ckpt_path values Lightning resolves to the current run's own checkpoints (still loaded with weights_only=True);
# anything else, Lightning's model registry included, must be a path or an http(s) URL
_LIGHTNING_CKPT_NAMES = ("best", "last", "hpc")

#: the time stamp of a logger-less fit's folder, shared with the DDP ranks it launches
_RUN_STAMP = "PSN_ZOO_RUN_STAMP"

#: model argument -> the DataModule attribute it is linked to
LINKED = {"T": "T", "num_classes": "num_classes", "in_channels": "in_channels"}

_OPTIMIZER_HELP = (
    "psn-zoo configures the optimizer through the model, so that what runs is what the checkpoint and W&B record: "
    "use --model.optimizer sgd|adamw, --model.lr, --model.momentum, --model.weight_decay and --model.scheduler "
    "cosine|step|none (--model.step_size, --model.gamma) instead of LightningCLI's {flag}"
)


def data_attribute(name: str):
    """A ``compute_fn`` reading ``name`` off the instantiated DataModule, with a clear error when it has none."""

    def read(data: L.LightningDataModule) -> Any:
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

    read.__name__ = f"data_{name}"
    return read


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
    """Save the resolved configuration as ``config.yaml`` next to the run's checkpoints (``runs/psn-zoo/<W&B run
    id>/checkpoints/`` with the recipes' logger), once the checkpoint folder is known; without a checkpoint
    callback, in the trainer's ``log_dir``. Every run keeps its own (LightningCLI's default writes every run's
    config to the same ``runs/config.yaml``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Nothing yet: the checkpoint callbacks resolve their folder in their own ``setup``, which runs later."""

    def _save(self, trainer: L.Trainer) -> None:
        if self.already_saved:
            return
        folder = next((c.dirpath for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)), None)
        folder = folder or trainer.log_dir or trainer.default_root_dir
        self.path = Path(folder) / self.config_filename
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(self.path), skip_none=False, overwrite=True, multifile=self.multifile)
        self.already_saved = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._save(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)


class ZooCLI(LightningCLI):
    def __init__(self, *args: Any, resources: contextlib.ExitStack | None = None, **kwargs: Any) -> None:
        self._resources = resources if resources is not None else contextlib.ExitStack()
        self._stated: list[tuple[str, Any, str]] = []  # (model argument, value, where it was stated)
        self._run_name = "run"  # the (last) recipe's name: a logger-less fit's folder
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
            if flag.startswith("--model.") and linked in LINKED and value is not None:
                self._stated.append((linked, value, f"{flag} {value}"))
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
        """``path``, or a copy without the model's linked values (recorded for the check) and refusing a top-level
        ``optimizer`` / ``lr_scheduler``."""
        if not Path(path).is_file():
            return path  # inline YAML: jsonargparse parses it as is
        try:
            config = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError:
            return path  # jsonargparse reports the syntax error with its position
        if not isinstance(config, dict):
            return path
        migrated = _migrate_class_paths(config)
        for banned in ("optimizer", "lr_scheduler"):
            if banned in config:
                raise SystemExit(f"psn-zoo: error: {path} sets `{banned}:`. " + _OPTIMIZER_HELP.format(flag=banned))
        model = config.get("model")
        if not isinstance(model, dict):
            model = {}
        args = model.get("init_args") if isinstance(model.get("init_args"), dict) else model
        found = [k for k in LINKED if k in args]
        if not found and not migrated:
            return path
        for key in found:
            value = args.pop(key)
            self._stated.append((key, value, f"model.{key}: {value} in {path}"))
        folder = self._resources.enter_context(tempfile.TemporaryDirectory(prefix="psn-zoo-config-"))
        stripped = Path(folder) / Path(path).name
        stripped.write_text(yaml.safe_dump(config, sort_keys=False))
        return str(stripped)

    def _check_stated(self) -> None:
        """Every stated T / num_classes / in_channels must be the data's (which the model was built with)."""
        hp = self.model.hparams
        wrong = []
        for key, value, where in self._stated:
            try:
                same = int(value) == hp[key]
            except (TypeError, ValueError):
                same = False
            if not same:
                wrong.append(f"{where} but the data gives {key}={hp[key]}")
        if wrong:
            data = type(self.datamodule).__name__
            raise ValueError(
                "the model takes T, num_classes and in_channels from the data (LightningCLI links data.T, "
                f"data.num_classes, data.in_channels -> model): {'; '.join(wrong)}. Change the data instead "
                f"(e.g. --data.init_args.T for {data}'s frames, or a DataModule with that many classes or channels), "
                "or drop the model's value"
            )

    def before_instantiate_classes(self) -> None:
        """A fit without a logger gets its own folder, ``runs/<recipe>/<time>/`` (its checkpoints and config.yaml),
        as a W&B run does (``runs/psn-zoo/<run id>/``): Lightning would put every logger-less run's checkpoints in
        the same ``runs/checkpoints/``. An explicit ``--trainer.default_root_dir`` other than ``runs`` is kept."""
        if self.subcommand != "fit":
            return
        trainer = self.config["fit"]["trainer"]
        if trainer.get("logger") is not False or str(trainer.get("default_root_dir")) != "runs":
            return
        parent = Path("runs") / self._run_name
        if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(_RUN_STAMP):  # a DDP rank: rank 0's folder
            stamp = os.environ[_RUN_STAMP]
        else:
            stamp = base = time.strftime("%Y%m%d-%H%M%S")
            for n in itertools.count(2):
                if not (parent / stamp).exists():
                    break
                stamp = f"{base}-{n}"
            os.environ[_RUN_STAMP] = stamp  # inherited by the ranks Lightning's DDP launcher starts
        trainer["default_root_dir"] = str(parent / stamp)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self._check_stated()

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
        if str(ckpt_path) not in _LIGHTNING_CKPT_NAMES:
            config["ckpt_path"] = str(self._resources.enter_context(checked_checkpoint(ckpt_path)))
        path = Path(config["ckpt_path"])
        if path.is_file():  # Lightning's own parsing of the checkpoint's hparams, minus the linked values
            hparams = torch.load(path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
            hparams.pop("_instantiator", None)
            for key in LINKED:
                if key in hparams:
                    value = hparams.pop(key)
                    self._stated.append((key, value, f"the checkpoint {ckpt_path} has {key}={value}"))
            if hparams:
                try:
                    self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
                except SystemExit:
                    sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
                    raise
        self.config[subcommand]["model"]["pretrained"] = None  # the checkpoint's weights replace it anyway

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            kwargs["weights_only"] = True
        return kwargs


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
                trainer_defaults={"callbacks": [EvalDataFingerprint()]},  # validate/test: is the data the entry's?
                args=None if args is None else list(args),
                run=run,
                resources=resources,
            )
    finally:
        sys.argv = argv

