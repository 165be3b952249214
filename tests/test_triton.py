"""The Triton kernels (psn_zoo/neurons/_triton_*.py) against the fp32 PyTorch path and SpikingJelly 2.0.0.

Without a GPU they run on CPU tensors in Triton's interpreter (conftest sets ``TRITON_INTERPRET=1``, this module
sets ``PSN_ZOO_TRITON=1``): small shapes, the same code. With a GPU the same checks run on CUDA tensors.

- PSN family: spikes equal to the other path's except at near-threshold ties, which are counted and bounded
  (:func:`conftest.assert_spikes_equal_up_to_ties`); gradients to float32 round-off (well inside rtol 1e-4).
- Serial neurons: the kernels do the PyTorch path's operations without fused multiply-adds, so spikes and membranes
  are equal bit for bit; gradients to round-off.
- fp16/bf16 inputs with fp32 parameters: the kernels compute in fp32, so spikes and parameter gradients equal those
  of the fp32 input holding the same values, and ``grad_x`` is that run's rounded once to the input's dtype.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import triton
import triton.language as tl
from conftest import assert_grads_close, assert_neuron_outputs_match, assert_spikes_equal_up_to_ties

from psn_zoo.neurons import _backend, compat, make_neuron, reset_states
from psn_zoo.neurons._triton_common import rounded_to
from psn_zoo.neurons.surrogate import ATan

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROOT = Path(__file__).resolve().parents[1]

PSN_SPECS = [
    {"name": "psn", "T": 2},
    {"name": "psn", "T": 5},
    {"name": "psn", "T": 8, "surrogate": {"name": "sigmoid", "alpha": 4.0}},
    {"name": "masked_psn", "T": 8, "k": 3, "lambda_": 0.5},
    {"name": "masked_psn", "T": 6, "k": 2, "lambda_": 1.0},
    {"name": "sliding_psn", "k": 3, "T": 7},
    {"name": "sliding_psn", "k": 5, "exp_init": False, "T": 4},  # k > T: the oldest taps never contribute
    {"name": "psn", "T": 16},  # from T_PAD = 16 the kernels' products are tl.dot
    {"name": "masked_psn", "T": 20, "k": 4, "lambda_": 0.5, "surrogate": {"name": "sigmoid", "alpha": 4.0}},
]
SERIAL_SPECS = [
    {"name": "if"},
    {"name": "if", "v_reset": None},
    {"name": "lif"},
    {"name": "lif", "decay_input": False, "v_reset": -0.25},
    {"name": "lif", "v_reset": None, "detach_reset": True, "surrogate": {"name": "sigmoid", "alpha": 4.0}},
    {"name": "lif", "v_reset": None},
    {"name": "plif"},
    {"name": "plif", "decay_input": False, "v_reset": None},
    {"name": "plif", "detach_reset": True},
]


def _ids(spec: dict) -> str:
    return "-".join(str(v) if not isinstance(v, dict) else v["name"] for v in spec.values())


def _build(spec: dict) -> tuple[torch.nn.Module, int]:
    spec = dict(spec)
    T = spec.pop("T", 6) if spec["name"] == "sliding_psn" else spec.get("T", 6)
    return make_neuron(spec).to(DEVICE), T


def _run(neuron: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, *, triton: bool):
    """``(spikes, grad_x, {param: grad}, autograd node name)`` of one forward + backward from a reset state."""
    old = os.environ.get("PSN_ZOO_TRITON")
    os.environ["PSN_ZOO_TRITON"] = "1" if triton else "0"
    try:
        reset_states(neuron)
        x = x.detach().clone().requires_grad_(True)
        for p in neuron.parameters():
            p.grad = None
        out = neuron(x)
        node = type(out.grad_fn).__name__
        out.backward(grad)
        grads = {n: None if p.grad is None else p.grad.clone() for n, p in neuron.named_parameters()}
        return out.detach(), x.grad, grads, node
    finally:
        os.environ.pop("PSN_ZOO_TRITON") if old is None else os.environ.__setitem__("PSN_ZOO_TRITON", old)


def _input(T: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.randn(T, 3, 8, 24) * 1.5).to(DEVICE, dtype)
    return x, torch.randn(x.shape).to(DEVICE, dtype)


def test_the_kernels_run_in_this_suite():
    """CI has no GPU: the interpreter must be on, or every test below would silently test nothing new."""
    assert DEVICE == "cuda" or _backend.interpreting(), "set TRITON_INTERPRET=1 (tests/conftest.py does)"
    neuron, T = _build({"name": "psn", "T": 4})
    assert _run(neuron, *_input(T), triton=True)[3] == "TritonThresholdBackward"
    assert _run(neuron, *_input(T), triton=False)[3] != "TritonThresholdBackward"


@pytest.mark.parametrize("spec", PSN_SPECS + SERIAL_SPECS, ids=_ids)
def test_kernels_match_the_pytorch_path_and_spikingjelly(spec):
    neuron, T = _build(spec)
    x, grad = _input(T)
    ours = _run(neuron, x, grad, triton=True)
    assert ours[3] in ("TritonThresholdBackward", "TritonSerialBackward"), ours[3]
    torch_path = _run(neuron, x, grad, triton=False)
    assert torch_path[3] not in ("TritonThresholdBackward", "TritonSerialBackward")
    theirs = compat.to_spikingjelly(neuron.cpu()).to(DEVICE)
    neuron.to(DEVICE)
    sj = _run(theirs, x, grad, triton=False)
    for other in (torch_path, sj):
        assert_neuron_outputs_match(neuron.cpu(), x.cpu(), _cpu(ours), _cpu(other))
        neuron.to(DEVICE)
    for name, g in ours[2].items():  # the stated bound, on top of the derived one above
        torch.testing.assert_close(g, torch_path[2][name], rtol=1e-4, atol=1e-4 * float(g.abs().max()))


def _cpu(result: tuple) -> tuple:
    out, gx, grads = result[:3]
    return out.cpu(), gx.cpu(), {n: g.cpu() for n, g in grads.items()}


def test_no_reset_lif_matches_the_pytorch_path():
    """The paper's LIF without reset (SpikingJelly has no such neuron): bit-equal spikes, gradients to round-off."""
    neuron, T = _build({"name": "lif_noreset", "tau": 3.0})
    x, grad = _input(T)
    ours, ref = _run(neuron, x, grad, triton=True), _run(neuron, x, grad, triton=False)
    assert ours[3] == "TritonSerialBackward"
    assert torch.equal(ours[0], ref[0])
    assert_grads_close(ours[1], ref[1], terms=T)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(
    "spec", [PSN_SPECS[2], PSN_SPECS[3], PSN_SPECS[5], PSN_SPECS[8], SERIAL_SPECS[2], SERIAL_SPECS[6]], ids=_ids
)
def test_half_precision_inputs_accumulate_in_fp32(spec, dtype):
    neuron, T = _build(spec)
    x, grad = _input(T, dtype)
    half = _run(neuron, x, grad, triton=True)
    full = _run(neuron, x.float(), grad.float(), triton=True)  # the same values in fp32
    assert half[0].dtype == half[1].dtype == dtype
    assert torch.equal(half[0].float(), full[0])  # spikes: the same fp32 arithmetic
    if DEVICE == "cpu":  # grad_x: the fp32 run's, rounded once
        torch.testing.assert_close(half[1], full[1].to(dtype), rtol=0, atol=0)
    else:  # the compiled half and fp32 kernels may fuse multiply-adds differently: one rounding step apart
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(half[1].float(), full[1], rtol=eps, atol=eps * float(full[1].abs().max()))
    for name, g in half[2].items():
        assert g.dtype == torch.float32
        if DEVICE == "cpu":  # parameter gradients accumulate in fp32 from the same values
            assert torch.equal(g, full[2][name])
        else:  # the compiler builds the half and fp32 kernels apart and may fuse their multiply-adds differently
            ref = full[2][name]
            torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    # against SpikingJelly in fp32: the documented bound is the half dtype's rounding of grad_x
    sj = _run(compat.to_spikingjelly(neuron.cpu()).to(DEVICE), x.float(), grad.float(), triton=False)
    neuron.to(DEVICE)
    rounding = torch.finfo(dtype).eps
    torch.testing.assert_close(half[1].float(), sj[1], rtol=rounding, atol=rounding * float(sj[1].abs().max()))


