"""The same parity with SpikingJelly 2.0.0 on a CUDA GPU (skipped where torch sees none, as in CI).

On a GPU the neurons run the Triton kernels (psn_zoo/neurons/_triton_*.py; tests/test_triton.py runs its checks on
CUDA tensors there), and cuBLAS and cuDNN choose their own algorithms, so these run the CPU parity checks again, a
Lightning fit in fp32, and mixed-precision fits (bf16-mixed, 16-mixed) that must run the Triton kernels on half
inputs. SpikingJelly's oracle is its torch backend (tests/conftest.py sets ``SJ_*_CUDA_IMPLEMENTATION=torch``).

    python -m benchmarks.cuda_suite      # these tests and the GPU benchmarks in one device call
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_neuron_outputs_match, forward_backward

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
    assert_neuron_outputs_match(
        ours.cpu(),
        x.cpu(),
        *(
            (o.cpu(), g.cpu(), {n: p.cpu() for n, p in ps.items()})
            for o, g, ps in ((out_o, gx_o, gp_o), (out_s, gx_s, gp_s))
        ),
    )


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


def _frames_loader(n: int, T: int, classes: int, seed: int) -> torch.utils.data.DataLoader:
    """Event-frame-like batches ``[B, T, 2, 34, 34]`` whose class sets the mean rate of one quadrant."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = (torch.rand(n, T, 2, 34, 34, generator=g) < 0.05).float()
    for c in range(classes):
        rows = slice((c // 2) * 17, (c // 2 + 1) * 17)
        cols = slice((c % 2) * 17, (c % 2 + 1) * 17)
        x[y == c, :, :, rows, cols] += (torch.rand_like(x[y == c, :, :, rows, cols]) < 0.9).float()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=seed == 0)


@pytest.mark.parametrize("neuron", ["psn", "masked_psn", "lif"])
def test_lightning_fit_on_cuda_learns_and_keeps_everything_on_the_gpu(tmp_path, neuron):
    """SpikingClassifier + Lightning's Trainer on one GPU: metrics, firing rates, λ schedule, checkpoint."""
    import lightning as L

    from psn_zoo.training import MaskedPSNSchedule, SpikingClassifier

    kwargs = {"k": 2, "lambda_": 0.0} if neuron == "masked_psn" else None
    module = SpikingClassifier(
        model="paper_cifar10dvs_vgg", neuron=neuron, neuron_kwargs=kwargs, T=4, num_classes=4, in_channels=2,
        model_kwargs={"input_size": 34, "width_mult": 0.25}, loss="tet", optimizer="adamw", lr=3e-3,
        log_input_samples=0,
    )  # fmt: skip
    devices = set()

    class Where(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            devices.update(p.device.type for p in pl_module.parameters())
            devices.update(b.device.type for b in pl_module.buffers())
            devices.add(batch[0].device.type)

    callbacks = [Where()] + ([MaskedPSNSchedule()] if neuron == "masked_psn" else [])
    trainer = L.Trainer(
        accelerator="gpu", devices=1, max_epochs=6, default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(module, _frames_loader(128, 4, 4, 0), _frames_loader(64, 4, 4, 1))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["val/acc"] > 0.5, metrics  # chance is 0.25
    assert 0.0 < metrics["val/firing_rate"] < 1.0
    assert devices == {"cuda"}  # parameters, buffers (λ, masks, BN statistics) and batches while training
    path = tmp_path / "gpu.ckpt"
    trainer.save_checkpoint(path)
    restored = SpikingClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    x = next(iter(_frames_loader(16, 4, 4, 2)))[0]
    # compared in float64: in float32, cuDNN's and oneDNN's convolutions round differently, and a membrane that
    # lands within that rounding of the threshold flips a spike on one device only (seen once in 16 GPU runs)
    with torch.no_grad():
        cpu_logits = restored.double().eval()(x.double())
        gpu_logits = module.cuda().double().eval()(x.cuda().double()).cpu()  # Lightning moves it back
    torch.testing.assert_close(gpu_logits, cpu_logits, rtol=1e-9, atol=1e-9)


def test_published_checkpoint_runs_on_cuda_like_on_cpu():
    from psn_zoo import load_pretrained

    cpu = load_pretrained("paper_cifar10dvs_vgg.ndigits_psn_t4").eval()
    gpu = load_pretrained("paper_cifar10dvs_vgg.ndigits_psn_t4").cuda().eval()
    assert next(gpu.parameters()).device.type == "cuda"
    x = (torch.rand(8, 4, 2, 34, 34) < 0.05).float()
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("neuron", ["psn", "sliding_psn", "plif"])
def test_lightning_fit_in_mixed_precision_runs_the_triton_kernels(tmp_path, neuron, precision, monkeypatch):
    """A mixed-precision fit on one GPU: the neurons get half-precision inputs, run the Triton kernels (counted),
    and the model learns."""
    import lightning as L

    from psn_zoo.neurons import _triton_psn, _triton_serial
    from psn_zoo.training import SpikingClassifier

    calls = {"n": 0}
    for module, name in ((_triton_psn, "TritonThreshold"), (_triton_serial, "TritonSerial")):
        cls = getattr(module, name)
        original = cls.forward

        def counted(ctx, x_seq, *args, _original=original):
            calls["n"] += 1
            calls.setdefault("dtypes", set()).add(x_seq.dtype)
            return _original(ctx, x_seq, *args)

        monkeypatch.setattr(cls, "forward", staticmethod(counted))
    kwargs = {"k": 2} if neuron == "sliding_psn" else None
    module = SpikingClassifier(
        model="paper_cifar10dvs_vgg", neuron=neuron, neuron_kwargs=kwargs, T=4, num_classes=4, in_channels=2,
        model_kwargs={"input_size": 34, "width_mult": 0.25}, loss="tet", optimizer="adamw", lr=3e-3,
        log_input_samples=0,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="gpu", devices=1, max_epochs=6, precision=precision, default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, _frames_loader(128, 4, 4, 0), _frames_loader(64, 4, 4, 1))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert calls["n"] > 0 and calls["dtypes"] & {torch.bfloat16, torch.float16}, calls
    assert metrics["val/acc"] > 0.5, metrics
