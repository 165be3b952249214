"""Per-layer firing rates: the fraction of neuron outputs that are spikes, accumulated over batches."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..neurons import SpikingNeuron


class FiringRateMonitor:
    """Forward hooks on every neuron of ``model``; :meth:`rates` gives ``{layer name: rate}`` since :meth:`reset`.

    A rate counts spikes (non-zero outputs) over all outputs of the layer, time steps included.
    """

    def __init__(self, model: nn.Module) -> None:
        self.names = {m: name for name, m in model.named_modules() if isinstance(m, SpikingNeuron)}
        self._spikes: dict[str, float] = {}
        self._total: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        name = self.names[module]
        self._spikes[name] = self._spikes.get(name, 0.0) + float(torch.count_nonzero(output.detach()))
        self._total[name] = self._total.get(name, 0) + output.numel()

    @contextmanager
    def recording(self) -> Iterator[FiringRateMonitor]:
        self._handles = [m.register_forward_hook(self._hook) for m in self.names]
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def reset(self) -> None:
        self._spikes.clear()
        self._total.clear()

    def counts(self) -> tuple[list[str], list[float], list[float]]:
        """``(layer names, spikes, outputs)`` of every monitored layer, in the model's order (0 where a layer has not
        run): the sums a distributed run adds over its processes before dividing."""
        names = list(self.names.values())
        return names, [self._spikes.get(n, 0.0) for n in names], [float(self._total.get(n, 0)) for n in names]

    def rates(self) -> dict[str, float]:
        return {name: self._spikes[name] / self._total[name] for name in self._spikes if self._total[name]}

    def mean_rate(self) -> float:
        total = sum(self._total.values())
        return sum(self._spikes.values()) / total if total else 0.0
