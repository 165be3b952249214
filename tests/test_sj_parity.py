"""SpikingJelly 2.0.0 is the numerical oracle: same parameters -> the same spikes, matching gradients.

Serial neurons' spikes are compared bit for bit (the same elementwise operations). The PSN family's are equal up to
ties: SJ's membrane comes from the BLAS, whose summation order depends on the CPU, ours from our own fixed-order
kernel where it runs (docs/numerics.md), so a spike may differ only where the exact membrane lies within float32
round-off of the threshold (a rigorous bound, checked). Gradients are compared to float32 round-off.
"""

from __future__ import annotations

import pytest
import torch
from conftest import (
    assert_grads_close,
    assert_neuron_outputs_match,
    assert_spikes_equal_up_to_ties,
    forward_backward,
    psn_membrane_matrix,
)
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import neuron as sj_neuron  # the test extra installs it; never skipped
from spikingjelly.activation_based import surrogate as sj_surrogate
from torch import nn

from psn_zoo.neurons import PSN, MaskedPSN, SlidingPSN, compat, make_neuron, make_surrogate

SPECS = [
    {"name": "psn"},
    {"name": "masked_psn", "k": 2, "lambda_": 0.0},
    {"name": "masked_psn", "k": 3, "lambda_": 0.37},
    {"name": "masked_psn", "k": 2, "lambda_": 1.0},
    {"name": "sliding_psn", "k": 2},
    {"name": "sliding_psn", "k": 3, "exp_init": False},
    {"name": "if"},
    {"name": "if", "v_reset": None, "detach_reset": True},
    {"name": "lif"},
    {"name": "lif", "tau": 3.0, "decay_input": False},
    {"name": "lif", "v_reset": None, "detach_reset": True},
    {"name": "lif", "surrogate": {"name": "sigmoid", "alpha": 4.0}},
    {"name": "plif"},
    {"name": "plif", "init_tau": 3.0, "v_reset": None, "detach_reset": True},
]


def _spec_id(spec):
    return "-".join(str(v) if not isinstance(v, dict) else v["name"] for v in spec.values())


def _build(spec, T):
    spec = dict(spec)
    if spec["name"] in ("psn", "masked_psn"):
        spec["T"] = T
    return make_neuron(spec)


def _compare(ours, theirs, x, grad):
    assert_neuron_outputs_match(ours, x, forward_backward(ours, x, grad), forward_backward(theirs, x, grad))


MULTI_STEP_CASES = [
    pytest.param(spec, T, id=f"{_spec_id(spec)}-T{T}") for spec in SPECS for T in (2, 4, 8, 16) if spec.get("k", 0) <= T
]


