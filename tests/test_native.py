"""The fused C kernel of the dense PSN family (psn_zoo/neurons/csrc/psn_cpu.c): build, cache, dispatch, results.

It is compiled here with the machine's C compiler (CI has one), so these tests run the real library. Its contract
(docs/numerics.md): the membrane and the input gradient are its own fixed fma chains, bit for bit on every CPU
(checked against an exact emulation, not against the BLAS); SpikingJelly's spikes, which come from the BLAS, equal
ours up to ties within float32 round-off of the threshold; parameter gradients agree to round-off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform

import pytest
import torch
from conftest import (
    assert_grads_close,
    assert_spikes_equal_up_to_ties,
    fma32,
    fma_chain_matmul,
    forward_backward,
    psn_membrane_matrix,
)

from psn_zoo.neurons import PSN, SlidingPSN, _native, _psn_kernels, compat, make_neuron, make_surrogate

ATAN = make_surrogate("atan")
needs_compiler = pytest.mark.skipif(
    _native.find_compiler() is None or not _native.enabled(), reason="no C compiler, or PSN_ZOO_NATIVE=0 set"
)


@pytest.fixture
def fresh_load(tmp_path, monkeypatch):
    """A private kernel cache and a fresh per-process load (restored afterwards)."""
    monkeypatch.setenv("PSN_ZOO_CACHE", str(tmp_path))
    _native.load.cache_clear()
    yield tmp_path / "kernels"
    _native.load.cache_clear()


def _sj_reference(x, weight, bias, grad, alpha=2.0):
    """SpikingJelly 2.0.0's PSN step by step: h = addmm(b, W, x), Θ(h), ATan backward, grad_x = Wᵀ·grad_h."""
    h = torch.addmm(bias.unsqueeze(1), weight, x)
    a = alpha / 2
    ax = math.pi * a * h
    grad_h = a / (1 + ax * ax) * grad
    return (h >= 0).float(), torch.mm(weight.t(), grad_h), grad_h @ x.t(), grad_h.sum(1)


def _native_run(x, weight, bias, grad, surrogate=ATAN):
    x, weight, bias = (t.detach().clone().requires_grad_(True) for t in (x, weight, bias))
    out = _psn_kernels.DenseThreshold.apply(x, weight, bias, surrogate)
    out.backward(grad)
    return out.detach(), x.grad, weight.grad, bias.grad


def _kernel_reference(x, weight, bias, grad, alpha=2.0):
    """The kernel's arithmetic, emulated exactly on any CPU: membrane and input gradient as ascending fma chains,
    the ATan surrogate one float32 operation at a time (psn_cpu.c's header)."""
    membrane = fma_chain_matmul(weight, x)
    spikes = (membrane >= -bias.unsqueeze(1)).float()
    a = torch.tensor(alpha / 2, dtype=torch.float32)
    u = (math.pi * a).float() * (membrane + bias.unsqueeze(1))
    grad_h = (1 / (1 + u * u)) * a * grad
    return membrane, spikes, fma_chain_matmul(weight.t().contiguous(), grad_h)


def test_the_fma_emulation_rounds_once():
    """The reference's fma: exact products, one rounding, including a float64 midpoint where plain float64
    arithmetic would round twice."""
    a = torch.tensor([1 + 2**-12])
    assert fma32(a, a, torch.tensor([-1.0])).item() == 2**-11 + 2**-24  # a float32 product would lose the 2^-24
    # x·y = 2^-24 + 2^-60 exactly, so x·y + 1 lies just above the float32 midpoint 1 + 2^-24: fma rounds up, while
    # the float64 sum rounds onto the midpoint and then to even (1.0)
    x, y, one = torch.tensor([1 + 2**-12]), torch.tensor([2**-24 * (1 - 2**-12 + 2**-24)]), torch.tensor([1.0])
    assert (x.double() * y.double() + 1).float().item() == 1.0
    assert fma32(x, y, one).item() == 1 + 2**-23
    assert fma32(-x, y, -one).item() == -(1 + 2**-23)


