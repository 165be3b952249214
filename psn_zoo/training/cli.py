"""``psn-zoo fit|validate|test|predict --config configs/<recipe>.yaml``: LightningCLI over the zoo.

The model is always :class:`SpikingClassifier` (its ``model`` and ``neuron`` are checked against the registries
when the config is parsed); the data is any ``LightningDataModule`` given by class path or by name, e.g.
``--data NDigitsDataModule --data.T 4``.

``--ckpt_path`` (a path or an http(s) URL) is read once with ``weights_only=True`` before anything else happens (a
file that would unpickle code is refused with a clear error), a URL is downloaded into a private temporary folder
removed after the run, and the trainer always loads it with ``weights_only=True`` (``--weights_only false`` is
refused). A checkpoint brings its own weights, so ``model.pretrained`` is not applied when one is given.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI

import datamodules  # noqa: F401  (makes the DataModules resolvable by class name)

from ..safe_load import checked_checkpoint
from .classifier import SpikingClassifier

# ckpt_path values Lightning resolves to the current run's own checkpoints (still loaded with weights_only=True);
# anything else, Lightning's model registry included, must be a path or an http(s) URL
_LIGHTNING_CKPT_NAMES = ("best", "last", "hpc")


class ZooCLI(LightningCLI):
    def __init__(self, *args: Any, resources: contextlib.ExitStack | None = None, **kwargs: Any) -> None:
        self._resources = resources if resources is not None else contextlib.ExitStack()
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.default_root_dir": "runs"})

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is not None and config.get("weights_only") is False:
            raise ValueError(
                "psn-zoo loads checkpoints with weights_only=True only (unpickling a checkpoint could run code); "
                "drop --weights_only false"
            )
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path and str(ckpt_path) not in _LIGHTNING_CKPT_NAMES:
            config["ckpt_path"] = str(self._resources.enter_context(checked_checkpoint(ckpt_path)))
        super()._parse_ckpt_path()
        if ckpt_path:
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
                save_config_kwargs={"overwrite": True},
                args=None if args is None else list(args),
                run=run,
                resources=resources,
            )
    finally:
        sys.argv = argv
