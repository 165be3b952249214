"""Shared test helpers, and the machine facts in pytest's header (results may depend on the CPU and the BLAS)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

from psn_zoo.machine import machine_summary

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

# `pytest -n 2` (the README's CI command): one thread per worker process and per process a test starts. On 2 cores,
# 2 workers x 2 threads ran 2.5x slower than one process; 2 x 1 thread, 1.6x faster (test_models/docs_commands/publish)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

if not torch.cuda.is_available():  # the Triton kernels run in Triton's CPU interpreter (set before Triton is imported)
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:  # SpikingJelly's oracle on a GPU is its torch backend: the IEEE operations of its CPU path, no fused FMAs
    for _name in ("IF", "LIF", "PLIF"):
        os.environ.setdefault(f"SJ_{_name}_CUDA_IMPLEMENTATION", "torch")

#: float32's unit round-off u = 2^-24 (half of torch.finfo(torch.float32).eps).
U32 = torch.finfo(torch.float32).eps / 2
#: Higham & Mary's probabilistic round-off bound (SIAM J. Sci. Comput. 41(5), 2019): an n-term float32 sum in any
#: order is within λ·√n·u of its value relative to its magnitude, except with probability ≤ 2n·exp(−λ²/2) per entry
#: (λ = 8: < 3e-14·n), where the worst-case bound n·u is far too loose to catch a wrong term in a long sum.
LAMBDA = 8.0


def pytest_report_header(config: pytest.Config) -> list[str]:
    return machine_summary()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_wandb_run_left():
    """A W&B run a test started in this process (a WandbLogger's ``experiment``, e.g. when a trainer is pickled) is
    finished after it: a run left open is reused by every later ``WandbLogger``, whatever id it is given."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


#: the Hugging Face token :func:`isolated_caches` sets (a fake hub's request log shows it)
HF_TEST_TOKEN = "hf_test_download_token"


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch) -> None:
    """An empty psn_zoo cache and Hugging Face home of the test's own, online, no Hub endpoint, a dummy HF token, no
    ``PSN_ZOO_TRACEBACK`` (modules that load or publish weights use it for every test: ``pytest.mark.usefixtures``)."""
    monkeypatch.setenv("PSN_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", HF_TEST_TOKEN)
    for var in ("PSN_ZOO_OFFLINE", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_ENDPOINT", "PSN_ZOO_TRACEBACK"):
        monkeypatch.delenv(var, raising=False)


def forward_backward(module, x: torch.Tensor, grad: torch.Tensor):
    """Run ``module(x)``, back-propagate ``grad``; return (output, input grad, parameter grads by name)."""
    x = x.detach().clone().requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    out = module(x)
    out.backward(grad)
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


def roundoff_tolerance(terms: int) -> float:
    """Relative difference two float32 evaluations of an ``terms``-term sum may show (2·λ·√n·u: each is within
    λ·√n·u of the exact value)."""
    return 2 * LAMBDA * math.sqrt(max(terms, 1)) * U32


def assert_grads_close(actual: torch.Tensor, expected: torch.Tensor, terms: int) -> None:
    """Gradients that are sums of ``terms`` products agree to float32 round-off in any summation order (spikes
    themselves are compared bit for bit, or up to ties: :func:`assert_spikes_equal_up_to_ties`). The magnitude is
    the largest entry: with cancellation an entry's sum of |terms| can exceed its value, never the largest's
    typical partial sums by much."""
    tol = roundoff_tolerance(terms)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual.reshape(expected.shape), expected, rtol=tol, atol=tol * max(scale, 1e-30))


def fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 ``fma(a, b, c)``: ``a·b + c`` rounded once, emulated exactly in float64 (the product is exact there;
    the sum's float64 rounding error is recovered with TwoSum and settles the rare float32 midpoint)."""
    p, c64 = a.double() * b.double(), c.double()
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)  # s + err == p + c exactly
    r = s.float()
    other = torch.nextafter(r, torch.where(s > r.double(), math.inf, -math.inf).float())
    mid = (r.double() + other.double()) / 2
    tie = (s == mid) & (err != 0)  # exactly on a float32 midpoint in float64, but not in exact arithmetic
    toward_other = torch.sign(err) == torch.sign(other.double() - mid)
    return torch.where(tie & toward_other, other, r)


