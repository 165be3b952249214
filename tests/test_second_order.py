"""Second derivatives (``create_graph=True``: gradient penalties, Hessian-vector products, MAML).

The fused kernels' backward is differentiable once. A backward asked for a graph refuses with the way out, never
returns a gradient whose second-order terms are silently zero; inside ``plain_ops()`` every neuron runs its plain
PyTorch ops, which are twice differentiable and give the fused path's first-order gradient.
"""

from __future__ import annotations

import pytest
import torch

from psn_zoo.neurons import list_neurons, make_neuron, plain_ops, reset_states

T = 6
SPECS = {
    "psn": {"name": "psn", "T": T},
    "masked_psn": {"name": "masked_psn", "T": T, "k": 2, "lambda_": 1.0},
    "sliding_psn": {"name": "sliding_psn", "k": 2},
    "if": {"name": "if"},
    "lif": {"name": "lif"},
    "plif": {"name": "plif"},
    "lif_noreset": {"name": "lif_noreset"},
    "klif": {"name": "klif"},
    "glif": {"name": "glif"},
    "fpt_lif": {"name": "fpt_lif", "K": 3},
    "paralif": {"name": "paralif"},
    "channel_sliding_psn": {"name": "channel_sliding_psn", "k": 2},
    "pmsn": {"name": "pmsn", "n": 2},
}
EXTRA = [{"name": "paralif", "spike_mode": "SB"}, {"name": "masked_psn", "T": T, "k": 2, "lambda_": 0.5}]
CASES = [*SPECS.values(), *EXTRA]


def test_every_registered_neuron_is_covered():
    assert sorted(SPECS) == list_neurons()


def _grad(neuron, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """d(Σ w·S)/dx with fixed weights w (SPSN's draws seeded)."""
    torch.manual_seed(7)
    reset_states(neuron)
    out = neuron(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (grad,) = torch.autograd.grad((out * weights).sum(), x, create_graph=create_graph)
    return grad


@pytest.mark.parametrize("spec", CASES, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_create_graph_refuses_or_differentiates_never_silently(spec):
    """Through the fused kernels (float32, [T, 4, 3, 300]: the C kernel's size), a backward asked for a graph names
    plain_ops(); a neuron without a fused kernel gives a gradient that is itself differentiable."""
    torch.manual_seed(0)
    neuron = make_neuron(spec)
    x = (torch.randn(T, 4, 3, 300) * 2).requires_grad_()
    try:
        grad = _grad(neuron, x)
    except RuntimeError as error:
        assert "differentiable once" in str(error) and "psn_zoo.neurons.plain_ops()" in str(error), error
    else:
        assert grad.grad_fn is not None, "a gradient with no graph: its second-order terms would silently vanish"


@pytest.mark.parametrize("spec", CASES, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_plain_ops_are_twice_differentiable_and_agree_with_the_fused_gradient(spec):
    """Inside plain_ops() the gradient carries a graph (a penalty on it reaches the parameters) and equals the fused
    path's first-order gradient (float64: no spike sits on a float32 tie)."""
    torch.manual_seed(0)
    neuron = make_neuron(spec).double()
    x = (torch.randn(T, 4, 3, 40, dtype=torch.float64) * 2).requires_grad_()
    with plain_ops():
        grad = _grad(neuron, x)
    assert grad.grad_fn is not None
    fused = _grad(neuron, x, create_graph=False)  # the fused path, differentiated once
    assert torch.allclose(grad, fused, rtol=1e-9, atol=1e-12)
    params = [p for p in neuron.parameters() if p.requires_grad]
    if params:
        second = torch.autograd.grad(grad.pow(2).sum(), params, allow_unused=True)
        assert any(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in second)


@pytest.mark.parametrize("spec", [SPECS["psn"], SPECS["sliding_psn"]], ids=["psn", "sliding_psn"])
def test_gradgradcheck_inside_plain_ops(spec):
    """The PSN family's surrogate gradient is smooth in x and the weights (no reset), so its second derivative is
    checked against finite differences of the first (float64)."""
    torch.manual_seed(0)
    neuron = make_neuron(spec).double()
    x = (torch.randn(T, 2, 3, dtype=torch.float64) * 0.5).requires_grad_()
    names, params = zip(*neuron.named_parameters(), strict=True)

    def f(x, *p):
        return torch.func.functional_call(neuron, dict(zip(names, p, strict=True)), (x,))

    with plain_ops():
        assert torch.autograd.gradgradcheck(f, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4)
