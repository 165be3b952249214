"""Spiking ResNet and SEW-ResNet (Fang et al., NeurIPS 2021), torchvision layout, any neuron.

- Spiking ResNet: the ANN block with ReLU replaced by a neuron; the last neuron fires on ``branch + shortcut``.
- SEW-ResNet: the block's output is a spike-element-wise function of the identity ``S`` and the branch's spikes
  ``A``: ``ADD: S + A``, ``AND: S·A``, ``IAND: S·(1 − A)``; the downsampling shortcut ends in a neuron.
- The paper's ImageNet SEW-ResNet (``paper_sew_resnet18/34/50/101/152``: the depths of its ``train.py``) adds a
  learnable temporal embedding ``pe`` ``[T, 1, 1, 1, 1]`` to the repeated image and uses an average-pool stem.

Module names follow SpikingJelly 2.0.0 / torchvision (``conv1``, ``bn1``, ``sn1``, ``layer1.0.conv1``, …, ``fc``),
so their state dicts map one to one (see :mod:`psn_zoo.models.convert`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from . import layers as L
from .base import SpikingModel
from .registry import register_model

Connect = Literal["ADD", "AND", "IAND"]


def sew_connect(identity: torch.Tensor, branch: torch.Tensor, cnf: Connect) -> torch.Tensor:
    """Spike-element-wise connection of the identity ``S`` and the branch output ``A``."""
    if cnf == "ADD":
        return identity + branch
    if cnf == "AND":
        return identity * branch
    return identity * (1.0 - branch)  # IAND


def _conv3x3(cin: int, cout: int, stride: int = 1) -> L.Conv2d:
    return L.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> L.Conv2d:
    return L.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        neuron: Callable[[], nn.Module],
        cnf: Connect | None,
    ) -> None:
        super().__init__()
        self.cnf = cnf
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = L.BatchNorm2d(planes)
        self.sn1 = neuron()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = L.BatchNorm2d(planes)
        self.sn2 = neuron()
        self.downsample = downsample
        if downsample is not None and cnf is not None:
            self.downsample_sn = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.cnf is None:  # spiking ResNet: fire on the sum
            identity = x if self.downsample is None else self.downsample(x)
            return self.sn2(out + identity)
        identity = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return sew_connect(identity, self.sn2(out), self.cnf)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        neuron: Callable[[], nn.Module],
        cnf: Connect | None,
    ) -> None:
        super().__init__()
        self.cnf = cnf
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = L.BatchNorm2d(planes)
        self.sn1 = neuron()
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = L.BatchNorm2d(planes)
        self.sn2 = neuron()
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = L.BatchNorm2d(planes * 4)
        self.sn3 = neuron()
        self.downsample = downsample
        if downsample is not None and cnf is not None:
            self.downsample_sn = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.cnf is None:
            identity = x if self.downsample is None else self.downsample(x)
            return self.sn3(out + identity)
        identity = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return sew_connect(identity, self.sn3(out), self.cnf)


class SpikingResNet(SpikingModel):
    """Spiking ResNet (``cnf=None``) or SEW-ResNet (``cnf`` in ADD/AND/IAND) with any neuron.

    Stem: conv 7×7/2 → BN → neuron → 3×3/2 pool (max, or average for the paper's ImageNet variant);
    four stages; global average pool; ``fc``. ``temporal_embedding`` adds a learnable ``pe [T, 1, 1, 1, 1]``
    (trunc-normal, std 0.02) to the repeated input, as in the paper's ImageNet runs.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        *,
        cnf: Connect | None,
        stem_pool: Literal["max", "avg"] = "max",
        temporal_embedding: bool = False,
        zero_init_residual: bool = False,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if cnf is not None and cnf not in ("ADD", "AND", "IAND"):
            raise ValueError(f"cnf must be one of 'ADD', 'AND', 'IAND' (or None for spiking ResNet), got {cnf!r}")
        self.cnf = cnf
        if temporal_embedding:
            self.pe = nn.Parameter(torch.zeros(self.T, 1, 1, 1, 1))
            self.fixed_T = True  # the embedding has T steps, whatever the neuron
            nn.init.trunc_normal_(self.pe, std=0.02)
        self.inplanes = 64
        self.conv1 = L.Conv2d(self.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = L.BatchNorm2d(64)
        self.sn1 = self.make_neuron()
        pool = L.MaxPool2d if stem_pool == "max" else L.AvgPool2d
        self.maxpool = pool(kernel_size=3, stride=2, padding=1)  # the paper's code names its average pool so too
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = L.AdaptiveAvgPool2d((1, 1))
        self.flatten = L.FlattenFeatures()
        self.fc = self.new_classifier(512 * block.expansion)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride), L.BatchNorm2d(planes * block.expansion)
            )
        stage = [block(self.inplanes, planes, stride, downsample, self.make_neuron, self.cnf)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, 1, None, self.make_neuron, self.cnf) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _features(self, x_seq: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pe") and x_seq.dim() == 5:
            x_seq = x_seq + self.pe
        x = self.maxpool(self.sn1(self.bn1(self.conv1(x_seq))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.flatten(self.avgpool(x))

    def _frame_input(self, frame: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pe"):
            if self._t >= self.T:
                raise RuntimeError(f"the temporal embedding covers T={self.T} steps; call reset_states()")
            return frame + self.pe[self._t, 0]
        return frame


# ----------------------------------------------------------------------------------------- builders
def _resnet(block, layers, cnf, neuron, T, num_classes, in_channels, neuron_kwargs, **options) -> SpikingResNet:
    return SpikingResNet(
        block,
        layers,
        cnf=cnf,
        T=T,
        num_classes=num_classes,
        in_channels=in_channels,
        neuron=neuron,
        neuron_kwargs=neuron_kwargs,
        **options,
    )


@register_model("spiking_resnet18", family="spiking_resnet", spikingjelly="spiking_resnet18")
def spiking_resnet18(*, neuron="psn", T=4, num_classes=1000, in_channels=3, zero_init_residual=False, **neuron_kwargs):
    """Spiking ResNet-18 (BasicBlock [2, 2, 2, 2])."""
    return _resnet(
        BasicBlock,
        [2, 2, 2, 2],
        None,
        neuron,
        T,
        num_classes,
        in_channels,
        neuron_kwargs,
        zero_init_residual=zero_init_residual,
    )


@register_model("spiking_resnet34", family="spiking_resnet", spikingjelly="spiking_resnet34")
def spiking_resnet34(*, neuron="psn", T=4, num_classes=1000, in_channels=3, zero_init_residual=False, **neuron_kwargs):
    """Spiking ResNet-34 (BasicBlock [3, 4, 6, 3])."""
    return _resnet(
        BasicBlock,
        [3, 4, 6, 3],
        None,
        neuron,
        T,
        num_classes,
        in_channels,
        neuron_kwargs,
        zero_init_residual=zero_init_residual,
    )


@register_model("spiking_resnet50", family="spiking_resnet", spikingjelly="spiking_resnet50")
def spiking_resnet50(*, neuron="psn", T=4, num_classes=1000, in_channels=3, zero_init_residual=False, **neuron_kwargs):
    """Spiking ResNet-50 (Bottleneck [3, 4, 6, 3])."""
    return _resnet(
        Bottleneck,
        [3, 4, 6, 3],
        None,
        neuron,
        T,
        num_classes,
        in_channels,
        neuron_kwargs,
        zero_init_residual=zero_init_residual,
    )


@register_model("sew_resnet18", family="sew_resnet", spikingjelly="sew_resnet18")
def sew_resnet18(*, neuron="psn", T=4, num_classes=1000, in_channels=3, cnf="ADD", **neuron_kwargs):
    """SEW-ResNet-18 (BasicBlock [2, 2, 2, 2]); ``cnf`` in ADD, AND, IAND."""
    return _resnet(BasicBlock, [2, 2, 2, 2], cnf, neuron, T, num_classes, in_channels, neuron_kwargs)


@register_model("sew_resnet34", family="sew_resnet", spikingjelly="sew_resnet34")
def sew_resnet34(*, neuron="psn", T=4, num_classes=1000, in_channels=3, cnf="ADD", **neuron_kwargs):
    """SEW-ResNet-34 (BasicBlock [3, 4, 6, 3]); ``cnf`` in ADD, AND, IAND."""
    return _resnet(BasicBlock, [3, 4, 6, 3], cnf, neuron, T, num_classes, in_channels, neuron_kwargs)


@register_model("sew_resnet50", family="sew_resnet", spikingjelly="sew_resnet50")
def sew_resnet50(*, neuron="psn", T=4, num_classes=1000, in_channels=3, cnf="ADD", **neuron_kwargs):
    """SEW-ResNet-50 (Bottleneck [3, 4, 6, 3]); ``cnf`` in ADD, AND, IAND."""
    return _resnet(Bottleneck, [3, 4, 6, 3], cnf, neuron, T, num_classes, in_channels, neuron_kwargs)


@register_model("paper_sew_resnet18", family="sew_resnet", paper=True)
def paper_sew_resnet18(*, neuron="psn", T=4, num_classes=1000, in_channels=3, cnf="ADD", **neuron_kwargs):
    """The paper's ImageNet SEW-ResNet-18: average-pool stem and learnable temporal embedding ``pe`` (67.63 % top-1)."""
    return _resnet(
        BasicBlock,
        [2, 2, 2, 2],
        cnf,
        neuron,
        T,
        num_classes,
        in_channels,
        neuron_kwargs,
        stem_pool="avg",
        temporal_embedding=True,
    )


@register_model("paper_sew_resnet34", family="sew_resnet", paper=True)
def paper_sew_resnet34(*, neuron="psn", T=4, num_classes=1000, in_channels=3, cnf="ADD", **neuron_kwargs):
    """The paper's ImageNet SEW-ResNet-34: average-pool stem and learnable temporal embedding ``pe`` (70.54 % top-1)."""
    return _resnet(
        BasicBlock,
        [3, 4, 6, 3],
        cnf,
        neuron,
        T,
        num_classes,
        in_channels,
        neuron_kwargs,
        stem_pool="avg",
        temporal_embedding=True,
    )


def _paper_sew(block, layers, neuron, T, num_classes, in_channels, cnf, neuron_kwargs) -> SpikingResNet:
    return _resnet(block, layers, cnf, neuron, T, num_classes, in_channels, neuron_kwargs, stem_pool="avg",
                   temporal_embedding=True)  # fmt: skip


@register_model("paper_sew_resnet50", family="sew_resnet", paper=True)
def paper_sew_resnet50(*, neuron="psn", T=4, num_classes=1000, in_channels=3, cnf="ADD", **neuron_kwargs):
    """The paper code's ImageNet SEW-ResNet-50 (Bottleneck [3, 4, 6, 3]; average-pool stem, ``pe``); no released run."""
    return _paper_sew(Bottleneck, [3, 4, 6, 3], neuron, T, num_classes, in_channels, cnf, neuron_kwargs)


@register_model("paper_sew_resnet101", family="sew_resnet", paper=True)
def paper_sew_resnet101(*, neuron="psn", T=4, num_classes=1000, in_channels=3, cnf="ADD", **neuron_kwargs):
    """The paper code's ImageNet SEW-ResNet-101 (Bottleneck [3, 4, 23, 3]; average-pool stem, ``pe``); no released
    run."""
    return _paper_sew(Bottleneck, [3, 4, 23, 3], neuron, T, num_classes, in_channels, cnf, neuron_kwargs)


@register_model("paper_sew_resnet152", family="sew_resnet", paper=True)
def paper_sew_resnet152(*, neuron="psn", T=4, num_classes=1000, in_channels=3, cnf="ADD", **neuron_kwargs):
    """The paper code's ImageNet SEW-ResNet-152 (Bottleneck [3, 8, 36, 3]; average-pool stem, ``pe``); no released
    run."""
    return _paper_sew(Bottleneck, [3, 8, 36, 3], neuron, T, num_classes, in_channels, cnf, neuron_kwargs)
