"""Synaptic operations counted by hand: what an average pool's output stands for comes from the pool that made it
(its windows, padding, ``ceil_mode``, ``count_include_pad``, ``divisor_override``; an adaptive pool's windows),
never from the values. Each test fails on the counter that guessed the divisor from the values (1, 4, 9 or 16)."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from psn_zoo.efficiency import measure_efficiency
from psn_zoo.hub import bundled_dir, get_pretrained_info
from psn_zoo.hub.metadata import read_manifest, write_manifest
from psn_zoo.models import create_model
from psn_zoo.models import layers as L
from psn_zoo.models.base import SpikingModel
from psn_zoo.neurons import SpikingNeuron

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.efficiency import COUNTS, update_manifest  # noqa: E402

CLASSES = 3
SEQ_MASKED_PSN = "paper_seq_cnn.seqdigits_masked_psn_t28"


class _Net(SpikingModel):
    """IF neurons on the input (a binary input: their spikes are the input), ``body``, flatten, ``fc``."""

    classifier_path = "fc"

    def __init__(self, body: nn.Module, in_features: int, *, sequence: bool, channels: int = 1, after=()):
        super().__init__(T=2, num_classes=CLASSES, in_channels=channels, neuron="if")
        self.input_kind = "sequence" if sequence else "image"
        self.sn = self.make_neuron()
        self.body = nn.Sequential(body, L.FlattenFeatures(spatial_dims=1 if sequence else 2), *after)
        self.fc = self.new_classifier(in_features)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.sn(x))


class _PooledIdentityPlusSpikes(nn.Module):
    """A SEW-ResNet block's ``ADD`` (or ``AND``) with an average-pooled identity: ``pool(s) + s`` (``pool(s) · s``)."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.pool = L.AvgPool2d(3, stride=1, padding=1)
        self.op = op

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.pool(s) + s if self.op == "add" else self.pool(s) * s


def _windows(x: torch.Tensor, axis: int, bounds: list[tuple[int, int]]) -> torch.Tensor:
    """Sums of ``x`` over each window ``[lo, hi)`` of ``axis`` (clipped to the input: padding adds zeros)."""
    size = x.shape[axis]
    parts = [x.narrow(axis, max(lo, 0), min(hi, size) - max(lo, 0)).sum(axis) for lo, hi in bounds]
    return torch.stack(parts, axis)


def _pool_bounds(n_out: int, kernel: int, stride: int, padding: int) -> list[tuple[int, int]]:
    return [(i * stride - padding, i * stride - padding + kernel) for i in range(n_out)]


