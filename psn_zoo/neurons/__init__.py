"""Spiking neurons: the PSN family (PSN, masked PSN, sliding PSN) and IF/LIF/PLIF baselines.

Inputs are time-first ``[T, B, ...]`` (multi-step, the default) or one step ``[B, ...]``
(``step_mode="s"``, causal neurons only). Pick a neuron by name with :func:`make_neuron`.
"""

from . import functional
from .base import SpikingNeuron, StatefulModule, StepMode, neurons_of, reset_states, set_step_mode
from .lif import IFNode, LIFNode, NoResetLIFNode, ParametricLIFNode
from .psn import PSN, MaskedPSN, SlidingPSN
from .registry import NEURONS, NeuronSpec, list_neurons, make_neuron, neuron_factory, neuron_info
from .surrogate import ATan, Sigmoid, Surrogate, list_surrogates, make_surrogate

__all__ = [
    "NEURONS",
    "PSN",
    "ATan",
    "IFNode",
    "LIFNode",
    "MaskedPSN",
    "NeuronSpec",
    "NoResetLIFNode",
    "ParametricLIFNode",
    "Sigmoid",
    "SlidingPSN",
    "SpikingNeuron",
    "StatefulModule",
    "StepMode",
    "Surrogate",
    "functional",
    "list_neurons",
    "list_surrogates",
    "make_neuron",
    "make_surrogate",
    "neuron_factory",
    "neuron_info",
    "neurons_of",
    "reset_states",
    "set_step_mode",
]
