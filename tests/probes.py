"""Callbacks the training tests inject through the CLI config (this folder is on the subprocesses' path)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist


class RankRecorder(L.Callback):
    """Writes, from every rank, which sample indices it trained on per epoch and its final parameters."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.indices: dict[int, list[int]] = {}
        self.sampler = ""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        self.sampler = type(sampler).__name__
        self.indices[trainer.current_epoch] = list(iter(sampler))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        torch.save(pl_module.model.state_dict(), self.out_dir / f"rank{rank}.pt")
        meta = {
            "pid": os.getpid(),
            "rank": rank,
            "world_size": trainer.world_size,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "sampler": self.sampler,
            "indices": self.indices,
        }
        (self.out_dir / f"rank{rank}.json").write_text(json.dumps(meta))


class KillMidEpoch(L.Callback):
    """SIGKILLs its own process at ``batch`` of ``epoch``: a crash with no chance to clean up."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