def test_a_half_precision_input_with_fp32_parameters_keeps_the_state_in_fp32():
    neuron, T = _build({"name": "plif"})
    x, _ = _input(T, torch.bfloat16)
    os.environ["PSN_ZOO_TRITON"] = "1"
    try:
        reset_states(neuron)
        neuron(x)
        assert neuron.v.dtype == torch.float32
        first_v = neuron.v.clone()
        neuron(x)  # the state carries over in fp32
        assert neuron.v.dtype == torch.float32 and not torch.equal(neuron.v, first_v)
    finally:
        os.environ.pop("PSN_ZOO_TRITON")


@pytest.mark.parametrize("spec", [PSN_SPECS[1], PSN_SPECS[5], SERIAL_SPECS[2], SERIAL_SPECS[6]], ids=_ids)
def test_any_time_first_layout(spec, monkeypatch):
    """A channels-last input keeps its layout (read in place, spikes and grad_x come back with its strides); a
    strided slice and a window of a longer sequence work too; the values are the contiguous input's."""
    neuron, T = _build(spec)
    nhwc = torch.randn(T, 2, 6, 5, 4, device=DEVICE) * 1.5  # [T, B, H, W, C]
    channels_last = nhwc.permute(0, 1, 4, 2, 3)  # [T, B, C, H, W], C fastest in memory
    grad = torch.randn(T, 2, 6, 5, 4, device=DEVICE).permute(0, 1, 4, 2, 3)
    strided = torch.zeros(T, 2, 4, 6, 10, device=DEVICE)[..., ::2]
    strided.copy_(channels_last)
    window = torch.zeros(T + 3, 2, 4, 6, 5, device=DEVICE)[2 : 2 + T]
    window.copy_(channels_last)
    expected = _run(neuron, channels_last.contiguous(), grad.contiguous(), triton=True)
    for x in (channels_last, strided, window):
        got = _run(neuron, x, grad, triton=True)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        for name, g in got[2].items():
            assert_grads_close(g, expected[2][name], terms=x.numel())
    got = _run(neuron, channels_last, grad, triton=True)
    assert got[0].stride() == got[1].stride() == channels_last.stride()


