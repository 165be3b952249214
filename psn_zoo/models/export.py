"""Export a psn_zoo model for deployment: ``torch.export`` programs and ONNX files.

Under tracing the neurons switch from the eager fused kernels to plain differentiable ops with the same
arithmetic, so exported programs give the eager outputs bit for bit. The batch size is dynamic by default (a
deployed model serves whatever batch it is given, the last partial one included); ``dynamic_batch=False`` fixes
it to the example's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from ..neurons import neurons_of, require_materialised
from .base import SpikingModel


@contextlib.contextmanager
def _prepared(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode while it is traced (its training mode restored after)."""
    streaming = [type(n).__name__ for n in neurons_of(model) if n.step_mode != "m"]
    if getattr(model, "_step_mode", "m") != "m" or streaming:
        shown = f" ({len(streaming)} neuron(s) in single-step mode: {', '.join(dict.fromkeys(streaming))})"
        raise ValueError(
            f"export a model in multi-step mode{shown if streaming else ''}: an exported program keeps no state "
            "between calls; call model.set_step_mode('m') (psn_zoo.neurons.set_step_mode(module, 'm') for a module "
            "of your own) first"
        )
    require_materialised(model, "export it")
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


def _traced_input(
    model: nn.Module, example: torch.Tensor, dynamic_batch: bool, batch_dim: int | None
) -> tuple[tuple[torch.Tensor], tuple[dict[int, Any]] | None]:
    """The example to trace and its ``dynamic_shapes`` (None for a fixed batch size). A batch of 1 is traced as 2
    (its copy twice): ``torch.export`` specialises a size of 1 to a constant; the values do not shape the program."""
    if not dynamic_batch:
        return (example,), None
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"the example must be a torch.Tensor, got {type(example).__name__}")
    if batch_dim is None:
        batch_dim = 0 if isinstance(model, SpikingModel) else 1
    if isinstance(batch_dim, bool) or not isinstance(batch_dim, int) or not -example.dim() <= batch_dim < example.dim():
        raise ValueError(
            f"batch_dim={batch_dim!r} is not a dimension of the example of shape {tuple(example.shape)}: give the "
            "batch's dimension (batch_dim=0 for [B, ...], 1 for time-first [T, B, ...]), or dynamic_batch=False"
        )
    batch_dim %= example.dim()
    if example.shape[batch_dim] == 1:
        example = torch.cat([example, example], dim=batch_dim)
    return (example,), ({batch_dim: Dim("batch", min=1)},)


def _export(
    model: nn.Module, args: tuple[torch.Tensor], dynamic: tuple[dict[int, Any]] | None
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the prepared ``model``, a batch size the model fixes named as such."""
    try:
        return torch.export.export(model, args, dynamic_shapes=dynamic)
    except torch._dynamo.exc.UserError as err:
        if dynamic is None or err.error_type is not torch._dynamo.exc.UserErrorType.CONSTRAINT_VIOLATION:
            raise
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        reason = next((ln[2:] for ln in lines if ln.startswith("- ")), lines[0] if lines else "").split(". ")[0]
        raise ValueError(
            f"{type(model).__name__} does not export with a dynamic batch size ({reason}): pass dynamic_batch=False "
            "for a program fixed to the example's batch size, or batch_dim= if the batch is another dimension"
        ) from None


def export_program(
    model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool = True, batch_dim: int | None = None
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (in eval mode) for inputs shaped like ``example``.

    ``dynamic_batch``: the program takes any batch size (the example's other sizes are fixed); ``False`` fixes it to
    the example's. ``batch_dim``: the example's batch dimension; by default 0 for a :class:`SpikingModel` (batch-first
    ``[B, T, ...]`` or ``[B, C, H, W]``) and 1 for another module (the neurons' time-first ``[T, B, ...]``).
    """
    with _prepared(model) as ready:
        args, dynamic = _traced_input(ready, example, dynamic_batch, batch_dim)
        return _export(ready, args, dynamic)


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    batch_dim: int | None = None,
) -> Path:
    """Write ``model`` as ONNX (through ``torch.export``; needs the ``onnx`` and ``onnxscript`` packages); the
    batch dimension is a symbolic ``batch`` unless ``dynamic_batch=False`` (see :func:`export_program`)."""
    complex_ops = sorted({type(m).__name__ for m in model.modules() if getattr(m, "complex_ops", False)})
    if complex_ops:
        raise ValueError(
            f"{', '.join(complex_ops)} computes with complex numbers, which ONNX has no operators for: export the "
            "model with psn_zoo.models.export.export_program (torch.export) instead"
        )
    with _prepared(model) as ready:
        args, dynamic = _traced_input(ready, example, dynamic_batch, batch_dim)
        exported = _export(ready, args, dynamic)
        # the checked program, as ONNX (the module itself would fall back to a fixed batch size in silence);
        # dynamic_shapes again only names the ONNX input's batch dimension "batch"
        program = torch.onnx.export(exported, args, dynamo=True, dynamic_shapes=dynamic, verbose=False)
    path = Path(path)
    program.save(str(path))
    return path
