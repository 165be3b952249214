"""The neurons after PSN (issue 21): PMSN, the channel-wise sliding PSN, FPT-LIF, ParaLIF/SPSN.

Each neuron's defining property against an independent reference (FPT-LIF against psn_zoo's serial LIF, ParaLIF at
``tau_syn = 0`` against the LIF without reset, the channel-wise sliding PSN with shared taps against the sliding
PSN, PMSN against its equations run step by step), streaming equal to multi-step, ``gradcheck`` in float64 (with a
smooth stand-in for the spike so that finite differences see the same function the analytic gradient
differentiates), every backbone family forward + backward in fp32 and under bf16 autocast, lazy channel sizing,
argument errors, and the registry's family tree. float64 inputs keep ties at the threshold out of exact
comparisons (two summation orders agree to ~1e-16; a tie needs a membrane that close to θ).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from psn_zoo.models import create_model
from psn_zoo.neurons import (
    PMSN,
    RESET_KINDS,
    ChannelSlidingPSN,
    FPTLIFNode,
    LIFNode,
    NoResetLIFNode,
    ParaLIF,
    SlidingPSN,
    list_neurons,
    make_neuron,
    neuron_info,
    neuron_tree,
    plain_ops,
    reset_states,
    size_from_state_dict,
)
from psn_zoo.neurons.channel_sliding import pow2_round
from psn_zoo.neurons.pmsn import decoupled_soma, pmsn_dendrites, pmsn_kernel, pmsn_modes
from psn_zoo.neurons.surrogate import Surrogate

NEW = ["pmsn", "channel_sliding_psn", "fpt_lif", "paralif"]


class SmoothSpike(Surrogate):
    """A differentiable stand-in for Θ (``σ(αh)``) so ``gradcheck``'s finite differences see the function whose
    gradient the neuron's graph computes; the neurons call their surrogate like any other."""

    name = "smooth_test"
    default_alpha = 2.0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.alpha * h)

    def derivative(self, h: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.alpha * h)
        return self.alpha * s * (1 - s)


def _stream(neuron, x: torch.Tensor) -> torch.Tensor:
    reset_states(neuron)
    neuron.step_mode = "s"
    out = torch.stack([neuron(frame) for frame in x])
    reset_states(neuron)
    neuron.step_mode = "m"
    return out


def _run(neuron, x: torch.Tensor, streaming: bool):
    """(spikes, input grad, parameter grads) of one pass from rest, multi-step or frame by frame."""
    x = x.detach().clone().requires_grad_(True)
    neuron.zero_grad(set_to_none=True)
    reset_states(neuron)
    out = _stream(neuron, x) if streaming else neuron(x)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=x.dtype).reshape(out.shape))
    reset_states(neuron)
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in neuron.named_parameters() if p.grad is not None}


def _materialised(neuron, x: torch.Tensor):
    """Size a lazy neuron with one pass, then move it to float64."""
    with torch.no_grad():
        neuron(x.float())
    reset_states(neuron)
    return neuron.double()


# ------------------------------------------------------------------------------------------------ registry
def test_registered_with_their_family_tree():
    assert set(NEW) <= set(list_neurons())
    info = {name: neuron_info(name) for name in list_neurons()}
    for name in NEW:
        i = info[name]
        assert i["causal"] and i["streamable"] and not i["needs_T"], name
        assert i["reset"] in RESET_KINDS and i["reset_free"] == (i["reset"] == "none"), name
    assert info["pmsn"]["reset"] == "decoupled" and info["pmsn"]["channelwise"]
    assert info["channel_sliding_psn"]["channelwise"] and info["channel_sliding_psn"]["reset_free"]
    assert info["fpt_lif"]["exact_reset"] and info["fpt_lif"]["reset"] == "fixed_point"
    assert (
        info["paralif"]["reset_free"] and not info["paralif"]["exact_reset"] and info["paralif"]["aliases"] == ["spsn"]
    )
    assert info["lif"]["exact_reset"] and info["psn"]["reset_free"] and not info["psn"]["streamable"]
    # the tree's edges, both directions consistent
    assert "lif" in info["fpt_lif"]["generalises"] and "fpt_lif" in info["lif"]["generalised_by"]
    assert "sliding_psn" in info["channel_sliding_psn"]["generalises"]
    assert "lif_noreset" in info["paralif"]["generalises"] and "paralif" in info["psn"]["generalises"]
    for name, i in info.items():
        for child, condition in i["generalises"].items():
            assert info[child]["generalised_by"][name] == condition
    tree = neuron_tree()
    for name in list_neurons():
        assert f"{name} [" in tree
    assert "└─ lif [reset: exact" in tree  # under fpt_lif and plif


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "pmsn", "n": 3, "v_threshold": 0.5},
        {"name": "channel_sliding_psn", "k": 3, "dilation": 2, "mul_free": True, "exp_init": False},
        {"name": "fpt_lif", "K": 5, "tau": 3.0, "v_reset": None, "detach_reset": True},
        {"name": "paralif", "tau_mem": 3.0, "tau_syn": 0.0, "spike_mode": "D"},
    ],
    ids=lambda s: s["name"],
)
def test_spec_round_trips(spec):
    neuron = make_neuron(spec)
    assert {k: neuron.spec()[k] for k in spec} == spec  # plain data, every stated argument kept
    assert make_neuron(neuron.spec()).spec() == neuron.spec()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "fpt_lif", "K": 0}, "K must be a positive integer"),
        ({"name": "fpt_lif", "tau": 1.0}, "tau must be > 1"),
        ({"name": "paralif", "spike_mode": "X"}, r"spike_mode must be one of \('T', 'D', 'SB'\)"),
        ({"name": "paralif", "tau_syn": 0.0, "learn_tau": True}, "learn_tau needs tau_syn > 0"),
        ({"name": "paralif", "tau_mem": 0}, "tau_mem must be a finite number > 0"),
        ({"name": "channel_sliding_psn", "k": 0}, "k must be a positive integer"),
        ({"name": "channel_sliding_psn", "k": 2, "dilation": 0}, "dilation must be a positive integer"),
        ({"name": "channel_sliding_psn", "k": 2, "channels": 0}, "channels must be a positive integer"),
        ({"name": "pmsn", "n": 0}, "n must be a positive integer"),
        ({"name": "pmsn", "v_threshold": 0.0}, "v_threshold must be a finite number > 0"),
        ({"name": "pmsn", "dt_min": 0.1, "dt_max": 0.01}, "dt_max must be a finite number >= 0.1"),
        ({"name": "channel_sliding_psn"}, r"needs argument\(s\) \['k'\]"),
    ],
)
def test_bad_arguments_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        make_neuron(spec)


