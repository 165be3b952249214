"""Exported models (torch.export, ONNX run by onnxruntime) give the eager outputs bit for bit."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from psn_zoo.models import create_model
from psn_zoo.models.export import export_onnx, export_program
from psn_zoo.neurons import LIFNode, make_neuron, set_step_mode

CASES = [
    ("sew_resnet18", "psn"),
    ("sew_resnet18", {"name": "masked_psn", "k": 2, "lambda_": 0.5}),
    ("spiking_vgg11_bn", {"name": "sliding_psn", "k": 2}),
    ("spiking_resnet18", "lif"),
    ("paper_seq_cnn", "psn"),
]


def _example(name: str, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 4, 3, 32) if name == "paper_seq_cnn" else torch.rand(batch, 4, 3, 32, 32) * 2


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


SMALL_CSNN = {"channels": 4, "fc_hidden": 8, "input_size": 16}


@pytest.mark.parametrize(
    ("name", "neuron", "example"),
    [("paper_seq_cnn", "lif", (2, 4, 3, 32)), ("paper_seq_cnn", {"name": "sliding_psn", "k": 2}, (1, 4, 3, 32)),
     ("paper_cifar10_csnn", "psn", (2, 3, 16, 16))],
    ids=["seq-lif", "seq-sliding-batch-1", "csnn-psn-static-image"],
)  # fmt: skip
def test_an_exported_program_takes_any_batch_size(name, neuron, example):
    """The program was fixed to the example's batch size (any other failed a guard). The batch is dynamic by default:
    batch-first inputs, a static image repeated over T, and an example of batch 1 (which torch.export would pin)."""
    kwargs = SMALL_CSNN if name == "paper_cifar10_csnn" else {}
    model = create_model(name, neuron=neuron, T=4, num_classes=5, **kwargs).eval()
    program = export_program(model, torch.rand(example) * 2)
    for batch in (1, 3, 5):
        x = torch.rand(batch, *example[1:]) * 2
        with torch.no_grad():
            assert torch.equal(program.module()(x), model(x))


def test_a_module_of_neurons_exports_with_a_dynamic_batch_on_its_time_first_dim():
    """A module of one's own takes the neurons' time-first ``[T, B, ...]``: its batch is dim 1 (``batch_dim``)."""
    net = torch.nn.Sequential(torch.nn.Linear(6, 4), make_neuron({"name": "sliding_psn", "k": 2})).eval()
    program = export_program(net, torch.rand(4, 2, 6))
    for batch in (3, 5):
        x = torch.rand(4, batch, 6) * 3
        with torch.no_grad():
            assert torch.equal(program.module()(x), net(x))
    with pytest.raises(ValueError, match=r"batch_dim=3 is not a dimension of the example of shape \(4, 2, 6\)"):
        export_program(net, torch.rand(4, 2, 6), batch_dim=3)


def test_a_model_that_fixes_its_batch_size_is_refused_with_the_way_out():
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(3) * x.sum((0, 2))  # broadcasting pins dim 1 to 3

    with pytest.raises(ValueError, match=r"Fixed does not export with a dynamic batch size .*dynamic_batch=False"):
        export_program(Fixed(), torch.rand(2, 3, 4))
    assert export_program(Fixed(), torch.rand(2, 3, 4), dynamic_batch=False).module()(torch.ones(2, 3, 4)).shape == (3,)
    model = create_model("paper_seq_cnn", neuron="lif", T=4, num_classes=5)
    fixed = export_program(model, _example("paper_seq_cnn", 2), dynamic_batch=False)  # the example's batch only
    with pytest.raises(AssertionError, match=r"Guard failed: x\.size\(\)\[0\] == 2"):
        fixed.module()(_example("paper_seq_cnn", 3))


def test_onnx_export_takes_any_batch_size(tmp_path):
    model = create_model("paper_seq_cnn", neuron="psn", T=4, num_classes=5)
    path = export_onnx(model, torch.rand(2, 4, 3, 32), tmp_path / "seq_psn.onnx")
    model.eval()
    session = onnxruntime.InferenceSession(str(path))
    assert session.get_inputs()[0].shape == ["batch", 4, 3, 32]
    for batch in (3, 5):
        x = torch.rand(batch, 4, 3, 32)
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            np.testing.assert_array_equal(out, model(x).numpy())
    fixed = export_onnx(model, torch.rand(2, 4, 3, 32), tmp_path / "fixed.onnx", dynamic_batch=False)
    assert onnxruntime.InferenceSession(str(fixed)).get_inputs()[0].shape == [2, 4, 3, 32]


def test_export_refuses_neurons_switched_to_single_step_directly(tmp_path):
    """``psn_zoo.neurons.set_step_mode(net, 's')`` on a module of one's own: the model has no ``_step_mode``, the
    export went through and the program dropped the state (eager [0, 3, 0, 3], exported [0, 0, 0, 0])."""
    net = torch.nn.Sequential(torch.nn.Identity(), LIFNode(tau=2.0))
    set_step_mode(net, "s")
    with pytest.raises(ValueError, match=r"multi-step mode \(1 neuron\(s\) in single-step mode: LIFNode\).*"
                       r"set_step_mode\(module, 'm'\)"):  # fmt: skip
        export_program(net, torch.full((1, 3), 1.5))
    model = create_model("paper_seq_cnn", neuron="lif", T=4, num_classes=5)
    set_step_mode(model.conv, "s")  # some of a model's neurons, past model.set_step_mode
    with pytest.raises(ValueError, match=r"multi-step mode \(6 neuron\(s\) in single-step mode: LIFNode\)"):
        export_onnx(model, torch.rand(2, 4, 3, 32), tmp_path / "streamed.onnx")
    assert not (tmp_path / "streamed.onnx").exists()
