"""The paper's sequential-CIFAR network (``sequential_cifar/train_secf10.py``): a 1-D spiking CNN over columns.

An image is read one column per step (``[B, W=T, C, H]``), so the convolutions run along H:
``[Conv1d k3 → BN1d → neuron] ×3 → AvgPool1d(2) → [Conv1d → BN1d → neuron] ×3 → AvgPool1d(2) → Flatten →
Linear(channels·H/4 → 256) → neuron → Linear(256 → classes)``, read out as the mean over the T = 32 steps.
The paper compares PSN (88.45 / 62.21 % on sequential CIFAR-10/100), sliding PSN, masked PSN and LIF on it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import layers as L
from .base import SpikingModel, _check_count
from .registry import register_model


class SequentialCNN(SpikingModel):
    input_kind = "sequence"
    classifier_path = "fc.3"

    def __init__(self, *, channels: int = 128, length: int = 32, fc_hidden: int = 256, **base: Any) -> None:
        super().__init__(**base)
        for name, value in (("channels", channels), ("length", length), ("fc_hidden", fc_hidden)):
            _check_count(type(self).__name__, name, value, low=1)
        if length % 4:
            raise ValueError(f"length must be a multiple of 4 (two pools of 2), got {length}")
        self.input_grid = ("length", length, 4)
        layers: list[nn.Module] = []
        cin = self.in_channels
        for _ in range(2):
            for _ in range(3):
                layers += [
                    L.Conv1d(cin, channels, kernel_size=3, padding=1, bias=False),
                    L.BatchNorm1d(channels),
                    self.make_neuron(),
                ]
                cin = channels
            layers.append(L.AvgPool1d(2))
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            L.FlattenFeatures(spatial_dims=1),
            nn.Linear(channels * (length // 4), fc_hidden),
            self.make_neuron(),
            self.new_classifier(fc_hidden),
        )

    def _features(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.fc[0](self.conv(x_seq))

    def _head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        hidden = self.fc[2](self.fc[1](features))
        return hidden if pre_logits else self.fc[3](hidden)


@register_model("paper_seq_cnn", family="paper", paper=True, input="sequence")
def paper_seq_cnn(
    *, neuron="psn", T=32, num_classes=10, in_channels=3, channels=128, length=32, fc_hidden=256, **neuron_kwargs
):
    """The paper's sequential-CIFAR 1-D CNN (columns as time steps, T = 32)."""
    return SequentialCNN(
        channels=channels,
        length=length,
        fc_hidden=fc_hidden,
        T=T,
        num_classes=num_classes,
        in_channels=in_channels,
        neuron=neuron,
        neuron_kwargs=neuron_kwargs,
    )