@pytest.mark.parametrize("T", [8, 16], ids=["loop", "dot"])
def test_parameter_gradients_are_reduced_in_a_fixed_order(T):
    neuron, T = _build({"name": "psn", "T": T})
    x = torch.randn(T, 64, 300, device=DEVICE)  # several programs, each with a partial sum
    grad = torch.randn_like(x)
    first, second = _run(neuron, x, grad, triton=True), _run(neuron, x, grad, triton=True)
    for name in first[2]:
        assert torch.equal(first[2][name], second[2][name])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "spec", [SERIAL_SPECS[1], SERIAL_SPECS[3], SERIAL_SPECS[4], SERIAL_SPECS[6], SERIAL_SPECS[7]], ids=_ids
)
def test_serial_backward_with_the_membrane_in_registers_equals_the_one_through_memory(spec, dtype, monkeypatch):
    """Up to REGISTER_T_MAX the serial backward keeps the recomputed H in registers (unrolled), beyond it in an
    fp32 buffer: the same operations in the same order, so the same bits (the parameter gradient's partial sums
    follow each path's block size: on a GPU they agree to round-off)."""
    from psn_zoo.neurons import _triton_serial

    neuron, _ = _build(spec)
    x, grad = _input(12, dtype)
    kind = _triton_serial._KINDS
    assert all(_triton_serial.REGISTER_T_MAX[k] >= 12 for k in kind)
    in_registers = _run(neuron, x, grad, triton=True)
    monkeypatch.setattr(_triton_serial, "REGISTER_T_MAX", dict.fromkeys(kind, 0))
    in_memory = _run(neuron, x, grad, triton=True)
    assert torch.equal(in_registers[0], in_memory[0]) and torch.equal(in_registers[1], in_memory[1])
    for name, g in in_registers[2].items():
        if DEVICE == "cpu":
            assert torch.equal(g, in_memory[2][name])
        else:
            torch.testing.assert_close(g, in_memory[2][name], rtol=1e-5, atol=0)
    reference = _run(neuron, x.float(), grad.float(), triton=False)  # and the PyTorch path's spikes, at this T
    assert torch.equal(in_registers[0].float(), reference[0])


