"""Training and fine-tuning with Lightning: the classifier module, losses, callbacks, W&B logging."""

from .callbacks import (
    EpochClock,
    LearningRateMonitor,
    MaskedPSNSchedule,
    PredictionWriter,
    RandomStateCheckpoint,
    paper_lambda,
)
from .classifier import SpikingClassifier
from .finetune import load_backbone_weights, read_weights
from .firing import FiringRateMonitor
from .wandb import ZooWandbLogger, has_wandb_credentials

__all__ = [
    "EpochClock",
    "FiringRateMonitor",
    "LearningRateMonitor",
    "MaskedPSNSchedule",
    "PredictionWriter",
    "RandomStateCheckpoint",
    "SpikingClassifier",
    "ZooWandbLogger",
    "has_wandb_credentials",
    "load_backbone_weights",
    "paper_lambda",
    "read_weights",
]