@needs_compiler
@pytest.mark.parametrize("T", [2, 3, 4, 5, 7, 8, 10, 11, 16, 23, 32])
@pytest.mark.parametrize("N", [_native.MIN_COLUMNS, 257, 1000, 3000, 2048])  # 2048: a 4 KiB-multiple row stride
def test_native_kernel_is_its_fixed_order_on_every_cpu(T, N):
    """The kernel takes every T (no BLAS probe can turn it off), its membrane, spikes and input gradient are its
    fma chains bit for bit, its parameter gradients agree with float64 to round-off, and SpikingJelly's spikes
    (torch's BLAS, whatever order this CPU's takes) equal its own up to ties at the threshold."""
    torch.manual_seed(T * 1000 + N)
    x = torch.randn(T, N) * 2
    weight, bias = torch.randn(T, T) / T**0.5, torch.randn(T) * 0.1 - 1
    grad = torch.randn(T, N)
    assert _native.dense_kernels(x, weight, bias, ATAN) is not None, "the native kernel should take this call"
    membrane = torch.empty_like(x)
    _native.load().forward(x, weight, bias, torch.empty_like(x), membrane)
    out, gx, gw, gb = _native_run(x, weight, bias, grad)
    ref_membrane, ref_out, ref_gx = _kernel_reference(x, weight, bias, grad)
    assert torch.equal(membrane, ref_membrane)
    assert torch.equal(out, ref_out)
    assert torch.equal(gx, ref_gx)
    exact = _sj_reference(*(t.double() for t in (x, weight, bias, grad)))
    assert_grads_close(gw, exact[2].float(), terms=N)
    assert_grads_close(gb, exact[3].float(), terms=N)
    sj_out, sj_gx, sj_gw, sj_gb = _sj_reference(x, weight, bias, grad)
    assert_spikes_equal_up_to_ties(out, sj_out, weight, bias, x)
    assert_grads_close(gx, sj_gx, terms=T)
    assert_grads_close(gw, sj_gw, terms=N)
    assert_grads_close(gb, sj_gb, terms=N)


@needs_compiler
def test_the_kernel_takes_every_T_whatever_the_blas_does(monkeypatch):
    """The dispatch depends on the shape, dtype and surrogate only: a BLAS that rounds otherwise (MKL on AMD, or
    here one made to) changes nothing about which path runs or what it returns."""
    taken = [
        T
        for T in range(2, _native.MAX_T + 1)
        if _native.dense_kernels(
            torch.empty(T, _native.MIN_COLUMNS if T <= _native.WIDE_T else _native.WIDE_T_MIN_COLUMNS),
            torch.empty(T, T), torch.empty(T), ATAN,
        ) is not None
    ]  # fmt: skip
    assert taken == list(range(2, _native.MAX_T + 1))
    torch.manual_seed(5)
    x, weight, bias, grad = torch.randn(5, 300), torch.randn(5, 5), torch.randn(5) - 1, torch.randn(5, 300)
    before = _native_run(x, weight, bias, grad)
    monkeypatch.setattr(torch, "mm", lambda *a, **k: pytest.fail("the kernel path must not call the BLAS"))
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: pytest.fail("the kernel path must not call the BLAS"))
    after = _native_run(x, weight, bias, grad)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


@needs_compiler
@pytest.mark.parametrize(
    ("T", "k", "N"),
    [(T, k, N) for T, k in [(4, 1), (8, 2), (16, 3), (32, 2), (32, 8), (13, 4)] for N in (_native.MIN_COLUMNS, 1000)]
    + [(64, 5, _native.WIDE_T_MIN_COLUMNS + 7)],
)
def test_banded_kernel_skips_zeros_without_changing_a_bit(T, k, N):
    """A band of order k (masked PSN at λ = 1, sliding PSN): k multiply-adds per output, the bits of the dense fma
    chain over the masked matrix (an fma with a zero product returns its addend); entries outside the band are never
    read."""
    torch.manual_seed(T * 100 + k)
    mask = torch.tril(torch.ones(T, T)) * torch.triu(torch.ones(T, T), -(k - 1))
    weight, bias = torch.randn(T, T) * mask, torch.randn(T) * 0.1 - 1
    x, grad = torch.randn(T, N) * 2, torch.randn(T, N)
    assert _native.dense_kernels(x, weight, bias, ATAN, band=k) is not None
    unmasked = weight + torch.randn(T, T) * (1 - mask)  # the kernel reads only the band (masked PSN's raw W)
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, unmasked, bias))
    out = _psn_kernels.DenseThreshold.apply(xg, wg, bg, ATAN, k)
    out.backward(grad)
    _, ref_out, ref_gx = _kernel_reference(x, weight, bias, grad)  # the dense chain over the masked matrix
    assert torch.equal(out, ref_out)
    assert torch.equal(xg.grad, ref_gx)
    exact = _sj_reference(*(t.double() for t in (x, weight, bias, grad)))
    assert_grads_close(wg.grad * mask, (exact[2] * mask).float(), terms=N)
    assert not wg.grad[mask == 0].any()  # outside the band the gradient is not computed (the mask zeroes it anyway)
    assert_grads_close(bg.grad, exact[3].float(), terms=N)
    assert_spikes_equal_up_to_ties(out, _sj_reference(x, weight, bias, grad)[0], weight, bias, x)


