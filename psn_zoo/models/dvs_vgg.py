"""The paper's CIFAR10-DVS network ("VGGPSN", ``cifar10dvs/models.py``, from the TEBN code): 8 conv layers.

Each ``Layer`` is Conv3×3 (with bias) → BN; every layer fires through a neuron (the paper: sliding PSN, k = 2,
``exp_init``); an AvgPool2 closes each pair; the head is ``Dropout(0.25) → Linear(512·3·3 → classes)`` on
48×48 frames (9,271,522 parameters; 85.9 % at T = 10). Trained with TET, read out as the mean over T.
``features.{i}`` indices follow the paper's code, so checkpoints map after stripping its ``fwd.module`` wrappers.

The same script's baseline ``VGGSNN`` (``-method VGGSNN``, ``paper_cifar10dvs_vggsnn``) has the same layers with
temporal effective batch norm (:class:`~psn_zoo.models.layers.TEBN`: BN, then a learnable factor per time step) and
the TEBN code's LIF: ``V = 0.25·V + X``, hard reset to 0, threshold 1 (psn_zoo's LIF with ``decay_input=False`` and
``1 − 1/τ = 0.25``, i.e. ``τ = 4/3``; its ``ZIF`` surrogate is the ``"triangle"``). Its ``p`` is ``[10, 1, 1, 1, 1]``
in the authors' code, so it runs T = 10 only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import layers as L
from .base import SpikingModel
from .registry import register_model

WIDTHS = [(64, 128), (256, 256), (512, 512), (512, 512)]


class DvsVGG(SpikingModel):
    classifier_path = "classifier.1"

    def __init__(
        self, *, input_size: int = 48, dropout: float = 0.25, width_mult: float = 1.0, norm: str = "bn", **base: Any
    ) -> None:
        super().__init__(**base)
        if norm not in ("bn", "tebn"):
            raise ValueError(f"norm must be 'bn' (the paper's VGGPSN) or 'tebn' (its VGGSNN baseline), got {norm!r}")
        if input_size < 16:
            raise ValueError(f"input_size must be at least 16 (four 2×2 pools), got {input_size}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        layers: list[nn.Module] = []
        cin = self.in_channels
        for pair in WIDTHS:
            for width in (max(1, round(w * width_mult)) for w in pair):
                layers += [
                    nn.Sequential(
                        L.Conv2d(cin, width, kernel_size=3, padding=1),
                        L.BatchNorm2d(width) if norm == "bn" else L.TEBN(width, self.T),
                    ),
                    self.make_neuron(),
                ]
                cin = width
            layers.append(L.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.flatten = L.FlattenFeatures()
        side = input_size // 16  # average pools floor odd sizes
        self.input_grid = ("input_size", input_size, 16)
        self.classifier = nn.Sequential(nn.Dropout(dropout), self.new_classifier(cin * side * side))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _features(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.features(x_seq))

    def _head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        hidden = self.classifier[0](features)
        return hidden if pre_logits else self.classifier[1](hidden)


#: The paper's CIFAR10-DVS neuron: sliding PSN of order 2 with exponential initialisation.
PAPER_VGG_NEURON = {"name": "sliding_psn", "k": 2, "exp_init": True}
#: The TEBN code's LIFSpike (tau=0.25 there is the decay factor): V = 0.25·V + X, hard reset to 0, threshold 1.
VGGSNN_NEURON = {"name": "lif", "tau": 4.0 / 3.0, "decay_input": False, "v_reset": 0.0, "v_threshold": 1.0,
                 "surrogate": "triangle"}  # fmt: skip


@register_model("paper_cifar10dvs_vgg", family="paper", paper=True, default_neuron=PAPER_VGG_NEURON)
def paper_cifar10dvs_vgg(
    *,
    neuron=None,
    T=10,
    num_classes=10,
    in_channels=2,
    input_size=48,
    dropout=0.25,
    width_mult=1.0,
    **neuron_kwargs,
):
    """The paper's CIFAR10-DVS VGG (8 conv, sliding PSN k = 2; 82.3 / 85.3 / 85.9 % at T = 4 / 8 / 10).

    ``width_mult`` scales every conv width (e.g. 0.25 for small inputs such as N-Digits' 34×34 frames).
    """
    neuron = PAPER_VGG_NEURON if neuron is None else neuron
    return DvsVGG(
        input_size=input_size,
        dropout=dropout,
        width_mult=width_mult,
        T=T,
        num_classes=num_classes,
        in_channels=in_channels,
        neuron=neuron,
        neuron_kwargs=neuron_kwargs,
    )


@register_model("paper_cifar10dvs_vggsnn", family="paper", paper=True, default_neuron=VGGSNN_NEURON)
def paper_cifar10dvs_vggsnn(
    *, neuron=None, T=10, num_classes=10, in_channels=2, input_size=48, dropout=0.25, width_mult=1.0, **neuron_kwargs
):
    """The CIFAR10-DVS script's baseline VGGSNN: the VGG above with TEBN and the TEBN code's LIF (T = 10)."""
    return DvsVGG(
        input_size=input_size,
        dropout=dropout,
        width_mult=width_mult,
        norm="tebn",
        T=T,
        num_classes=num_classes,
        in_channels=in_channels,
        neuron=VGGSNN_NEURON if neuron is None else neuron,
        neuron_kwargs=neuron_kwargs,
    )