@pytest.mark.parametrize(("spec", "T"), MULTI_STEP_CASES)
@pytest.mark.parametrize("shape", [(3,), (4, 3, 5, 5)], ids=["N3", "B4C3H5W5"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("native", ["1", "0"], ids=["fused-C-where-it-applies", "pytorch-path"])
def test_multi_step_matches_spikingjelly(spec, T, shape, seed, native, monkeypatch):
    monkeypatch.setenv("PSN_ZOO_NATIVE", native)  # the compiled kernel takes [T, N >= 256] float32 inputs
    torch.manual_seed(seed)
    ours = _build(spec, T)
    theirs = compat.to_spikingjelly(ours)
    x = torch.randn(T, *shape) * 1.5
    _compare(ours, theirs, x, torch.randn_like(x))


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "psn"},
        {"name": "masked_psn", "k": 4, "lambda_": 0.5},
        {"name": "masked_psn", "k": 4, "lambda_": 1.0},
        {"name": "sliding_psn", "k": 2},
        {"name": "lif"},
    ],
    ids=_spec_id,
)
@pytest.mark.parametrize("T", [4, 32])
@pytest.mark.parametrize("native", ["1", "0"], ids=["fused-C-where-it-applies", "pytorch-path"])
def test_large_inputs_across_kernel_chunks_match(spec, T, native, monkeypatch):
    """Inputs larger than one cache chunk (the fused kernels' tiling) still match SpikingJelly."""
    monkeypatch.setenv("PSN_ZOO_NATIVE", native)
    torch.manual_seed(3)
    ours = _build(spec, T)
    theirs = compat.to_spikingjelly(ours)
    x = torch.randn(T, 16, 4096 // T * 16)
    _compare(ours, theirs, x, torch.randn_like(x))


@pytest.mark.parametrize(
    "spec", [s for s in SPECS if s["name"] != "psn" and s.get("lambda_", 1.0) == 1.0], ids=_spec_id
)
@pytest.mark.parametrize("T", [3, 8])
def test_single_step_matches_spikingjelly(spec, T):
    torch.manual_seed(T)
    ours = _build(spec, T)
    theirs = compat.to_spikingjelly(ours)
    ours.step_mode = "s"
    sj_functional.set_step_mode(theirs, "s")
    x = torch.randn(T, 6, 7) * 1.5
    grad = torch.randn_like(x)
    results = []
    for neuron in (ours, theirs):
        xs = x.clone().requires_grad_(True)
        out = torch.stack([neuron(xs[t]) for t in range(T)])
        out.backward(grad)
        results.append((out.detach(), xs.grad, {n: p.grad for n, p in neuron.named_parameters()}))
    assert_neuron_outputs_match(ours, x, *results)


@pytest.mark.parametrize("name", ["lif", "if", "plif"])
def test_state_carries_over_between_calls_like_spikingjelly(name):
    """Two multi-step calls without reset continue from the stored membrane potential, gradient included."""
    ours = make_neuron(name)
    theirs = compat.to_spikingjelly(ours)
    x = torch.randn(2, 4, 5, 3) * 1.5
    results = []
    for neuron in (ours, theirs):
        xs = x.clone().requires_grad_(True)
        out = torch.cat([neuron(xs[0]), neuron(xs[1])])
        out.backward(torch.ones_like(out))
        results.append((out.detach(), xs.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert_grads_close(results[0][1], results[1][1], terms=2)


@pytest.mark.parametrize(
    "ctor",
    [lambda: PSN(8), lambda: MaskedPSN(8, 3), lambda: SlidingPSN(3, exp_init=False), lambda: SlidingPSN(4)],
)
def test_same_seed_same_initial_parameters(ctor):
    """Our initialisers consume the RNG exactly like SpikingJelly's: same seed, same network."""
    torch.manual_seed(123)
    ours = ctor()
    torch.manual_seed(123)
    theirs = {
        PSN: lambda: sj_neuron.PSN(ours.T),
        MaskedPSN: lambda: sj_neuron.MaskedPSN(ours.k, ours.T),
        SlidingPSN: lambda: sj_neuron.SlidingPSN(ours.k, exp_init=ours.exp_init),
    }[type(ours)]()
    mapped = compat.state_from_spikingjelly(compat.neuron_kind(ours), theirs.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(value, mapped[key]), key


def test_state_dict_mapping_round_trip():
    for neuron in [PSN(4), MaskedPSN(4, 2, lambda_=0.3), SlidingPSN(3), make_neuron("plif", init_tau=3.0)]:
        kind = compat.neuron_kind(neuron)
        sj_state = compat.state_to_spikingjelly(kind, neuron.state_dict())
        if kind in ("psn", "masked_psn"):
            assert sj_state["bias"].shape == (4, 1)  # SpikingJelly keeps the bias as [T, 1]
        back = compat.state_from_spikingjelly(kind, sj_state)
        assert back.keys() == neuron.state_dict().keys()
        for key, value in neuron.state_dict().items():
            assert torch.equal(back[key], value)
        again = compat.from_spikingjelly(compat.to_spikingjelly(neuron))
        assert type(again) is type(neuron) and again.spec()["surrogate"] == neuron.spec()["surrogate"]
    with pytest.raises(KeyError, match=r"lacks \['bias'\]"):
        compat.state_from_spikingjelly("psn", {"weight": torch.zeros(4, 4)})


# ------------------------------------------------------------------------------------------------
# The paper repository's neuron classes, re-typed from ../shared/notes/psn-paper.md §1 (the repo is not
# installable). They fix the key layout that `compat.state_from_paper` must map.
class PaperIFNode5(nn.Module):
    """``IFNode5``: ``fc = nn.Linear(T, T)`` with bias −1; ``h = fc.bias + fc.weight @ x``."""

    def __init__(self, T):
        super().__init__()
        self.fc = nn.Linear(T, T)
        nn.init.constant_(self.fc.bias, -1.0)
        self.surrogate_function = sj_surrogate.ATan()

    def forward(self, x_seq):
        h = torch.addmm(self.fc.bias.unsqueeze(1), self.fc.weight, x_seq.flatten(1))
        return self.surrogate_function(h).view(x_seq.shape)


class PaperMaskedLinear(nn.Module):
    """``DecayPorderMaskedLinear(P, T, T)``: repo ``P`` is the order, attribute ``k`` is the blend λ."""

    def __init__(self, P, T):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(T, T) / T)
        self.bias = nn.Parameter(torch.full((T,), -1.0))
        ones = torch.ones(T, T)
        self.register_buffer("mask0", torch.tril(ones) * torch.triu(ones, -(P - 1)))
        self.register_buffer("mask1", ones.clone())
        self.k = 1.0  # λ, a plain float: not saved


class PaperIFNode5PorderMaskD(nn.Module):
    def __init__(self, T, P):
        super().__init__()
        self.fc = PaperMaskedLinear(P, T)
        self.surrogate_function = sj_surrogate.ATan()

    def forward(self, x_seq):
        fc = self.fc
        weight = fc.weight * (fc.k * fc.mask0 + (1.0 - fc.k) * fc.mask1)
        h = torch.addmm(fc.bias.unsqueeze(1), weight, x_seq.flatten(1))
        return self.surrogate_function(h).view(x_seq.shape)


class PaperMaskedSlidingPSN(nn.Module):
    """Sequential-CIFAR ``MaskedSlidingPSN``: ``weight [k]``, additive ``threshold []`` (init −1), GEMM backend."""

    def __init__(self, order):
        super().__init__()
        self.k = order
        self.weight = nn.Parameter(torch.rand(order))
        self.threshold = nn.Parameter(torch.tensor(-1.0))
        self.surrogate_function = sj_surrogate.ATan()

    def forward(self, x_seq):
        T = x_seq.shape[0]
        weight = torch.zeros(T, T)
        for i in range(T):
            start = max(0, i + 1 - self.k)
            weight[i, start : i + 1] = self.weight[self.k - (i + 1 - start) :]
        h = torch.addmm(self.threshold, weight, x_seq.flatten(1))
        return self.surrogate_function(h).view(x_seq.shape)


@pytest.mark.parametrize(
    ("paper", "ours"),
    [
        (lambda: PaperIFNode5(4), lambda: PSN(4)),
        (lambda: PaperIFNode5PorderMaskD(8, 3), lambda: MaskedPSN(8, 3)),
        (lambda: PaperMaskedSlidingPSN(3), lambda: SlidingPSN(3)),
    ],
    ids=["IFNode5", "IFNode5PorderMaskD", "MaskedSlidingPSN"],
)
def test_paper_checkpoint_keys_load_into_our_neurons(paper, ours):
    torch.manual_seed(5)
    paper, ours = paper(), ours()
    kind = compat.neuron_kind(ours)
    ours.load_state_dict(compat.state_from_paper(kind, paper.state_dict()))
    T = getattr(ours, "T", 16)
    x = torch.randn(T, 32, 3) * 1.5
    with torch.no_grad():
        assert_spikes_equal_up_to_ties(ours(x), paper(x), *psn_membrane_matrix(ours, T), x)


def test_surrogate_derivatives_match_spikingjelly():
    h = torch.linspace(-3, 3, 1001)
    for ours, theirs in [
        (make_surrogate("atan"), sj_surrogate.ATan()),
        (make_surrogate({"name": "atan", "alpha": 3.0}), sj_surrogate.ATan(alpha=3.0)),
        (make_surrogate("sigmoid"), sj_surrogate.Sigmoid()),
    ]:
        a = h.clone().requires_grad_(True)
        b = h.clone().requires_grad_(True)
        ours(a).sum().backward()
        theirs(b).sum().backward()
        assert torch.equal(a.grad, b.grad)
        assert torch.equal(ours(h), theirs(h))