@pytest.mark.parametrize(("T", "k", "N"), [(8, 2, 1000), (13, 4, 300), (40, 3, 100)])
def test_the_pytorch_path_honours_the_band_too(T, k, N, monkeypatch):
    """With the fused kernel off (or not taking the call) ``band=k`` still means ``W ⊙ M_k``: the raw weight of a
    masked PSN gives the same outputs as the masked matrix (whose SJ parity test_sj_parity checks on this path), and
    the weight gradient is zero outside the band."""
    monkeypatch.setenv("PSN_ZOO_NATIVE", "0")
    torch.manual_seed(T + k)
    mask = torch.tril(torch.ones(T, T)) * torch.triu(torch.ones(T, T), -(k - 1))
    weight, bias = torch.randn(T, T) * mask, torch.randn(T) * 0.1 - 1
    x, grad = torch.randn(T, N) * 2, torch.randn(T, N)
    assert _native.dense_kernels(x, weight, bias, ATAN, band=k) is None
    unmasked = weight + torch.randn(T, T) * (1 - mask)
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, unmasked, bias))
    out = _psn_kernels.DenseThreshold.apply(xg, wg, bg, ATAN, k)
    out.backward(grad)
    ref_out, ref_gx, ref_gw, ref_gb = _native_run(x, weight, bias, grad)  # the masked matrix, no band
    assert torch.equal(out, ref_out)
    assert torch.equal(xg.grad, ref_gx)
    assert torch.equal(wg.grad, ref_gw * mask)
    assert not wg.grad[mask == 0].any()
    assert torch.equal(bg.grad, ref_gb)


@needs_compiler
@pytest.mark.parametrize("neuron", ["masked_psn", "sliding_psn"])
def test_causal_neurons_at_T32_match_spikingjelly_through_the_banded_kernel(neuron, monkeypatch):
    calls = []
    original, original_sliding = _native.NativeKernels.forward, _native.NativeKernels.forward_sliding

    def counted(self, *args, **kwargs):
        calls.append(kwargs.get("band"))
        return original(self, *args, **kwargs)

    def counted_sliding(self, x2d, taps, *args):
        calls.append(taps.shape[0])  # the kernel builds the band of order k from the taps
        return original_sliding(self, x2d, taps, *args)

    monkeypatch.setattr(_native.NativeKernels, "forward", counted)
    monkeypatch.setattr(_native.NativeKernels, "forward_sliding", counted_sliding)
    torch.manual_seed(3)
    spec = {"name": neuron, "k": 2}
    if neuron == "masked_psn":
        spec = {"name": neuron, "T": 32, "k": 8, "lambda_": 1.0}
    ours = make_neuron(spec)
    x = torch.randn(32, 4, 300) * 1.5
    grad = torch.randn_like(x)
    out_o, gx_o, gp_o = forward_backward(ours, x, grad)
    out_s, gx_s, gp_s = forward_backward(compat.to_spikingjelly(ours), x, grad)
    assert calls == [spec["k"]]
    weight, bias = psn_membrane_matrix(ours, 32)
    assert_spikes_equal_up_to_ties(out_o, out_s, weight, bias, x)
    assert_grads_close(gx_o, gx_s, terms=32)
    for name, g in gp_o.items():
        assert_grads_close(g, gp_s[name], terms=x[0].numel())


