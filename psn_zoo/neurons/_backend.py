"""Which implementation a neuron call runs on: the one place that picks between Triton, the fused C kernel and
PyTorch.

- A CUDA tensor goes to the Triton kernels (:mod:`._triton_psn`, :mod:`._triton_serial`) when Triton imports and
  ``PSN_ZOO_TRITON`` is not ``0``; otherwise the PyTorch path runs, after one warning that says why.
- A CPU tensor goes to the fused C kernel where :mod:`._native` takes it, else to PyTorch. With
  ``PSN_ZOO_TRITON=1`` and ``TRITON_INTERPRET=1`` (set before Triton is first imported) CPU tensors run the Triton
  kernels in Triton's interpreter instead: how the GPU kernels are tested on machines without a GPU.
- Under ``torch.compile``/``torch.export``, and inside :func:`plain_ops`, the plain differentiable ops run (the
  functional layer decides that). The fused kernels' backward is differentiable once: a backward asked for a graph
  (``create_graph=True``) refuses with the way out (:func:`refuse_create_graph`), instead of a gradient whose
  second-order terms silently vanish.

Only the ATan and Sigmoid surrogates are fused into the kernels; another surrogate runs the PyTorch path.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

import torch

from .surrogate import ATan, Sigmoid, Surrogate

ENV = "PSN_ZOO_TRITON"
#: Surrogate classes the kernels compute in registers, with the integer the kernels take for them.
FUSED_SURROGATES: dict[type[Surrogate], int] = {ATan: 0, Sigmoid: 1}
#: The kernels index with 32-bit offsets: larger inputs run the PyTorch path.
MAX_ELEMENTS = 2**31
#: Input and parameter dtypes the kernels read (they compute in fp32).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


_PLAIN = contextvars.ContextVar("psn_zoo_plain_ops", default=False)


@contextlib.contextmanager
def plain_ops() -> Iterator[None]:
    """Inside it every neuron runs its plain differentiable PyTorch ops instead of its fused kernels: the same values,
    slower, and twice differentiable (a gradient penalty, a Hessian-vector product, MAML need that; the fused
    kernels' backward is differentiable once). Run the forward and the backward inside it."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


def plain_requested() -> bool:
    """Whether :func:`plain_ops` is active in this context."""
    return _PLAIN.get()


def refuse_create_graph(function: str) -> None:
    """First line of every fused Function's backward: grad mode is on there only under ``create_graph=True``, and
    the kernels' backward builds no graph, so the second-order terms would silently be zero."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{function}: psn_zoo's fused kernels are differentiable once, and this backward was asked for a graph "
            "(create_graph=True: a gradient penalty, a Hessian-vector product). Run the forward and the backward "
            "inside `with psn_zoo.neurons.plain_ops():` (the neurons' plain PyTorch ops, twice differentiable)"
        )


@functools.cache
def _triton_problem() -> str | None:
    """Why Triton cannot run here (None when it can)."""
    try:
        import triton  # noqa: F401
    except ImportError as error:  # pragma: no cover - the test extras bring Triton
        return f"Triton is not installed ({error}); `pip install triton` (it ships with CUDA builds of torch)"
    return None


#: Triton compiles for NVIDIA GPUs of compute capability 7.0 (Volta) and newer.
MIN_CAPABILITY = (7, 0)


@functools.cache
def _gpu_problem(index: int) -> str | None:
    """Why Triton cannot compile for CUDA device ``index`` (None when it can)."""
    capability = torch.cuda.get_device_capability(index)
    if torch.version.hip is None and capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(index)
        return (
            f"{name} has compute capability {capability[0]}.{capability[1]} and Triton needs "
            f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer"
        )
    return None


def interpreting() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _setting() -> str:
    return _parse_setting(os.environ.get(ENV, "auto"))


@functools.cache  # read on every neuron call: parse each raw value once (a bad one raises every time, uncached)
def _parse_setting(raw: str) -> str:
    value = raw.strip().lower() or "auto"
    if value not in ("0", "1", "auto"):
        raise ValueError(f"{ENV} must be 0 (PyTorch path on GPUs), 1 or auto (Triton on GPUs); got {value!r}")
    return value


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def use_triton(x: torch.Tensor, surrogate: Surrogate) -> bool:
    """Whether ``x`` (a neuron's input) runs the Triton kernels."""
    setting = _setting()
    if x.is_cuda:  # a property, unlike ``x.device`` (which builds an object): this runs on every neuron call
        if setting == "0":
            _warn_once(f"psn_zoo: {ENV}=0, so the neurons run their PyTorch path on the GPU (slower)")
            return False
        if (problem := _triton_problem() or _gpu_problem(x.get_device())) is not None:
            _warn_once(f"psn_zoo: the neurons run their PyTorch path on the GPU (slower): {problem}")
            return False
    elif not (setting == "1" and x.is_cpu and interpreting()):
        return False
    if type(surrogate) not in FUSED_SURROGATES:
        _warn_once(
            f"psn_zoo: the Triton kernels fuse only the {', '.join(c.__name__ for c in FUSED_SURROGATES)} "
            f"surrogates; {type(surrogate).__name__} runs the PyTorch path"
        )
        return False
    return x.dtype in KERNEL_DTYPES and x.numel() < MAX_ELEMENTS


def triton_psn() -> ModuleType:
    from . import _triton_psn

    return _triton_psn


def triton_serial() -> ModuleType:
    from . import _triton_serial

    return _triton_serial
