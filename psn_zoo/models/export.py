"""Export a psn_zoo model for deployment: ``torch.export`` programs and ONNX files.

Under tracing the neurons switch from the eager fused kernels to plain differentiable ops with the same
arithmetic, so exported programs give the eager outputs bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..neurons import require_materialised


@contextlib.contextmanager
def _prepared(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode while it is traced (its training mode restored after)."""
    if getattr(model, "_step_mode", "m") != "m":
        raise ValueError("export a model in multi-step mode: call model.set_step_mode('m') first")
    require_materialised(model, "export it")
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (in eval mode) for inputs shaped like ``example``."""
    with _prepared(model) as ready:
        return torch.export.export(ready, (example,))


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write ``model`` as ONNX (through ``torch.export``; needs the ``onnx`` and ``onnxscript`` packages)."""
    complex_ops = sorted({type(m).__name__ for m in model.modules() if getattr(m, "complex_ops", False)})
    if complex_ops:
        raise ValueError(
            f"{', '.join(complex_ops)} computes with complex numbers, which ONNX has no operators for: export the "
            "model with psn_zoo.models.export.export_program (torch.export) instead"
        )
    with _prepared(model) as ready:
        program = torch.onnx.export(ready, (example,), dynamo=True, verbose=False)
    path = Path(path)
    program.save(str(path))
    return path
