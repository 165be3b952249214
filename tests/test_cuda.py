"""The same parity with SpikingJelly 2.0.0 on a CUDA GPU (skipped where torch sees none, as in CI).

The fused kernels take a different path on a GPU (one block, no CPU chunking or scratch buffers), and cuBLAS and
cuDNN choose their own algorithms, so these run the CPU parity checks again there.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_grads_close, forward_backward

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine)")

SPECS = [
    {"name": "psn", "T": 8},
    {"name": "psn", "T": 32},
    {"name": "masked_psn", "T": 8, "k": 3, "lambda_": 0.5},
    {"name": "masked_psn", "T": 16, "k": 4, "lambda_": 1.0},
    {"name": "sliding_psn", "k": 2},
    {"name": "sliding_psn", "k": 5, "exp_init": False},
    {"name": "if"},
    {"name": "lif"},
    {"name": "lif", "v_reset": None, "detach_reset": True},
    {"name": "plif"},
]


@pytest.fixture(autouse=True)
def _exact_matmul():
    """float32 GEMMs in full precision (TF32 would make ours and SJ's differ by more than round-off)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_neurons_match_spikingjelly_on_cuda(spec):
    from psn_zoo.neurons import compat, make_neuron

    torch.manual_seed(0)
    ours = make_neuron(spec)
    theirs = compat.to_spikingjelly(ours).cuda()
    ours = ours.cuda()
    T = spec.get("T", 16)
    x = torch.randn(T, 8, 64, 64, device="cuda") * 1.5
    out_o, gx_o, gp_o = forward_backward(ours, x, grad := torch.randn_like(x))
    out_s, gx_s, gp_s = forward_backward(theirs, x, grad)
    assert out_o.device.type == "cuda"
    assert torch.equal(out_o, out_s), f"{int((out_o != out_s).sum())} of {out_o.numel()} spikes differ"
    assert_grads_close(gx_o, gx_s)
    for name, g in gp_o.items():
        assert_grads_close(g, gp_s[name])


@pytest.mark.parametrize(("name", "neuron"), [("sew_resnet18", "psn"), ("spiking_vgg11_bn", "lif")])
def test_models_match_spikingjelly_on_cuda(name, neuron):
    from spikingjelly.activation_based import functional, surrogate
    from spikingjelly.activation_based import neuron as sjn
    from spikingjelly.activation_based.model import sew_resnet, spiking_vgg

    from psn_zoo.models import create_model
    from psn_zoo.models.convert import to_spikingjelly

    T, classes = 4, 10
    torch.manual_seed(0)
    ours = create_model(name, neuron=neuron, T=T, num_classes=classes)
    kwargs = {"num_classes": classes, "surrogate_function": surrogate.ATan()}
    kwargs |= {"spiking_neuron": sjn.PSN, "T": T} if neuron == "psn" else {"spiking_neuron": sjn.LIFNode}
    if name == "sew_resnet18":
        theirs = sew_resnet.sew_resnet18(cnf="ADD", **kwargs)
    else:
        theirs = spiking_vgg.spiking_vgg11_bn(**kwargs)
    functional.set_step_mode(theirs, "m")
    theirs.load_state_dict(to_spikingjelly(ours.state_dict(), ours))
    ours, theirs = ours.cuda().eval(), theirs.cuda().eval()
    x_seq = torch.rand(T, 4, 3, 64, 64, device="cuda") * 3
    with torch.no_grad():
        expected = theirs(x_seq)
        got = ours.forward_steps(x_seq, time_first=True)
    assert got.shape == expected.shape == (T, 4, classes)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
