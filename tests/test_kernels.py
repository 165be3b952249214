"""The fused PSN kernels against plain-autograd references, across chunk boundaries and code paths."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_grads_close, assert_spikes_equal_up_to_ties

from psn_zoo.neurons import _psn_kernels, functional, make_surrogate

ATAN = make_surrogate("atan")


def _reference_dense(x2d, weight, bias, surrogate):
    """What SpikingJelly does: ``Θ(addmm(b, W, x))`` with autograd keeping x and h."""
    return surrogate(torch.addmm(bias.unsqueeze(1), weight, x2d))


def _grads(fn, x, *params, grad):
    x = x.detach().clone().requires_grad_(True)
    params = [p.detach().clone().requires_grad_(True) for p in params]
    out = fn(x, *params)
    out.backward(grad)
    return out.detach(), [x.grad, *[p.grad for p in params]]


@pytest.mark.parametrize("T", [1, 4, 32])
@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", {"name": "atan", "alpha": 3.0}], ids=str)
@pytest.mark.parametrize("native", ["1", "0"], ids=["fused-C-where-it-applies", "pytorch-path"])
def test_dense_kernel_matches_autograd_reference(T, surrogate, native, monkeypatch):
    monkeypatch.setenv("PSN_ZOO_NATIVE", native)
    monkeypatch.setattr(_psn_kernels, "CHUNK_ELEMENTS", 64 * T)  # force many chunks, with a ragged tail
    sg = make_surrogate(surrogate)
    x = torch.randn(T, 64 * 7 + 13) * 2
    weight, bias = torch.randn(T, T) / T**0.5, torch.randn(T) * 0.1 - 1
    grad = torch.randn_like(x)
    out, grads = _grads(lambda *a: _psn_kernels.DenseThreshold.apply(*a, sg), x, weight, bias, grad=grad)
    ref, ref_grads = _grads(lambda *a: _reference_dense(*a, sg), x, weight, bias, grad=grad)
    assert_spikes_equal_up_to_ties(out, ref, weight, bias, x)  # two GEMMs: equal but for ties at the threshold
    for ours, theirs, terms in zip(grads, ref_grads, (T, x.shape[1], x.shape[1]), strict=True):
        assert_grads_close(ours, theirs, terms=terms)


@pytest.mark.parametrize(("T", "k"), [(8, 1), (8, 2), (16, 4), (32, 3), (5, 8)])
def test_shifted_sliding_kernel_matches_the_dense_banded_gemm(T, k, monkeypatch):
    """The k-tap shifted kernel and the dense Toeplitz GEMM are two routes to the same membrane."""
    monkeypatch.setattr(_psn_kernels, "CHUNK_ELEMENTS", 128 * T)
    weight, bias = torch.randn(k), torch.tensor(-0.5)
    grad = torch.randn(T, 1000)

    def shifted(x, w, b):
        return _psn_kernels.ShiftedThreshold.apply(x, w, b, ATAN)

    def dense(x, w, b):
        return _reference_dense(x, functional.sliding_weight_matrix(w, T), b.expand(T), ATAN)

    # On a dyadic grid every product and partial sum is exact: both routes give the same bits.
    x_exact = torch.randint(-64, 64, (T, 1000)).float() / 16
    w_exact = torch.randint(-8, 9, (k,)).float() / 8
    assert torch.equal(shifted(x_exact, w_exact, bias), dense(x_exact, w_exact, bias))
    # On Gaussian data the spikes agree up to ties at the threshold and the gradients to round-off.
    x = torch.randn(T, 1000) * 2
    out, grads = _grads(shifted, x, weight, bias, grad=grad)
    ref, ref_grads = _grads(dense, x, weight, bias, grad=grad)
    assert_spikes_equal_up_to_ties(out, ref, functional.sliding_weight_matrix(weight, T), bias.expand(T), x)
    for ours, theirs, terms in zip(grads, ref_grads, (k, x.numel(), x.numel()), strict=True):
        assert_grads_close(ours, theirs, terms=terms)


def test_sliding_psn_picks_the_shifted_kernel_for_short_orders():
    assert functional.use_shifted_kernel(T=32, k=2)
    assert not functional.use_shifted_kernel(T=4, k=2)
    calls = []
    original = _psn_kernels.ShiftedThreshold.apply

    def spy(*args):
        calls.append(args[0].shape)
        return original(*args)

    _psn_kernels.ShiftedThreshold.apply = spy
    try:
        functional.sliding_psn_multi_step(torch.randn(32, 5), torch.ones(2), torch.tensor(-1.0), ATAN)
    finally:
        _psn_kernels.ShiftedThreshold.apply = original
    assert calls == [torch.Size([32, 5])]


def test_sliding_weight_matrix_is_banded_toeplitz():
    w = torch.tensor([1.0, 2.0, 3.0])
    expected = torch.tensor(
        [[3, 0, 0, 0, 0], [2, 3, 0, 0, 0], [1, 2, 3, 0, 0], [0, 1, 2, 3, 0], [0, 0, 1, 2, 3]]
    ).float()
    assert torch.equal(functional.sliding_weight_matrix(w, 5), expected)
    assert torch.equal(functional.sliding_weight_matrix(w, 2), expected[:2, :2])


def test_kernels_do_not_keep_the_membrane_for_backward():
    """The dense kernel saves only x and the parameters; SpikingJelly's autograd also saves h = Wx + b."""
    x = torch.randn(4, 1000, requires_grad=True)
    weight = torch.randn(4, 4, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        _psn_kernels.DenseThreshold.apply(x, weight, bias, ATAN)
    assert sorted(saved) == sorted([x.shape, weight.shape, bias.shape])
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        _reference_dense(x, weight, bias, ATAN)
    assert saved.count(x.shape) == 2  # SpikingJelly's route: x for the GEMM and h for the surrogate


@pytest.mark.parametrize("spec", ["if", "lif", "plif", "lif_noreset", {"name": "lif", "v_reset": None}], ids=str)
def test_inference_path_equals_training_path(spec):
    """Without grad the serial kernel reuses one membrane buffer instead of keeping [T, ...]; same result."""
    from psn_zoo.neurons import make_neuron

    neuron = make_neuron(spec)
    x = torch.randn(7, 50) * 2
    with torch.no_grad():
        spikes_inf = neuron(x)
        v_inf = neuron.v.clone()
    neuron.reset()
    spikes_train = neuron(x.requires_grad_(True))
    assert spikes_train.requires_grad
    assert torch.equal(spikes_inf, spikes_train.detach())
    assert torch.equal(v_inf, neuron.v.detach())


@pytest.mark.parametrize(
    "spec",
    [{"name": "psn", "T": 4}, {"name": "masked_psn", "T": 4, "k": 2, "lambda_": 1.0}, {"name": "sliding_psn", "k": 2}],
)
@pytest.mark.parametrize("native", ["1", "0"], ids=["fused-C-where-it-applies", "pytorch-path"])
def test_neurons_take_any_layout_with_one_autograd_node(spec, native, monkeypatch):
    """``[T, B, C, H, W]`` goes through the kernels without reshape/view nodes around them; a permuted
    (channels-last) input and an expanded incoming gradient give the values of the contiguous case."""
    from psn_zoo.neurons import make_neuron

    monkeypatch.setenv("PSN_ZOO_NATIVE", native)
    torch.manual_seed(0)
    neuron = make_neuron(spec)
    x = (torch.randn(4, 2, 8, 6, 6) * 2).requires_grad_(True)
    out = neuron(x)
    assert out.shape == x.shape and out.is_contiguous()
    assert type(out.grad_fn).__name__.endswith("ThresholdBackward")
    assert "AccumulateGrad" in type(out.grad_fn.next_functions[0][0]).__name__  # straight to x: no view node
    out.sum().backward()  # an expanded (stride 0) gradient
    grad_contiguous = x.grad.clone()
    x_cl = x.detach().permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3).requires_grad_(True)
    assert not x_cl.is_contiguous()
    out_cl = neuron(x_cl)
    assert torch.equal(out_cl, out)
    assert type(out_cl.grad_fn) is type(out.grad_fn)  # the same kernel as the contiguous case, after one copy
    out_cl.sum().backward()
    assert torch.equal(x_cl.grad, grad_contiguous)
