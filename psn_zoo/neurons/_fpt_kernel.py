"""FPT-LIF's ``K`` fixed-point iterations as one autograd Function with a hand-written backward (equations in
:mod:`.fpt`), on ``x: [T, N]``.

Why not autograd: it keeps every iteration's intermediates (about six ``[T, N]`` tensors per iteration) and runs each
elementwise step as its own pass over freshly allocated memory. Here ``N`` is walked in L2-sized column chunks (the
iterations are independent per column, so all ``K`` of them and their elementwise steps run on data still in cache,
in buffers reused from chunk to chunk), with the same operations in the same order as the plain path, so the spikes
and the last membrane are the plain path's bit for bit wherever the BLAS computes a chunk's product as it computes
the whole one's. Backward keeps only the membranes ``h^k`` it needs (``h^K`` alone when the reset is soft and
detached, the comparison's setting) and runs the iterations in reverse:

    gh^K = gS ⊙ g'(h^K − θ),   ga = Σ_k gh^k,
    gh^(k−1) = −ρ(L'ᵀ·gh^k, h^(k−1)),   ρ(g, h) = g ⊙ ŝ (hard reset) + g'(h − θ) ⊙ g ⊙ (h − r) (hard, not detached)
                                                 or θ·g'(h − θ) ⊙ g (soft, not detached); 0 for soft and detached,
    gx = c·Lᵀ·ga,   gv[−1] = Σ_t β^(t+1)·ga[t]

(``ŝ = Θ(h − θ)``; the last membrane's gradient enters ``gh^K`` at the last step, through ``h`` and the reset).
"""

from __future__ import annotations

from typing import Any

import torch

from . import _backend
from ._channelwise import lower_toeplitz
from ._memory import fresh_empty, fresh_like, scratch_like
from ._psn_kernels import _chunks
from .surrogate import Surrogate


class DecayMatrices:
    """Per-call constants of both paths: the decay matrices ``L`` (with diagonal) and ``L'`` (strict) ``[T, T]``,
    ``β^(t+1)`` ``[T, 1]``."""

    def __init__(self, T: int, tau: float, dtype: torch.dtype, device: torch.device) -> None:
        beta = torch.tensor(1.0 - 1.0 / tau, dtype=dtype, device=device)
        self.full = lower_toeplitz(beta, T)
        self.strict = lower_toeplitz(beta, T, strict=True)
        self.decays = (beta ** torch.arange(1, T + 1, dtype=dtype, device=device)).unsqueeze(1)


def _fire(h: torch.Tensor, theta: float, surrogate: Surrogate, out: torch.Tensor) -> torch.Tensor:
    """``g(h − θ)`` into ``out``: ``[h >= θ]`` for the Heaviside forward every built-in surrogate has (exact: in IEEE
    arithmetic ``h − θ >= 0`` exactly when ``h >= θ``), else the surrogate's own forward."""
    if surrogate.fires_heaviside:
        return torch.ge(h, theta, out=out)
    return out.copy_(surrogate(h - theta))


