"""Pure functions behind the neuron modules (Norse style): explicit parameters in, spikes out.

Shapes: multi-step functions take time-first ``x_seq: [T, *]``; single-step functions take
``x: [*]`` plus an explicit state and return the next state. Nothing here holds state.
"""

from __future__ import annotations

import functools

import torch

from . import _backend, _native
from ._lif_kernels import SerialNeuron
from ._psn_kernels import DenseThreshold, ShiftedThreshold, ToeplitzThreshold
from ._psn_kernels import band_mask as band_mask  # public here, with the other pure functions
from .surrogate import Surrogate


def _as_2d(x_seq: torch.Tensor) -> torch.Tensor:
    return x_seq.reshape(x_seq.shape[0], -1)


def _tracing() -> bool:
    """Whether the neurons run their plain differentiable ops (same values): under ``torch.export`` /
    ``torch.compile`` (the fused kernels' chunked ``out=`` writes are an eager-mode optimisation tracers should not
    see) and inside :func:`~psn_zoo.neurons.plain_ops` (twice differentiable)."""
    return _backend.plain_requested() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _plain(surrogate: Surrogate) -> bool:
    """Whether to run the plain ops: :func:`_tracing`, or a surrogate whose forward is not ``Θ`` (the fused paths
    threshold in its place, so they would drop a subclass's own forward)."""
    return _tracing() or not surrogate.fires_heaviside


# --------------------------------------------------------------------------------------- PSN family
def _check_args(fn: str, x_seq: torch.Tensor, named: dict[str, tuple[torch.Tensor, tuple[int, ...]]]) -> None:
    """Clear errors for what the kernels cannot take: a wrong shape, device or dtype names the argument and the fix
    (the compiled kernel trusts the shapes it is given)."""
    if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 1 or x_seq.shape[0] < 1:
        shape = list(x_seq.shape) if isinstance(x_seq, torch.Tensor) else type(x_seq).__name__
        raise ValueError(f"{fn}: x_seq must be a time-first tensor [T, *] with T >= 1; got {shape}")
    if not x_seq.is_floating_point():
        raise TypeError(f"{fn}: x_seq must be a floating-point tensor; got {x_seq.dtype} (convert it with .float())")
    on_cpu = x_seq.is_cpu  # (runs on every neuron call: properties, not device objects, in the common case)
    for name, (t, shape) in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a tensor of shape {list(shape)}; got {type(t).__name__}")
        if t.shape != shape:
            raise ValueError(
                f"{fn}: {name} must have shape {list(shape)} for x_seq of shape {list(x_seq.shape)} "
                f"(T = {x_seq.shape[0]}); got {list(t.shape)}"
            )
        if t.is_cpu != on_cpu or (not on_cpu and t.device != x_seq.device):
            raise ValueError(f"{fn}: {name} is on {t.device} but x_seq on {x_seq.device}: move both to one device")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: {name} must be floating-point; got {t.dtype}")