@needs_compiler
@pytest.mark.parametrize(("T", "k"), [(4, 6), (5, 5), (7, 3)])
def test_sliding_psn_taps_through_the_kernel_match_spikingjelly(T, k):
    """The kernel builds the Toeplitz band from the taps and sums the gradient back onto them, also for taps older
    than the sequence (k > T: they get no gradient)."""
    torch.manual_seed(T * 10 + k)
    ours = make_neuron({"name": "sliding_psn", "k": k})
    x = torch.randn(T, 2, 300) * 1.5
    grad = torch.randn_like(x)
    assert _native.dense_kernels(x.reshape(T, -1), ours.weight, ours.bias, ATAN, band=k) is not None
    out_o, gx_o, gp_o = forward_backward(ours, x, grad)
    out_s, gx_s, gp_s = forward_backward(compat.to_spikingjelly(ours), x, grad)
    assert_spikes_equal_up_to_ties(out_o, out_s, *psn_membrane_matrix(ours, T), x)
    assert_grads_close(gx_o, gx_s, terms=T)
    for name, g in gp_o.items():
        assert_grads_close(g, gp_s[name], terms=x[0].numel() * k)
    assert not gp_o["weight"][: max(0, k - T)].any()


@needs_compiler
def test_native_kernel_with_alpha_and_partial_gradients():
    torch.manual_seed(0)
    T, N = 8, 777
    x, weight, bias, grad = torch.randn(T, N), torch.randn(T, T) / 3, torch.randn(T) - 1, torch.randn(T, N)
    sg = make_surrogate({"name": "atan", "alpha": 3.0})
    xg = x.clone().requires_grad_(True)  # parameters frozen: only grad_x is asked for
    _psn_kernels.DenseThreshold.apply(xg, weight, bias, sg).backward(grad)
    assert torch.equal(xg.grad, _kernel_reference(x, weight, bias, grad, alpha=3.0)[2])
    wg = weight.clone().requires_grad_(True)  # input frozen: only grad_w
    _psn_kernels.DenseThreshold.apply(x, wg, bias, sg).backward(grad)
    exact = _sj_reference(*(t.double() for t in (x, weight, bias, grad)), alpha=3.0)
    assert_grads_close(wg.grad, exact[2].float(), terms=N)


@needs_compiler
def test_parameter_gradients_are_reproducible_bit_for_bit():
    """The threads' partial sums are added in a fixed order (a resumed run must retrace an uninterrupted one)."""
    torch.manual_seed(4)
    x, weight, bias, grad = torch.randn(8, 20000), torch.randn(8, 8), torch.randn(8) - 1, torch.randn(8, 20000)
    first = _native_run(x, weight, bias, grad)
    for _ in range(20):
        again = _native_run(x, weight, bias, grad)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@needs_compiler
@pytest.mark.parametrize(("T", "N"), [(4, 5000), (17, 70_000)])
def test_results_do_not_depend_on_the_thread_count(T, N):
    """Every output, the parameter gradients included, bit for bit at 1, 2 and 3 threads (the docs' promise: runs
    on hosts with other core counts stay equal). 70 000 columns are more span groups than threads, and 3 threads do
    not divide them evenly."""
    torch.manual_seed(1)
    x, weight, bias, grad = torch.randn(T, N), torch.randn(T, T), torch.randn(T) - 1, torch.randn(T, N)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            runs.append(_native_run(x, weight, bias, grad))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for mine, theirs in zip(runs[0], other, strict=True):
            assert torch.equal(mine, theirs)


#: Builds that emulate other CPUs on this one (x86-64 only): an AVX2 CPU and any x86-64 (portable loops, fmaf).
OTHER_CPU_BUILDS = ["x86-64-v3", "x86-64"] if platform.machine() == "x86_64" else []


