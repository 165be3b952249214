"""Spiking neurons: the PSN family (PSN, masked PSN, sliding PSN), IF/LIF/PLIF baselines, and the parallel neurons
that followed PSN (PMSN, the channel-wise sliding PSN, FPT-LIF, ParaLIF/SPSN), and the paper's other baselines
(KLIF, GLIF).

Inputs are time-first ``[T, B, ...]`` (multi-step, the default) or one step ``[B, ...]``
(``step_mode="s"``, causal neurons only). Pick a neuron by name with :func:`make_neuron`. Inside
:func:`plain_ops` every neuron runs plain PyTorch ops instead of its fused kernels (twice differentiable).
"""

from . import functional
from ._backend import plain_ops
from ._channelwise import require_materialised, size_from_state_dict
from .base import SpikingNeuron, StatefulModule, StepMode, neurons_of, reset_states, set_step_mode
from .channel_sliding import ChannelSlidingPSN
from .fpt import FPTLIFNode
from .glif import GLIFNode
from .klif import KLIFNode
from .lif import IFNode, LIFNode, NoResetLIFNode, ParametricLIFNode
from .paralif import ParaLIF
from .pmsn import PMSN
from .psn import PSN, MaskedPSN, SlidingPSN
from .registry import (
    NEURONS,
    RESET_KINDS,
    NeuronSpec,
    list_neurons,
    make_neuron,
    neuron_factory,
    neuron_info,
    neuron_tree,
    register_neuron,
)
from .surrogate import ATan, Rect, Sigmoid, Surrogate, Triangle, list_surrogates, make_surrogate

__all__ = [
    "NEURONS",
    "PMSN",
    "PSN",
    "RESET_KINDS",
    "ATan",
    "ChannelSlidingPSN",
    "FPTLIFNode",
    "GLIFNode",
    "IFNode",
    "KLIFNode",
    "LIFNode",
    "MaskedPSN",
    "NeuronSpec",
    "NoResetLIFNode",
    "ParaLIF",
    "ParametricLIFNode",
    "Rect",
    "Sigmoid",
    "SlidingPSN",
    "SpikingNeuron",
    "StatefulModule",
    "StepMode",
    "Surrogate",
    "Triangle",
    "functional",
    "list_neurons",
    "list_surrogates",
    "make_neuron",
    "make_surrogate",
    "neuron_factory",
    "neuron_info",
    "neuron_tree",
    "neurons_of",
    "plain_ops",
    "register_neuron",
    "require_materialised",
    "reset_states",
    "set_step_mode",
    "size_from_state_dict",
]
