"""Training callbacks: the masked PSN's λ schedule, random-state checkpointing for exact resumes, and a learning-rate
monitor that a run without a logger skips."""

from __future__ import annotations

import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import LearningRateMonitor as _LightningLearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info

from ..neurons import MaskedPSN


def paper_lambda(epoch: int, max_epochs: int, factor: float = 8.0) -> float:
    """The paper code's schedule: ``λ_e = min(factor·e / (E − 1), 1)`` (λ = 1 from epoch E/8 on)."""
    if max_epochs <= 1:
        return 1.0
    return min(factor * epoch / (max_epochs - 1), 1.0)


class MaskedPSNSchedule(L.Callback):
    """Set λ of every masked PSN at the start of each training epoch (the same λ is used for that epoch's
    validation), log it, and keep it with the checkpoint (λ is a buffer, so it is in the state dict too).

    It also publishes ``val/acc_causal``: ``val/acc`` in epochs whose model is causal (every λ = 1) and 0 before,
    so a ``ModelCheckpoint(monitor="val/acc_causal")`` never keeps a not-yet-masked (non-causal) model as the
    best one (the paper code's "max test accuracy" could; see ../shared/notes/psn-paper.md).

    Args:
        factor: the ramp's slope in units of the run length (8: the mask is complete after 1/8 of training).
        monitor: the validation metric that ``val/acc_causal`` follows.
    """

    CAUSAL_KEY = "val/acc_causal"

    def __init__(self, factor: float = 8.0, monitor: str = "val/acc") -> None:
        self.factor = factor
        self.monitor = monitor
        self.lambda_: float | None = None

    def _set(self, pl_module: L.LightningModule, value: float) -> None:
        for m in pl_module.modules():
            if isinstance(m, MaskedPSN):
                m.lambda_ = value
        self.lambda_ = value

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_epochs is None or trainer.max_epochs < 0:
            raise ValueError("MaskedPSNSchedule needs trainer.max_epochs to place the end of the ramp")
        self._set(pl_module, paper_lambda(trainer.current_epoch, trainer.max_epochs, self.factor))
        pl_module.log("masked_psn/lambda", self.lambda_, on_step=False, on_epoch=True, sync_dist=False)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs before every ModelCheckpoint's on_validation_end (Lightning moves checkpoint callbacks last)
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        masked = [m for m in pl_module.modules() if isinstance(m, MaskedPSN)]
        causal = all(float(m.lambda_) >= 1.0 for m in masked)
        trainer.callback_metrics[self.CAUSAL_KEY] = value.clone() if causal else torch.zeros_like(value)
        if trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.log_metrics({self.CAUSAL_KEY: float(trainer.callback_metrics[self.CAUSAL_KEY])},
                                       step=trainer.global_step)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"lambda_": self.lambda_, "factor": self.factor}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lambda_ = state_dict.get("lambda_")


class RandomStateCheckpoint(L.Callback):
    """Save the Python, NumPy and torch random states with every checkpoint and restore them on resume, so a
    resumed run draws the same dropout masks and augmentations as an uninterrupted one."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {  # tensors and plain Python values only: checkpoints stay loadable with weights_only=True
            "python": random.getstate(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = getattr(self, "_pending", None)
        if state is None:
            return
        random.setstate(_tuple(state["python"]))
        numpy_state = state["numpy"]
        np.random.set_state(
            (
                numpy_state["kind"],
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["pos"],
                numpy_state["has_gauss"],
                numpy_state["cached"],
            )
        )
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self._pending = None


def _tuple(value: Any) -> Any:
    """Checkpoints store tuples as lists; random.setstate wants the nested tuples back."""
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


class LearningRateMonitor(_LightningLearningRateMonitor):
    """Lightning's ``LearningRateMonitor``, except that a run without a logger (``--trainer.logger false``) skips it
    instead of failing with "Cannot use LearningRateMonitor callback with Trainer that has no logger": the recipes
    list it, and turning W&B off must not need a recipe edit."""

    _off = False

    def on_train_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._off = not trainer.loggers
        if self._off:
            rank_zero_info("LearningRateMonitor: no logger (trainer.logger is false); the learning rate is not logged")
            return
        super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not self._off:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not self._off:
            super().on_train_epoch_start(trainer, *args, **kwargs)


class EpochClock(L.Callback):
    """Training throughput per epoch: ``epochs`` lists ``{"epoch", "seconds", "samples", "samples_per_s"}`` with the
    wall time of the training batches only (validation inside the epoch is subtracted), and each epoch logs
    ``train/samples_per_s``. Lightning's ``ThroughputMonitor`` needs a logger and counts batches; this keeps every
    epoch's number in the callback, so logger-less runs (benchmarks) can read it back."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._start = self._paused = self._pause_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._paused = time.perf_counter(), 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._start:
            self._paused += time.perf_counter() - self._pause_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._start - self._paused
        loader = trainer.train_dataloader
        samples = len(loader.dataset) if loader is not None and hasattr(loader, "dataset") else 0
        if trainer.limit_train_batches is not None and trainer.num_training_batches < len(loader or ()):
            samples = min(samples, trainer.num_training_batches * (loader.batch_size or 1))
        rate = samples / seconds if seconds > 0 else 0.0
        self.epochs.append(
            {"epoch": trainer.current_epoch, "seconds": seconds, "samples": samples, "samples_per_s": rate}
        )
        pl_module.log("train/samples_per_s", rate, on_epoch=True, sync_dist=False, rank_zero_only=True)
