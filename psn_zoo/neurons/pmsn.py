"""PMSN, the parallel multi-compartment spiking neuron (Chen, Wu et al., IEEE TNNLS; arXiv 2408.14917).

Each channel ``c`` has ``n`` interacting dendritic compartments, a linear system that the paper diagonalises into
``n`` complex modes (zero-order hold with step ``dt_c``), and a soma that integrates and fires with reset by
subtraction:

    s[t] = Ā ⊙ s[t−1] + B̄·u[t]                       (complex state s: [n] per neuron; Ā = exp(A·dt), B̄ = (Ā−1)/A·B)
    y[t] = Re(Σ_n C_n·s_n[t]) + D·u[t]                (dendritic output)
    m[t] = ρ[t−1] + relu(y[t]),  S[t] = Θ(m[t] − θ),  ρ[t] = m[t] − θ·⌊m[t]/θ⌋   (soma, ρ[−1] = 0)

Parallel over T: the dendrites are a causal convolution with the kernel ``K[t] = Re(Σ_n C_n·Ā_n^t·B̄_n)``; the soma's
residual before each step is ``ρ[t−1] = P[t−1] − θ·⌊P[t−1]/θ⌋`` with ``P`` the cumulative sum of ``relu(y)`` (the
paper's "decoupled reset"). As in the authors' code the reset carries no gradient: ``∂S[t]/∂y[t]`` is the
surrogate's derivative at ``m[t] − θ`` (times ``y[t] > 0``), and nothing flows through ``ρ``.

Initialisation (the authors' code, xychen-comp/PMSN): ``dt`` log-uniform in [1e-3, 1e-1]; ``A = −1/2 + iω`` with ω
the eigenvalues of the compartment chain's coupling (``±5·j`` between compartments j and j+1, diagonalised with its
eigenvectors V), ``B = V^H·1`` (input to every compartment), ``C = e_n·V`` (the soma reads the last one),
``D ~ N(0, 1)``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from . import _backend
from ._channelwise import ChannelwiseNeuron, finite_number, fp32_compute, positive_int
from ._memory import fresh_like, scratch_like
from ._psn_kernels import _chunks
from .base import StepMode
from .functional import _plain
from .registry import register_neuron
from .surrogate import SurrogateSpec


def pmsn_modes(
    log_dt: torch.Tensor, log_a_real: torch.Tensor, a_imag: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Ā, B̄, C)`` of the diagonal system, complex ``[C, n]`` each. ``b``, ``c``: ``[C, n, 2]`` (real, imaginary)."""
    a = torch.complex(-torch.exp(log_a_real), a_imag)
    dt_a = a * torch.exp(log_dt).unsqueeze(-1)
    a_bar = torch.exp(dt_a)
    b_bar = (a_bar - 1) / a * torch.view_as_complex(b.contiguous())
    return a_bar, b_bar, torch.view_as_complex(c.contiguous())


def pmsn_kernel(a_bar: torch.Tensor, b_bar: torch.Tensor, c: torch.Tensor, T: int) -> torch.Tensor:
    """The dendrites' impulse response ``K[c, t] = Re(Σ_n C·Ā^t·B̄)``, ``[C, T]`` (real)."""
    t = torch.arange(T, device=a_bar.device, dtype=a_bar.real.dtype)
    powers = torch.exp(torch.log(a_bar).unsqueeze(-1) * t)  # Ā^t, [C, n, T]
    return torch.einsum("cn,cnt->ct", c * b_bar, powers).real


