"""Exported models (torch.export, ONNX run by onnxruntime) give the eager outputs bit for bit."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from psn_zoo.models import create_model
from psn_zoo.models.export import export_onnx, export_program

CASES = [
    ("sew_resnet18", "psn"),
    ("sew_resnet18", {"name": "masked_psn", "k": 2, "lambda_": 0.5}),
    ("spiking_vgg11_bn", {"name": "sliding_psn", "k": 2}),
    ("spiking_resnet18", "lif"),
    ("paper_seq_cnn", "psn"),
]


def _example(name: str) -> torch.Tensor:
    return torch.rand(2, 4, 3, 32) if name == "paper_seq_cnn" else torch.rand(2, 4, 3, 32, 32) * 2


@pytest.mark.parametrize(("name", "neuron"), CASES, ids=lambda v: v if isinstance(v, str) else v["name"])
def test_torch_export_matches_eager(name, neuron):
    kwargs = {"head": "compact"} if name.startswith("spiking_vgg") else {}
    model = create_model(name, neuron=neuron, T=4, num_classes=5, **kwargs)
    x = _example(name)
    program = export_program(model, x)  # traced in eval mode; the model's own mode is left as it was
    assert model.training
    model.eval()
    with torch.no_grad():
        assert torch.equal(program.module()(x), model(x))
    other = _example(name)  # a second input through the same program
    with torch.no_grad():
        assert torch.equal(program.module()(other), model(other))


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    model = create_model("sew_resnet18", neuron="psn", T=4, num_classes=5, in_channels=2)
    x = torch.rand(2, 4, 2, 32, 32) * 2
    path = export_onnx(model, x, tmp_path / "sew18_psn.onnx")
    model.eval()  # the file is the eval-mode network
    session = onnxruntime.InferenceSession(str(path))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_array_equal(out, model(x).numpy())


def test_export_refuses_streaming_mode():
    model = create_model("sew_resnet18", neuron="lif", T=4, num_classes=5)
    model.set_step_mode("s")
    with pytest.raises(ValueError, match="multi-step mode"):
        export_program(model, torch.rand(1, 3, 32, 32))