@pytest.mark.parametrize("spec", [SERIAL_SPECS[2], SERIAL_SPECS[7]], ids=_ids)
def test_streaming_and_the_membrane_state(spec, monkeypatch):
    """Two calls of T/2 steps carry the state like one call of T; single-step mode gives the same spikes; the
    gradient reaches the carried state (v_0) like on the PyTorch path."""
    neuron, _ = _build(spec)
    T = 8
    x = torch.randn(T, 4, 50, device=DEVICE) * 1.5
    monkeypatch.setenv("PSN_ZOO_TRITON", "1")
    reset_states(neuron)
    whole, v_whole = neuron(x), neuron.v.clone()
    reset_states(neuron)
    halves = torch.cat([neuron(x[: T // 2]), neuron(x[T // 2 :])])
    assert torch.equal(halves, whole) and torch.equal(neuron.v, v_whole)
    reset_states(neuron)
    neuron.step_mode = "s"
    steps = torch.stack([neuron(x_t) for x_t in x])
    neuron.step_mode = "m"
    assert torch.equal(steps, whole)
    grads, start = {}, torch.rand(4, 50, device=DEVICE) * 0.9
    for flag in ("1", "0"):
        monkeypatch.setenv("PSN_ZOO_TRITON", flag)
        v0 = start.clone().requires_grad_(True)
        neuron.v = v0
        out = neuron(x)
        (out * torch.linspace(-1, 1, out.numel(), device=DEVICE).view_as(out)).sum().add(neuron.v.sum()).backward()
        grads[flag] = v0.grad
    assert_grads_close(grads["1"], grads["0"], terms=T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("spec", [SERIAL_SPECS[3], SERIAL_SPECS[6], {"name": "lif", "v_reset": 0.1}], ids=_ids)
def test_a_fresh_state_starts_from_a_number_not_a_tensor(spec, dtype, monkeypatch):
    """A reset neuron hands the kernels its start value as a number (no [*] tensor filled per call, no ∂L/∂V[-1]
    stored): the same bits as starting from that value's tensor in the input's dtype, as the PyTorch path does."""
    from psn_zoo.neurons import functional as F

    neuron, _ = _build(spec)
    x, grad = _input(6, dtype)
    monkeypatch.setenv("PSN_ZOO_TRITON", "1")
    start = float(neuron.v_reset or 0.0)
    kwargs = {"surrogate": neuron.surrogate, "v_threshold": neuron.v_threshold, "v_reset": neuron.v_reset,
              "detach_reset": neuron.detach_reset, **neuron._kernel_kwargs()}  # fmt: skip
    runs = []
    for v0 in (start, torch.full_like(x[0], start)):
        xg = x.clone().requires_grad_(True)
        spikes, v_last = F.serial_multi_step(xg, v0, **kwargs)
        assert type(spikes.grad_fn).__name__ == "TritonSerialBackward"
        spikes.backward(grad)
        runs.append((spikes, v_last, xg.grad))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    reference = _run(neuron, x, grad, triton=False)
    assert torch.equal(runs[0][0], reference[0])


@pytest.mark.parametrize("spec", [SERIAL_SPECS[2], SERIAL_SPECS[6]], ids=_ids)
def test_unused_outputs_and_frozen_parameters(spec, monkeypatch):
    """Backward with only the spikes or only v_last in the loss (autograd hands the other's gradient over as None),
    and with PLIF's w frozen: the gradients equal the PyTorch path's, and no input is written to."""
    neuron, _ = _build(spec)
    x = torch.randn(6, 4, 50, device=DEVICE) * 1.5
    for p in neuron.parameters():
        p.requires_grad_(False)
    weights = torch.linspace(-1, 1, x.numel(), device=DEVICE).view_as(x)
    for loss in (lambda out, v: (out * weights).sum(), lambda out, v: v.sum()):
        grads = {}
        for flag in ("1", "0"):
            monkeypatch.setenv("PSN_ZOO_TRITON", flag)
            reset_states(neuron)
            xg, kept = x.clone().requires_grad_(True), x.clone()
            loss(neuron(xg), neuron.v).backward()
            assert torch.equal(xg.detach(), kept)
            grads[flag] = xg.grad
        assert_grads_close(grads["1"], grads["0"], terms=6)


@pytest.mark.parametrize("spec", [PSN_SPECS[1], PSN_SPECS[5], PSN_SPECS[7]], ids=_ids)
@pytest.mark.parametrize("frozen", ["weight", "bias", "both"])
def test_psn_with_frozen_parameters(spec, frozen, monkeypatch):
    """The parameter partials share one buffer (one sum): with either parameter frozen the other's gradient and
    grad_x still equal the PyTorch path's, and the input is never written to (the sliding PSN's kernels store its
    taps' partials whatever is frozen)."""
    neuron, T = _build(spec)
    for name, p in neuron.named_parameters():
        p.requires_grad_(frozen not in ("both", name))
    x, grad = _input(T)
    monkeypatch.setenv("PSN_ZOO_TRITON", "1")
    xg = x.clone().requires_grad_(True)
    neuron(xg).backward(grad)
    assert torch.equal(xg.detach(), x)
    got, ref = _run(neuron, x, grad, triton=True), _run(neuron, x, grad, triton=False)
    assert got[3] == "TritonThresholdBackward"
    assert_grads_close(got[1], ref[1], terms=T)
    for name, p in neuron.named_parameters():
        assert (p.grad is None) == (not p.requires_grad)
        if p.requires_grad:
            assert_grads_close(got[2][name], ref[2][name], terms=x[0].numel())


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "masked_psn", "T": 8, "k": 3, "lambda_": 0.25},
        {"name": "masked_psn", "T": 8, "k": 3, "lambda_": 1.0},
        {"name": "sliding_psn", "k": 3, "T": 7},
        {"name": "sliding_psn", "k": 4, "T": 18},  # the tl.dot kernels
        {"name": "sliding_psn", "k": 2, "T": 40},  # grad_W partials in memory (T_PAD > 32)
    ],
    ids=_ids,
)
def test_the_masked_and_sliding_matrices_are_made_in_the_kernel(spec, monkeypatch):
    """The kernels make the masked PSN's W ⊙ (λ·M_k + (1 − λ)·J) from the raw W and λ (read on the device), and the
    sliding PSN's Toeplitz band from its taps, summing the band's gradient back onto them: no [T, T] matrix and no
    autograd node of small ops per call, the parameters' gradients straight from the kernel; the same results as
    the PyTorch path's matrices (spikes up to counted ties, gradients to round-off)."""
    neuron, T = _build(spec)
    monkeypatch.setenv("PSN_ZOO_TRITON", "1")
    out = neuron(_input(T)[0])
    parents = {type(f).__name__ for f, _ in out.grad_fn.next_functions if f is not None}
    assert type(out.grad_fn).__name__ == "TritonThresholdBackward" and parents == {"AccumulateGrad"}, parents
    x, grad = _input(T)
    got, ref = _run(neuron, x, grad, triton=True), _run(neuron, x, grad, triton=False)
    assert_neuron_outputs_match(neuron, x, got[:3], ref[:3])


def test_psn_spikes_under_ties_are_counted_not_hidden():
    """Inputs on a grid make exact ties common: the kernel's spikes still agree with the exact sign wherever
    round-off cannot explain a difference, and the count of differing spikes is all ties."""
    neuron, T = _build({"name": "psn", "T": 6})
    with torch.no_grad():
        neuron.weight.copy_(torch.randint(-4, 5, (T, T)).float() / 4)
        neuron.bias.copy_(torch.randint(-4, 5, (T,)).float() / 4)
    x = (torch.randint(-8, 9, (T, 4, 200)).float() / 8).to(DEVICE)
    spikes = _run(neuron, x, torch.ones_like(x), triton=True)[0]
    reference = _run(neuron, x, torch.ones_like(x), triton=False)[0]
    differ = assert_spikes_equal_up_to_ties(spikes.cpu(), reference.cpu(), neuron.weight.cpu(), neuron.bias.cpu(),
                                            x.cpu())  # fmt: skip
    assert differ == 0  # grid values are exact in fp32: both paths compute the exact membrane here


def test_dispatch_rules(monkeypatch):
    cuda = SimpleNamespace(is_cuda=True, dtype=torch.float32, numel=lambda: 1024, get_device=lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    _backend._gpu_problem.cache_clear()
    monkeypatch.setenv("PSN_ZOO_TRITON", "0")
    with pytest.warns(RuntimeWarning, match="PSN_ZOO_TRITON=0"):
        _backend._warn_once.cache_clear()
        assert not _backend.use_triton(cuda, ATan())
    monkeypatch.setenv("PSN_ZOO_TRITON", "yes")
    with pytest.raises(ValueError, match="PSN_ZOO_TRITON must be 0"):
        _backend.use_triton(cuda, ATan())
    monkeypatch.setenv("PSN_ZOO_TRITON", "auto")
    assert _backend.use_triton(cuda, ATan())  # a GPU tensor takes Triton by default
    cpu = torch.zeros(2, 3)
    assert _backend.use_triton(cpu, ATan()) is False  # CPU tensors: the C kernel or PyTorch unless forced

    class Custom(ATan):
        name = "custom"

    monkeypatch.setenv("PSN_ZOO_TRITON", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _backend._warn_once.cache_clear()
        assert not _backend.use_triton(cuda, Custom())
    assert any("fuse only" in str(w.message) for w in caught)
    assert not _backend.use_triton(torch.zeros(2, dtype=torch.float64), ATan())  # fp64 runs the PyTorch path
    huge = SimpleNamespace(is_cuda=True, dtype=torch.float32, numel=lambda: _backend.MAX_ELEMENTS, get_device=lambda: 0)
    assert not _backend.use_triton(huge, ATan())  # 32-bit offsets: the PyTorch path takes it
    _backend._gpu_problem.cache_clear()


def test_a_gpu_triton_cannot_compile_for_runs_the_pytorch_path_after_one_warning(monkeypatch):
    """Triton needs compute capability 7.0: on a P100 (6.0) every neuron call would fail to compile."""
    cuda = SimpleNamespace(is_cuda=True, dtype=torch.float32, numel=lambda: 1024, get_device=lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (6, 0) if index == 1 else (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Tesla P100-PCIE-16GB")
    monkeypatch.setenv("PSN_ZOO_TRITON", "auto")
    _backend._gpu_problem.cache_clear()
    _backend._warn_once.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"Tesla P100.*capability 6\.0 and Triton needs 7\.0"):
            assert not _backend.use_triton(cuda, ATan())
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once: the second call is quiet
            assert not _backend.use_triton(cuda, ATan())
        assert _backend.use_triton(SimpleNamespace(**{**vars(cuda), "get_device": lambda: 0}), ATan())
    finally:
        _backend._gpu_problem.cache_clear()
        _backend._warn_once.cache_clear()


@triton.jit
def _round(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, rounded_to(tl.load(x_ptr + offs, mask=mask), tl.bfloat16), mask=mask)


def test_bf16_rounding_keeps_nan_and_rounds_to_nearest_even():
    """The kernels' fp32 -> bf16 rounding (spelled out in integers) equals torch's for every class of value, and a
    NaN stays NaN whatever its bits: GPUs produce 0xFFFFFFFF/0x7FFFFFFF, which a bare carry turns into ±0."""
    nans = [0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00000, 0xFFC00000, 0x7FFF8000, 0x7F800001]
    others = [0x7F800000, 0xFF800000, 0, 0x80000000, 0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0x00000001]
    bits = torch.tensor(nans + others, dtype=torch.int64).to(torch.int32)  # wraps the high ones to int32's bits
    x = bits.view(torch.float32).to(DEVICE)
    y = torch.empty(x.shape, dtype=torch.bfloat16, device=DEVICE)
    _round[(1,)](x, y, x.numel(), BLOCK=16)
    y = y.cpu()
    assert torch.isnan(y[: len(nans)]).all(), y[: len(nans)]
    expected = x.cpu()[len(nans) :].to(torch.bfloat16)  # torch rounds to nearest even (ties included)
    assert torch.equal(y[len(nans) :].view(torch.int16), expected.view(torch.int16))


def test_a_view_whose_steps_span_more_than_int32_is_copied(monkeypatch):
    """The kernels index with 32-bit offsets, and ``numel`` does not bound a strided view's span: a time-first slice
    of a larger tensor (step stride > its columns) whose last step lies past 2**31 elements is copied first."""
    from psn_zoo.neurons import _triton_common

    big = torch.randn(5, 240)
    view = big[:, :120]  # dense steps, stride 240: a view is enough when the span fits
    within = _triton_common.as_columns(view, [0, 1])
    assert within.data_ptr() == big.data_ptr() and within.stride(0) == 240
    monkeypatch.setattr(_triton_common, "MAX_ELEMENTS", 4 * 240 + 119)  # the last step ends one element past it
    copied = _triton_common.as_columns(view, [0, 1])
    assert copied.data_ptr() != big.data_ptr() and copied.stride(0) == 120 and torch.equal(copied, view)
    neuron, T = _build({"name": "lif"})
    ours = _run(neuron, view.to(DEVICE), torch.ones(5, 120, device=DEVICE), triton=True)
    ref = _run(neuron, view.to(DEVICE), torch.ones(5, 120, device=DEVICE), triton=False)
    assert ours[3] == "TritonSerialBackward" and torch.equal(ours[0], ref[0])
    assert_grads_close(ours[1], ref[1], terms=T)


@pytest.mark.parametrize("shape", [(), (8,), (1, 8)], ids=str)
def test_a_state_that_broadcasts_starts_the_serial_kernels(shape, monkeypatch):
    """``serial_multi_step(x, v)`` with ``v`` broadcasting to one step ([C], a 0-d tensor) runs on both paths with the
    same spikes, state and gradients (``v``'s summed back to its shape); one that does not broadcast is refused."""
    from psn_zoo.neurons import functional as F

    x = torch.randn(6, 3, 8, device=DEVICE) * 1.5
    runs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("PSN_ZOO_TRITON", flag)
        xg = x.clone().requires_grad_(True)
        v0 = torch.full(shape, 0.25, device=DEVICE, requires_grad=True)
        spikes, v_last = F.serial_multi_step(xg, v0, surrogate=ATan(), tau=2.0)
        assert (type(spikes.grad_fn).__name__ == "TritonSerialBackward") == (flag == "1")
        (spikes * torch.linspace(-1, 1, x.numel(), device=DEVICE).view_as(x)).sum().add(v_last.sum()).backward()
        runs[flag] = (spikes, v_last, xg.grad, v0.grad)
    assert runs["1"][3].shape == shape
    for ours, ref in zip(runs["1"], runs["0"], strict=True):
        assert ours.shape == ref.shape
    assert torch.equal(runs["1"][0], runs["0"][0]) and torch.equal(runs["1"][1], runs["0"][1])
    assert_grads_close(runs["1"][2], runs["0"][2], terms=6)
    assert_grads_close(runs["1"][3], runs["0"][3], terms=6 * x[0].numel())
    for flag in ("1", "0"):
        monkeypatch.setenv("PSN_ZOO_TRITON", flag)
        with pytest.raises(ValueError, match=r"state v of shape \(3,\) does not broadcast to one step"):
            F.serial_multi_step(x, torch.zeros(3, device=DEVICE), surrogate=ATan(), tau=2.0)


def test_every_kernel_variant_compiles_for_hopper_without_spilling():
    """The real Triton compiler (the interpreter above does not compile) accepts every kernel for sm_90, and no
    variant spills registers to local memory."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = ROOT / ".pytest_cache" / "kernel_resources.json"
    out.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.kernel_resources", "--quick", "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert len(rows) >= 100
    assert all("local" in r for r in rows), "cuobjdump did not report resources"
    spilled = [r["kernel"] for r in rows if r["local"] or r["stack"]]
    assert not spilled, f"register spills in {spilled}"
    assert max(r["reg"] for r in rows) <= 255


@pytest.mark.skipif(DEVICE == "cuda", reason="CPU tensors through the interpreter; test_cuda.py fits on the GPU")
def test_a_bf16_mixed_lightning_fit_runs_the_kernels(tmp_path, monkeypatch):
    """Lightning's bf16-mixed precision with the Triton kernels (interpreted here): the neurons receive bf16
    inputs, the kernels run forward and backward, and the loss stays finite."""
    import lightning as L

    from psn_zoo.neurons import _triton_psn
    from psn_zoo.training import SpikingClassifier

    seen: list[torch.dtype] = []
    original = _triton_psn.TritonThreshold.forward

    def counted(ctx, x_seq, *args):
        seen.append(x_seq.dtype)
        return original(ctx, x_seq, *args)

    monkeypatch.setattr(_triton_psn.TritonThreshold, "forward", staticmethod(counted))
    monkeypatch.setenv("PSN_ZOO_TRITON", "1")
    module = SpikingClassifier(
        model="paper_cifar10dvs_vgg", neuron="psn", T=4, num_classes=4, in_channels=2,
        model_kwargs={"input_size": 34, "width_mult": 0.125}, loss="tet", optimizer="adamw", lr=3e-3,
        log_input_samples=0,
    )  # fmt: skip
    x = (torch.rand(8, 4, 2, 34, 34) < 0.1).float()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.arange(8) % 4), batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, precision="bf16-mixed", default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, data)
    assert torch.bfloat16 in seen, seen
    assert torch.isfinite(trainer.callback_metrics["train/loss"]), trainer.callback_metrics
