"""``SpikingClassifier``: any registered model, any neuron, trained or fine-tuned with Lightning.

Hyperparameters are plain strings and numbers (``save_hyperparameters`` stores only primitives), so a
checkpoint loads with ``torch.load(weights_only=True)`` and rebuilds the same model from its hparams. A checkpoint
is self-contained: its weights include whatever ``pretrained`` gave, so ``pretrained`` is stored as ``None`` (the
source is kept under the checkpoint's ``fine_tuned_from`` key) and never re-applied when the checkpoint is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Literal

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ..models import create_model, list_models
from ..neurons import NEURONS, list_neurons
from .firing import FiringRateMonitor
from .losses import mix_batch, rate_ce, tet_loss

# Literal types built from the registries: LightningCLI rejects an unknown name when it parses the config.
ModelName = Literal[tuple(list_models())]  # type: ignore[valid-type]
NeuronName = Literal[tuple(sorted(list_neurons() + [a for n in list_neurons() for a in NEURONS.aliases(n)]))]  # type: ignore[valid-type]


class SpikingClassifier(L.LightningModule):
    """Classification with a psn_zoo backbone.

    Args:
        model: registered model name (``psn-zoo models``).
        neuron: registered neuron name (``psn-zoo neurons``); its arguments go in ``neuron_kwargs``.
        neuron_kwargs: keyword arguments of the neuron, e.g. ``{"k": 2}`` for ``sliding_psn``.
        T: time steps (frames per sample, or repetitions of a static image).
        num_classes: classifier outputs.
        in_channels: input channels (2 for event frames' polarities).
        model_kwargs: further builder arguments (``input_size``, ``width_mult``, ``cnf``, ``head``...).
        loss: ``"ce"`` on the time-averaged logits, or ``"tet"`` (per-step CE + λ·MSE to ``tet_means``).
        label_smoothing: label smoothing of the cross-entropy, in [0, 1].
        tet_lambda: TET's λ, in [0, 1]. tet_means: TET's regularisation target.
        mixup_alpha: Mixup's Beta parameter (0 disables). cutmix_alpha: CutMix's (0 disables); its box covers all
            time steps of event frames, and for a sequence model, whose inputs ``[B, T, C, L]`` are images read
            column by column, the box is cut from that image (``T x L``, all channels: :func:`mix_batch`).
        optimizer: ``"sgd"`` (momentum) or ``"adamw"``. lr, momentum, weight_decay: its settings.
        scheduler: ``"cosine"`` (annealed over what the trainer will run: per epoch over ``trainer.max_epochs``, or
            per optimizer step over ``trainer.max_steps`` when that ends the run first), ``"step"`` or ``"none"``.
        step_size: epochs between decays of the step schedule (≥ 1). gamma: its decay factor (> 0).
        pretrained: published weights (``psn_zoo.list_pretrained()``), a Lightning ``.ckpt`` or a
            ``.safetensors`` file to start from; the classifier is replaced when its size differs.
        freeze_backbone: train only the classifier; the backbone's normalisation layers stay in eval mode (their
            running statistics are frozen too), also when the module is put in training mode.
        log_firing_rates: log every neuron layer's firing rate each validation epoch.
        log_input_samples: number of input samples logged as images to W&B once per run (0: none).
    """

    def __init__(
        self,
        model: ModelName = "paper_cifar10dvs_vgg",  # type: ignore[valid-type]
        neuron: NeuronName = "psn",  # type: ignore[valid-type]
        neuron_kwargs: dict[str, Any] | None = None,
        T: int = 4,
        num_classes: int = 10,
        in_channels: int = 2,
        model_kwargs: dict[str, Any] | None = None,
        loss: Literal["ce", "tet"] = "ce",
        label_smoothing: float = 0.0,
        tet_lambda: float = 1e-3,
        tet_means: float = 1.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        scheduler: Literal["cosine", "step", "none"] = "cosine",
        step_size: int = 30,
        gamma: float = 0.1,
        pretrained: str | None = None,
        freeze_backbone: bool = False,
        log_firing_rates: bool = True,
        log_input_samples: int = 4,
    ) -> None:
        super().__init__()
        _check_hyperparameters(locals())
        _check_model_kwargs(model_kwargs)
        self.save_hyperparameters()
        self.model = create_model(
            model,
            neuron={"name": neuron, **(neuron_kwargs or {})},
            T=T,
            num_classes=num_classes,
            in_channels=in_channels,
            **(model_kwargs or {}),
        )
        if pretrained:
            from .finetune import load_backbone_weights

            load_backbone_weights(self.model, pretrained, architecture=model)
        if freeze_backbone:
            from ..models import freeze_backbone as freeze

            freeze(self.model)
        top5 = min(5, num_classes)
        self.metrics = torch.nn.ModuleDict(
            {
                f"{stage}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for stage in ("train", "val", "test")
                for name, k in (("acc", 1), ("acc_top5", top5))
            }
        )
        # evaluation losses: the mean over every sample of every process (weighted by batch size), as one process
        # computes it; Lightning's own sync_dist mean of a logged tensor is not (see _shared_step)
        self.eval_losses = torch.nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        self.firing = FiringRateMonitor(self.model)
        self._logged_inputs = False
        self._cosine_T_max: int | None = None  # the cosine schedule's length (epochs, or steps)
        self.train(self.training)  # a frozen backbone's norm layers start in eval mode

    # ------------------------------------------------------------------ frozen backbone
    def frozen_norm_layers(self) -> list[torch.nn.Module]:
        """The backbone's normalisation layers with running statistics (BatchNorm, SyncBatchNorm, tracking
        InstanceNorm) when ``freeze_backbone`` is set: they stay in eval mode, so their statistics are frozen with
        their weights. Empty otherwise."""
        if not self.hparams.freeze_backbone:
            return []
        head = set(self.model.get_classifier().modules())
        return [m for m in self.model.modules()
                if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m not in head]  # fmt: skip

    def train(self, mode: bool = True) -> SpikingClassifier:
        """``nn.Module.train``, keeping a frozen backbone's normalisation layers in eval mode (Lightning calls
        ``.train()`` at the start of training and after every validation)."""
        super().train(mode)
        if mode:
            for layer in self.frozen_norm_layers():
                layer.eval()
        return self

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The weights already hold what ``pretrained`` gave: loading must not need (or re-apply) that source."""
        hparams = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY)
        if isinstance(hparams, dict) and hparams.get("pretrained"):
            checkpoint["fine_tuned_from"] = str(hparams["pretrained"])
            checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY] = {**hparams, "pretrained": None}

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path | IO, *args: Any, **kwargs: Any
    ) -> SpikingClassifier:
        """Lightning's ``load_from_checkpoint``, always with ``weights_only=True`` (a path or an http(s) URL, read
        once by :func:`psn_zoo.safe_load.checked_checkpoint` first) and never re-applying ``pretrained`` (older
        checkpoints stored it)."""
        from ..safe_load import checked_checkpoint

        if kwargs.get("weights_only") is False:
            raise ValueError(
                "psn_zoo loads checkpoints with weights_only=True only (unpickling a checkpoint could run code); "
                "drop weights_only=False"
            )
        kwargs |= {"weights_only": True, "pretrained": kwargs.get("pretrained")}
        if not isinstance(checkpoint_path, str | Path):
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        with checked_checkpoint(checkpoint_path) as path:
            return super().load_from_checkpoint(path, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Time-averaged logits ``[B, num_classes]``."""
        return self.model(x)

    def _loss(self, steps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        if hp.loss == "tet":
            return tet_loss(steps, target, hp.tet_lambda, hp.tet_means, hp.label_smoothing)
        return rate_ce(steps, target, hp.label_smoothing)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        target: torch.Tensor = y
        if stage == "train" and (self.hparams.mixup_alpha > 0 or self.hparams.cutmix_alpha > 0):
            x, target = mix_batch(x, y, self.hparams.num_classes, self.hparams.mixup_alpha, self.hparams.cutmix_alpha,
                                  sequence=self.model.input_kind == "sequence")  # fmt: skip
        steps = self.model.forward_steps(x)
        loss = self._loss(steps, target)
        logits = steps.mean(0).detach()
        for name in ("acc", "acc_top5"):
            metric = self.metrics[f"{stage}_{name}"]
            metric(logits, y)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "acc")
        if stage == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=True)
            return loss
        # evaluation: one loss over every process's samples, each batch weighted by its size. Lightning's sync_dist
        # mean averages the processes' means and, over gloo, truncates the summed batch count (9 samples on 2
        # processes gave 0.778 for 0.691); torchmetrics sums value·weight and weight over the processes instead
        mean = self.eval_losses[stage]
        mean.update(loss.detach(), weight=y.shape[0])
        self.log(f"{stage}/loss", mean, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self._log_inputs(batch[0], batch[1])
        if self.hparams.log_firing_rates:
            with self.firing.recording():
                self._shared_step(batch, "val")
        else:
            self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        with self.firing.recording():
            self._shared_step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """``{"probs": [B, classes], "pred": [B]}``, and ``"target": [B]`` when the batch has labels."""
        labelled = isinstance(batch, (list, tuple)) and len(batch) > 1
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        logits = self(x)
        with torch.autocast(device_type=logits.device.type, enabled=False):  # bf16 logits: rows summed to 1 ± 2e-3
            probs = logits.float().softmax(-1)
        out = {"probs": probs, "pred": probs.argmax(-1)}
        if labelled and isinstance(batch[1], torch.Tensor) and batch[1].dim() == 1:
            out["target"] = batch[1]
        return out

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):  # augmentation draws are seeded per epoch and sample
            dm.set_epoch(self.current_epoch)

    # ------------------------------------------------------------------ firing rates
    def on_validation_epoch_start(self) -> None:
        self.firing.reset()

    on_test_epoch_start = on_validation_epoch_start

    def _log_firing(self, stage: str) -> None:
        """Each layer's spikes over its outputs, summed over every sample of every process before dividing (a mean
        of the processes' rates would weigh a process's few samples as much as another's many), so DDP logs what
        one process would. Every process runs it (one all-reduce), and logs the same, already global, values."""
        if stage == "val" and not self.hparams.log_firing_rates:
            return
        names, spikes, totals = self.firing.counts()  # the same layers, in the same order, on every process
        if not names:
            return
        counts = torch.tensor(spikes + totals, dtype=torch.float64)  # exact counts up to 2^53
        trainer = self._trainer  # None when a hook is called by hand
        if trainer is not None and trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts.to(self.device), reduce_op="sum").cpu()
        spikes_all, totals_all = counts[: len(names)].tolist(), counts[len(names) :].tolist()
        if not sum(totals_all):
            return
        for name, n_spikes, n_total in zip(names, spikes_all, totals_all, strict=True):
            if n_total:  # the values are global already: max over equal values returns them exactly, unwarned
                self.log(f"firing_rate/{name}", n_spikes / n_total, sync_dist=True, reduce_fx="max")
        self.log(f"{stage}/firing_rate", sum(spikes_all) / sum(totals_all), sync_dist=True, reduce_fx="max")

    def on_validation_epoch_end(self) -> None:
        self._log_firing("val")

    def on_test_epoch_end(self) -> None:
        self._log_firing("test")

    def _is_sequence(self, sample_shape: Sequence[int]) -> bool:
        """Is one sample ``[T, C, ...]`` (frames or a sequence) rather than a static image ``[C, H, W]``? Read from
        the model's input kind and the rank, never from whether a size happens to equal T."""
        return self.model.input_kind == "sequence" or len(sample_shape) == 4

    def _log_inputs(self, x: torch.Tensor, y: torch.Tensor) -> None:
        n = self.hparams.log_input_samples
        if self._logged_inputs or not n or not isinstance(self.logger, WandbLogger) or not self.trainer.is_global_zero:
            return
        from psn_zoo.datamodules.visualize import frames_to_image

        images, captions = [], []
        for sample, label in zip(x[:n].cpu(), y[:n].cpu(), strict=False):
            frames = sample if self._is_sequence(sample.shape) else sample.unsqueeze(0)  # a static image: 1 frame
            image = frames_to_image(frames.abs())  # uint8, ON red, OFF blue, each frame scaled to its maximum
            pixel = max(1, 96 // image.shape[0])  # small inputs (34 x 34 event frames) drawn 2 x 2 or bigger
            images.append(image.repeat(pixel, axis=0).repeat(pixel, axis=1))
            captions.append(f"label {int(label)}")
        self.logger.log_image(key="inputs", images=images, caption=captions)
        self._logged_inputs = True

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return opt
        if hp.scheduler == "cosine":
            interval, self._cosine_T_max = self._cosine_length()
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self._cosine_T_max)
        else:
            interval = "epoch"
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.step_size, gamma=hp.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}

    def _cosine_length(self) -> tuple[str, int]:
        """``(interval, T_max)`` of the cosine schedule, over what the trainer will run: per epoch over
        ``max_epochs``, or per optimizer step over ``max_steps`` when that ends the run first (or the epochs are
        unbounded). A run with neither is refused."""
        trainer = self.trainer
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
        max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps > 0 else None
        if max_steps is not None:
            if max_epochs is None:
                return "step", max_steps
            trainer.estimated_stepping_batches  # noqa: B018 -- sets the training loader up (an epoch's length)
            batches = trainer.num_training_batches  # inf for a loader without a length
            per_epoch = math.ceil(batches / max(1, trainer.accumulate_grad_batches)) if math.isfinite(batches) else 0
            if not per_epoch or max_steps < per_epoch * max_epochs:
                return "step", max_steps
        if max_epochs is None:
            raise ValueError(
                "--model.scheduler cosine anneals over the run's length, but this run has none (trainer.max_epochs "
                f"{trainer.max_epochs} and no trainer.max_steps): set --trainer.max_epochs or --trainer.max_steps, or "
                "use --model.scheduler step or none"
            )
        return "epoch", max(1, max_epochs)

    def on_train_start(self) -> None:
        """A resumed cosine schedule anneals over this run's length: a checkpoint's scheduler state brings the
        ``T_max`` it was built with, so a run resumed with a larger ``--trainer.max_epochs`` (or ``max_steps``) would
        reach lr 0 at the old end and rise again. The learning rate continues on this run's curve instead (what a
        fresh run of this length has at this epoch or step), and says so. An exact resume changes nothing."""
        if self._cosine_T_max is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            if not isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
                continue
            unit = "epoch" if config.interval == "epoch" else "step"
            t = self.trainer.current_epoch if unit == "epoch" else self.trainer.global_step
            if sched.T_max == self._cosine_T_max and sched.last_epoch == t:
                continue
            old, sched.T_max, sched.last_epoch = sched.T_max, self._cosine_T_max, t
            for group, base in zip(sched.optimizer.param_groups, sched.base_lrs, strict=True):
                group["lr"] = sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * t / sched.T_max)) / 2
            sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]
            rank_zero_info(
                f"cosine schedule: the checkpoint annealed over {old}, this run over {sched.T_max} {unit}s; from "
                f"{unit} {t} on, the learning rate follows the {sched.T_max}-{unit} curve (lr {sched._last_lr[0]:.4g} "
                "now)"
            )

    # ------------------------------------------------------------------ data checks
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        problems = []
        if getattr(dm, "num_classes", self.hparams.num_classes) != self.hparams.num_classes:
            problems.append(f"num_classes: data has {dm.num_classes}, model {self.hparams.num_classes}")
        data_T = getattr(dm, "T", None)
        if isinstance(data_T, int) and data_T != self.hparams.T and self.model.fixed_T:
            problems.append(
                f"T: data gives {data_T} frames, the model's {self.hparams.neuron} neurons need {self.hparams.T}"
            )
        channels = getattr(dm, "in_channels", None)
        shape = getattr(dm, "input_shape", None)  # (T, C, ...) for sequences and frames, (C, H, W) for images
        if channels is None and shape is not None:
            channels = shape[1] if self._is_sequence(shape) else shape[0]
        if channels is not None and channels != self.hparams.in_channels:
            problems.append(f"in_channels: data has {channels}, model {self.hparams.in_channels}")
        if problems:
            raise ValueError(
                "the model and the data disagree: " + "; ".join(problems) + ". Build the model with the data's values "
                "(SpikingClassifier(T=..., num_classes=..., in_channels=...)); psn-zoo fit/validate/test take them "
                "from the data"
            )