def _adaptive_bounds(n_in: int, n_out: int) -> list[tuple[int, int]]:
    return [(i * n_in // n_out, math.ceil((i + 1) * n_in / n_out)) for i in range(n_out)]


def _sops_per_sample(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    report = measure_efficiency(model.eval(), [(x, None)])
    assert report.firing_rate["sn"] == pytest.approx(float(x.mean()))  # the IF neurons pass the input's spikes
    return report.synaptic_acs, report.synaptic_macs


def _spikes(*shape: int, p: float = 0.4) -> torch.Tensor:
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(0)) < p).float()


def _blocks(B: int, T: int, side: int) -> torch.Tensor:
    """Spikes in whole 2×2 blocks, so every 2×2 window holds 0 or 4: the pooled values are 0 and 1."""
    coarse = _spikes(B, T, 1, side // 2, side // 2, p=0.5)
    return coarse.repeat_interleave(2, -1).repeat_interleave(2, -2)


# (name, pool, batch-first input, per pooled axis: outputs, kernel, stride, padding); window sums by brute force
POOLS = [
    ("AvgPool1d(2)", L.AvgPool1d(2), _spikes(3, 2, 1, 8), [(4, 2, 2, 0)]),
    ("AvgPool1d(3, 2, 1, ceil, no pad count)", L.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False),
     _spikes(3, 2, 1, 8), [(5, 3, 2, 1)]),
    ("AvgPool2d(2) of 2x2 blocks", L.AvgPool2d(2), _blocks(3, 2, 6), [(3, 2, 2, 0)] * 2),
    ("AvgPool2d(3), every neuron firing", L.AvgPool2d(3), torch.ones(2, 2, 1, 6, 6), [(2, 3, 3, 0)] * 2),
    ("AvgPool2d(3, 2, 1) without the padding in the divisor", L.AvgPool2d(3, 2, 1, count_include_pad=False),
     _spikes(3, 2, 1, 5, 5), [(3, 3, 2, 1)] * 2),
    ("AvgPool2d(3, 2, 1, ceil_mode), every neuron firing", L.AvgPool2d(3, 2, 1, ceil_mode=True),
     torch.ones(2, 2, 1, 6, 6), [(4, 3, 2, 1)] * 2),
    ("AvgPool2d(2, divisor_override=3)", L.AvgPool2d(2, divisor_override=3), _spikes(3, 2, 1, 4, 4),
     [(2, 2, 2, 0)] * 2),
]  # fmt: skip


@pytest.mark.parametrize(("pool", "x", "windows"), [p[1:] for p in POOLS], ids=[p[0] for p in POOLS])
def test_an_average_pool_s_output_stands_for_the_spikes_in_its_windows(pool, x, windows):
    sequence = x.dim() == 4
    pooled = x.transpose(0, 1)  # [T, B, C, *spatial]
    for axis, (n_out, kernel, stride, padding) in zip(range(-len(windows), 0), windows, strict=True):
        pooled = _windows(pooled, axis, _pool_bounds(n_out, kernel, stride, padding))
    # the pool, flatten and an eval-mode dropout (as in the N-Digits VGG's head) before a linear layer
    model = _Net(pool, pooled[0, 0].numel(), sequence=sequence, after=[nn.Dropout(0.5)])
    acs, macs = _sops_per_sample(model, x)
    assert macs == 0.0
    assert acs == pytest.approx(float(pooled.sum()) * CLASSES / x.shape[0], rel=1e-6)


@pytest.mark.parametrize(("side", "out"), [(7, 1), (8, 3)], ids=["7x7 to 1x1 (SEW-ResNet at 224 px)", "8x8 to 3x3"])
def test_an_adaptive_average_pool_s_output_stands_for_the_spikes_in_its_windows(side, out):
    x = _spikes(3, 2, 2, side, side)
    pooled = _windows(_windows(x.transpose(0, 1), -1, _adaptive_bounds(side, out)), -2, _adaptive_bounds(side, out))
    model = _Net(L.AdaptiveAvgPool2d(out), 2 * out * out, sequence=False, channels=2)
    acs, macs = _sops_per_sample(model, x)
    assert macs == 0.0
    assert acs == pytest.approx(float(pooled.sum()) * CLASSES / x.shape[0], rel=1e-6)


def test_a_pooled_identity_plus_spikes_stands_for_both_and_a_spike_gate_keeps_the_pooled_count():
    x = _spikes(3, 2, 1, 5, 5)
    s = x.transpose(0, 1)
    window_sums = _windows(_windows(s, -1, _pool_bounds(5, 3, 1, 1)), -2, _pool_bounds(5, 3, 1, 1))
    for op, counts in (("add", window_sums + s), ("and", window_sums * s)):
        acs, macs = _sops_per_sample(_Net(_PooledIdentityPlusSpikes(op), 25, sequence=False), x)
        assert macs == 0.0
        assert acs == pytest.approx(float(counts.sum()) * CLASSES / x.shape[0], rel=1e-6), op


def test_what_an_operation_not_followed_makes_of_pooled_spikes_costs_macs():
    """A max pool of average-pooled spikes is no spike count: MACs on its non-zero elements."""
    x = _spikes(3, 2, 1, 8, 8)
    model = _Net(nn.Sequential(L.AvgPool2d(2), L.MaxPool2d(2)), 4, sequence=False)
    nonzero = float((nn.functional.max_pool2d(nn.functional.avg_pool2d(x.flatten(0, 1), 2), 2) != 0).sum())
    acs, macs = _sops_per_sample(model, x)
    assert acs == 0.0
    assert macs == pytest.approx(nonzero * CLASSES / x.shape[0], rel=1e-6)


@pytest.mark.parametrize("neuron", ["lif", "psn"])
def test_the_sequential_digits_network_against_a_brute_force_count(neuron):
    """``paper_seq_cnn`` (two ``AvgPool1d(2)``): every spike a layer receives, through a pool or not, times the
    layer's fan-out (a k=3, padding-1 convolution: 3 × out channels; a linear layer: its outputs); the first
    convolution reads real-valued pixels: MACs on the non-zero ones."""
    torch.manual_seed(0)
    channels, length, T, B = 8, 8, 6, 4
    model = create_model("paper_seq_cnn", neuron=neuron, T=T, num_classes=CLASSES, in_channels=1, channels=channels,
                         length=length, fc_hidden=16).eval()  # fmt: skip
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):  # channels that fire often, and some less
                m.bias.uniform_(0.0, 2.5)
            if isinstance(m, SpikingNeuron) and neuron == "psn":  # W = I: each step fires on its own input
                m.weight.copy_(torch.eye(T))
        model.fc[1].bias.uniform_(0.0, 2.5)
    x = torch.rand(B, T, 1, length) * (torch.rand(B, T, 1, length) < 0.7)
    spikes: list[float] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: spikes.append(float(out.sum())))
             for m in model.modules() if isinstance(m, SpikingNeuron)]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    layers = [m for m in [*model.conv, *model.fc] if isinstance(m, nn.Conv1d | nn.Linear)]
    fan_outs = [3 * m.out_channels if isinstance(m, nn.Conv1d) else m.out_features for m in layers]
    assert len(spikes) == len(layers) - 1 and min(spikes) > 0  # each neuron layer feeds the next synaptic layer
    sops = sum(n * fan_out for n, fan_out in zip(spikes, fan_outs[1:], strict=True))
    report = measure_efficiency(model, [(x, None)])
    assert report.synaptic_macs == pytest.approx(float((x != 0).sum()) * fan_outs[0] / B, rel=1e-6)
    assert report.synaptic_acs == pytest.approx(sops / B, rel=1e-6)


