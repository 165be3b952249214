"""Spiking VGG-11/13/16, with or without batch norm, torchvision layout, any neuron.

``features`` (3×3 conv [→ BN] → neuron, max pools), ``avgpool`` to 7×7, and the three-layer classifier
``Linear(25088, 4096) → neuron → Dropout → Linear(4096, 4096) → neuron → Dropout → Linear(4096, classes)``,
named as in SpikingJelly 2.0.0 so their state dicts map one to one; as there, each dropout mask is shared by all
time steps of a sample. ``head="compact"`` swaps the 120 M-parameter classifier for global average pooling and one
linear layer, the sensible choice for small event frames.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from . import layers as L
from .base import SpikingModel
from .registry import register_model

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class SpikingVGG(SpikingModel):
    """Spiking VGG. ``head="torchvision"`` (default) keeps the 4096-wide classifier; ``"compact"`` uses a
    global average pool and a single linear layer."""

    classifier_path = "classifier.6"

    def __init__(
        self,
        config: list[int | str],
        *,
        batch_norm: bool,
        head: Literal["torchvision", "compact"] = "torchvision",
        dropout: float = 0.5,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        layers: list[nn.Module] = []
        cin = self.in_channels
        for v in config:
            if v == "M":
                layers.append(L.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(L.Conv2d(cin, int(v), kernel_size=3, padding=1))
            if batch_norm:
                layers.append(L.BatchNorm2d(int(v)))
            layers.append(self.make_neuron())
            cin = int(v)
        self.features = nn.Sequential(*layers)
        if head == "torchvision":
            self.avgpool = L.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                self.make_neuron(),
                L.Dropout(dropout),
                nn.Linear(4096, 4096),
                self.make_neuron(),
                L.Dropout(dropout),
                self.new_classifier(4096),
            )
        elif head == "compact":
            self.avgpool = L.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Sequential(L.Dropout(dropout), self.new_classifier(512))
            self.classifier_path = "classifier.1"
        else:
            raise ValueError(f"head must be 'torchvision' or 'compact', got {head!r}")
        self.flatten = L.FlattenFeatures()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def _features(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.avgpool(self.features(x_seq)))

    def _head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        hidden = self.classifier[:-1](features)
        return hidden if pre_logits else self.classifier[-1](hidden)


def _vgg(name: str, batch_norm: bool, neuron, T, num_classes, in_channels, head, neuron_kwargs) -> SpikingVGG:
    return SpikingVGG(
        CONFIGS[name],
        batch_norm=batch_norm,
        head=head,
        T=T,
        num_classes=num_classes,
        in_channels=in_channels,
        neuron=neuron,
        neuron_kwargs=neuron_kwargs,
    )


@register_model("spiking_vgg11", family="vgg", spikingjelly="spiking_vgg11")
def spiking_vgg11(*, neuron="psn", T=4, num_classes=1000, in_channels=3, head="torchvision", **neuron_kwargs):
    """Spiking VGG-11."""
    return _vgg("vgg11", False, neuron, T, num_classes, in_channels, head, neuron_kwargs)


@register_model("spiking_vgg11_bn", family="vgg", spikingjelly="spiking_vgg11_bn")
def spiking_vgg11_bn(*, neuron="psn", T=4, num_classes=1000, in_channels=3, head="torchvision", **neuron_kwargs):
    """Spiking VGG-11 with batch norm."""
    return _vgg("vgg11", True, neuron, T, num_classes, in_channels, head, neuron_kwargs)


@register_model("spiking_vgg13", family="vgg", spikingjelly="spiking_vgg13")
def spiking_vgg13(*, neuron="psn", T=4, num_classes=1000, in_channels=3, head="torchvision", **neuron_kwargs):
    """Spiking VGG-13."""
    return _vgg("vgg13", False, neuron, T, num_classes, in_channels, head, neuron_kwargs)


@register_model("spiking_vgg13_bn", family="vgg", spikingjelly="spiking_vgg13_bn")
def spiking_vgg13_bn(*, neuron="psn", T=4, num_classes=1000, in_channels=3, head="torchvision", **neuron_kwargs):
    """Spiking VGG-13 with batch norm."""
    return _vgg("vgg13", True, neuron, T, num_classes, in_channels, head, neuron_kwargs)


@register_model("spiking_vgg16", family="vgg", spikingjelly="spiking_vgg16")
def spiking_vgg16(*, neuron="psn", T=4, num_classes=1000, in_channels=3, head="torchvision", **neuron_kwargs):
    """Spiking VGG-16."""
    return _vgg("vgg16", False, neuron, T, num_classes, in_channels, head, neuron_kwargs)


@register_model("spiking_vgg16_bn", family="vgg", spikingjelly="spiking_vgg16_bn")
def spiking_vgg16_bn(*, neuron="psn", T=4, num_classes=1000, in_channels=3, head="torchvision", **neuron_kwargs):
    """Spiking VGG-16 with batch norm."""
    return _vgg("vgg16", True, neuron, T, num_classes, in_channels, head, neuron_kwargs)