@needs_compiler
@pytest.mark.parametrize("march", OTHER_CPU_BUILDS)
def test_builds_for_other_cpus_give_the_same_bits(march, tmp_path, monkeypatch):
    """psn_cpu.c has AVX-512 register code and portable loops for other CPUs: built for an AVX2 CPU or a bare
    x86-64 it must give every output bit for bit as this machine's build (same fma chains, same partial-sum order),
    dense and banded, with rows left over by the register blocks (T % 4) and ragged column blocks."""
    default = _native.load()
    monkeypatch.setenv("PSN_ZOO_NATIVE_MARCH", march)
    other = _native.NativeKernels(_native.build(_native.find_compiler(), tmp_path / f"{march}.so"))
    assert other.isa == "portable"
    torch.manual_seed(7)
    cases = [(4, None, 300), (7, None, 1000), (16, None, 777), (13, 4, 1000), (32, 2, 513), (6, 1, 260)]
    cases.append((23, None, 2048))  # 2048: a 4 KiB-multiple row stride, the forward copies its blocks
    for T, band, N in cases:
        x, grad = torch.randn(T, N) * 2, torch.randn(T, N)
        weight, bias = torch.randn(T, T) / T**0.5, torch.randn(T) * 0.1 - 1
        results = []
        for kernels in (default, other):
            spikes, membrane = torch.empty(T, N), torch.empty(T, N)
            kernels.forward(x, weight, bias, spikes, membrane, band=band)
            grads = torch.empty(T, N), torch.empty(T, T), torch.empty(T)
            kernels.backward(x, weight, bias, grad, 2.0, *grads, band=band)
            kept = torch.empty(T, N), torch.empty(T, T), torch.empty(T)  # from the stored membrane, not recomputed
            kernels.backward(x, weight, bias, grad, 2.0, *kept, band=band, membrane=membrane)
            results.append((spikes, membrane, *grads, *kept))
        names = ("spikes", "membrane", "grad_x", "grad_w", "grad_b", "kept grad_x", "kept grad_w", "kept grad_b")
        for name, a, b in zip(names, *results, strict=True):
            assert torch.equal(a, b), f"T={T} band={band} N={N}: {name} differs between the builds"
        for recomputed, kept in zip(results[0][2:5], results[0][5:], strict=True):
            assert torch.equal(recomputed, kept), f"T={T} band={band} N={N}: the stored membrane changes a gradient"


@needs_compiler
@pytest.mark.parametrize(("T", "N"), [(16, 256 * 40), (17, 1000), (29, 3000), (32, 300), (29, 2048), (16, 2048)])
def test_the_kept_membrane_gives_the_recomputed_bits(T, N, monkeypatch):
    """At T >= KEEP_MEMBRANE_T the dense PSN keeps W·x for backward instead of recomputing it: every output and
    gradient is the same bit for bit (full and ragged column spans), and it is kept only when a gradient is needed."""
    torch.manual_seed(T)
    x, grad = torch.randn(T, N) * 2, torch.randn(T, N)
    weight, bias = torch.randn(T, T) / T**0.5, torch.randn(T) * 0.1
    results = []
    for keep_from in (_psn_kernels.KEEP_MEMBRANE_T, _native.MAX_T + 1):  # kept, then recomputed
        monkeypatch.setattr(_psn_kernels, "KEEP_MEMBRANE_T", keep_from)
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
        out = _psn_kernels.DenseThreshold.apply(*leaves, make_surrogate("atan"), None)
        assert (out.grad_fn.saved_tensors[3] is not None) == (keep_from <= T)
        out.backward(grad)
        results.append([out.detach(), *(leaf.grad for leaf in leaves)])
        with torch.no_grad():
            assert torch.equal(_psn_kernels.DenseThreshold.apply(x, weight, bias, make_surrogate("atan"), None), out)
    for name, a, b in zip(("spikes", "grad_x", "grad_w", "grad_b"), *results, strict=True):
        assert torch.equal(a, b), f"T={T} N={N}: {name} differs between kept and recomputed membrane"


@needs_compiler
def test_inference_keeps_no_membrane(monkeypatch):
    """Under no_grad (evaluation, streaming) nothing can call backward, so the dense PSN keeps no W·x even at
    T >= KEEP_MEMBRANE_T with parameters that require grad (for which autograd's needs_input_grad still says True);
    with grad enabled it keeps it."""
    from psn_zoo.neurons import make_neuron

    kept = []
    original = _native.NativeKernels.forward

    def spy(self, *args, membrane=None, **kwargs):
        kept.append(membrane is not None)
        return original(self, *args, membrane=membrane, **kwargs)

    monkeypatch.setattr(_native.NativeKernels, "forward", spy)
    T = _psn_kernels.KEEP_MEMBRANE_T
    neuron, x = make_neuron({"name": "psn", "T": T}), torch.randn(T, 4, 64)
    with torch.no_grad():
        inferred = neuron(x)
    trained = neuron(x)
    assert kept == [False, True]
    assert torch.equal(inferred, trained)