#: hyperparameter -> (is the value valid, the rule the error states)
_RULES: dict[str, tuple[Any, str]] = {
    # a hub name as model would be fetched whenever a checkpoint recording it is loaded
    "model": (lambda v: isinstance(v, str) and v in list_models(),
              "an architecture name (psn_zoo.list_models()); published weights are given as "
              "pretrained= (--model.pretrained), e.g. pretrained='hf-hub:org/repo'"),
    "T": (lambda v: v >= 1, "≥ 1 (time steps)"),
    "num_classes": (lambda v: v >= 1, "≥ 1"),
    "in_channels": (lambda v: v >= 1, "≥ 1"),
    "label_smoothing": (lambda v: 0.0 <= v <= 1.0, "in [0, 1] (0: no smoothing)"),
    "tet_lambda": (lambda v: 0.0 <= v <= 1.0, "in [0, 1] (TET's weight of the MSE term; 0: per-step CE only)"),
    "tet_means": (math.isfinite, "finite"),
    "mixup_alpha": (lambda v: v >= 0.0, "≥ 0 (0: no Mixup)"),
    "cutmix_alpha": (lambda v: v >= 0.0, "≥ 0 (0: no CutMix)"),
    "lr": (lambda v: v >= 0.0, "≥ 0"),
    "momentum": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "weight_decay": (lambda v: v >= 0.0, "≥ 0"),
    "step_size": (lambda v: v >= 1, "≥ 1 (epochs between decays of the step schedule)"),
    "gamma": (lambda v: v > 0.0, "> 0 (the step schedule's decay factor)"),
    "log_input_samples": (lambda v: v >= 0, "≥ 0"),
}


