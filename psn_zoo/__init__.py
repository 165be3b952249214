"""psn_zoo: a model zoo of Parallel Spiking Neuron networks (Fang et al., NeurIPS 2023).

The names below are imported on first use (PEP 562), so ``import psn_zoo.hub`` loads the checkpoint store alone,
without the models (the hub never imports them; ``tests/test_import_graph.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "psn_zoo.models",
    "freeze_backbone": "psn_zoo.models",
    "list_models": "psn_zoo.models",
    "load_pretrained": "psn_zoo.models",
    "model_info": "psn_zoo.models",
    "unfreeze": "psn_zoo.models",
    "get_pretrained_info": "psn_zoo.hub",
    "list_pretrained": "psn_zoo.hub",
    "list_neurons": "psn_zoo.neurons",
    "make_neuron": "psn_zoo.neurons",
    "reset_states": "psn_zoo.neurons",
    "set_step_mode": "psn_zoo.neurons",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'psn_zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
