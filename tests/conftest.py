"""Shared test helpers."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def forward_backward(module, x: torch.Tensor, grad: torch.Tensor):
    """Run ``module(x)``, back-propagate ``grad``; return (output, input grad, parameter grads by name)."""
    x = x.detach().clone().requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    out = module(x)
    out.backward(grad)
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


def assert_grads_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Gradients agree to float32 round-off (spikes themselves are compared bit for bit)."""
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual.reshape(expected.shape), expected, rtol=1e-5, atol=1e-6 * scale)