@needs_compiler
def test_neurons_use_the_native_kernel_for_small_T_only(monkeypatch):
    calls = []
    originals = {name: getattr(_native.NativeKernels, name) for name in ("forward", "forward_sliding")}

    def counting(name):
        def counted(self, *args, **kwargs):
            calls.append(1)
            return originals[name](self, *args, **kwargs)

        return counted

    for name in originals:
        monkeypatch.setattr(_native.NativeKernels, name, counting(name))
    PSN(4)(torch.randn(4, 2, 3, 50))
    SlidingPSN(2)(torch.randn(8, 2, 3, 50))  # the band of its taps through the kernel
    assert len(calls) == 2
    T = _native.MAX_T + 1
    PSN(T)(torch.randn(T, 2, 3, 50))  # above MAX_T: MKL's GEMMs
    PSN(4).double()(torch.randn(4, 2, 3, 50, dtype=torch.float64))  # the kernel is float32 only
    PSN(4, surrogate="sigmoid")(torch.randn(4, 2, 3, 50))  # the kernel implements ATan only
    PSN(4)(torch.randn(4, 600)[:, ::2])  # a non-contiguous [T, N] view
    PSN(4)(torch.randn(4, _native.MIN_COLUMNS - 1))  # too thin: BLAS may use another kernel (gemv at N = 1)
    PSN(64)(torch.randn(64, 4096))  # wide T on a thin input: the kernel's fixed costs would dominate
    assert len(calls) == 2
    PSN(64)(torch.randn(64, _native.WIDE_T_MIN_COLUMNS))
    assert len(calls) == 3
    monkeypatch.setenv("PSN_ZOO_NATIVE", "0")
    PSN(4)(torch.randn(4, 2, 3, 50))
    assert len(calls) == 3


@needs_compiler
def test_the_build_is_cached_and_written_atomically(fresh_load, monkeypatch):
    kernels = _native.load()
    assert kernels is not None and kernels.path.parent == fresh_load
    record = _native.record_path(kernels.path)
    assert sorted(p.name for p in fresh_load.iterdir()) == sorted([kernels.path.name, record.name])  # no temporaries
    assert json.loads(record.read_text()) == {
        "size": kernels.path.stat().st_size,
        "sha256": hashlib.sha256(kernels.path.read_bytes()).hexdigest(),
    }

    def no_build(*args):
        raise AssertionError("the cached library should have been reused")

    _native.load.cache_clear()
    monkeypatch.setattr(_native, "build", no_build)
    assert _native.load().path == kernels.path


@needs_compiler
def test_a_damaged_cache_entry_is_rebuilt(fresh_load, caplog):
    path = _native.library_path(_native.find_compiler())  # not loaded yet (dlopen would reuse a loaded library)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")
    with caplog.at_level(logging.WARNING, logger=_native.__name__):
        kernels = _native.load()
    assert kernels is not None and "rebuilding" in caplog.text
    assert path.read_bytes()[:4] == b"\x7fELF"


def test_no_compiler_or_failed_build_falls_back_with_one_warning(fresh_load, monkeypatch, caplog):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    torch.manual_seed(2)
    x, grad = torch.randn(4, 300), torch.randn(4, 300)
    neuron = PSN(4)
    with caplog.at_level(logging.WARNING, logger=_native.__name__):
        assert _native.load() is None
        assert _native.dense_kernels(x, neuron.weight, neuron.bias, ATAN) is None
        xg = x.clone().requires_grad_(True)
        out = neuron(xg)
        out.backward(grad)
    assert caplog.text.count("not available") == 1 and "PSN_ZOO_NATIVE=0" in caplog.text
    ref = _sj_reference(x, neuron.weight.detach(), neuron.bias.detach(), grad)
    assert torch.equal(out, ref[0])  # the PyTorch path: SJ's operations, so its spikes on this machine
    assert_grads_close(xg.grad, ref[1], terms=4)
    assert not list(fresh_load.glob("*.part"))  # the failed build left nothing in the cache
