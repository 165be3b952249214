"""Neuron behaviour: shapes, step modes, state, streaming equals multi-step, input errors, initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_neuron_outputs_match, forward_backward
from torch import nn

from psn_zoo.neurons import (
    PSN,
    MaskedPSN,
    NoResetLIFNode,
    SlidingPSN,
    make_neuron,
    reset_states,
    set_step_mode,
)

ALL_SPECS = [
    {"name": "psn", "T": 6},
    {"name": "masked_psn", "T": 6, "k": 2, "lambda_": 0.5},
    {"name": "sliding_psn", "k": 3},
    {"name": "if"},
    {"name": "lif"},
    {"name": "plif"},
    {"name": "lif_noreset"},
]

CAUSAL_SPECS = [
    {"name": "masked_psn", "T": 6, "k": 2, "lambda_": 1.0},
    {"name": "masked_psn", "T": 6, "k": 6, "lambda_": 1.0},
    {"name": "sliding_psn", "k": 2},
    {"name": "sliding_psn", "k": 3, "exp_init": False},
    {"name": "if"},
    {"name": "lif", "v_reset": None, "detach_reset": True},
    {"name": "lif", "tau": 3.0, "decay_input": False},
    {"name": "plif"},
    {"name": "lif_noreset"},
]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s["name"])
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 4)])
def test_multi_step_shapes_and_binary_output(spec, shape):
    neuron = make_neuron(spec)
    x = torch.randn(6, *shape) * 2
    out, grad_x, grads = forward_backward(neuron, x, torch.ones_like(x))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert 0 < out.mean() < 1  # it fires, and not everywhere
    assert grad_x.shape == x.shape and grad_x.abs().sum() > 0
    for name, grad in grads.items():
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("spec", CAUSAL_SPECS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_streaming_equals_multi_step(spec):
    """Frame-by-frame (single-step) spikes are the whole-sequence ones (for the PSN family up to ties at the
    threshold: the step sums its k taps itself, the sequence through a GEMM); gradients agree."""
    torch.manual_seed(1)
    x = torch.randn(6, 4, 3, 5) * 2
    grad = torch.randn_like(x)
    multi = make_neuron(spec)
    stream = make_neuron(spec)
    stream.load_state_dict(multi.state_dict())
    out_m, gx_m, gp_m = forward_backward(multi, x, grad)

    stream.step_mode = "s"
    xs = x.clone().requires_grad_(True)
    out_s = torch.stack([stream(xs[t]) for t in range(x.shape[0])])
    out_s.backward(grad)
    streamed = out_s.detach(), xs.grad, {n: p.grad for n, p in stream.named_parameters()}
    assert_neuron_outputs_match(multi, x, streamed, (out_m, gx_m, gp_m))


def test_state_persists_until_reset():
    lif = make_neuron("lif")
    x = torch.full((3, 2), 1.5)
    first = lif(x)
    second = lif(x)  # continues from the stored membrane potential
    assert not torch.equal(first, second)
    reset_states(lif)
    assert torch.equal(lif(x), first)

    sliding = make_neuron("sliding_psn", k=2, step_mode="s")
    a = [sliding(torch.ones(2)) for _ in range(3)]
    sliding.reset()
    b = [sliding(torch.ones(2)) for _ in range(3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_reset_states_and_set_step_mode_on_a_model():
    model = nn.Sequential(nn.Linear(3, 3), make_neuron("lif"), nn.Linear(3, 3), make_neuron("sliding_psn", k=2))
    set_step_mode(model, "s")
    assert all(m.step_mode == "s" for m in (model[1], model[3]))
    model(torch.randn(2, 3))
    assert model[1].v is not None and model[3]._queue
    reset_states(model)
    assert model[1].v is None and not model[3]._queue

    mixed = nn.Sequential(make_neuron("lif"), make_neuron("psn", T=4))
    with pytest.raises(ValueError, match="PSN is not causal"):
        set_step_mode(mixed, "s")
    assert mixed[0].step_mode == "m"  # nothing changed when one neuron cannot switch


# ------------------------------------------------------------------------------------ bad input
def test_wrong_T_is_named():
    psn = make_neuron("psn", T=4)
    with pytest.raises(ValueError, match=r"built for T=4 time steps but got an input with 8 steps.*x.transpose"):
        psn(torch.randn(8, 2, 3))
    masked = make_neuron("masked_psn", T=4, k=2)
    with pytest.raises(ValueError, match="built for T=4"):
        masked(torch.randn(3, 2))


def test_single_step_on_non_causal_neurons():
    with pytest.raises(ValueError, match=r"PSN is not causal.*no single-step mode"):
        make_neuron("psn", T=4, step_mode="s")
    psn = make_neuron("psn", T=4)
    with pytest.raises(ValueError, match="not causal"):
        psn.step_mode = "s"
    masked = make_neuron("masked_psn", T=4, k=2, lambda_=0.5)
    with pytest.raises(ValueError, match=r"lambda_=0.5 < 1 .*cannot run step by step"):
        masked.step_mode = "s"
    masked.lambda_ = 1.0
    masked.step_mode = "s"
    masked(torch.randn(3))
    masked.lambda_ = 0.9  # lowered again mid-stream
    with pytest.raises(ValueError, match="cannot run step by step"):
        masked(torch.randn(3))


def test_masked_psn_streaming_beyond_T():
    masked = make_neuron("masked_psn", T=3, k=2, lambda_=1.0, step_mode="s")
    for _ in range(3):
        masked(torch.randn(2))
    with pytest.raises(RuntimeError, match=r"MaskedPSN\(T=3\) has already run 3 single steps.*reset\(\)"):
        masked(torch.randn(2))
    masked.reset()
    masked(torch.randn(2))


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s["name"])
def test_non_floating_input(spec):
    neuron = make_neuron(spec)
    with pytest.raises(TypeError, match=r"expects a floating-point input.*x.float\(\)"):
        neuron(torch.ones(6, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"expects a torch\.Tensor"):
        neuron([[1.0]])


def test_multi_step_needs_a_time_axis():
    with pytest.raises(ValueError, match=r"time-first tensor \[T, B, \.\.\.\] with at least 2 dimensions"):
        make_neuron("lif")(torch.randn(5))


@pytest.mark.parametrize("start", [0.0, torch.zeros(3, 4)], ids=["number", "tensor"])
def test_serial_functional_refuses_an_empty_time_axis(start):
    """``serial_multi_step`` on T = 0 names the problem (it used to fail with an IndexError deep inside)."""
    from psn_zoo.neurons import functional as F
    from psn_zoo.neurons.surrogate import ATan

    with pytest.raises(ValueError, match=r"serial_multi_step: x_seq must be a time-first tensor \[T, \*\] with T >= 1"):
        F.serial_multi_step(torch.zeros(0, 3, 4), start, surrogate=ATan(), tau=2.0)


def test_state_shape_change_without_reset():
    lif = make_neuron("lif")
    lif(torch.randn(4, 8, 3))
    with pytest.raises(ValueError, match=r"stored membrane potential has shape \(8, 3\).*reset\(\)"):
        lif(torch.randn(4, 5, 3))
    stream = make_neuron("sliding_psn", k=3, step_mode="s")
    stream(torch.randn(8, 3))
    with pytest.raises(ValueError, match="input shape changed"):
        stream(torch.randn(5, 3))


# ---------------------------------------------------------------------------------- parameters
def test_psn_initialisation_follows_the_paper():
    for T in (4, 32):
        psn = PSN(T)
        bound = 1 / math.sqrt(T)
        assert psn.weight.shape == (T, T) and psn.weight.abs().max() <= bound
        assert psn.weight.std() > bound / 3  # a uniform draw, not a constant
        assert torch.equal(psn.bias, torch.full((T,), -1.0))
        assert sum(p.numel() for p in psn.parameters()) == T * T + T
    sliding = SlidingPSN(4)
    assert sliding.weight.tolist() == [0.125, 0.25, 0.5, 1.0] and float(sliding.bias.detach()) == -1.0
    assert SlidingPSN(4, exp_init=False).weight.abs().max() <= 0.5
    masked = MaskedPSN(5, 2)
    expected_mask = torch.tensor([[1 if 0 <= i - j < 2 else 0 for j in range(5)] for i in range(5)]).float()
    assert torch.equal(masked.mask, expected_mask)


def test_masked_psn_lambda_is_a_saved_buffer():
    masked = MaskedPSN(4, 2, lambda_=0.25)
    state = masked.state_dict()
    assert float(state["lambda_"]) == 0.25
    other = MaskedPSN(4, 2)
    other.load_state_dict(state)
    assert float(other.lambda_) == 0.25
    other.lambda_ = 1
    assert float(other.lambda_) == 1.0 and other.lambda_.dtype == torch.float32
    with pytest.raises(ValueError, match=r"lambda_ must be in \[0, 1\]"):
        other.lambda_ = -0.1


def test_masked_psn_lambda_blends_dense_and_band():
    masked = MaskedPSN(4, 1, lambda_=0.0)
    assert torch.equal(masked.effective_weight(), masked.weight)  # λ = 0: dense, like PSN
    masked.lambda_ = 1.0
    assert torch.equal(masked.effective_weight(), torch.diag(torch.diag(masked.weight)))
    masked.lambda_ = 0.5
    off_band = masked.effective_weight()[0, 3]
    assert torch.isclose(off_band, 0.5 * masked.weight[0, 3])


def test_lif_without_reset_is_a_fixed_psn():
    """LIF without reset is linear: H = W·X with W[t, i] = (1/τ)(1 − 1/τ)^(t−i). With τ = 2 and inputs on
    a 1/8 grid every product and sum is exact in float32, so both must give the very same spikes."""
    T, tau = 8, 2.0
    lifnr = NoResetLIFNode(tau=tau)
    psn = PSN(T)
    with torch.no_grad():
        t = torch.arange(T)
        lag = (t[:, None] - t[None, :]).float()
        psn.weight.copy_(torch.where(lag >= 0, (1 / tau) * (1 - 1 / tau) ** lag, torch.zeros(())))
        psn.bias.fill_(-1.0)
    x = torch.randint(-16, 24, (T, 64, 5)).float() / 8
    assert torch.equal(lifnr(x), psn(x))


def test_non_contiguous_and_double_inputs():
    for spec in ALL_SPECS:
        neuron = make_neuron(spec)
        x = torch.randn(3, 6, 4).transpose(0, 1)  # [6, 3, 4], not contiguous
        assert not x.is_contiguous()
        reference = make_neuron(spec)
        reference.load_state_dict(neuron.state_dict())
        assert torch.equal(neuron(x), reference(x.contiguous()))
        neuron.double()
        reset_states(neuron)
        assert neuron(x.double()).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "spec",
    [{"name": "psn", "T": 4}, {"name": "masked_psn", "T": 4, "k": 2, "lambda_": 1.0},
     {"name": "masked_psn", "T": 4, "k": 2, "lambda_": 0.5}, {"name": "sliding_psn", "k": 2}],
    ids=lambda s: "-".join(f"{v}" for v in s.values()),
)  # fmt: skip
def test_half_precision_input_with_float32_parameters(spec, dtype):
    """As under mixed precision: a bf16/fp16 input runs in the parameters' float32, the spikes come back in the
    input's dtype (0 and 1 are exact) and the parameter gradients in float32, equal to the float32 run's."""
    torch.manual_seed(3)
    neuron = make_neuron(spec)
    x = (torch.randn(4, 2, 300) * 2).to(dtype)
    out, gx, gp = forward_backward(neuron, x, torch.ones_like(x))
    ref, gx_ref, gp_ref = forward_backward(neuron, x.float(), torch.ones(x.shape))
    assert out.dtype == dtype and gx.dtype == dtype
    assert torch.equal(out.float(), ref)
    assert torch.equal(gx, gx_ref.to(dtype))
    for name, grad in gp.items():
        assert grad.dtype == torch.float32 and torch.equal(grad, gp_ref[name])


@pytest.mark.parametrize(
    "spec", [{"name": "psn", "T": 8}, {"name": "masked_psn", "T": 8, "k": 3, "lambda_": 1.0}], ids=lambda s: s["name"]
)
def test_a_transposed_weight_trains_through_the_kernel(spec):
    """A weight that is a transposed view (``load_state_dict(..., assign=True)`` of ``W.t()``) runs forward and
    backward like a contiguous copy of it: the gradient buffers the kernel writes are made contiguous."""
    torch.manual_seed(0)
    neuron, reference = make_neuron(spec), make_neuron(spec)
    weight = torch.randn(8, 8)
    neuron.weight = nn.Parameter(weight.t().contiguous().t())  # the same values, transposed strides
    reference.weight = nn.Parameter(weight.clone())
    assert not neuron.weight.is_contiguous()
    x = torch.randn(8, 4, 300) * 2
    out, grad_x, grads = forward_backward(neuron, x, torch.ones_like(x))
    ref_out, ref_grad_x, ref_grads = forward_backward(reference, x, torch.ones_like(x))
    assert torch.equal(out, ref_out) and torch.equal(grad_x, ref_grad_x)
    assert all(torch.equal(grads[name], ref_grads[name]) for name in ref_grads)


@pytest.mark.parametrize(
    "spec",
    [{"name": "sliding_psn", "k": 3}, {"name": "masked_psn", "T": 6, "k": 3, "lambda_": 1.0},
     {"name": "channel_sliding_psn", "k": 2, "dilation": 2}, {"name": "lif"}],
    ids=lambda s: s["name"],
)  # fmt: skip
def test_streaming_with_a_refilled_input_buffer(spec):
    """Single-step streaming that refills one input buffer in place each step (a sensor loop) gives the spikes of
    fresh tensors: the neurons that remember past inputs keep copies, not the caller's buffer."""
    torch.manual_seed(0)
    xs = torch.randn(6, 4, 3, 20) * 2

    def stream(refill: bool) -> torch.Tensor:
        torch.manual_seed(1)  # the same initial weights
        neuron = make_neuron({**spec, "step_mode": "s"})
        buffer, out = torch.empty_like(xs[0]), []
        for x in xs:
            if refill:
                buffer.copy_(x)
            out.append(neuron(buffer if refill else x.clone()))
        return torch.stack(out)

    assert torch.equal(stream(refill=True), stream(refill=False))


@pytest.mark.parametrize("name", ["if", "lif", "plif"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_serial_plain_ops_accumulate_half_precision_in_float32_as_the_kernel_does(name, dtype):
    """torch.compile/export and plain_ops() run the serial neurons' plain ops: on a half-precision input they keep the
    membrane in float32 like the kernel, so the spikes are the kernel's."""
    from psn_zoo.neurons import plain_ops

    torch.manual_seed(0)
    neuron = make_neuron({"name": name})
    x = (torch.randn(8, 4, 500) * 2).to(dtype)
    fused = neuron(x)
    reset_states(neuron)
    with plain_ops():
        plain = neuron(x)
    assert plain.dtype == fused.dtype == dtype and torch.equal(plain, fused)


def test_a_state_dict_lambda_outside_zero_one_is_refused_on_load():
    neuron = MaskedPSN(T=4, k=2)
    state = {**neuron.state_dict(), "lambda_": torch.tensor(1.5)}
    with pytest.raises(ValueError, match=r"lambda_ must be in \[0, 1\], got 1.5"):
        neuron.load_state_dict(state)
    assert float(neuron.lambda_) == 0.0
