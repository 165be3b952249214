"""Export a psn_zoo model for deployment: ``torch.export`` programs and ONNX files.

Under tracing the neurons switch from the eager fused kernels to plain differentiable ops with the same
arithmetic, so exported programs give the eager outputs bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def _prepared(model: nn.Module) -> nn.Module:
    if getattr(model, "_step_mode", "m") != "m":
        raise ValueError("export a model in multi-step mode: call model.set_step_mode('m') first")
    return model.eval()


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (switched to eval mode) for inputs shaped like ``example``."""
    return torch.export.export(_prepared(model), (example,))


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write ``model`` as ONNX (through ``torch.export``; needs the ``onnx`` and ``onnxscript`` packages)."""
    program = torch.onnx.export(_prepared(model), (example,), dynamo=True, verbose=False)
    path = Path(path)
    program.save(str(path))
    return path
