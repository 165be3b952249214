"""Spiking backbones behind a registry: ``create_model(name, pretrained=..., neuron=..., T=..., num_classes=...)``.

Families: spiking ResNet and SEW-ResNet (``resnet.py``), spiking VGG (``vgg.py``), and the paper's own networks
(``cifar_csnn.py``, ``dvs_vgg.py``, ``seq_cnn.py``, ``paper_sew_resnet18/34`` in ``resnet.py``). Building with
pretrained weights, and reading weights for fine-tuning, is one path: ``_builder.py``.
"""

from . import cifar_csnn, dvs_vgg, resnet, seq_cnn, vgg  # noqa: F401  (registers the builders)
from ._builder import (
    create_model,
    freeze_backbone,
    list_models,
    load_backbone_weights,
    load_pretrained,
    read_checkpoint,
    read_weights,
    unfreeze,
)
from .base import SpikingModel
from .registry import MODELS, build_model, model_info, register_model

__all__ = [
    "MODELS",
    "SpikingModel",
    "build_model",
    "create_model",
    "freeze_backbone",
    "list_models",
    "load_backbone_weights",
    "load_pretrained",
    "model_info",
    "read_checkpoint",
    "read_weights",
    "register_model",
    "unfreeze",
]
