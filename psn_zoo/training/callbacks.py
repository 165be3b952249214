"""Training callbacks: the masked PSN's λ schedule, random-state checkpointing for exact resumes, a learning-rate
monitor that a run without a logger skips, and the prediction writer of ``psn-zoo predict``."""

from __future__ import annotations

import csv
import itertools
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
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

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the epoch's metrics are final here (Lightning computes them before this hook); logged through the module,
        # val/acc_causal goes to the loggers with val/acc's step and epoch, and to callback_metrics before any
        # ModelCheckpoint reads it
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        masked = [m for m in pl_module.modules() if isinstance(m, MaskedPSN)]
        causal = all(float(m.lambda_) >= 1.0 for m in masked)
        causal_value = value.detach().clone() if causal else torch.zeros_like(value)
        pl_module.log(self.CAUSAL_KEY, causal_value, on_step=False, on_epoch=True, sync_dist=False)

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
    epoch's number in the callback, so logger-less runs (benchmarks) can read it back.

    ``samples`` are the samples the training batches actually held, counted batch by batch (so
    ``limit_train_batches``, a last partial batch and an interrupted epoch count what ran) and summed over every
    process under DDP; ``seconds`` is the slowest process's. Every process records the same numbers."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._start = self._paused = self._pause_start = 0.0
        self._samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._paused, self._samples = time.perf_counter(), 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self._samples += _batch_size(batch, trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._start:
            self._paused += time.perf_counter() - self._pause_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._start - self._paused
        samples = float(self._samples)
        if trainer.world_size > 1:  # every process's samples, over the slowest process's time
            device = trainer.strategy.root_device
            samples = float(_all_reduce(torch.tensor(samples, dtype=torch.float64, device=device), "sum"))
            seconds = float(_all_reduce(torch.tensor(seconds, dtype=torch.float64, device=device), "max"))
        samples = int(samples)
        rate = samples / seconds if seconds > 0 else 0.0
        self.epochs.append(
            {"epoch": trainer.current_epoch, "seconds": seconds, "samples": samples, "samples_per_s": rate}
        )
        pl_module.log("train/samples_per_s", rate, on_epoch=True, sync_dist=False, rank_zero_only=True)


def _all_reduce(value: torch.Tensor, op: str) -> torch.Tensor:
    """``value`` summed (``"sum"``) or maximised (``"max"``) over the processes of the default group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value, op=getattr(torch.distributed.ReduceOp, op.upper()))
    return value


def _batch_size(batch: Any, trainer: L.Trainer) -> int:
    """The number of samples in a training batch: the first dimension of its first tensor (Lightning's own rule),
    else the loader's ``batch_size``."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.data import extract_batch_size

    try:
        return int(extract_batch_size(batch))
    except MisconfigurationException:  # a batch without tensors: the loader's nominal size
        return int(getattr(trainer.train_dataloader, "batch_size", None) or 1)


def run_folder(trainer: L.Trainer) -> Path:
    """The folder of a run's own files: the first logger's ``<save_dir>/<name>/<version>`` (where Lightning's
    ``ModelCheckpoint`` puts ``checkpoints/``), or ``default_root_dir`` without a logger."""
    if trainer.loggers:
        logger = trainer.loggers[0]
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version
    return Path(trainer.default_root_dir)


def free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or the first of ``stem-2.suffix``, ``stem-3.suffix``... that does not exist: a run never
    overwrites a file an earlier run left in the same folder."""
    path = folder / name
    stem, suffix = path.stem, path.suffix
    for n in itertools.count(2):
        if not path.exists():
            return path
        path = folder / f"{stem}-{n}{suffix}"
    raise AssertionError("unreachable")


class PredictionWriter(BasePredictionWriter):
    """Write what ``predict_step`` returns to ``<run folder>/predictions.csv`` (``predictions-2.csv``... when one is
    there) at the end of ``predict`` and print its path. ``psn-zoo predict`` has one by default, which steps aside
    when the configuration has its own ``BasePredictionWriter`` (this one with another ``filename``, say).

    One row per sample, ordered by its index in the predicted dataset: ``index``, then each output (``target``,
    ``pred``, and ``probs_0`` ... ``probs_<classes-1>`` for :class:`SpikingClassifier`). Under DDP the ranks' rows
    are gathered into one file.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.path: Path | None = None
        self.fallback = False  # the CLI's default one: steps aside for a configured BasePredictionWriter
        self._active = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        others = [c for c in trainer.callbacks if isinstance(c, BasePredictionWriter) and c is not self
                  and not getattr(c, "fallback", False)]  # fmt: skip
        self._active = stage == "predict" and not (self.fallback and others)

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:  # fmt: skip
        if not self._active:
            return
        if predictions and isinstance(predictions[0], list):  # several dataloaders: one list each
            predictions = predictions[0]
        columns, rows = _prediction_rows(predictions, _first_loader_indices(batch_indices), trainer.global_rank)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (columns, rows))
            columns = next((part_columns for part_columns, _ in gathered if part_columns), columns)
            rows = [row for _, part in gathered for row in part]
            if any(row[0][0] for row in rows):  # every process sees every row: they all raise, none waits
                raise RuntimeError(
                    f"PredictionWriter: the predict loader of {trainer.world_size} processes gave no sample indices "
                    "(Lightning records them for a torch DataLoader only), so the rows of different processes "
                    "cannot be put in dataset order and predictions.csv would name the wrong samples. Predict with a "
                    "DataLoader, or in one process (--trainer.devices 1)"
                )
        if not trainer.is_global_zero:
            return
        rows.sort(key=lambda row: row[0])  # by dataset index
        rows = [row for i, row in enumerate(rows) if i == 0 or row[0] != rows[i - 1][0]]  # a padded shard's repeats
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = free_path(folder, self.filename)
        with self.path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", *columns])
            writer.writerows(row[1:] for row in rows)
        rank_zero_info(f"predict: wrote the predictions of {len(rows)} samples to {self.path}")


def _first_loader_indices(batch_indices: Any) -> list[Any]:
    """The sample indices of the first dataloader's batches, ``[batch][sample]``. Lightning hands them nested per
    dataloader (``[dataloader][batch][sample]``) even when ``predictions`` are flat (one dataloader); a flat
    ``[batch][sample]`` list is taken as it is."""
    if not batch_indices:
        return []
    first = batch_indices[0]
    if isinstance(first, (list, tuple)) and (not first or isinstance(first[0], (list, tuple))):
        return list(first)  # [dataloader][batch][sample]
    return list(batch_indices)


def _prediction_rows(predictions: list[Any], batch_indices: list[Any], rank: int) -> tuple[list[str], list[list]]:
    """The column names and the rows ``[sort key, index, values...]`` of ``predict_step``'s outputs: a dict of tensors
    (or one tensor, ``output``), each ``[B]`` (one column) or ``[B, K]`` (``name_0`` ... ``name_<K-1>``). The index is
    the sample's index in the dataset (the sampler's), or its position on this rank when the loader has none (the
    sort key then starts with ``rank + 1``, so rows without an index are told apart)."""
    columns: list[str] = []
    rows: list[list] = []
    position = 0
    for i, out in enumerate(predictions):
        out = out if isinstance(out, dict) else {"output": out}
        tensors = {k: v.detach().cpu() for k, v in out.items() if isinstance(v, torch.Tensor) and v.dim() in (1, 2)}
        tensors = dict(sorted(tensors.items(), key=lambda kv: (kv[1].dim(), kv[0] != "target")))  # target, pred, probs
        if not tensors:
            continue
        if not columns:
            for key, value in tensors.items():
                columns += [key] if value.dim() == 1 else [f"{key}_{j}" for j in range(value.shape[1])]
        size = next(iter(tensors.values())).shape[0]
        indices = list(batch_indices[i]) if batch_indices and i < len(batch_indices) and batch_indices[i] else []
        keys = ([(0, int(n)) for n in indices] if len(indices) == size
                else [(rank + 1, position + j) for j in range(size)])
        position += size
        per_sample = [v.reshape(size, -1).tolist() for v in tensors.values()]  # ints stay ints, floats floats
        for j in range(size):
            rows.append([keys[j], keys[j][1], *(x for values in per_sample for x in values[j])])
    return columns, rows