def _check_hyperparameters(values: dict[str, Any]) -> None:
    """Refuse out-of-range hyperparameters when the module is built (they would otherwise fail deep inside a
    training step, or be silently ignored), naming each one, its range and the flag that sets it."""
    wrong = []
    for name, (valid, rule) in _RULES.items():
        value = values.get(name)
        try:
            ok = value is not None and not isinstance(value, bool) and bool(valid(value))
        except TypeError:
            ok = False
        if not ok:
            wrong.append(f"{name}={value!r} must be {rule}")
    if wrong:
        flags = ", ".join(f"--model.{w.split('=', 1)[0]}" for w in wrong)
        raise ValueError(f"SpikingClassifier: {'; '.join(wrong)}. Set {flags} (SpikingClassifier(...) in Python) "
                         "accordingly")  # fmt: skip


#: ``create_model`` arguments the classifier sets itself -> the classifier argument (``--model.<it>``) that sets them
_OWN_MODEL_ARGUMENTS = {
    "neuron": "neuron",
    "neuron_kwargs": "neuron_kwargs",
    "T": "T",
    "num_classes": "num_classes",
    "in_channels": "in_channels",
    "pretrained": "pretrained",
    "name": "model",
    "manifest": "pretrained",
    "source": "pretrained",
}


def _check_model_kwargs(model_kwargs: dict[str, Any] | None) -> None:
    """Refuse ``model_kwargs`` keys that the classifier's own arguments set (``create_model`` failed with "got
    multiple values for keyword argument", or the value was taken past the classifier), naming the flag to use."""
    taken = [k for k in (model_kwargs or {}) if k in _OWN_MODEL_ARGUMENTS]
    if taken:
        flags = ", ".join(dict.fromkeys(f"--model.{_OWN_MODEL_ARGUMENTS[k]}" for k in taken))
        raise ValueError(
            f"SpikingClassifier: model_kwargs sets {', '.join(taken)}, which the classifier's own arguments set: use "
            f"{flags} instead (SpikingClassifier(...) in Python); model_kwargs holds the architecture's further "
            "arguments (input_size, width_mult, channels...)"
        )
