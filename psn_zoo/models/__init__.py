"""Spiking backbones behind a registry: ``create_model(name, neuron=..., T=..., num_classes=...)``.

Families: spiking ResNet and SEW-ResNet (``resnet.py``), spiking VGG (``vgg.py``), and the paper's own networks
(``cifar_csnn.py``, ``dvs_vgg.py``, ``seq_cnn.py``, ``paper_sew_resnet18/34`` in ``resnet.py``).
"""

from . import cifar_csnn, dvs_vgg, resnet, seq_cnn, vgg  # noqa: F401  (registers the builders)
from .base import SpikingModel
from .registry import MODELS, create_model, list_models, model_info, register_model

__all__ = ["MODELS", "SpikingModel", "create_model", "list_models", "model_info", "register_model"]