def _common_dtype(x_seq: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Inputs and parameters in their promoted dtype (a half-precision input with float32 parameters, as under
    mixed precision, runs in float32); the caller returns the spikes in ``x_seq``'s dtype (0 and 1 are exact)."""
    dtype = x_seq.dtype
    for p in params:
        if p.dtype != dtype:
            break
    else:  # the common case, without the casts' per-call cost
        return x_seq, list(params)
    dtype = functools.reduce(torch.promote_types, (p.dtype for p in params), dtype)
    return x_seq.to(dtype), [p.to(dtype) for p in params]


def _triton_psn(x_seq: torch.Tensor, surrogate: Surrogate, *params: torch.Tensor):
    """The Triton kernel module when it takes this call (the dispatch rules live in :mod:`._backend`), else None."""
    if _tracing() or not _backend.use_triton(x_seq, surrogate):
        return None
    module = _backend.triton_psn()
    fits = module.supports(x_seq.shape[0]) and all(p.dtype in _backend.KERNEL_DTYPES for p in params)
    return module if fits else None


def psn_multi_step(x_seq: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """PSN: ``S = Θ(W·X + b)`` over time. ``x_seq: [T, *]``, ``weight: [T, T]``, ``bias: [T]`` -> ``[T, *]`` in
    ``x_seq``'s dtype (computed in the promoted dtype of input and parameters)."""
    T = x_seq.shape[0] if isinstance(x_seq, torch.Tensor) and x_seq.dim() else 0
    _check_args("psn_multi_step", x_seq, {"weight": (weight, (T, T)), "bias": (bias, (T,))})
    if (triton := _triton_psn(x_seq, surrogate, weight, bias)) is not None:
        return triton.TritonThreshold.apply(x_seq, weight, bias, surrogate)
    x, (weight, bias) = _common_dtype(x_seq, weight, bias)
    if _plain(surrogate):
        out = surrogate(torch.addmm(bias.unsqueeze(1), weight, _as_2d(x))).view(x.shape)
    else:
        out = DenseThreshold.apply(x, weight, bias, surrogate, None, torch.is_grad_enabled())
    return out.to(x_seq.dtype)


def masked_psn_multi_step(
    x_seq: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    lambda_: torch.Tensor | float,
    bias: torch.Tensor,
    surrogate: Surrogate,
    k: int,
) -> torch.Tensor:
    """Masked PSN of order ``k``: :func:`psn_multi_step` with ``W ⊙ (λ·M_k + (1 − λ)·J)``. ``x_seq: [T, *]``.

    At λ = 1 on the CPU ``W ⊙ M_k`` is exactly the band of ``W``: :class:`DenseThreshold` takes the raw ``W`` and
    the band (the fused kernel reads only the band), so no masked matrix or autograd graph is built for it; the
    spikes and gradients are the same. The Triton kernels take the raw ``W`` and ``λ`` at every λ and apply the
    mask themselves (λ is read on the device, so the host never waits for it)."""
    T = x_seq.shape[0] if isinstance(x_seq, torch.Tensor) and x_seq.dim() else 0
    named = {"weight": (weight, (T, T)), "mask": (mask, (T, T)), "bias": (bias, (T,))}
    _check_args("masked_psn_multi_step", x_seq, named)
    if not 1 <= k <= T:
        raise ValueError(f"masked_psn_multi_step: the order k must be in 1..T = {T}; got {k}")
    if (triton := _triton_psn(x_seq, surrogate, weight, bias)) is not None:  # the kernels apply the mask
        return triton.TritonThreshold.apply(x_seq, weight, bias, surrogate, k, lambda_)
    on_cpu_kernel = x_seq.is_cpu
    if on_cpu_kernel and not _plain(surrogate) and float(lambda_) == 1.0:
        x, (weight, bias) = _common_dtype(x_seq, weight, bias)
        return DenseThreshold.apply(x, weight, bias, surrogate, k, torch.is_grad_enabled()).to(x_seq.dtype)
    return psn_multi_step(x_seq, masked_weight(weight, mask, lambda_), bias, surrogate)


def masked_weight(weight: torch.Tensor, mask: torch.Tensor, lambda_: torch.Tensor | float) -> torch.Tensor:
    """``W ⊙ (λ·M_k + (1 − λ)·J)``; at λ = 1 this is exactly ``W ⊙ M_k`` (no data-dependent branch, so it
    traces for export), and it is the same arithmetic as SpikingJelly's."""
    return (lambda_ * mask + (1.0 - lambda_)) * weight


def sliding_weight_matrix(weight: torch.Tensor, T: int) -> torch.Tensor:
    """The banded Toeplitz ``[T, T]`` matrix of a sliding PSN kernel ``weight: [k]`` (row ``t`` holds
    ``weight[k-1]`` on the diagonal and older taps to its left), differentiable in ``weight``."""
    k = weight.shape[0]
    lag = torch.arange(T, device=weight.device).unsqueeze(1) - torch.arange(T, device=weight.device)
    valid = (lag >= 0) & (lag < k)
    taps = weight[(k - 1 - lag).clamp(0, k - 1)]
    return torch.where(valid, taps, torch.zeros((), dtype=weight.dtype, device=weight.device))


def use_shifted_kernel(T: int, k: int) -> bool:
    """Whether the sliding PSN runs as ``k`` shifted multiply-adds instead of a dense T×T GEMM.

    The GEMM costs T multiply-adds per element, the shifted kernel k passes; on a 2-core CPU the
    shifted one wins from about ``T >= 16·k`` (measured: k=2 at T=32 is 20 % faster fwd+bwd). Where the
    fused C kernel takes the call (:mod:`._native`, banded: k multiply-adds, one pass) it beats both.
    """
    return 16 * k <= T


def sliding_psn_multi_step(
    x_seq: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate: Surrogate
) -> torch.Tensor:
    """Sliding PSN ``S[t] = Θ(Σ_i w_i·X[t-k+1+i] + b)``; any ``T``. ``weight: [k]``, ``bias: []`` -> ``[T, *]`` in
    ``x_seq``'s dtype."""
    k = weight.shape[0] if isinstance(weight, torch.Tensor) and weight.dim() == 1 else 0
    if k < 1:
        shape = list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"sliding_psn_multi_step: weight must be the k >= 1 taps, shape [k]; got {shape}")
    _check_args("sliding_psn_multi_step", x_seq, {"weight": (weight, (k,)), "bias": (bias, ())})
    if (triton := _triton_psn(x_seq, surrogate, weight, bias)) is not None:  # builds the band, sums onto the taps
        return triton.TritonThreshold.apply(x_seq, weight, bias, surrogate, 0, 1.0, k)
    x, (weight, bias) = _common_dtype(x_seq, weight, bias)
    return _sliding(x, weight, bias, surrogate).to(x_seq.dtype)


def _sliding(x_seq: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    T, k = x_seq.shape[0], weight.shape[0]
    if _plain(surrogate):
        return psn_multi_step(x_seq, sliding_weight_matrix(weight, T), bias.expand(T), surrogate)
    if x_seq.is_cpu:  # the kernel reads [T, N] rows: copy a permuted (channels-last) input, as
        x_seq = x_seq.contiguous()  # DenseThreshold does for PSN and masked PSN (no copy, no node when contiguous)
    if (kernels := _native.dense_kernels(x_seq, weight, bias, surrogate, band=k)) is not None:
        return ToeplitzThreshold.apply(x_seq, weight, bias, surrogate, kernels)
    if use_shifted_kernel(T, k):
        return ShiftedThreshold.apply(x_seq, weight, bias, surrogate)
    return DenseThreshold.apply(
        x_seq, sliding_weight_matrix(weight, T), bias.expand(T), surrogate, None, torch.is_grad_enabled()
    )


def _fma_chain(queue: list[torch.Tensor], taps: torch.Tensor) -> torch.Tensor:
    """``Σ_j taps[j]·queue[j]`` as a multiply-add chain, oldest first (the GEMM's order), in the promoted dtype of
    inputs and taps (a half-precision input with fp32 taps accumulates in fp32, as the multi-step kernels do)."""
    dtype = torch.promote_types(queue[0].dtype, taps.dtype)
    h = torch.zeros_like(queue[0], dtype=dtype)
    for x, w in zip(queue, taps, strict=True):
        h = torch.addcmul(h, x.to(dtype), w)
    return h


def masked_psn_step(
    x: torch.Tensor,
    queue: list[torch.Tensor],
    t: int,
    weight: torch.Tensor,
    bias: torch.Tensor,
    k: int,
    surrogate: Surrogate,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One streaming step of a masked PSN at λ = 1 (``weight`` already masked, ``[T, T]``).

    ``queue`` holds up to ``k - 1`` previous inputs, oldest first (copies: the caller may refill ``x`` in place
    before the next step); returns ``(spike, new_queue)``.
    """
    queue = [*queue, x.clone()][-k:]
    taps = weight[t, t + 1 - len(queue) : t + 1]
    spike = surrogate(_fma_chain(queue, taps) + bias[t]).to(x.dtype)
    return spike, queue[1:] if len(queue) == k else queue


def sliding_psn_step(
    x: torch.Tensor, queue: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor, surrogate: Surrogate
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One streaming step of a sliding PSN; ``queue`` holds up to ``k - 1`` previous inputs (copies, as above)."""
    k = weight.shape[0]
    queue = [*queue, x.clone()][-k:]
    taps = weight[k - len(queue) :]
    spike = surrogate(_fma_chain(queue, taps) + bias).to(x.dtype)
    return spike, queue[1:] if len(queue) == k else queue


# ------------------------------------------------------------------------------- serial neurons
def serial_multi_step(
    x_seq: torch.Tensor,
    v: torch.Tensor | float,
    *,
    surrogate: Surrogate,
    tau: float | None = None,
    w: torch.Tensor | None = None,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    reset: str = "auto",
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IF (``tau=w=None``), LIF (``tau``) or PLIF (``w``) over ``x_seq: [T, *]`` from ``v: [*]`` (or a number: every
    neuron starts there, as ``torch.full_like(x_seq[0], v)`` would).

    ``reset="auto"`` is hard when ``v_reset`` is a number, soft when it is None; ``"none"`` disables it.
    Returns ``(spikes [T, *], v_last [*])``.
    """
    _check_args("serial_multi_step", x_seq, {})
    mode = ("soft" if v_reset is None else "hard") if reset == "auto" else reset
    tracing = _plain(surrogate)
    triton = not tracing and _backend.use_triton(x_seq, surrogate) and (w is None or w.dtype in _backend.KERNEL_DTYPES)
    if not isinstance(v, torch.Tensor):
        if not triton:
            v = torch.full(x_seq.shape[1:], float(v), dtype=x_seq.dtype, device=x_seq.device)
    elif v.shape != x_seq.shape[1:]:  # a state that broadcasts ([C], a 0-d tensor) starts every neuron it covers
        v = v.expand(_state_shape(v, x_seq))
    # the membrane is accumulated in fp32 when the input is half precision (mixed precision); spikes in its dtype
    state = torch.promote_types(x_seq.dtype, torch.float32)
    if tracing:
        spikes, v_last = _serial_reference(
            x_seq.to(state), v.to(state), surrogate, tau, w, decay_input, v_threshold, v_reset, mode, detach_reset
        )
        return spikes.to(x_seq.dtype), v_last
    if triton:
        r = 0.0 if v_reset is None or mode != "hard" else v_reset
        q = None if w is None else w.float().sigmoid()
        kernel = _backend.triton_serial().TritonSerial  # q's gradient reaches w through autograd
        return kernel.apply(x_seq, v, q, tau, decay_input, v_threshold, r, mode, detach_reset, surrogate)
    x, v0 = x_seq.to(state), v.to(state)
    spikes, v_last = SerialNeuron.apply(x, v0, w, tau, decay_input, v_threshold, v_reset, mode, detach_reset, surrogate)
    return spikes.to(x_seq.dtype), v_last


def _state_shape(v: torch.Tensor, x_seq: torch.Tensor) -> torch.Size:
    """``x_seq.shape[1:]`` if the state ``v`` broadcasts to one step of ``x_seq``, else a ValueError naming both."""
    step = x_seq.shape[1:]
    try:
        if torch.broadcast_shapes(v.shape, step) == step:
            return step
    except RuntimeError:
        pass
    raise ValueError(
        f"serial_multi_step: the state v of shape {tuple(v.shape)} does not broadcast to one step of x_seq, "
        f"{tuple(step)} (x_seq is [T, *]): pass v shaped like x_seq[0], a number, or a shape that broadcasts to it"
    )


def _serial_reference(x_seq, v, surrogate, tau, w, decay_input, v_threshold, v_reset, mode, detach_reset):
    """The same dynamics with plain autograd ops (used by tracers); same forward arithmetic as the kernel."""
    r = 0.0 if v_reset is None or mode != "hard" else v_reset
    q = None if w is None else w.sigmoid()
    spikes = []
    for x in x_seq:
        leak = v - r
        if tau is None and q is None:
            h = v + x
        elif decay_input:
            h = v + ((x - leak) / tau if q is None else (x - leak) * q)
        else:
            h = v - (leak / tau if q is None else leak * q) + x
        spike = surrogate(h - v_threshold)
        s = spike.detach() if detach_reset else spike
        if mode == "hard":
            v = h * (1.0 - s) + s * r
        elif mode == "soft":
            v = h - s * v_threshold
        else:
            v = h
        spikes.append(spike)
    return torch.stack(spikes), v