def fma_chain_matmul(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight @ x`` (``[T, K]·[K, N]``, float32) as the fused kernel defines it on every CPU: per output one fma
    chain over k in ascending order, starting from 0."""
    acc = torch.zeros(weight.shape[0], x.shape[1])
    for k in range(weight.shape[1]):
        acc = fma32(weight[:, k : k + 1].expand_as(acc), x[k].expand_as(acc), acc)
    return acc


def tie_margin(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact membrane ``h = W·x + b`` (float64) of ``x: [T, N]`` and a rigorous bound on how far any float32
    evaluation of it, in any order, can be from it: γ_{T+1}·(|W|·|x| + |b|) with γ_n = n·u / (1 − n·u)."""
    T = weight.shape[1] + 1
    gamma = T * U32 / (1 - T * U32)
    w, b, x = weight.double(), bias.double().unsqueeze(1), x.double()
    return w @ x + b, gamma * (w.abs() @ x.abs() + b.abs())


def assert_spikes_equal_up_to_ties(
    ours: torch.Tensor, theirs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor
) -> int:
    """Spikes of ``Θ(W·x + b)`` from two summation orders: equal wherever the exact membrane is farther from the
    threshold than float32 round-off can move it (:func:`tie_margin`); returns how many differ (all ties)."""
    T = weight.shape[0]
    ours, theirs, x = ours.reshape(T, -1), theirs.reshape(T, -1), x.reshape(T, -1)
    h, margin = tie_margin(weight, bias, x)
    clear, exact = h.abs() > margin, (h >= 0).to(ours.dtype)
    assert torch.equal(ours[clear], exact[clear]), "a spike is wrong where round-off cannot explain it (ours)"
    assert torch.equal(theirs[clear], exact[clear]), "a spike is wrong where round-off cannot explain it (theirs)"
    return int((ours != theirs).sum())


def psn_membrane_matrix(neuron, T: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(W [T, T], b [T])`` of a PSN-family neuron's membrane ``W·x + b`` (None for serial neurons)."""
    from psn_zoo.neurons import PSN, MaskedPSN, SlidingPSN, functional

    if isinstance(neuron, SlidingPSN):
        return functional.sliding_weight_matrix(neuron.weight.detach(), T), neuron.bias.detach().expand(T)
    if isinstance(neuron, MaskedPSN):
        return neuron.effective_weight().detach(), neuron.bias.detach()
    if isinstance(neuron, PSN):
        return neuron.weight.detach(), neuron.bias.detach()
    return None


def assert_neuron_outputs_match(neuron, x: torch.Tensor, ours: tuple, theirs: tuple) -> None:
    """``(spikes, grad_x, {name: grad})`` of ``neuron`` on ``x: [T, *]`` against another implementation's (SJ, or
    streaming): a PSN family's spikes up to ties (two GEMM orders), a serial neuron's bit for bit (the same
    elementwise operations); gradients to round-off, the parameters' summed over every element of a step."""
    (out_o, gx_o, gp_o), (out_t, gx_t, gp_t) = ours, theirs
    T = x.shape[0]
    if (matrix := psn_membrane_matrix(neuron, T)) is not None:
        assert_spikes_equal_up_to_ties(out_o, out_t, *matrix, x.detach())
    else:
        assert torch.equal(out_o, out_t), f"{int((out_o != out_t).sum())} spikes differ"
    assert_grads_close(gx_o, gx_t, terms=T)
    assert set(gp_t) == set(gp_o)  # parameter names agree (weight, bias, w); only shapes may differ
    for name, grad in gp_o.items():
        assert_grads_close(grad, gp_t[name], terms=x.numel())


@pytest.fixture(scope="session")
def default_ndigits(tmp_path_factory) -> Path:
    """A data_dir with the default N-Digits generated from scratch, as on a fresh clone (made once per session)."""
    from psn_zoo.datamodules import NDigitsDataModule
    from psn_zoo.datamodules.ndigits import generate_ndigits

    data_dir = tmp_path_factory.mktemp("default_ndigits")
    generate_ndigits(NDigitsDataModule(data_dir=str(data_dir)).tonic_root())
    return data_dir