class FixedPointLIF(torch.autograd.Function):
    """``(spikes [T, N], v_last [N]) = FPT(x [T, N], v [N])``; the arguments after ``v`` as
    :func:`~psn_zoo.neurons.fpt.fpt_lif_multi_step`, then ``recording`` (``torch.is_grad_enabled()`` at the call:
    without it no backward can follow, so none of the ``K`` membranes is kept)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        v: torch.Tensor,
        K: int,
        surrogate: Surrogate,
        tau: float,
        decay_input: bool,
        v_threshold: float,
        v_reset: float | None,
        detach_reset: bool,
        recording: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        T, N = x.shape
        iterations = min(K, T)  # iteration k is exact on steps 0 … k−1: from T on nothing changes
        setup = DecayMatrices(T, tau, x.dtype, x.device)
        keep_all = not (detach_reset and v_reset is None)  # a soft detached reset passes no gradient back
        # ``recording``: grad mode was on at the call (inside forward it is always off), and with an input that
        # needs a gradient a backward can follow: only then are the membranes kept, as DenseThreshold does
        recording = recording and any(ctx.needs_input_grad[:2])
        kept = fresh_empty((iterations if keep_all else 1, T, N), x.dtype, x.device) if recording else None
        spikes, v_last = fresh_like(x, torch.contiguous_format), x.new_empty(N)
        r = 0.0 if v_reset is None else v_reset
        for cols in _chunks(x):
            u, a, h, removed, spike = (scratch_like(x[:, cols], slot) for slot in range(5))
            if decay_input:
                torch.div(x[:, cols], tau, out=u)
                if r != 0.0:
                    u.add_(r / tau)
            elif r != 0.0:
                torch.add(x[:, cols], r / tau, out=u)
            else:
                u = x[:, cols]
            torch.mm(setup.full, u, out=a)
            a.add_(torch.mul(setup.decays, v[cols].reshape(1, -1), out=spike))  # spike: free until the loop
            for k in range(iterations):
                if k:
                    torch.sub(a, torch.mm(setup.strict, removed, out=h), out=h)
                else:
                    h.copy_(a)
                _fire(h, v_threshold, surrogate, spike)
                if v_reset is not None:
                    torch.sub(h, r, out=removed).mul_(spike)
                else:
                    torch.mul(spike, v_threshold, out=removed)
                if kept is not None and (keep_all or k == iterations - 1):
                    kept[k if keep_all else 0, :, cols] = h
            spikes[:, cols] = spike
            torch.sub(h[-1], removed[-1], out=v_last[cols])
        ctx.save_for_backward(kept)
        ctx.setup, ctx.surrogate = setup, surrogate
        ctx.args = (tau, decay_input, v_threshold, v_reset, detach_reset)
        return spikes, v_last

    @staticmethod
    def backward(ctx: Any, grad_spikes: torch.Tensor | None, grad_v_last: torch.Tensor | None) -> tuple[Any, ...]:
        _backend.refuse_create_graph("FixedPointLIF")
        (kept,) = ctx.saved_tensors
        setup, surrogate = ctx.setup, ctx.surrogate
        tau, decay_input, theta, v_reset, detach = ctx.args
        need_x, need_v = ctx.needs_input_grad[:2]
        grad_x = fresh_like(kept[0], torch.contiguous_format) if need_x else None
        grad_v = kept.new_empty(kept.shape[2]) if need_v else None
        reset = _Reset(surrogate, theta, v_reset, detach)
        strict_t, full_t = setup.strict.t(), setup.full.t()
        for cols in _chunks(kept[0]):
            gh, ga, back, scratch, *spare = (scratch_like(kept[0, :, cols], slot) for slot in range(6))
            h = kept[-1, :, cols]
            torch.sub(h, theta, out=gh)
            if grad_spikes is None:
                gh.zero_()
            else:
                gh = surrogate.backward_(gh, grad_spikes[:, cols])
            if grad_v_last is not None:  # v_last = h^K[−1] − R^K[−1]
                g = grad_v_last[cols].reshape(1, -1)
                gh[-1:] += g - reset.through(g, h[-1:], scratch[-1:], *(b[-1:] for b in spare))
            if not reset.passes_gradient:
                ga = gh
            else:
                ga.copy_(gh)
                for k in range(kept.shape[0] - 1, 0, -1):  # h^(k+1) = a − L'·R^k: to R^k, then to h^k
                    rho = reset.through(torch.mm(strict_t, gh, out=back), kept[k - 1, :, cols], scratch, *spare)
                    ga.sub_(rho)
                    gh = rho.neg_()  # gh^k = ρ(−L'ᵀ·gh^(k+1)) = −ρ(L'ᵀ·gh^(k+1))
            if grad_x is not None:
                gu = torch.mm(full_t, ga, out=scratch)
                if decay_input:
                    torch.div(gu, tau, out=grad_x[:, cols])
                else:
                    grad_x[:, cols] = gu
            if grad_v is not None:
                grad_v[cols] = (setup.decays.t() @ ga)[0]
        return grad_x, grad_v, None, None, None, None, None, None, None, None


class _Reset:
    """The gradient at ``h`` of the removed charge ``R = ŝ·(h − r)`` (hard) or ``θ·ŝ`` (soft), ``ŝ = g(h − θ)``
    (detached or not), given the gradient at ``R``: ``ρ`` in the module docstring."""

    def __init__(self, surrogate: Surrogate, theta: float, v_reset: float | None, detach: bool) -> None:
        self.surrogate, self.theta, self.v_reset, self.detach = surrogate, theta, v_reset, detach
        self.passes_gradient = v_reset is not None or not detach

    def through(self, grad: torch.Tensor, h: torch.Tensor, out: torch.Tensor, *spare: torch.Tensor) -> torch.Tensor:
        """``ρ(grad, h)``, written into ``out`` (``spare``: two scratch blocks of the same shape; ``grad`` is kept)."""
        hard = self.v_reset is not None
        if hard:
            _fire(h, self.theta, self.surrogate, out).mul_(grad)
        if self.detach:
            return out if hard else out.zero_()
        charge = (
            torch.sub(h, self.v_reset, out=spare[0]).mul_(grad) if hard else torch.mul(grad, self.theta, out=spare[0])
        )
        through_spike = self.surrogate.backward_(torch.sub(h, self.theta, out=spare[1]), charge)
        return out.add_(through_spike) if hard else out.copy_(through_spike)