def pmsn_dendrites(x_seq: torch.Tensor, kernel: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``y[t] = Σ_{j<=t} K[t−j]·u[j] + D·u[t]``: ``x_seq [T, B, C, R]``, ``kernel [C, T]``, ``d [C]`` ->
    ``[T, B, C, R]``.

    One batched ``[T, T]`` lower-triangular Toeplitz product per channel (T multiply-adds per element), on
    channel-first copies so the product and its backward run on contiguous matrices (a strided gradient sent the
    batched product's backward through a copy per channel, 2·C copies a call)."""
    T, C = x_seq.shape[0], x_seq.shape[2]
    padded = torch.cat([kernel.flip(1), kernel.new_zeros(C, T - 1)], 1)  # q[m] = K[T−1−m], then zeros
    toeplitz = padded.unfold(1, T, 1).flip(1)  # row t: q[T−1−t : 2T−1−t] = (K[t], K[t−1], …, K[0], 0, …)
    u = _channels_first(x_seq)
    y = _channels_last(torch.bmm(toeplitz, u), x_seq.shape)
    return y + d.reshape(C, 1) * x_seq


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, R] -> [C, T, B·R]``, contiguous. With ``R = 1`` as a 2-D transpose: PyTorch copies the 4-D
    permutation with its trailing 1 about 4× slower."""
    T, B, C, R = x.shape
    if R == 1:
        return x.reshape(T * B, C).t().contiguous().view(C, T, B)
    return x.permute(2, 0, 1, 3).reshape(C, T, B * R).contiguous()  # reshape may keep a strided view


def _channels_last(y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``[C, T, B·R] -> [T, B, C, R]`` (``shape``), contiguous: the inverse of :func:`_channels_first`; its backward
    hands ``y`` a contiguous gradient (one copy, 2-D when ``R = 1``)."""
    T, B, C, R = shape
    if R == 1:
        return _contiguous_gradient(y.view(C, T * B)).t().contiguous().view(shape)
    return _contiguous_gradient(y).view(C, T, B, R).permute(1, 2, 0, 3).contiguous()


class _ContiguousGradient(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _contiguous_gradient(x: torch.Tensor) -> torch.Tensor:
    return _ContiguousGradient.apply(x)


def decoupled_soma(
    z: torch.Tensor, residual: torch.Tensor | None, threshold: float, surrogate: torch.nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """The soma over ``z = relu(y): [T, *]`` from ``residual`` (``[*]``, None = 0): spikes ``Θ(ρ[t−1] + z[t] − θ)``
    and the last residual. The residuals come from a cumulative sum, without gradient."""
    with torch.no_grad():
        p = torch.cumsum(z, 0) if residual is None else torch.cumsum(torch.cat([residual.unsqueeze(0), z]), 0)[1:]
        rho = p - threshold * torch.floor(p / threshold)  # ρ[t], [T, *]
        before = torch.cat([torch.zeros_like(z[:1]) if residual is None else residual.unsqueeze(0), rho[:-1]])
    return surrogate(before + z - threshold), rho[-1]


class FusedSoma(torch.autograd.Function):
    """:func:`decoupled_soma` of ``relu(y)`` from rest, ``y: [T, N]`` -> spikes ``[T, N]``, on L2-sized column
    chunks in reused scratch (the same operations in the same order, so the same spikes); backward recomputes the
    membrane. Why: the plain ops make about ten full-size temporaries, each a pass over memory."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, threshold: float, surrogate: torch.nn.Module) -> torch.Tensor:
        spikes = fresh_like(y, torch.contiguous_format)
        for cols in _chunks(y):
            torch.ge(_soma_membrane(y[:, cols], threshold), 0, out=spikes[:, cols])
        ctx.save_for_backward(y)
        ctx.threshold, ctx.surrogate = threshold, surrogate
        return spikes

    @staticmethod
    def backward(ctx: Any, grad_spikes: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        _backend.refuse_create_graph("FusedSoma")
        (y,) = ctx.saved_tensors
        grad_y = fresh_like(y, torch.contiguous_format)
        for cols in _chunks(y):
            yc = y[:, cols]
            grad = ctx.surrogate.backward_(_soma_membrane(yc, ctx.threshold), grad_spikes[:, cols])
            torch.where(yc > 0, grad, grad.new_zeros(()), out=grad_y[:, cols])  # relu's gradient
        return grad_y, None, None


def _soma_membrane(y: torch.Tensor, threshold: float) -> torch.Tensor:
    """``m − θ`` of :func:`decoupled_soma` from rest over ``z = relu(y)`` for one chunk ``y: [T, n]``, in scratch."""
    z, rho, m = (scratch_like(y, slot) for slot in range(3))
    torch.clamp_min(y, 0, out=z)
    torch.cumsum(z, 0, out=rho)
    rho.sub_(torch.div(rho, threshold, out=m).floor_().mul_(threshold))  # ρ = P − θ·⌊P/θ⌋
    m[0] = z[0]  # ρ[−1] = 0
    torch.add(rho[:-1], z[1:], out=m[1:])
    return m.sub_(threshold)


@register_neuron
class PMSN(ChannelwiseNeuron):
    """Parallel multi-compartment spiking neuron: ``n`` dendritic compartments per channel (a diagonal complex linear
    system) feeding an integrate-and-fire soma with reset by subtraction, all parallel over T (any T).

    ``n``: compartments (the paper's d_state, 4 in its sequential-CIFAR runs); ``v_threshold``: the soma's θ;
    ``dt_min``/``dt_max``: range of the log-uniform initial step; ``channels``: size the per-channel parameters now
    instead of from the first input. Parameters per channel: ``log_dt [C]``, ``log_a_real``/``a_imag [C, n]``,
    ``b``/``c [C, n, 2]`` (complex as real pairs), ``d [C]``.
    """

    name = "pmsn"
    initial_kwargs = ("surrogate", "dt_min", "dt_max")
    complex_ops = True

    reset_kind: ClassVar[str] = "decoupled"
    streamable: ClassVar[bool] = True
    generalises: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        n: int = 4,
        v_threshold: float = 1.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        channels: int | None = None,
        surrogate: SurrogateSpec = "atan",
        step_mode: StepMode = "m",
    ) -> None:
        super().__init__(channels, surrogate)
        owner = type(self).__name__
        self.n = positive_int(n, "n", owner)
        self.v_threshold = finite_number(v_threshold, "v_threshold", owner, low=0.0, low_open=True)
        self.dt_min = finite_number(dt_min, "dt_min", owner, low=0.0, low_open=True)
        self.dt_max = finite_number(dt_max, "dt_max", owner, low=self.dt_min)
        for name, trailing in (("log_dt", ()), ("log_a_real", (n,)), ("a_imag", (n,)), ("b", (n, 2)), ("c", (n, 2))):
            self._declare(name, trailing)
        self._declare("d")
        self._state: torch.Tensor | None = None  # complex [B, C, R, n]
        self._residual: torch.Tensor | None = None
        if self.channels is not None:
            self._materialise(self.channels)
        self.step_mode = step_mode

    def _build(self, channels: int) -> None:
        n = self.n
        lo, hi = math.log(self.dt_min), math.log(self.dt_max)
        self.log_dt.copy_(torch.rand(channels) * (hi - lo) + lo)
        coupling = torch.zeros(n, n, dtype=torch.float64)  # the compartment chain's antisymmetric coupling
        j = torch.arange(n - 1)
        coupling[j, j + 1] = 5.0 * (j + 1).double()
        coupling[j + 1, j] = -5.0 * (j + 1).double()
        omega, v = torch.linalg.eigh(-1j * coupling.to(torch.complex128))  # Hermitian: real ω, unitary V
        self.log_a_real.fill_(math.log(0.5))
        self.a_imag.copy_(omega.float().expand(channels, n))
        b = v.conj().T @ torch.ones(n, dtype=torch.complex128)
        c = v[-1]  # e_n·V
        self.b.copy_(torch.view_as_real(b.to(torch.complex64)).expand(channels, n, 2))
        self.c.copy_(torch.view_as_real(c.to(torch.complex64)).expand(channels, n, 2))
        self.d.normal_()

    def macs_per_neuron(self, T: int) -> tuple[float, float]:
        """``(MACs, ACs)`` one neuron spends on a T-step sample in its cheaper exact form: the recurrence (``6n`` real
        MACs for ``Ā·s + B̄·u``, ``2n`` for ``Re(C·s)``, 1 for ``D·u`` per step) or the causal convolution
        (``T(T+1)/2 + T``); the soma adds one accumulate per step."""
        return float(min((8 * self.n + 1) * T, T * (T + 1) // 2 + T)), float(T)

    def modes(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Ā, B̄, C)``, complex ``[C, n]``, from the parameters in ``dtype`` (fp32 or fp64)."""
        params = (self.log_dt, self.log_a_real, self.a_imag, self.b, self.c)
        return pmsn_modes(*(p.to(dtype) for p in params))

    def kernel(self, T: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dendrites' impulse response ``[C, T]``."""
        return pmsn_kernel(*self.modes(dtype), T)

    def _as_4d(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``[T, B]``/``[T, B, C, ...]`` -> ``[T, B, C, R]``."""
        if x_seq.dim() == 2:
            return x_seq.reshape(*x_seq.shape, 1, 1)
        return x_seq.reshape(*x_seq.shape[:3], math.prod(x_seq.shape[3:]))  # not -1: an empty batch has no -1

    def multi_step(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``[T, B, ...] -> [T, B, ...]``; each call is an independent sequence from rest (as the PSN family)."""
        self._check_channels(x_seq)
        with fp32_compute(x_seq) as dtype:
            x = self._as_4d(x_seq.to(dtype))
            y = pmsn_dendrites(x, self.kernel(x.shape[0], dtype), self.d.to(dtype))
            if not _plain(self.surrogate):
                spikes = FusedSoma.apply(y.view(y.shape[0], -1), self.v_threshold, self.surrogate)
            else:
                spikes, _ = decoupled_soma(torch.relu(y), None, self.v_threshold, self.surrogate)
        return spikes.reshape(x_seq.shape).to(x_seq.dtype)

    def single_step(self, x: torch.Tensor) -> torch.Tensor:
        self._check_channels(x)
        with fp32_compute(x) as dtype:
            u = self._as_4d(x.to(dtype).unsqueeze(0))[0]  # [B, C, R]
            if self._state is not None and self._state.shape[:-1] != u.shape:
                raise ValueError(
                    f"{type(self).__name__}: stored state is for inputs of shape {tuple(self._state.shape[:-1])} but "
                    f"this step has {tuple(u.shape)}; call reset() (psn_zoo.neurons.reset_states(model)) first"
                )
            a_bar, b_bar, c = (m.unsqueeze(1) for m in self.modes(dtype))  # [C, 1, n]
            drive = b_bar * u.unsqueeze(-1)
            state = drive if self._state is None else a_bar * self._state + drive
            y = (c * state).sum(-1).real + self.d.to(dtype).reshape(-1, 1) * u
            spike, self._residual = decoupled_soma(torch.relu(y).unsqueeze(0), self._residual, self.v_threshold,
                                                   self.surrogate)  # fmt: skip
            self._state = state
        return spike[0].reshape(x.shape).to(x.dtype)

    def reset(self) -> None:
        self._state = None
        self._residual = None

    def spec_kwargs(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "v_threshold": self.v_threshold,
            "dt_min": self.dt_min,
            "dt_max": self.dt_max,
            "surrogate": self.surrogate.spec(),
        }

    def extra_repr(self) -> str:
        return f"n={self.n}, v_threshold={self.v_threshold}, {super().extra_repr()}"