def test_the_published_counts_are_the_counter_s_and_a_new_counter_rewrites_them_through_the_release_writer(tmp_path):
    """A record whose counts the counter no longer gives (here: inflated, as the value-guessing counter had them) is
    rewritten, card included, by ``update_manifest``; one whose top-1 is not its weights' is refused, nothing written.
    The bundled record comes out as it is: the published counts are the counter's."""
    shipped = get_pretrained_info(SEQ_MASKED_PSN)
    release = tmp_path / "release"
    release.mkdir()
    (release / shipped.weights.file).write_bytes((bundled_dir() / shipped.weights.file).read_bytes())
    inflated = {**shipped.metrics, **{k: 1.3 * shipped.metrics[k] for k in COUNTS}}
    wrong_top1 = {**inflated, "top1": shipped.metrics["top1"] - 2 / shipped.metrics["samples"]}
    write_manifest(release / "manifest.json", {SEQ_MASKED_PSN: dataclasses.replace(shipped, metrics=wrong_top1)})
    with pytest.raises(ValueError, match=r"seqdigits_masked_psn_t28: re-measured top-1 98.05 %, the manifest 97.49 %"):
        update_manifest(manifest=release)
    assert read_manifest(release / "manifest.json")[SEQ_MASKED_PSN].metrics == wrong_top1
    assert not (release / "cards").exists()

    write_manifest(release / "manifest.json", {SEQ_MASKED_PSN: dataclasses.replace(shipped, metrics=inflated)})
    changes = update_manifest(manifest=release)
    assert set(changes) == {SEQ_MASKED_PSN}
    rewritten = read_manifest(release / "manifest.json")[SEQ_MASKED_PSN]
    assert {k: v for k, v in rewritten.to_dict().items() if k != "metrics"} == {
        k: v for k, v in shipped.to_dict().items() if k != "metrics"
    }  # the weights, their sha256 and everything else as published
    for key, value in shipped.metrics.items():
        assert rewritten.metrics[key] == pytest.approx(value, rel=1e-9), key
    card = (release / "cards" / f"{SEQ_MASKED_PSN}.md").read_text()
    assert card == (bundled_dir() / "cards" / f"{SEQ_MASKED_PSN}.md").read_text()
