"""psn_zoo: a model zoo of Parallel Spiking Neuron networks (Fang et al., NeurIPS 2023)."""

from .hub import get_pretrained_info, list_pretrained, load_pretrained
from .models import create_model, list_models, model_info
from .neurons import list_neurons, make_neuron, reset_states, set_step_mode

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "get_pretrained_info",
    "list_models",
    "list_neurons",
    "list_pretrained",
    "load_pretrained",
    "make_neuron",
    "model_info",
    "reset_states",
    "set_step_mode",
]
