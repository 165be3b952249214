"""Firing rates, synaptic operations and a 45 nm energy estimate -- counting the PSN's neuron-side MACs.

Conventions (anchors notes §5; Horowitz, ISSCC 2014): a convolution or linear layer whose input is spikes
performs accumulates only: ``SOPs = MACs_per_step × T × (mean number of spikes per input)``. Inputs that are
sums of spikes count as spikes too: event counts from a DVS, SEW-ADD sums (integers), and average-pooled spikes
(multiples of 1/4 or 1/9: the pool folds into the next layer's weights, one accumulate per underlying spike).
Any other input (a static image in the encoding layer) costs MACs on every non-zero value. The usual SNN
accounting stops there and so misses the neurons themselves, which is unfair to LIF and flattering to PSN.
Here the neurons count too, per neuron and sample:

| neuron | neuron-side operations |
|---|---|
| PSN | ``T²`` MACs (the T×T weight matrix on the T inputs) |
| masked PSN | ``T²`` MACs while λ < 1; at λ = 1 the band's ``k·T − k(k−1)/2`` MACs |
| sliding PSN | ``k·T − k(k−1)/2`` MACs (a k-tap filter over time) |
| LIF, PLIF, LIF without reset | ``T`` MACs (the leak) |
| IF | ``T`` ACs |
| the frontier neurons | their own ``macs_per_neuron`` (docs/neurons.md) |

Energy = ``E_MAC · MACs + E_AC · ACs`` with ``E_MAC = 4.6 pJ`` and ``E_AC = 0.9 pJ`` (32-bit float, 45 nm).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .neurons import SpikingNeuron

E_MAC_PJ = 4.6
E_AC_PJ = 0.9


def neuron_macs_per_neuron(neuron: nn.Module, T: int) -> tuple[float, float]:
    """``(MACs, ACs)`` one neuron of ``neuron`` spends on a T-step sample: each neuron class states its own
    (``macs_per_neuron``; the module table above)."""
    if not isinstance(neuron, SpikingNeuron):
        raise TypeError(f"no operation count for {type(neuron).__name__}: it is not a psn_zoo SpikingNeuron")
    return neuron.macs_per_neuron(T)


@dataclass
class EfficiencyReport:
    """Per-sample averages over the evaluated data."""

    T: int
    samples: int
    firing_rate: dict[str, float] = field(default_factory=dict)
    mean_firing_rate: float = 0.0
    synaptic_acs: float = 0.0  # SOPs: accumulates driven by spikes (or sums of spikes)
    synaptic_macs: float = 0.0  # MACs on real-valued inputs (e.g. a static image in the encoding layer)
    neuron_macs: float = 0.0
    neuron_acs: float = 0.0
    energy_uj: float = 0.0
    energy_uj_without_neurons: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def spike_units(x: torch.Tensor) -> float | None:
    """Mean number of spikes per input element if ``x`` is made of spikes (non-negative multiples of 1, 1/4,
    1/9 or 1/16), else None."""
    if (x < 0).any():
        return None
    for d in (1.0, 4.0, 9.0, 16.0):
        scaled = x * d
        if torch.equal(scaled, scaled.round()):
            return float(scaled.mean())
    return None


def _layer_macs(module: nn.Module, out: torch.Tensor) -> float:
    """Dense MACs of one sample's single step of ``module`` given its output (per output element)."""
    if isinstance(module, nn.Conv2d | nn.Conv1d):
        per_output = module.in_channels // module.groups
        for k in module.kernel_size:
            per_output *= k
        return float(per_output)
    return float(module.in_features)  # nn.Linear


@torch.no_grad()
def measure_efficiency(model: nn.Module, batches, max_batches: int | None = None) -> EfficiencyReport:
    """Run ``model`` (a psn_zoo :class:`~psn_zoo.models.SpikingModel`) in eval mode over ``batches`` of
    ``(x, y)`` and count operations per sample, at the data's T (the model's training mode is restored)."""
    was_training = model.training
    model.eval()
    steps: set[int] = set()  # the data's T (a static image is shown for model.T steps)
    neurons = {m: n for n, m in model.named_modules() if isinstance(m, SpikingNeuron)}
    synapses = [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]
    stats = {"spikes": {}, "outputs": {}, "acs": 0.0, "macs": 0.0, "neuron_count": {}}

    def neuron_hook(module, _inputs, output):
        name = neurons[module]
        stats["spikes"][name] = stats["spikes"].get(name, 0.0) + float(torch.count_nonzero(output))
        stats["outputs"][name] = stats["outputs"].get(name, 0) + output.numel()

    def synapse_hook(module, inputs, output):
        x = inputs[0]
        dense = _layer_macs(module, output) * output.numel()  # summed over T·B (time merged into the batch)
        units = spike_units(x)
        if units is not None:
            stats["acs"] += dense * units
        else:
            stats["macs"] += dense * float(torch.count_nonzero(x)) / x.numel()

    handles = [m.register_forward_hook(neuron_hook) for m in neurons]
    handles += [m.register_forward_hook(synapse_hook) for m in synapses]
    samples = 0
    neuron_macs = neuron_acs = 0.0
    try:
        for i, (x, _) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            steps.add(model.to_time_first(x).shape[0])
            model(x)
            samples += x.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if samples == 0:
        raise ValueError("no data to measure")
    if len(steps) != 1:
        raise ValueError(f"the batches have different numbers of time steps {sorted(steps)}: measure one T at a time")
    (T,) = steps
    for module, name in neurons.items():
        n_neurons = stats["outputs"].get(name, 0) / (T * samples)  # outputs per sample and step
        macs, acs = neuron_macs_per_neuron(module, T)
        neuron_macs += macs * n_neurons
        neuron_acs += acs * n_neurons
    rates = {name: stats["spikes"][name] / stats["outputs"][name] for name in stats["spikes"]}
    total_spikes, total_out = sum(stats["spikes"].values()), sum(stats["outputs"].values())
    report = EfficiencyReport(
        T=T,
        samples=samples,
        firing_rate=rates,
        mean_firing_rate=total_spikes / total_out if total_out else 0.0,
        synaptic_acs=stats["acs"] / samples,
        synaptic_macs=stats["macs"] / samples,
        neuron_macs=neuron_macs,
        neuron_acs=neuron_acs,
    )
    synaptic = E_AC_PJ * report.synaptic_acs + E_MAC_PJ * report.synaptic_macs
    report.energy_uj_without_neurons = synaptic * 1e-6
    report.energy_uj = (synaptic + E_MAC_PJ * neuron_macs + E_AC_PJ * neuron_acs) * 1e-6
    return report
