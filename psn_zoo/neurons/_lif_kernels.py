"""One autograd kernel for the serial neurons: IF, LIF, parametric LIF, with hard, soft or no reset.

Charge (``r`` is ``v_reset``, or 0 for soft/no reset):

- IF:    ``H[t] = V[t-1] + X[t]``
- LIF:   ``H[t] = V[t-1] + (X[t] - (V[t-1] - r)) / τ``          (``decay_input=True``)
         ``H[t] = V[t-1] - (V[t-1] - r) / τ + X[t]``            (``decay_input=False``)
- PLIF:  as LIF with ``1/τ = sigmoid(w)`` learnable.

Fire ``S[t] = Θ(H[t] − V_th)``; reset hard ``V = r`` where spiking, soft ``V = H − V_th·S``, or none ``V = H``.

The forward writes spikes and the membrane ``H`` into preallocated [T, ...] tensors with in-place ops
(no per-step lists, no final ``stack``); backward walks time in reverse like SpikingJelly 2.0.0's CPU
kernel, with the same arithmetic in the forward, so spikes and ``V`` are bit-identical to it; the backward folds
the reset derivative into three or four fused passes per step, so gradients agree to round-off.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _backend
from ._memory import fresh_like
from .surrogate import Surrogate

RESET_MODES = ("hard", "soft", "none")


def _charge(
    out: torch.Tensor,
    x: torch.Tensor,
    v: torch.Tensor,
    tau: float | None,
    q: torch.Tensor | None,
    decay_input: bool,
    r: float,
) -> None:
    if tau is None and q is None:  # IF
        torch.add(v, x, out=out)
        return
    leak = v if r == 0.0 else v - r
    if decay_input:  # v + (x - (v - r)) / tau   |   v + (x - (v - r)) * q
        torch.sub(x, leak, out=out)
        out.div_(tau) if q is None else out.mul_(q)
        out.add_(v)
    else:  # v - (v - r) / tau + x   |   v - (v - r) * q + x
        torch.div(leak, tau, out=out) if q is None else torch.mul(leak, q, out=out)
        torch.sub(v, out, out=out)
        out.add_(x)


def _reset(h: torch.Tensor, spike: torch.Tensor, v_threshold: float, mode: str, r: float) -> torch.Tensor:
    if mode == "hard":
        return torch.where(h >= v_threshold, r, h)  # a NaN membrane stays NaN, as in SpikingJelly
    if mode == "soft":
        return torch.sub(h, spike, alpha=v_threshold)
    return h


class SerialNeuron(torch.autograd.Function):
    """``(spikes [T, ...], v_last [...]) = f(x_seq [T, ...], v0 [...], w)``; ``w`` is PLIF's parameter or None."""

    @staticmethod
    def forward(
        ctx: Any,
        x_seq: torch.Tensor,
        v0: torch.Tensor,
        w: torch.Tensor | None,
        tau: float | None,
        decay_input: bool,
        v_threshold: float,
        v_reset: float | None,
        reset_mode: str,
        detach_reset: bool,
        surrogate: Surrogate,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r = 0.0 if v_reset is None or reset_mode != "hard" else v_reset
        q = None if w is None else w.sigmoid()
        keep_h = any(ctx.needs_input_grad[:3])
        spikes = fresh_like(x_seq)
        h_seq = fresh_like(x_seq) if keep_h else torch.empty_like(x_seq[0])
        v = v0
        for t in range(x_seq.shape[0]):
            h = h_seq[t] if keep_h else h_seq
            _charge(h, x_seq[t], v, tau, q, decay_input, r)
            torch.ge(h, v_threshold, out=spikes[t])
            v = _reset(h, spikes[t], v_threshold, reset_mode, r)
            if v is h and not keep_h:
                v = h.clone()
        v_last = v.clone() if keep_h and reset_mode == "none" else v
        if keep_h:
            ctx.save_for_backward(x_seq, v0, w, h_seq)
        ctx.config = (tau, decay_input, v_threshold, r, reset_mode, detach_reset, surrogate)
        return spikes, v_last

    @staticmethod
    def backward(ctx: Any, grad_spikes: torch.Tensor, grad_v: torch.Tensor | None) -> tuple[Any, ...]:
        _backend.refuse_create_graph("SerialNeuron")
        x_seq, v0, w, h_seq = ctx.saved_tensors
        tau, decay_input, v_threshold, r, reset_mode, detach_reset, surrogate = ctx.config
        q = None if w is None else w.sigmoid()
        leaky = tau is not None or q is not None
        grad_x = fresh_like(x_seq)
        carry = torch.zeros_like(h_seq[0]) if grad_v is None else grad_v.clone()
        grad_h = torch.empty_like(carry)
        grad_q = torch.zeros_like(carry) if w is not None else None
        sg = torch.empty_like(carry)
        for t in range(x_seq.shape[0] - 1, -1, -1):
            h = h_seq[t]
            surrogate.derivative_(torch.sub(h, v_threshold, out=sg))
            _membrane_grad(grad_h, grad_spikes[t], carry, sg, h, v_threshold, r, reset_mode, detach_reset)
            if not leaky:  # IF: dH/dX = dH/dV = 1
                grad_x[t] = grad_h
                carry, grad_h = grad_h, carry
                continue
            decay = grad_x[t] if decay_input else torch.empty_like(grad_h)
            torch.div(grad_h, tau, out=decay) if q is None else torch.mul(grad_h, q, out=decay)
            if not decay_input:
                grad_x[t] = grad_h
            torch.sub(grad_h, decay, out=carry)  # dH[t]/dV[t-1] = 1 - 1/τ
            if grad_q is not None:
                v_prev = v0 if t == 0 else _previous_v(h_seq[t - 1], v_threshold, reset_mode, r)
                leak = v_prev if r == 0.0 else v_prev - r
                grad_q.addcmul_(grad_h, x_seq[t] - leak if decay_input else leak, value=1.0 if decay_input else -1.0)
        grad_w = None
        if w is not None and ctx.needs_input_grad[2]:
            grad_w = (grad_q.sum() * q * (1 - q)).to(w.dtype)
        grad_v0 = carry if ctx.needs_input_grad[1] else None
        return grad_x, grad_v0, grad_w, None, None, None, None, None, None, None


def _membrane_grad(
    out: torch.Tensor,
    grad_spike: torch.Tensor,
    carry: torch.Tensor,
    sg: torch.Tensor,
    h: torch.Tensor,
    v_threshold: float,
    r: float,
    reset_mode: str,
    detach_reset: bool,
) -> None:
    """``dL/dH[t] = dL/dS[t]·sg + dL/dV[t]·dV[t]/dH[t]`` with the reset's derivative folded in."""
    if reset_mode == "none" or (reset_mode == "soft" and detach_reset):  # dV/dH = 1
        torch.addcmul(carry, grad_spike, sg, out=out)
    elif reset_mode == "soft":  # dV/dH = 1 - V_th·sg  ->  carry + sg·(dL/dS - V_th·carry)
        torch.addcmul(carry, sg, torch.add(grad_spike, carry, alpha=-v_threshold), out=out)
    else:  # hard: dV/dH = 1 - Θ(H) (+ (r - H)·sg unless detached)
        kept = torch.where(h >= v_threshold, 0.0, carry)
        if detach_reset:
            torch.addcmul(kept, grad_spike, sg, out=out)
        else:
            torch.addcmul(kept, sg, torch.addcmul(grad_spike, carry, r - h), out=out)


def _previous_v(h: torch.Tensor, v_threshold: float, reset_mode: str, r: float) -> torch.Tensor:
    return _reset(h, (h >= v_threshold).to(h.dtype), v_threshold, reset_mode, r)
