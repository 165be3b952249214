"""Weights & Biases logging that works without an account: offline when no credentials are found."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

_ANNOUNCED = False


def has_wandb_credentials() -> bool:
    """``WANDB_API_KEY`` or a ``wandb login`` entry in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
        return path.exists() and netrc.netrc(str(path)).authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class ZooWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` with the zoo's defaults (project ``psn-zoo``, runs under ``runs/``,
    checkpoints logged as artifacts), switching to offline mode when there are no credentials.

    Offline mode goes through ``WANDB_MODE=offline`` rather than ``offline=True``, which Lightning refuses to
    combine with ``log_model``. The first logger of a process says where the run goes and how to upload it.
    """

    def __init__(self, project: str = "psn-zoo", save_dir: str = "runs", log_model: bool | str = True, **kwargs: Any):
        global _ANNOUNCED
        offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun")
        if not os.environ.get("WANDB_MODE") and not has_wandb_credentials():
            os.environ["WANDB_MODE"] = "offline"
            offline = True
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, save_dir=save_dir, log_model=log_model, **kwargs)
        if offline and not _ANNOUNCED:
            _ANNOUNCED = True
            rank_zero_info(
                f"W&B: no credentials found (WANDB_API_KEY or `wandb login`), logging offline to "
                f"{Path(save_dir).resolve()}/wandb/. Upload a run later with: "
                f"wandb sync {Path(save_dir)}/wandb/offline-run-*"
            )
