"""The paper's CIFAR-10 network ("CIFAR10Net", ``cifar10/train_cf10.py``): a 6-conv spiking CNN, T = 4, PSN.

``[Conv3×3 → BN → neuron] ×3 → AvgPool2 → [Conv3×3 → BN → neuron] ×3 → AvgPool2 → Flatten → Linear(→4096)
→ neuron → Linear(4096 → classes)``, readout the mean over T. With ``channels=256`` (the paper's run) it has
70,113,174 parameters and reached 95.32 % on CIFAR-10. Module indices follow the paper's code (``conv.0``,
``conv.2`` = first neuron, …, ``fc.1``, ``fc.3``), so its checkpoints map key by key.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import layers as L
from .base import SpikingModel, _check_count
from .registry import register_model


class CifarCSNN(SpikingModel):
    classifier_path = "fc.3"

    def __init__(self, *, channels: int = 256, input_size: int = 32, fc_hidden: int = 4096, **base: Any) -> None:
        super().__init__(**base)
        for name, value in (("channels", channels), ("input_size", input_size), ("fc_hidden", fc_hidden)):
            _check_count(type(self).__name__, name, value, low=1)
        if input_size % 4:
            raise ValueError(f"input_size must be a multiple of 4 (two 2×2 pools), got {input_size}")
        layers: list[nn.Module] = []
        cin = self.in_channels
        for _stage in range(2):
            for _ in range(3):
                layers += [
                    L.Conv2d(cin, channels, kernel_size=3, padding=1, bias=False),
                    L.BatchNorm2d(channels),
                    self.make_neuron(),
                ]
                cin = channels
            layers.append(L.AvgPool2d(2, 2))
        self.conv = nn.Sequential(*layers)
        side = input_size // 4
        self.input_grid = ("input_size", input_size, 4)
        self.fc = nn.Sequential(
            L.FlattenFeatures(),
            nn.Linear(channels * side * side, fc_hidden),
            self.make_neuron(),
            self.new_classifier(fc_hidden),
        )

    def _features(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.fc[0](self.conv(x_seq))

    def _head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        hidden = self.fc[2](self.fc[1](features))
        return hidden if pre_logits else self.fc[3](hidden)


@register_model("paper_cifar10_csnn", family="paper", paper=True)
def paper_cifar10_csnn(
    *,
    neuron="psn",
    T=4,
    num_classes=10,
    in_channels=3,
    channels=256,
    input_size=32,
    fc_hidden=4096,
    **neuron_kwargs,
):
    """The paper's CIFAR-10 CSNN (6 conv + 2 FC, PSN, T = 4; 95.32 % on CIFAR-10)."""
    return CifarCSNN(
        channels=channels,
        input_size=input_size,
        fc_hidden=fc_hidden,
        T=T,
        num_classes=num_classes,
        in_channels=in_channels,
        neuron=neuron,
        neuron_kwargs=neuron_kwargs,
    )
