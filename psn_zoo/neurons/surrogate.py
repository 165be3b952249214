"""Surrogate gradients: Heaviside forward, smooth derivative backward.

Every surrogate is a small ``nn.Module`` with one hyperparameter ``alpha``:

- ``forward(h)`` returns ``Θ(h) = (h >= 0)`` in ``h``'s dtype and back-propagates ``g'(h)``;
- ``derivative(h)`` returns ``g'(h)`` (out of place);
- ``derivative_(h)`` is ``derivative`` in place, with fewer passes (equal to within an ulp);
- ``vjp(h, grad_spike)`` returns ``grad_spike * g'(h)`` (out of place);
- ``backward_(h, grad_spike)`` returns ``grad_spike * g'(h)`` and may overwrite ``h``; the fused
  neuron kernels use it on cache-sized chunks, with as few passes as possible.

``forward``, ``derivative`` and ``vjp`` follow SpikingJelly 2.0.0 operation by operation
(bit-identical results); ``backward_`` fuses passes and agrees with them to within an ulp.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from .._registry import Registry

SURROGATES: Registry[type[Surrogate]] = Registry("surrogate function")
_ONE = torch.ones(())


def _one(h: torch.Tensor) -> torch.Tensor:
    """A 0-d ``1`` on ``h``'s device (CUDA's ``addcmul`` refuses a CPU scalar tensor as ``self``)."""
    return _ONE if h.device.type == "cpu" else h.new_ones(())


class Surrogate(nn.Module):
    """Base class. Subclasses set ``name`` and implement :meth:`derivative` and :meth:`backward_`."""

    name: ClassVar[str]
    default_alpha: ClassVar[float]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that redefines the derivative (``derivative`` or ``vjp``) but not the faster forms derived
        from it inherits its parent's hard-coded formulas there: reset those to the generic ones, which call the
        new derivative (else the fused kernels, which call ``backward_``, would train with the parent's gradient)."""
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "derivative" in own:
            if "vjp" not in own:
                cls.vjp = Surrogate.vjp
            if "derivative_" not in own:
                cls.derivative_ = Surrogate.derivative_
        if ("derivative" in own or "vjp" in own) and "backward_" not in own:
            cls.backward_ = Surrogate.backward_

    def __init__(self, alpha: float | None = None) -> None:
        super().__init__()
        alpha = self.default_alpha if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
            raise ValueError(f"{type(self).__name__}: alpha must be a finite positive number, got {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return _SpikeFunction.apply(h, self)

    @property
    def fires_heaviside(self) -> bool:
        """Whether the forward is ``Θ(h)`` (every built-in surrogate), so fused kernels may threshold in its place;
        a subclass that overrides :meth:`forward` (a smooth stand-in in a test) runs the plain ops instead."""
        return type(self).forward is Surrogate.forward

    def derivative(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def derivative_(self, h: torch.Tensor) -> torch.Tensor:
        return h.copy_(self.derivative(h))

    def vjp(self, h: torch.Tensor, grad_spike: torch.Tensor) -> torch.Tensor:
        return self.derivative(h) * grad_spike

    def backward_(self, h: torch.Tensor, grad_spike: torch.Tensor) -> torch.Tensor:
        return self.vjp(h, grad_spike)

    def spec(self) -> dict[str, Any]:
        """Plain-data description, e.g. ``{"name": "atan", "alpha": 2.0}``."""
        return {"name": self.name, "alpha": self.alpha}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(h)
        ctx.surrogate = surrogate
        return (h >= 0).to(h.dtype)

    @staticmethod
    def backward(ctx: Any, grad_spike: torch.Tensor) -> tuple[torch.Tensor, None]:
        (h,) = ctx.saved_tensors
        return ctx.surrogate.vjp(h, grad_spike), None


@SURROGATES.register("atan")
class ATan(Surrogate):
    """``g'(h) = (α/2) / (1 + (π α h / 2)²)``; ``g'(0) = α/2``. The paper uses α = 2."""

    name = "atan"
    default_alpha = 2.0

    def derivative(self, h: torch.Tensor) -> torch.Tensor:
        a = self.alpha / 2
        ax = h * (math.pi * a)
        return (1 + ax * ax).reciprocal() * a

    def derivative_(self, h: torch.Tensor) -> torch.Tensor:
        a = self.alpha / 2
        torch.addcmul(_one(h), h, h, value=(math.pi * a) ** 2, out=h)
        h.reciprocal_()
        return h.mul_(a) if a != 1.0 else h

    def backward_(self, h: torch.Tensor, grad_spike: torch.Tensor) -> torch.Tensor:
        # two passes instead of six: y = 1 + (π a h)², then grad / y (·a); equal to derivative() up to 1 ulp
        a = self.alpha / 2
        torch.addcmul(_one(h), h, h, value=(math.pi * a) ** 2, out=h)
        torch.div(grad_spike, h, out=h)
        return h.mul_(a) if a != 1.0 else h


@SURROGATES.register("sigmoid")
class Sigmoid(Surrogate):
    """``g'(h) = α·σ(αh)·(1 − σ(αh))``; SpikingJelly's default α = 4."""

    name = "sigmoid"
    default_alpha = 4.0

    def derivative(self, h: torch.Tensor) -> torch.Tensor:
        s = (h * self.alpha).sigmoid_()
        return (1.0 - s) * s * self.alpha

    def derivative_(self, h: torch.Tensor) -> torch.Tensor:
        s = h.mul_(self.alpha).sigmoid_()
        return torch.addcmul(s, s, s, value=-1.0, out=s).mul_(self.alpha)

    def vjp(self, h: torch.Tensor, grad_spike: torch.Tensor) -> torch.Tensor:
        s = (h * self.alpha).sigmoid_()
        return grad_spike * (1.0 - s) * s * self.alpha

    def backward_(self, h: torch.Tensor, grad_spike: torch.Tensor) -> torch.Tensor:
        s = h.mul_(self.alpha).sigmoid_()
        torch.addcmul(s, s, s, value=-1.0, out=s)  # s·(1 − s) = s − s²
        return s.mul_(grad_spike).mul_(self.alpha)


@SURROGATES.register("rect")
class Rect(Surrogate):
    """``g'(h) = α·1[|h| < 1/(2α)]``: the GLIF code's spike function at α = 1 (SpikingJelly's ``surrogate.Rect``)."""

    name = "rect"
    default_alpha = 1.0

    def derivative(self, h: torch.Tensor) -> torch.Tensor:
        return (h.abs() < 0.5 / self.alpha).to(h.dtype) * self.alpha


@SURROGATES.register("triangle")
class Triangle(Surrogate):
    """``g'(h) = α²·max(1/α − |h|, 0)``: the TEBN code's ``ZIF`` (γ = 1/α) and SpikingJelly's ``PiecewiseQuadratic``."""

    name = "triangle"
    default_alpha = 1.0

    def derivative(self, h: torch.Tensor) -> torch.Tensor:
        return (1.0 / self.alpha - h.abs()).clamp(min=0.0) * (self.alpha * self.alpha)


SurrogateSpec = str | Mapping[str, Any] | Surrogate


def make_surrogate(spec: SurrogateSpec = "atan") -> Surrogate:
    """Build a surrogate from ``"atan"``, ``{"name": "sigmoid", "alpha": 4.0}`` or pass one through."""
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, Mapping):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        if name is None:
            raise ValueError(f"surrogate spec {dict(spec)!r} has no 'name'; e.g. {{'name': 'atan', 'alpha': 2.0}}")
        if not isinstance(name, str):
            raise ValueError(
                f"surrogate spec {dict(spec)!r}: 'name' must be one of {', '.join(SURROGATES.names())}, got {name!r}"
            )
    else:
        raise ValueError(
            f"surrogate must be a name ({', '.join(SURROGATES.names())}), a mapping such as "
            f"{{'name': 'atan', 'alpha': 2.0}} or a Surrogate module, got {spec!r} ({type(spec).__name__})"
        )
    entry = SURROGATES.get(name)
    unknown = set(kwargs) - {"alpha"}
    if unknown:
        raise ValueError(
            f"surrogate {entry.name!r} got unexpected argument(s) {sorted(unknown)}; it takes only 'alpha'"
        )
    return entry.obj(**kwargs)


def list_surrogates() -> list[str]:
    return SURROGATES.names()