# ------------------------------------------------------------------------------------------------ FPT-LIF
@pytest.mark.parametrize(
    "lif_kwargs",
    [{}, {"v_reset": None}, {"v_reset": -0.3, "decay_input": False, "tau": 3.0}],
    ids=["hard", "soft", "hard-r-nodecay"],
)
def test_fpt_converges_to_the_serial_lif(lif_kwargs):
    """Iteration k is exact on steps 0..k-1, so K >= T gives the serial LIF's spikes, membrane and gradient."""
    torch.manual_seed(0)
    T = 12
    x = torch.randn(T, 4, 50, dtype=torch.float64) * 1.5
    lif = LIFNode(**lif_kwargs)
    ref, ref_gx, _ = _run(lif, x, streaming=False)
    lif(x.detach())
    ref_v = lif.v.clone()
    wrong = []
    for K in range(1, T + 1):
        out, gx, _ = _run(FPTLIFNode(K=K, **lif_kwargs), x, streaming=False)
        assert torch.equal(out[:K], ref[:K]), K  # exact on the first K steps
        wrong.append(int((out != ref).sum()))
    assert wrong[0] > 0 and wrong[-1] == 0 and wrong[2] < wrong[0]  # K = 1 is not the LIF; K = 3 is closer
    fpt = FPTLIFNode(K=T, **lif_kwargs)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-10, atol=1e-12)  # the same surrogate gradient at K = T
    fpt(x)
    torch.testing.assert_close(fpt.v, ref_v, rtol=1e-12, atol=1e-12)
    # the membrane carries over between calls as the LIF's does: two halves = one call
    fpt.reset()
    halves = torch.cat([fpt(x[: T // 2]), fpt(x[T // 2 :])])
    assert torch.equal(halves, ref)


def _plain_and_fused(call):
    """``call()`` through the fused Function and through the plain differentiable ops (what tracers see)."""
    fused = call()
    with plain_ops():
        plain = call()
    return fused, plain


FPT_RESETS = [(0.0, False), (0.0, True), (-0.3, False), (None, False), (None, True)]
FPT_IDS = ["hard", "hard-detach", "hard-r", "soft", "soft-detach"]


def _chunked_products_are_the_whole(T: int, x: torch.Tensor) -> bool:
    """Whether this machine's BLAS gives ``L @ x`` the same bits computed per column chunk as the fused paths do (a
    property of its code path, not of ours: most give it, none promise it)."""
    from psn_zoo.neurons._channelwise import lower_toeplitz
    from psn_zoo.neurons._psn_kernels import _chunks

    L = lower_toeplitz(torch.tensor(0.5, dtype=x.dtype), T)
    return torch.equal(L @ x, torch.cat([L @ x[:, c].contiguous() for c in _chunks(x)], 1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("v_reset", "detach"), FPT_RESETS, ids=FPT_IDS)
def test_fpt_fused_function_is_the_plain_iteration(monkeypatch, v_reset, detach, dtype):
    """The fused Function runs the plain path's operations in its order, chunk by chunk (T·N above one chunk here),
    and its hand-written backward agrees with autograd through the plain iterations to round-off of T-term sums
    over K iterations. In float64 (no membrane within round-off of θ) the spikes are equal and the last membrane
    agrees to round-off on any BLAS; in float32 both are equal bit for bit wherever the BLAS's chunked products are
    the whole product's (checked on this machine first)."""
    from psn_zoo.neurons import fpt

    torch.manual_seed(13)
    T, N, K = 28, 20_000, 3
    x0, v0 = (torch.randn(T, N, dtype=dtype) * 2 + 0.4), torch.randn(N, dtype=dtype) * 0.3
    g_s = torch.linspace(-1, 1, T * N, dtype=dtype).reshape(T, N)
    g_v = torch.linspace(1, -1, N, dtype=dtype)

    def call():
        x, v = x0.clone().requires_grad_(True), v0.clone().requires_grad_(True)
        spikes, v_last = fpt.fpt_lif_multi_step(x, v, K=K, surrogate=make_neuron("lif").surrogate, tau=2.0,
                                                decay_input=v_reset != -0.3, v_threshold=1.0, v_reset=v_reset,
                                                detach_reset=detach)  # fmt: skip
        ((spikes * g_s).sum() + (v_last * g_v).sum()).backward()
        ran.append(type(spikes.grad_fn.next_functions[0][0]).__name__)  # under the reshape to x's shape
        return spikes.detach(), v_last.detach(), x.grad, v.grad

    ran = []
    fused, plain = _plain_and_fused(call)
    assert ran[0] == "FixedPointLIFBackward" and ran[1] != ran[0]
    assert 0.05 < fused[0].mean() < 0.95
    eps = torch.finfo(dtype).eps
    if dtype == torch.float64:
        assert torch.equal(fused[0], plain[0])
        torch.testing.assert_close(fused[1], plain[1], rtol=0, atol=4 * T * K * eps * float(plain[1].abs().max()))
    elif _chunked_products_are_the_whole(T, x0):
        assert torch.equal(fused[0], plain[0]) and torch.equal(fused[1], plain[1])
    for got, want in zip(fused[2:], plain[2:], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=4 * T * K * eps * float(want.abs().max()))


@pytest.mark.parametrize(("v_reset", "detach"), [r for r in FPT_RESETS if not r[1]], ids=["hard", "hard-r", "soft"])
def test_gradcheck_fpt_function_with_its_last_membrane_float64(v_reset, detach):
    """The hand-written backward of spikes and last membrane, from a non-rest membrane, against finite differences
    (a detached reset's gradient is by design not the function's: those cases are checked against autograd above)."""
    from psn_zoo.neurons.fpt import fpt_lif_multi_step

    torch.manual_seed(14)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    v = (torch.randn(6, dtype=torch.float64) * 0.3).requires_grad_(True)

    def fn(x, v):
        return fpt_lif_multi_step(x, v, K=3, surrogate=SmoothSpike(), tau=2.0, decay_input=True, v_threshold=0.5,
                                  v_reset=v_reset, detach_reset=detach)  # fmt: skip

    assert torch.autograd.gradcheck(fn, (x, v))


def test_operation_counts():
    """Neuron-side operations per neuron and sample (for psn_zoo.efficiency's energy estimate)."""
    assert FPTLIFNode(K=3).macs_per_neuron(8) == (8 + 2 * 7, 0.0)  # K decay filters as recurrences
    assert FPTLIFNode(K=8).macs_per_neuron(8) == (8.0, 0.0)  # the serial LIF's count once exact
    assert ParaLIF().macs_per_neuron(10) == (30.0, 0.0) and ParaLIF(tau_syn=0.0).macs_per_neuron(10) == (20.0, 0.0)
    assert PMSN(n=4).macs_per_neuron(4) == (4 * 5 / 2 + 4, 4.0)  # short T: the convolution is cheaper
    assert PMSN(n=4).macs_per_neuron(100) == (33 * 100, 100.0)  # long T: the recurrence


def test_fpt_with_one_iteration_is_the_lif_without_reset():
    torch.manual_seed(1)
    x = torch.randn(10, 300, dtype=torch.float64) * 2
    assert torch.equal(FPTLIFNode(K=1)(x), NoResetLIFNode()(x))


def test_fpt_streams_the_exact_lif():
    torch.manual_seed(2)
    x = torch.randn(9, 3, 40, dtype=torch.float64) * 2
    fpt, lif = FPTLIFNode(K=2), LIFNode()
    assert torch.equal(_stream(fpt, x), lif(x))  # one step needs one iteration: streaming is exact at any K
    _compare_multi_and_streaming(FPTLIFNode(K=9), x)  # multi-step equals it from K >= T


# ------------------------------------------------------------------------------------------------ ParaLIF
def test_paralif_without_synaptic_current_is_the_lif_without_reset():
    torch.manual_seed(3)
    x = torch.randn(16, 400, dtype=torch.float64) * 2
    tau_mem = 2.5
    beta = math.exp(-1 / tau_mem)
    ours = ParaLIF(tau_mem=tau_mem, tau_syn=0.0)(x)
    assert torch.equal(ours, NoResetLIFNode(tau=1 / (1 - beta))(x))


def test_paralif_membrane_follows_its_recurrence():
    """``I = αI + X``, ``V = βV + (1−β)I`` step by step (a plain loop), thresholded or differenced."""
    torch.manual_seed(4)
    x = torch.randn(20, 3, 30, dtype=torch.float64) * 2
    alpha, beta = math.exp(-1 / 3.0), math.exp(-1 / 2.0)
    i = v = torch.zeros_like(x[0])
    vs = []
    for frame in x:
        i = alpha * i + frame
        v = beta * v + (1 - beta) * i
        vs.append(v)
    vs = torch.stack(vs)
    assert torch.equal(ParaLIF(tau_mem=2.0, tau_syn=3.0, v_threshold=0.7)(x), (vs >= 0.7).double())
    delta = vs - torch.cat([torch.zeros_like(vs[:1]), vs[:-1]])
    assert torch.equal(ParaLIF(tau_mem=2.0, tau_syn=3.0, spike_mode="D", v_threshold=0.1)(x), (delta >= 0.1).double())


@pytest.mark.parametrize("learn_tau", [False, True])
def test_paralif_from_rest_runs_the_sliding_kernel_with_its_taps(monkeypatch, learn_tau):
    """From rest, threshold spikes run as a sliding PSN with T taps (the fused kernel in float32): the spikes are the
    two-filter path's except where the membrane lies within float32 round-off of θ (counted: ties only), the
    gradients agree, and the state left behind (two weighted sums over the input) continues the sequence."""

    torch.manual_seed(15)
    T, N = 16, 40_000
    x0 = torch.randn(T, 8, N // 8) * 2
    neuron = ParaLIF(tau_mem=2.0, tau_syn=3.0, learn_tau=learn_tau)

    def call():
        x = x0.clone().requires_grad_(True)
        neuron.zero_grad(set_to_none=True)
        reset_states(neuron)
        out = neuron(x)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        grads = [p.grad.clone() for p in neuron.parameters()]
        reset_states(neuron)
        ran.append(type(out.grad_fn).__name__)
        return out.detach(), x.grad, grads

    ran = []
    fused, plain = _plain_and_fused(call)
    from psn_zoo.neurons import _native

    sliding = {"ToeplitzThresholdBackward", "ShiftedThresholdBackward", "DenseThresholdBackward"}
    assert ran[0] in sliding and ran[1] not in sliding, ran  # a sliding-PSN Function took the call
    built = _native.enabled() and _native.load() is not None
    assert (ran[0] == "ToeplitzThresholdBackward") == built  # the C kernel wherever it is built
    alpha, beta = (float(d.detach()) for d in neuron.decays(torch.float64))
    i = v = torch.zeros(x0.shape[1:], dtype=torch.float64)
    membrane = []
    for frame in x0.double():  # the recurrence in float64
        i = alpha * i + frame
        v = beta * v + (1 - beta) * i
        membrane.append(v)
    membrane = torch.stack(membrane)
    round_off = 4 * T * torch.finfo(torch.float32).eps  # T-term sums of float32 products
    near = (membrane - neuron.v_threshold).abs() <= round_off * float(membrane.abs().max())
    differ = fused[0] != plain[0]
    assert not (differ & ~near).any(), f"{int((differ & ~near).sum())} spikes differ away from θ"
    assert 0.05 < fused[0].mean() < 0.95
    torch.testing.assert_close(fused[1], plain[1], rtol=0, atol=round_off * float(plain[1].abs().max()))
    for got, want in zip(fused[2], plain[2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=0)
    # two calls (the second from the state the first left) = one call over the whole sequence
    with torch.no_grad():
        x = x0.double()
        whole = neuron(x)
        reset_states(neuron)
        halves = torch.cat([neuron(x[: T // 2]), neuron(x[T // 2 :])])
        reset_states(neuron)
    assert torch.equal(halves, whole)


def test_spsn_from_rest_draws_the_plain_paths_samples(monkeypatch):
    """SPSN's fused path computes σ(V) per chunk from one filter and draws over the whole tensor, so with the same
    seed it draws what the plain path draws (a draw can differ only where the uniform number falls within round-off
    of σ(V): none here); the straight-through gradient agrees to float32 round-off of T-term sums."""

    T = 16
    x0 = torch.randn(T, 4, 10_000) * 2
    neuron = ParaLIF(spike_mode="SB", learn_tau=True)

    def call():
        torch.manual_seed(18)
        x = x0.clone().requires_grad_(True)
        neuron.zero_grad(set_to_none=True)
        reset_states(neuron)
        out = neuron(x)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        ran.append(type(out.grad_fn.next_functions[0][0]).__name__)
        reset_states(neuron)
        return out.detach(), x.grad, [p.grad.clone() for p in neuron.parameters()]

    ran = []
    fused, plain = _plain_and_fused(call)
    assert ran[0] == "_FilteredBernoulliBackward" and ran[1] != ran[0]
    assert torch.equal(fused[0], plain[0]) and 0.05 < fused[0].mean() < 0.95
    round_off = 4 * T * torch.finfo(torch.float32).eps
    torch.testing.assert_close(fused[1], plain[1], rtol=0, atol=round_off * float(plain[1].abs().max()))
    for got, want in zip(fused[2], plain[2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=0)


def test_spsn_samples_bernoulli_of_the_sigmoid():
    torch.manual_seed(5)
    neuron = ParaLIF(spike_mode="SB")
    x = torch.full((4, 200_000), 0.8, dtype=torch.float64, requires_grad=True)
    out = neuron(x)
    assert set(out.unique().tolist()) == {0.0, 1.0}
    det = ParaLIF(spike_mode="T")
    det.surrogate = SmoothSpike(alpha=1.0)  # σ(V − θ) with θ = 0: the straight-through path's σ(V)
    det.v_threshold = 0.0
    p = det(x.detach()).mean(1)
    det.reset()  # a ParaLIF keeps its state between calls, as the serial neurons do
    torch.testing.assert_close(out.mean(1), p, atol=5e-3, rtol=0)  # > 4 sd of a 200k-sample mean
    out.sum().backward()  # straight through: the gradient of Σ σ(V)
    xg = x.detach().clone().requires_grad_(True)
    det(xg).sum().backward()
    torch.testing.assert_close(x.grad, xg.grad)


# ------------------------------------------------------------------------------------------ channel-wise sliding PSN
def test_channel_sliding_with_shared_taps_is_the_sliding_psn():
    torch.manual_seed(6)
    x = torch.randn(12, 2, 5, 3, dtype=torch.float64) * 2
    ref = SlidingPSN(k=3, exp_init=False).double()
    ours = ChannelSlidingPSN(k=3, channels=5).double()
    with torch.no_grad():
        ours.weight.copy_(ref.weight.expand(5, -1))
        ours.bias.fill_(float(ref.bias))
    assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize(
    ("shape", "k", "dilation", "mul_free"),
    [
        ((28, 24, 16, 9, 9), 8, 3, True),
        ((12, 300, 64), 3, 1, False),
        ((5, 7), 4, 2, False),
        ((4, 2, 8, 20000), 3, 1, False),
    ],
    ids=["conv-dilated-mulfree", "fc", "one-channel-taps-past-T", "rows-cut-along-R"],
)
def test_channel_sliding_fused_function_is_the_plain_membrane(monkeypatch, shape, k, dilation, mul_free):
    """The fused Function (in-place taps per batch chunk, backward recomputing the membrane) gives the plain
    per-tap path's spikes bit for bit (the same multiply then add per tap) and its gradients to float32 round-off of
    k-term sums (input) and of sums over every element of a channel (taps, bias)."""

    torch.manual_seed(16)
    x0 = torch.randn(shape) * 1.5
    neuron = ChannelSlidingPSN(k=k, dilation=dilation, mul_free=mul_free, exp_init=False)
    neuron(x0)  # sized here
    grad = torch.randn(shape)

    def call():
        x = x0.clone().requires_grad_(True)
        neuron.zero_grad(set_to_none=True)
        out = neuron(x)
        out.backward(grad)
        ran.append(type(out.grad_fn.next_functions[0][0]).__name__)
        return out.detach(), x.grad, neuron.weight.grad.clone(), neuron.bias.grad.clone()

    ran = []
    fused, plain = _plain_and_fused(call)
    assert ran[0] == "ChannelShiftedThresholdBackward" and ran[1] != ran[0]
    assert torch.equal(fused[0], plain[0]) and 0.05 < fused[0].mean() < 0.95
    eps = torch.finfo(torch.float32).eps
    per_channel = x0.numel() // neuron.channels
    for got, want, terms in zip(fused[1:], plain[1:], (k, per_channel, per_channel), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=4 * terms * eps * float(want.abs().max()))


def test_channel_sliding_taps_are_per_channel_and_dilated():
    """``∂H[t, c]/∂X[j, c']`` is ``w[c, i]`` at lag ``t − j = d·(k−1−i)`` when ``c = c'``, else 0."""
    T, k, d, C = 10, 3, 2, 4
    neuron = ChannelSlidingPSN(k=k, dilation=d, channels=C, surrogate=SmoothSpike(alpha=1e-3)).double()
    with torch.no_grad():
        neuron.weight.copy_(torch.arange(1.0, C * k + 1).reshape(C, k))
        neuron.bias.zero_()
    x = torch.zeros(T, 1, C, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: neuron(v), x).reshape(T * C, T * C) / (1e-3 / 4)  # σ'(0)
    expected = torch.zeros(T, C, T, C, dtype=torch.float64)
    for t in range(T):
        for i in range(k):
            if (j := t - d * (k - 1 - i)) >= 0:
                expected[t, range(C), j, range(C)] = neuron.weight[:, i].detach()
    torch.testing.assert_close(jac, expected.reshape(T * C, T * C))
    assert neuron.receptive_field == d * (k - 1) + 1
    assert neuron.macs_per_neuron(T) == (float((expected[:, 0, :, 0] != 0).sum()), 0.0)  # one MAC per tap used
    assert ChannelSlidingPSN(k=k, dilation=d, mul_free=True).macs_per_neuron(T)[1] == neuron.macs_per_neuron(T)[0]


def test_multiplication_free_taps_are_powers_of_two_with_a_straight_through_gradient():
    w = torch.tensor([0.3, -0.7, 1e-4, 5.0, 100.0, -0.125, 0.0])
    q = pow2_round(w)
    assert q.tolist() == [0.25, -0.5, 0.0, 4.0, 8.0, -0.125, 0.0]  # nearest power in log2, exponents −8 … 3
    torch.manual_seed(7)
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    free = ChannelSlidingPSN(k=2, channels=3, mul_free=True, exp_init=False).double()
    plain = ChannelSlidingPSN(k=2, channels=3, exp_init=False).double()
    with torch.no_grad():
        plain.weight.copy_(pow2_round(free.weight))
        plain.bias.copy_(free.bias)
    a, b = _run(free, x, streaming=False), _run(plain, x, streaming=False)
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[2]["weight"], b[2]["weight"])  # ∂L/∂w = ∂L/∂w_q


def test_channel_count_is_learned_from_the_first_input_and_then_enforced():
    neuron = make_neuron({"name": "channel_sliding_psn", "k": 2})
    assert neuron.has_uninitialized_params()
    neuron(torch.randn(4, 2, 6, 3, 3))
    assert neuron.weight.shape == (6, 2) and neuron.bias.shape == (6,) and neuron.channels == 6
    with pytest.raises(ValueError, match="per-channel parameters for 6 channels but the input has 5"):
        neuron(torch.randn(4, 2, 5, 3, 3))
    assert PMSN(channels=3).d.shape == (3,)  # channels= builds them at once


# ------------------------------------------------------------------------------------------------ PMSN
def _pmsn_reference(neuron: PMSN, x: torch.Tensor) -> torch.Tensor:
    """PMSN's equations step by step: complex compartments, the dendritic output, the soma with reset by subtraction."""
    a_bar, b_bar, c = neuron.modes(torch.float64)
    shape = (-1, *([1] * (x.dim() - 3)), a_bar.shape[1])  # [C, 1.., n]
    a_bar, b_bar, c = a_bar.reshape(shape), b_bar.reshape(shape), c.reshape(shape)
    d = neuron.d.detach().double().reshape(shape[:-1])
    s, rho, spikes = 0, torch.zeros_like(x[0]), []
    for u in x:
        s = a_bar * s + b_bar * u.unsqueeze(-1)
        y = (c * s).sum(-1).real + d * u
        m = rho + y.clamp(min=0)
        spikes.append((m >= neuron.v_threshold).double())
        rho = m - neuron.v_threshold * torch.floor(m / neuron.v_threshold)
    return torch.stack(spikes)


def test_pmsn_matches_its_equations_step_by_step():
    torch.manual_seed(8)
    x = torch.randn(24, 2, 3, 5, dtype=torch.float64) * 3
    neuron = _materialised(PMSN(n=3, dt_max=0.5), x)
    with torch.no_grad():
        neuron.log_dt.add_(1.5)  # larger steps: the compartments' oscillations show within 24 steps
    out = neuron(x)
    assert 0.05 < out.mean() < 0.95
    assert torch.equal(out, _pmsn_reference(neuron, x.detach()))


def test_pmsn_soma_gradient_is_decoupled():
    """``∂S[t]/∂z[j]`` is the surrogate's derivative at ``m[t] − θ`` on the diagonal and 0 elsewhere (the reset
    carries no gradient), as in the authors' parallel code."""
    torch.manual_seed(9)
    z = torch.rand(7, 5, dtype=torch.float64) * 1.5
    sg = SmoothSpike()
    jac = torch.autograd.functional.jacobian(lambda v: decoupled_soma(v, None, 1.0, sg)[0], z).reshape(35, 35)
    p = torch.cumsum(z, 0)
    rho = p - torch.floor(p)
    m = torch.cat([torch.zeros_like(z[:1]), rho[:-1]]) + z
    torch.testing.assert_close(jac, torch.diag(sg.derivative(m - 1.0).reshape(-1)))


@pytest.mark.parametrize("shape", [(28, 24, 16, 9, 9), (6, 500, 40)], ids=["conv", "fc"])
def test_pmsn_fused_soma_is_the_plain_soma(monkeypatch, shape):
    """The chunked soma gives the plain ops' spikes bit for bit (same operations, same order) and the gradient of the
    surrogate at the same membrane, masked by relu, to float32 round-off."""

    torch.manual_seed(17)
    x0 = torch.randn(shape)
    neuron = PMSN(n=3, channels=shape[2])

    def call():
        x = x0.clone().requires_grad_(True)
        neuron.zero_grad(set_to_none=True)
        out = neuron(x)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        ran.append(type(out.grad_fn.next_functions[0][0]).__name__)
        return out.detach(), x.grad, [p.grad.clone() for p in neuron.parameters()]

    ran = []
    fused, plain = _plain_and_fused(call)
    assert ran[0] == "FusedSomaBackward" and ran[1] != ran[0]
    assert torch.equal(fused[0], plain[0]) and 0.02 < fused[0].mean() < 0.98
    eps = torch.finfo(torch.float32).eps  # the surrogate's derivative rounds differently in place: a few eps, then
    T, per_channel = shape[0], x0.numel() // shape[2]  # T-term sums to the input, per-channel sums to the parameters
    torch.testing.assert_close(fused[1], plain[1], rtol=0, atol=4 * T * eps * float(plain[1].abs().max()))
    for got, want in zip(fused[2], plain[2], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=4 * per_channel * eps * float(want.abs().max()))


def test_pmsn_kernel_is_the_impulse_response():
    neuron = PMSN(n=2, channels=3).double()
    T = 16
    impulse = torch.zeros(T, 1, 3, dtype=torch.float64)
    impulse[0] = 1.0
    y = pmsn_dendrites(impulse.unsqueeze(-1), neuron.kernel(T, torch.float64), torch.zeros(3, dtype=torch.float64))
    a_bar, b_bar, c = neuron.modes(torch.float64)
    s, response = b_bar, []
    for _ in range(T):
        response.append((c * s).sum(-1).real)
        s = a_bar * s
    torch.testing.assert_close(y[:, 0, :, 0], torch.stack(response))


# ------------------------------------------------------------------------------------------------ shared properties
STREAMING = [
    {"name": "pmsn", "n": 3},
    {"name": "channel_sliding_psn", "k": 3, "dilation": 2},
    {"name": "channel_sliding_psn", "k": 2, "mul_free": True},
    {"name": "paralif"},
    {"name": "paralif", "spike_mode": "D", "tau_syn": 0.0, "v_threshold": 0.2},
    {"name": "paralif", "learn_tau": True},
    {"name": "fpt_lif", "K": 8, "v_reset": None},
]


def _compare_multi_and_streaming(neuron, x: torch.Tensor) -> None:
    multi, stream = _run(neuron, x, streaming=False), _run(neuron, x, streaming=True)
    assert torch.equal(multi[0], stream[0]), f"{int((multi[0] != stream[0]).sum())} spikes differ"
    assert 0 < multi[0].mean() < 1
    torch.testing.assert_close(multi[1], stream[1], rtol=1e-9, atol=1e-11)
    assert multi[2].keys() == stream[2].keys()
    for name in multi[2]:
        torch.testing.assert_close(multi[2][name], stream[2][name], rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("spec", STREAMING, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_streaming_equals_multi_step(spec):
    torch.manual_seed(10)
    x = torch.randn(8, 2, 3, 4, dtype=torch.float64) * 2
    _compare_multi_and_streaming(_materialised(make_neuron(spec), x), x)


GRADCHECK = [
    ({"name": "fpt_lif", "K": 3}, ()),
    ({"name": "fpt_lif", "K": 2, "v_reset": None, "decay_input": False, "tau": 3.0}, ()),
    ({"name": "paralif", "learn_tau": True}, ("w_mem", "w_syn")),
    ({"name": "paralif", "spike_mode": "D", "tau_syn": 0.0}, ()),
    ({"name": "channel_sliding_psn", "k": 3, "dilation": 2}, ("weight", "bias")),
]


@pytest.mark.parametrize(
    ("spec", "params"), GRADCHECK, ids=["fpt-hard", "fpt-soft", "paralif-learn_tau", "paralif-D", "cw_psn"]
)
def test_gradcheck_float64(spec, params):
    torch.manual_seed(11)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    neuron = _materialised(make_neuron({**spec, "surrogate": SmoothSpike()}), x.detach())
    named = {n: p.detach().clone().requires_grad_(True) for n, p in neuron.named_parameters() if n in params}

    def fn(x, *values):
        reset_states(neuron)
        return functional_call(neuron, dict(zip(named, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *named.values()))


def test_gradcheck_pmsn_dendrites_float64():
    """The dendrites are PMSN's differentiable part (the soma's gradient is the defined decoupled surrogate)."""
    torch.manual_seed(12)
    neuron = PMSN(n=2, channels=2).double()
    params = [p.detach().clone().requires_grad_(True) for p in (neuron.log_dt, neuron.log_a_real, neuron.a_imag,
                                                              neuron.b, neuron.c, neuron.d)]  # fmt: skip
    x = torch.randn(6, 2, 2, 1, dtype=torch.float64, requires_grad=True)

    def fn(x, log_dt, log_a_real, a_imag, b, c, d):
        return pmsn_dendrites(x, pmsn_kernel(*pmsn_modes(log_dt, log_a_real, a_imag, b, c), x.shape[0]), d)

    assert torch.autograd.gradcheck(fn, (x, *params))


# ------------------------------------------------------------------------------------------------ in the backbones
NEURON_SPECS = {
    "pmsn": {"name": "pmsn", "n": 2},
    "channel_sliding_psn": {"name": "channel_sliding_psn", "k": 2, "dilation": 2, "mul_free": True},
    "fpt_lif": {"name": "fpt_lif", "K": 2},
    "paralif": {"name": "paralif"},
}
BACKBONES = [
    ("paper_seq_cnn", {"T": 8, "in_channels": 1, "channels": 4, "length": 8, "fc_hidden": 8}, (2, 8, 1, 8)),
    ("paper_cifar10dvs_vgg", {"T": 2, "in_channels": 2, "input_size": 32, "width_mult": 0.125}, (2, 2, 2, 32, 32)),
    # 32 x 32, not 16: layer4's first 3x3 stride-2 convolution then sees 2 x 2 maps. On a 1 x 1 map torch 2.14's CPU
    # bf16 convolution backward leaves some weight-gradient entries unwritten (NaN where the allocator's memory held
    # NaN: 2 of 60 runs of a plain nn.Conv2d(256, 512, 3, 2, 1) under autocast; fp32 never), an upstream defect
    ("sew_resnet18", {"T": 2, "in_channels": 2}, (2, 2, 2, 32, 32)),
]


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("neuron", NEW)
@pytest.mark.parametrize(("arch", "kwargs", "shape"), BACKBONES, ids=[b[0] for b in BACKBONES])
def test_trains_in_every_backbone(arch, kwargs, shape, neuron, autocast):
    torch.manual_seed(13)
    model = create_model(arch, neuron=NEURON_SPECS[neuron], num_classes=4, **kwargs)
    x = torch.rand(*shape) * 2
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([1, 3]))
    loss.backward()
    assert torch.isfinite(loss) and logits.shape == (2, 4)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    grads = [p.grad for p in model.parameters()]
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, bad
    assert any(g.abs().sum() > 0 for g in grads[:2])  # the gradient reaches the first layer, through every neuron
    neuron_params = [p for layer in model.neuron_layers() for p in layer.parameters()]
    assert all(p.grad.abs().sum() > 0 for p in neuron_params[:1])  # and the neurons' own parameters learn


@pytest.mark.parametrize("neuron", ["pmsn", "channel_sliding_psn", "fpt_lif"])
def test_a_model_streams_and_reloads(neuron):
    """A causal new neuron streams frame by frame in a model (the same logits as multi-step), and its weights load
    into a fresh model whose per-channel parameters are not sized yet."""
    torch.manual_seed(14)
    spec = {**NEURON_SPECS[neuron], **({"K": 8} if neuron == "fpt_lif" else {})}
    kwargs = {"T": 8, "in_channels": 1, "channels": 4, "length": 8, "fc_hidden": 8}
    model = create_model("paper_seq_cnn", neuron=spec, num_classes=3, **kwargs).eval()
    x = torch.rand(2, 8, 1, 8, dtype=torch.float64) * 3
    with torch.no_grad():
        model(x.float())
        model.double()
        steps = model.forward_steps(x)
        model.set_step_mode("s")
        streamed = torch.stack([model.step(x[:, t]) for t in range(8)])
        model.set_step_mode("m")
    torch.testing.assert_close(streamed, steps, rtol=1e-9, atol=1e-9)
    fresh = create_model("paper_seq_cnn", neuron=spec, num_classes=3, **kwargs).eval().double()
    if neuron != "fpt_lif":
        with pytest.raises((RuntimeError, ValueError), match="uninitialized parameter"):
            fresh.num_params  # noqa: B018 -- unsized until an input or a state dict
        assert len(size_from_state_dict(fresh, model.state_dict())) == len(fresh.neuron_layers())
        assert fresh.num_params == model.num_params  # sized, so shapes can be compared before loading
        assert {k: v.shape for k, v in fresh.state_dict().items()} == {
            k: v.shape for k, v in model.state_dict().items()
        }
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.forward_steps(x), steps)


@pytest.mark.parametrize("neuron", [{"name": "pmsn", "n": 2}, {"name": "channel_sliding_psn", "k": 2}], ids=str)
def test_an_unsized_channelwise_model_loads_weights_through_the_build_path(neuron):
    """Weights of a trained channel-wise model load into a fresh (not yet sized) one through the one build path
    (psn_zoo.models.load_backbone_weights), which sizes the neurons from the checkpoint first."""
    from psn_zoo.models import create_model, load_backbone_weights

    kwargs = {"T": 4, "in_channels": 2, "input_size": 34, "width_mult": 0.25, "num_classes": 3}
    trained = create_model("paper_cifar10dvs_vgg", neuron=neuron, **kwargs).eval()
    x = torch.rand(2, 4, 2, 34, 34)
    with torch.no_grad():
        expected = trained(x)
    fresh = create_model("paper_cifar10dvs_vgg", neuron=neuron, **kwargs).eval()
    assert load_backbone_weights(fresh, trained.state_dict()) == []
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)


FUSED_SPECS = [
    {"name": "fpt_lif", "K": 3, "tau": 2.0},
    {"name": "paralif", "spike_mode": "T"},
    {"name": "paralif", "spike_mode": "SB"},
    {"name": "channel_sliding_psn", "k": 2, "mul_free": True},
    {"name": "pmsn", "n": 2},
]


@pytest.mark.parametrize("spec", FUSED_SPECS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_an_inference_mode_call_leaves_training_working(spec):
    """The fused paths' per-thread scratch grows to the largest call: grown under ``torch.inference_mode`` (a
    validation pass with a larger batch, Lightning's sanity check) it must still be writable by the next training
    call, whose spikes and gradients are those of a thread that never ran inference."""
    from psn_zoo.neurons import _memory

    def train(neuron, x):
        torch.manual_seed(3)  # SPSN draws
        x = x.clone().requires_grad_(True)
        reset_states(neuron)
        out = neuron(x)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        reset_states(neuron)
        return out.detach(), x.grad

    torch.manual_seed(0)
    small, large = torch.randn(6, 4, 3, 5) * 2, torch.randn(6, 32, 3, 5) * 2
    neuron = make_neuron(spec)
    _memory._scratch.buffers = {}
    expected = train(neuron, small)
    _memory._scratch.buffers = {}  # this thread's scratch is now grown under inference_mode
    with torch.inference_mode():
        neuron(large)
        reset_states(neuron)
    assert not any(b.is_inference() for b in _memory._scratch.buffers.values())
    got = train(neuron, small)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("spike_mode", ["T", "SB"])
def test_paralif_state_is_not_read_from_the_callers_tensor_after_the_call(spike_mode):
    """A call from rest leaves ParaLIF's state for the next call: refilling the caller's input buffer in place
    between the calls (a streaming loop) must not change it, so chunk 2 is the same with a reused buffer as with
    fresh tensors."""
    torch.manual_seed(1)
    first, second = torch.randn(8, 4, 64) * 2, torch.randn(8, 4, 64) * 2

    def chunks(reuse: bool) -> torch.Tensor:
        neuron = ParaLIF(tau_mem=2.0, tau_syn=3.0, spike_mode=spike_mode)
        buffer = first.clone()
        torch.manual_seed(2)
        neuron(buffer)
        if reuse:
            buffer.copy_(second)
        return neuron(buffer if reuse else second.clone())

    assert torch.equal(chunks(reuse=True), chunks(reuse=False))


def test_a_surrogate_subclass_that_redefines_its_derivative_trains_with_it(monkeypatch):
    """Subclassing a built-in surrogate and redefining ``derivative`` (or ``vjp``) changes the gradient on every
    path: the fused kernels call ``backward_``, which must not keep the parent's hard-coded formula."""
    from psn_zoo.neurons.surrogate import ATan, Sigmoid

    class WideATan(ATan):
        def derivative(self, h: torch.Tensor) -> torch.Tensor:
            return 0.5 * super().derivative(h * 0.25)

    class ScaledSigmoid(Sigmoid):
        def vjp(self, h: torch.Tensor, grad_spike: torch.Tensor) -> torch.Tensor:
            return 3.0 * super().vjp(h, grad_spike)

    h, g = torch.linspace(-2, 2, 101), torch.linspace(1, 2, 101)
    cases = ((WideATan(), g * WideATan().derivative(h)), (ScaledSigmoid(), 3.0 * Sigmoid().vjp(h, g)))
    for surrogate, expected in cases:
        assert torch.allclose(surrogate.backward_(h.clone(), g), expected, rtol=1e-6, atol=0)
        assert torch.allclose(surrogate.vjp(h, g), expected, rtol=1e-6, atol=0)
    assert torch.allclose(WideATan().derivative_(h.clone()), WideATan().derivative(h), rtol=1e-6, atol=0)
    assert ATan.backward_ is not Surrogate.backward_  # the built-ins keep their fused forms

    torch.manual_seed(0)
    x0 = torch.randn(6, 3, 40) * 2

    def grad():
        x = x0.clone().requires_grad_()
        FPTLIFNode(K=3, surrogate=WideATan()).forward(x).sum().backward()
        return x.grad

    fused, plain = _plain_and_fused(grad)
    assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-7)
    parent = x0.clone().requires_grad_()
    FPTLIFNode(K=3).forward(parent).sum().backward()
    assert not torch.allclose(fused, parent.grad, rtol=1e-2)  # the redefinition took effect


@pytest.mark.parametrize("spec", FUSED_SPECS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_an_empty_batch_passes_through(spec):
    """A batch of 0 samples (the last, empty shard of a split) gives 0 spikes of the same shape, forward and back."""
    x = torch.randn(5, 0, 4, 3, requires_grad=True)
    neuron = make_neuron(spec)
    neuron(torch.randn(5, 1, 4, 3))  # sized (channel-wise neurons learn C from a first input)
    reset_states(neuron)
    out = neuron(x)
    out.sum().backward()
    assert out.shape == x.shape and x.grad.shape == x.shape


def test_fpt_keeps_no_membranes_when_no_backward_can_follow(monkeypatch):
    """Inference (no_grad, or nothing needs a gradient) stores none of the K membranes the backward reads; the
    spikes are the training call's."""
    from psn_zoo.neurons import _fpt_kernel

    kept, real = [], _fpt_kernel.fresh_empty
    monkeypatch.setattr(_fpt_kernel, "fresh_empty", lambda shape, *args: kept.append(shape) or real(shape, *args))
    neuron = FPTLIFNode(K=3, v_reset=0.0)
    x = torch.randn(8, 4, 100) * 2
    with torch.no_grad():
        inferred = neuron(x.clone().requires_grad_())
    reset_states(neuron)
    untracked = neuron(x)
    reset_states(neuron)
    assert kept == []
    trained = neuron(x.clone().requires_grad_())
    assert kept == [(3, 8, 400)]
    assert torch.equal(inferred, trained) and torch.equal(untracked, trained)


def test_fpt_differs_from_the_serial_lif_only_at_ties():
    """``K >= T`` regroups the serial sum into [T, T] products, so a membrane within round-off of θ may fire the other
    way: integer inputs at τ = 3 (a non-dyadic decay) make such ties common. At each neuron's first differing step
    (before it both had the same history) the exact membrane lies within float32 round-off of the threshold."""
    torch.manual_seed(21)
    T, tau, theta = 16, 3.0, 1.0
    x = torch.randint(0, 4, (T, 4000)).float()
    lif, fpt = LIFNode(tau=tau), FPTLIFNode(K=T, tau=tau)
    with torch.no_grad():
        serial, parallel = lif(x), fpt(x)
    v, exact = torch.zeros(x.shape[1], dtype=torch.float64), []
    for t in range(T):  # the exact membrane along the serial LIF's own spikes
        h = v + (x[t].double() - v) / tau
        exact.append(h)
        v = h * (1 - serial[t].double())
    differ = serial != parallel
    assert differ.any(), "the inputs should produce ties (else this test checks nothing)"
    first = differ.float().argmax(0)
    columns = differ.any(0).nonzero().squeeze(1)
    gaps = torch.stack(exact)[first[columns], columns].sub(theta).abs()
    assert float(gaps.max()) <= 4 * T * 2**-24 * (1 + 3), (float(gaps.max()), int(columns.numel()))


def test_a_plain_load_state_dict_sizes_a_channelwise_neuron_and_its_channel_check():
    """``load_state_dict`` into an unsized channel-wise neuron sizes its parameters (LazyModuleMixin) and records the
    channel count, so an input with other channels gets the clear error, not a shape error deep inside; GLIF also
    learns T from its conductance, through a plain load or ``size_from_state_dict``."""
    torch.manual_seed(22)
    for spec in ({"name": "pmsn", "n": 2}, {"name": "channel_sliding_psn", "k": 2}, {"name": "glif", "T": 5}):
        trained = make_neuron(spec)
        trained(torch.rand(5, 2, 3, 4))
        fresh = make_neuron({k: v for k, v in spec.items() if k != "T"})
        fresh.load_state_dict(trained.state_dict())
        assert fresh.channels == 3 and "channels=3" in repr(fresh)
        with pytest.raises(ValueError, match="per-channel parameters for 3 channels but the input has 1"):
            fresh(torch.rand(5, 2, 1, 4))
        x = torch.rand(5, 2, 3, 4)
        reset_states(trained)
        with torch.no_grad():
            assert torch.equal(fresh(x), trained(x))
    glif = make_neuron({"name": "glif", "T": 5})
    glif(torch.rand(5, 2, 3, 4))
    unsized = torch.nn.Sequential(make_neuron({"name": "glif"}))
    assert size_from_state_dict(unsized, {f"0.{k}": v for k, v in glif.state_dict().items()}) == ["0"]
    assert unsized[0].T == 5 and unsized[0].channels == 3


def test_paralif_decays_survive_a_half_precision_module():
    """``module.to(bf16)`` (Lightning's bf16-true) must not round ParaLIF's fixed decays: at tau_mem = 1000, β rounds
    to 1 in bf16 and the membrane would never charge. The module in bf16 fires as the fp32 one on the same input."""
    x = (torch.rand(64, 4, 256) * 40).to(torch.bfloat16)
    for tau_mem in (10.0, 1000.0):
        fp32 = make_neuron({"name": "paralif", "tau_mem": tau_mem, "tau_syn": 2.0})
        half = make_neuron({"name": "paralif", "tau_mem": tau_mem, "tau_syn": 2.0}).to(torch.bfloat16)
        with torch.no_grad():
            expected, got = fp32(x), half(x)
        assert expected.sum() > 0 and torch.equal(got, expected), tau_mem
