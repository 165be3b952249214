"""``psn-zoo fit|validate|test|predict --config configs/<recipe>.yaml``: LightningCLI over the zoo.

The model is always :class:`SpikingClassifier` (its ``model`` and ``neuron`` are checked against the registries
when the config is parsed); the data is any ``LightningDataModule`` given by class path or by name, e.g.
``--data NDigitsDataModule --data.T 4``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.cli import LightningCLI

import datamodules  # noqa: F401  (makes the DataModules resolvable by class name)

from .classifier import SpikingClassifier


class ZooCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.default_root_dir": "runs"})


def run_cli(args: Sequence[str] | None = None, run: bool = True) -> ZooCLI:
    """``args=None`` reads ``sys.argv`` (the console script); code passes a list."""
    argv = sys.argv
    if args is not None:
        sys.argv = argv[:1]  # an explicit list replaces the command line (and LightningCLI's warning about both)
    try:
        return ZooCLI(
            SpikingClassifier,
            L.LightningDataModule,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=None if args is None else list(args),
            run=run,
        )
    finally:
        sys.argv = argv
