"""Firing rates, synaptic operations and a 45 nm energy estimate -- counting the PSN's neuron-side MACs.

Conventions (anchors notes §5; Horowitz, ISSCC 2014): a convolution or linear layer whose input is spikes
performs accumulates only: ``SOPs = MACs_per_step × T × (mean number of spikes per input)``. An input element that
stands for several spikes counts as that many, whatever lies between the neurons and the layer:

- sums of spikes (event counts from a DVS, a SEW-ResNet's ``ADD``: 2 where both maps fire): their values,
  non-negative integers; a max pool of spikes or sums passes values, so it is read the same way;
- average-pooled spikes: an element stands for the spikes in its window (the pool folds into the next layer's
  weights, one accumulate per spike and target; overlapping windows count a spike once per window). The count is
  the pool's window sum, never guessed from the values (a 3×3 pool of nine spikes is 1.0, like one spike):
  every ``avg_pool1d/2d/3d`` (padding, ``ceil_mode``, ``count_include_pad``, ``divisor_override``) and
  ``adaptive_avg_pool1d/2d/3d`` (window by window) output is followed (:class:`_SpikeCounts`) through flattens
  and reshapes, eval-mode dropout, additions (a pooled identity plus a branch's spikes: the counts add) and
  products with spikes (SEW ``AND``/``IAND``) to the layer that consumes it;
- a neuron's output is spikes, read by its values, whatever its input was.

Anything else is real-valued and costs MACs on every non-zero input: a static image in the encoding layer, a
batch-normalised map, and what any other operation (a max pool, a concatenation, a non-integer scale) makes of an
average pool's output. The usual SNN accounting stops there and so misses the neurons themselves, which is unfair
to LIF and flattering to PSN.
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

import operator
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _single
from torch.overrides import TorchFunctionMode

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
    """Mean number of spikes per element if ``x`` is made of spikes or sums of spikes (non-negative integers), else
    None. Average-pooled spikes are fractions: :func:`measure_efficiency` takes their counts from the pool that made
    them (:class:`_SpikeCounts`), never from the values."""
    counts = _integer_counts(x)
    return None if counts is None else float(counts.mean())


def _integer_counts(x: Any) -> torch.Tensor | float | None:
    """``x`` (a tensor or a number) as spike counts, float32, if its values are non-negative integers; else None."""
    if not isinstance(x, torch.Tensor):
        return float(x) if isinstance(x, int | float) and x >= 0 and float(x).is_integer() else None
    if x.is_complex():
        return None
    counts = x.float()
    if (counts < 0).any() or not torch.equal(counts, counts.round()):
        return None
    return counts


class _SpikeCounts(TorchFunctionMode):
    """While active, follows how many spikes each element of an average pool's output stands for (the spikes in its
    window) through the operations of :data:`_RULES` to the layer that consumes it.

    A followed tensor maps to its counts (float32, its shape), or to None when it is real-valued: derived from a
    pooled one by an operation not followed (a batch norm, a max pool, a scaling...). Tensors it did not follow are
    read by their values (:func:`_integer_counts`)."""

    def __init__(self) -> None:
        super().__init__()
        self._followed: dict[int, tuple[weakref.ref, torch.Tensor | None]] = {}

    def counts(self, x: Any) -> torch.Tensor | float | None:
        """The spikes each element of ``x`` stands for, or None where ``x`` is real-valued."""
        entry = self._entry(x)
        return _integer_counts(x) if entry is None else entry[1]

    def is_followed(self, x: Any) -> bool:
        return self._entry(x) is not None

    def record(self, x: torch.Tensor, counts: torch.Tensor | None) -> None:
        """Note that ``x`` stands for ``counts`` spikes per element (None: real-valued), for as long as it lives."""
        key = id(x)

        def drop(ref: weakref.ref, key: int = key) -> None:
            if self._followed.get(key, (None,))[0] is ref:
                del self._followed[key]

        self._followed[key] = (weakref.ref(x, drop), counts)

    def forget(self, x: torch.Tensor) -> None:
        """Read ``x`` by its values from now on (a neuron's output is spikes, whatever its input was)."""
        self._followed.pop(id(x), None)

    def _entry(self, x: Any) -> tuple[weakref.ref, torch.Tensor | None] | None:
        entry = self._followed.get(id(x))
        return entry if entry is not None and entry[0]() is x else None

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        if not args and "input" in kwargs:  # torch.flatten(input=x): the rules read the input first
            args = (kwargs.pop("input"),)
        rule = _RULES.get(func)
        if rule is not None:
            return rule(self, func, args, kwargs)
        out = func(*args, **kwargs)
        if self._followed and any(self.is_followed(t) for t in _tensors((args, kwargs))):
            for t in _tensors(out):  # derived from pooled spikes by an operation not followed: real-valued
                self.record(t, None)
        return out


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in ``value`` and in the tuples, lists and dicts it holds."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    return []


_POOL_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def _window_sums(func: Callable, counts: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """The spikes in each window of the average pool ``func(*args, **kwargs)``: the same pool, summing (divisor 1),
    over the input's ``counts``; padding, ``ceil_mode`` and ``stride`` give the same windows."""
    options = dict(zip(_POOL_ARGS, args[1:], strict=False)) | kwargs | {"divisor_override": 1}
    if func is not torch.avg_pool1d:
        return func(counts, **options)
    # avg_pool1d takes no divisor: pool [..., 1, L] in 2-D instead
    k = _single(options["kernel_size"])[0]
    stride = _single(options["stride"])[0] if options.get("stride") else k
    padding = _single(options.get("padding", 0))[0]
    sums = F.avg_pool2d(counts.unsqueeze(-2), (1, k), (1, stride), (0, padding), options.get("ceil_mode", False),
                        True, 1)  # fmt: skip
    return sums.squeeze(-2)


def _adaptive_window_sums(counts: torch.Tensor, means: torch.Tensor, dims: int) -> torch.Tensor:
    """The spikes in each window of an adaptive average pool over the last ``dims`` dims, from the pooled
    ``means`` of ``counts``: output ``i`` of ``n`` over ``m`` inputs averages inputs ``⌊i·m/n⌋`` to
    ``⌈(i+1)·m/n⌉ − 1``."""
    area = torch.ones((), dtype=counts.dtype, device=counts.device)
    for axis in range(-dims, 0):
        m, n = counts.shape[axis], means.shape[axis]
        i = torch.arange(n, device=counts.device)
        lengths = -(-(i + 1) * m // n) - i * m // n
        area = area.unsqueeze(-1) * lengths
    return (means * area).round()


def _avg_pool(counter: _SpikeCounts, func: Callable, args: tuple, kwargs: dict) -> Any:
    out = func(*args, **kwargs)
    counts = counter.counts(args[0])
    counter.record(out, None if counts is None else _window_sums(func, counts, args, kwargs))
    return out


def _adaptive_avg_pool(dims: int) -> Callable:
    def rule(counter: _SpikeCounts, func: Callable, args: tuple, kwargs: dict) -> Any:
        out = func(*args, **kwargs)
        counts = counter.counts(args[0])
        sums = None if counts is None else _adaptive_window_sums(counts, func(counts, *args[1:], **kwargs), dims)
        counter.record(out, sums)
        return out

    return rule


def _layout(counter: _SpikeCounts, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Reshapes, views, indexing: the counts move with the values."""
    out = func(*args, **kwargs)
    if counter.is_followed(args[0]):
        counts = counter.counts(args[0])
        counter.record(out, None if counts is None else func(counts, *args[1:], **kwargs))
    return out


def _same_values(counter: _SpikeCounts, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Copies and conversions: the same values, so the same counts (on the copy's device); not a cast to integers."""
    out = func(*args, **kwargs)
    if counter.is_followed(args[0]):
        counts = counter.counts(args[0])
        counter.record(out, None if counts is None or not out.is_floating_point() else counts.to(out.device))
    return out


def _dropout(counter: _SpikeCounts, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Dropout: the identity in eval mode; in training, scaled values (real)."""
    out = func(*args, **kwargs)
    training = args[2] if len(args) > 2 else kwargs.get("training", True)
    if counter.is_followed(args[0]):
        counter.record(out, counter.counts(args[0]) if not training else None)
    return out


def _binary(combine: Callable, both_followed: bool) -> Callable:
    """An element-wise ``a op b`` with a followed operand: counts ``combine(counts_a, counts_b)`` where both are
    counts (and, unless ``both_followed``, only one of them followed), else real."""

    def rule(counter: _SpikeCounts, func: Callable, args: tuple, kwargs: dict) -> Any:
        a = args[0]
        b = args[1] if len(args) > 1 else kwargs.get("other")
        followed = counter.is_followed(a) + counter.is_followed(b)
        if not followed:
            return func(*args, **kwargs)
        ca, cb = counter.counts(a), counter.counts(b)
        scaled = kwargs.get("alpha", 1) != 1
        valid = ca is not None and cb is not None and not scaled and (both_followed or followed == 1)
        counts = combine(ca, cb) if valid else None  # before an in-place op changes a
        out = func(*args, **kwargs)
        counter.record(out, counts)
        return out

    return rule


_T = torch.Tensor
_LAYOUT_OPS = (
    torch.flatten, _T.flatten, _T.unflatten, torch.reshape, _T.reshape, _T.reshape_as, _T.view, _T.view_as,
    torch.squeeze, _T.squeeze, torch.unsqueeze, _T.unsqueeze, torch.permute, _T.permute, torch.transpose,
    _T.transpose, torch.movedim, _T.movedim, _T.expand, _T.expand_as, _T.__getitem__,
)  # fmt: skip
_SAME_VALUE_OPS = (
    _T.to, _T.float, _T.half, _T.bfloat16, _T.double, _T.contiguous, torch.clone, _T.clone, torch.detach, _T.detach,
    _T.cpu, _T.cuda,
)  # fmt: skip
_DROPOUTS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout)
_ADDS = (torch.add, _T.add, _T.add_, _T.__add__, _T.__radd__, _T.__iadd__)
_MULS = (torch.mul, _T.mul, _T.mul_, _T.__mul__, _T.__rmul__, _T.__imul__)
#: What :class:`_SpikeCounts` follows; any other operation on a followed tensor gives a real-valued one.
_RULES: dict[Callable, Callable] = {
    torch.avg_pool1d: _avg_pool,
    F.avg_pool2d: _avg_pool,
    F.avg_pool3d: _avg_pool,
    torch.adaptive_avg_pool1d: _adaptive_avg_pool(1),
    F.adaptive_avg_pool2d: _adaptive_avg_pool(2),
    F.adaptive_avg_pool3d: _adaptive_avg_pool(3),
    torch._C._nn.adaptive_avg_pool2d: _adaptive_avg_pool(2),
    torch._C._nn.adaptive_avg_pool3d: _adaptive_avg_pool(3),
    **dict.fromkeys(_LAYOUT_OPS, _layout),
    **dict.fromkeys(_SAME_VALUE_OPS, _same_values),
    **dict.fromkeys(_DROPOUTS, _dropout),
    **dict.fromkeys(_ADDS, _binary(operator.add, both_followed=True)),  # a pooled identity + a branch's spikes
    **dict.fromkeys(_MULS, _binary(operator.mul, both_followed=False)),  # SEW AND / IAND gates
}


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

    counter = _SpikeCounts()

    def neuron_hook(module, _inputs, output):
        counter.forget(output)  # spikes, whatever the neuron's input stood for
        name = neurons[module]
        stats["spikes"][name] = stats["spikes"].get(name, 0.0) + float(torch.count_nonzero(output))
        stats["outputs"][name] = stats["outputs"].get(name, 0) + output.numel()

    def synapse_hook(module, inputs, output):
        x = inputs[0]
        dense = _layer_macs(module, output) * output.numel()  # summed over T·B (time merged into the batch)
        counts = counter.counts(x)
        if counts is not None:
            stats["acs"] += dense * float(counts.mean())  # mean spikes per input element
        else:
            stats["macs"] += dense * float(torch.count_nonzero(x)) / x.numel()

    handles = [m.register_forward_hook(neuron_hook) for m in neurons]
    handles += [m.register_forward_hook(synapse_hook) for m in synapses]
    samples = 0
    neuron_macs = neuron_acs = 0.0
    try:
        with counter:
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
