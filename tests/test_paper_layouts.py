"""Issue 20: every checkpoint layout of the paper's scripts (fangwei123456/Parallel-Spiking-Neuron) loads and gives the
authors' outputs.

Each layout is rebuilt from its key structure: a state dict with the authors' key names and shapes (random values),
saved as their script saves it. The loaded psn_zoo model's logits are compared, in float64, with an independent
reference written here from the scripts' equations (torch.nn.functional on the raw state dict; none of psn_zoo's
layers or neurons), to 1e-12. The authors' code itself is not vendored.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import neuron as sjn
from spikingjelly.activation_based import surrogate as sjs

from psn_zoo.models import create_model
from psn_zoo.models.convert import (
    import_paper_checkpoint,
    load_paper_checkpoint,
    masked_psn_lambda,
    paper_layout,
    read_paper_checkpoint,
)
from psn_zoo.neurons import make_neuron

TOL = {"rtol": 1e-12, "atol": 1e-12}
D = torch.float64


def _g(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, dtype=D) * scale


def _bn_state(prefix: str, c: int) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}weight": torch.rand(c, dtype=D) + 1.5,
        f"{prefix}bias": torch.rand(c, dtype=D) * 0.8 + 0.3,
        f"{prefix}running_mean": _g(c, scale=0.1),
        f"{prefix}running_var": torch.rand(c, dtype=D) * 0.5 + 0.5,
        f"{prefix}num_batches_tracked": torch.tensor(7),
    }


def _bn(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{prefix}running_mean"], sd[f"{prefix}running_var"], sd[f"{prefix}weight"],
                        sd[f"{prefix}bias"], training=False, eps=1e-5)  # fmt: skip


def _saved(sd: dict) -> tuple[dict, dict]:
    """``(what the script saves: float32, the same values in float64 for the reference)``."""
    saved = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    return saved, {k: v.double() if v.is_floating_point() else v for k, v in saved.items()}


def _fire(h: torch.Tensor) -> torch.Tensor:
    return (h >= 0).to(h.dtype)


# ------------------------------------------------------------------ the sequential-CIFAR script's neurons
def _logit(p: float) -> float:
    return -math.log(1 / p - 1)


def seq_neuron_state(code: str, T: int, c: int, P: int = 3) -> dict[str, torch.Tensor]:
    """One neuron's keys as train_secf10.py's create_neuron(code) saves them (trained-looking values)."""
    if code in ("if5", "if5pmd8"):
        out = {"fc.weight": 0.4 + _g(T, T, scale=0.5), "fc.bias": -1 + _g(T, scale=0.1)}
        if code == "if5pmd8":
            ones = torch.ones(T, T, dtype=D)
            out |= {"fc.mask0": torch.tril(ones) * torch.triu(ones, -(P - 1)), "fc.mask1": ones}
        return out
    if code == "mspsn":
        return {"weight": 0.5 + _g(P, scale=0.4), "threshold": torch.tensor(-0.9, dtype=D)}
    if code == "plif":
        return {"w": torch.tensor(0.3, dtype=D)}
    if code == "klif":
        return {"k": torch.tensor(1.4, dtype=D)}
    if code == "glif":  # glif.LIFSpike_CW at index 1 of nn.Sequential(unsqueeze, LIFSpike_CW, squeeze)
        gates = {"alpha": 0.6, "beta": 0.8, "gamma": 0.6}
        out = {f"1.{n}": _logit(0.5 + (v - 0.5) / 2) + _g(c, scale=0.3) for n, v in gates.items()}
        for n, v in {"tau": 0.25, "Vth": 0.5, "leak": 0.0625, "reVth": 0.5}.items():
            out[f"1.{n}"] = _logit(v) + _g(c, scale=0.4)
        out["1.conduct"] = _g(T, c, scale=0.5)
        return out
    return {}  # lif, lifnr: no parameters


def seq_neuron(code: str, sd: dict, x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """The script's neuron ``code`` on ``x: [T, N, C(, H)]``, from its equations."""
    T = x.shape[0]
    if code in ("if5", "if5pmd8"):
        w = sd["fc.weight"]
        if code == "if5pmd8":
            w = w * (lam * sd["fc.mask0"] + (1.0 - lam) * sd["fc.mask1"])
        return _fire(torch.addmm(sd["fc.bias"].unsqueeze(1), w, x.flatten(1))).view(x.shape)
    if code == "mspsn":
        k, taps = sd["weight"].shape[0], sd["weight"]
        w = torch.zeros(T, T, dtype=x.dtype)
        for i in range(T):
            start = max(0, i + 1 - k)
            w[i, start : i + 1] = taps[k - (i + 1 - start) :]
        return _fire(torch.addmm(sd["threshold"], w, x.flatten(1)).view(x.shape))
    if code == "glif":
        p = {n: sd[f"1.{n}"].sigmoid().view(-1, *([1] * (x.dim() - 3))) for n in
             ("alpha", "beta", "gamma", "tau", "Vth", "leak", "reVth")}  # fmt: skip
        al, be, ga = ((p[n] > 0.5).to(x.dtype) for n in ("alpha", "beta", "gamma"))  # the code's hard gates
        u = torch.zeros_like(x[0])
        o = torch.zeros_like(x[0])
        out = []
        for t in range(T):
            g = sd["1.conduct"][t].sigmoid().view(-1, *([1] * (x.dim() - 3)))
            current = x[t] * (1 - be * (1 - g))
            u = ((1 - al * (1 - p["tau"])) * u * (1 - ga * o) - (1 - al) * p["leak"]) + current \
                - (1 - ga) * p["reVth"] * o  # fmt: skip
            o = (u - p["Vth"] > 0).to(x.dtype)
            out.append(o)
        return torch.stack(out)
    v = torch.zeros_like(x[0])
    out = []
    for t in range(T):
        if code == "lifnr":  # LIFNR: h = (1 − 1/τ)·h + x/τ, τ = 2, no reset
            v = 0.5 * v + 0.5 * x[t]
            out.append(_fire(v - 1.0))
            continue
        h = v + (x[t] - v) * (sd["w"].sigmoid() if code == "plif" else 0.5)  # SJ's LIF/PLIF/KLIF charge, τ = 2
        if code == "klif":
            h = torch.relu(sd["k"] * h)
        s = _fire(h - 1.0)
        v = h - s  # soft reset (v_reset=None), threshold 1
        out.append(s)
    return torch.stack(out)


def seq_state(code: str, *, T: int, channels: int = 6, length: int = 8, classes: int = 10, P: int = 3) -> dict:
    """train_secf10.py's CIFAR10Net state dict (channels, image height ``length``) with neuron ``code``."""
    sd: dict[str, torch.Tensor] = {}
    cin, i = 3, 0
    for _stage in range(2):
        for _ in range(3):
            sd[f"conv.{i}.weight"] = _g(channels, cin, 3, scale=1.2 / math.sqrt(cin * 3))
            sd |= _bn_state(f"conv.{i + 1}.", channels)
            sd |= {f"conv.{i + 2}.{k}": v for k, v in seq_neuron_state(code, T, channels, P).items()}
            cin, i = channels, i + 3
        i += 1  # AvgPool1d
    flat, hidden = channels * length // 4, channels * 2
    sd |= {"fc.1.weight": _g(hidden, flat, scale=3 / math.sqrt(flat)), "fc.1.bias": 0.5 + _g(hidden, scale=0.2)}
    sd |= {f"fc.2.{k}": v for k, v in seq_neuron_state(code, T, hidden, P).items()}
    sd |= {"fc.3.weight": _g(classes, hidden, scale=0.3), "fc.3.bias": _g(classes, scale=0.1)}
    return sd


def seq_reference(sd: dict, code: str, img: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """CIFAR10Net.forward: ``[N, C, H, W] -> [W, N, C, H]`` (columns as steps), then the mean over steps."""
    x = img.permute(3, 0, 1, 2)
    i = 0
    for _stage in range(2):
        for _ in range(3):
            T, N = x.shape[:2]
            y = F.conv1d(x.flatten(0, 1), sd[f"conv.{i}.weight"], padding=1)
            y = _bn(y, sd, f"conv.{i + 1}.").view(T, N, *y.shape[1:])
            own = {k[len(f"conv.{i + 2}.") :]: v for k, v in sd.items() if k.startswith(f"conv.{i + 2}.")}
            x, i = seq_neuron(code, own, y, lam), i + 3
        x = F.avg_pool1d(x.flatten(0, 1), 2).view(*x.shape[:3], -1)
        i += 1
    h = F.linear(x.flatten(2), sd["fc.1.weight"], sd["fc.1.bias"])
    own = {k[len("fc.2.") :]: v for k, v in sd.items() if k.startswith("fc.2.")}
    return F.linear(seq_neuron(code, own, h, lam), sd["fc.3.weight"], sd["fc.3.bias"]).mean(0)


SEQ_CODES = ["if5", "if5pmd8", "mspsn", "lif", "plif", "klif", "glif", "lifnr"]
SEQ_NAMES = {"if5": "psn", "if5pmd8": "masked_psn", "mspsn": "sliding_psn", "lif": "lif", "plif": "plif",
             "klif": "klif", "glif": "glif", "lifnr": "lif_noreset"}  # fmt: skip


@pytest.mark.parametrize("code", SEQ_CODES)
def test_sequential_cifar_every_neuron_of_the_script(tmp_path, code):
    torch.manual_seed(SEQ_CODES.index(code))
    T = 6
    saved, sd = _saved(seq_state(code, T=T, classes=100 if code == "plif" else 10))
    run = tmp_path / f"{code}_e256_b128_sgd_lr0.1_c6_amp{'_P3' if code in ('if5pmd8', 'mspsn') else ''}"
    run.mkdir()
    path = run / "checkpoint_max.pth"
    scheduler = {"T_max": 256, "last_epoch": 241}
    torch.save({"net": saved, "optimizer": {}, "lr_scheduler": scheduler, "epoch": 240, "max_test_acc": 0.88}, path)
    loaded = read_paper_checkpoint(path)
    ours = loaded.model.double().eval()
    assert type(ours).__name__ == "SequentialCNN" and ours.neuron_spec["name"] == SEQ_NAMES[code]
    assert loaded.layout.neuron_code == code and loaded.layout.script == "sequential_cifar/train_secf10.py"
    if code in ("if5pmd8", "mspsn"):
        assert ours.neuron_spec["k"] == 3
    img = torch.randn(3, 3, 8, T, dtype=D) * 2  # [N, C, H, W]: W = T columns
    expected = seq_reference(sd, code, img)
    with torch.no_grad():
        got = ours(img.permute(0, 3, 1, 2))  # batch-first [N, W, C, H]
        torch.testing.assert_close(got, expected, **TOL)
        torch.testing.assert_close(ours(img.permute(3, 0, 1, 2), time_first=True), expected, **TOL)
    assert (expected[0] - expected[1:]).abs().max() > 1e-2  # spikes reach the logits: the samples differ


def test_lif_and_lifnr_share_their_keys_so_the_choice_is_named(tmp_path):
    saved, sd = _saved(seq_state("lif", T=4))
    path = tmp_path / "checkpoint_max.pth"
    torch.save({"net": saved, "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"'lif' .* or 'lifnr' .* neuron='lif' or neuron='lifnr'"):
        load_paper_checkpoint(path)
    img = torch.randn(2, 3, 8, 4, dtype=D) * 2
    for code in ("lif", "lifnr"):
        ours = load_paper_checkpoint(path, neuron=code).double().eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(img.permute(0, 3, 1, 2)), seq_reference(sd, code, img), **TOL)
    with pytest.raises(ValueError, match="contradicts the checkpoint's keys"):
        load_paper_checkpoint(path, neuron="if5")
    torch.save({"net": saved, "args": argparse.Namespace(neu="lifnr", epochs=256)}, path)  # saved args decide
    assert read_paper_checkpoint(path).layout.neuron_code == "lifnr"


# ------------------------------------------------------------------ the masked PSN's λ
def test_masked_psn_lambda_from_the_saved_epoch_and_the_schedule(tmp_path):
    torch.manual_seed(1)
    saved, sd = _saved(seq_state("if5pmd8", T=6, P=2))
    path = tmp_path / "checkpoint_latest.pth"
    torch.save({"net": saved, "lr_scheduler": {"T_max": 256}, "epoch": 16}, path)
    loaded = read_paper_checkpoint(path)
    lam = 16 / 255 * 8  # the issue's example: 0.502 at epoch 16 of 256
    assert loaded.lambda_ == lam and abs(lam - 0.502) < 1e-3 and "T_max" in loaded.lambda_source
    ours = loaded.model.double().eval()
    assert float(ours.conv[2].lambda_) == pytest.approx(lam, rel=1e-7)
    img = torch.randn(3, 3, 8, 6, dtype=D) * 2
    lam32 = float(torch.tensor(lam, dtype=torch.float32))  # the authors' float32 runs multiply by λ in float32
    with torch.no_grad():
        got = ours(img.permute(0, 3, 1, 2))
        torch.testing.assert_close(got, seq_reference(sd, "if5pmd8", img, lam32), **TOL)
        assert (got - seq_reference(sd, "if5pmd8", img, 1.0)).abs().max() > 1e-3  # λ = 1 would be wrong here
    assert loaded.provenance()["lambda_"] == lam

    args = argparse.Namespace(epochs=64)  # args, when saved, win over the scheduler
    assert masked_psn_lambda({"epoch": 3, "args": args, "lr_scheduler": {"T_max": 256}})[0] == 3 / 63 * 8
    run = tmp_path / "if5pmd8_e128_b128_sgd_lr0.1_c128_amp_P2"
    assert masked_psn_lambda({"epoch": 5}, run / "checkpoint_max.pth") == (5 / 127 * 8, pytest.approx(
        "min(epoch / (epochs - 1) * 8, 1) with epoch 5 (saved) and epochs 128 (the run folder name)"))
    with pytest.warns(UserWarning, match="default -epochs 64"):
        assert masked_psn_lambda({"epoch": 3})[0] == 3 / 63 * 8
    with pytest.warns(UserWarning, match="no saved 'epoch': assuming λ = 1"):
        assert masked_psn_lambda({}) == (1.0, "assumed 1 (no saved epoch)")
    assert masked_psn_lambda({"epoch": 40, "lr_scheduler": {"T_max": 256}})[0] == 1.0
    assert read_paper_checkpoint(path, lambda_=0.25).lambda_ == 0.25


# ------------------------------------------------------------------ KLIF and GLIF
def test_klif_equations_and_spikingjelly_parity():
    torch.manual_seed(0)
    x = torch.randn(7, 3, 4, dtype=D) * 2
    for v_reset, scale_reset in ((None, False), (None, True), (0.0, False), (-0.2, True)):
        ours = make_neuron({"name": "klif", "v_reset": v_reset, "scale_reset": scale_reset}).double()
        with torch.no_grad():
            ours.k.fill_(1.6)
        theirs = sjn.KLIFNode(scale_reset=scale_reset, v_reset=v_reset, surrogate_function=sjs.ATan(),
                              step_mode="m").double()  # fmt: skip
        theirs.load_state_dict(ours.state_dict())
        xo, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
        got, expected = ours(xo), theirs(xs)
        assert torch.equal(got, expected) and 0 < got.mean() < 1
        got.square().sum().backward()
        expected.square().sum().backward()
        torch.testing.assert_close(xo.grad, xs.grad, **TOL)
        torch.testing.assert_close(ours.k.grad, theirs.k.grad, **TOL)
    # the equations by hand: soft reset, τ = 2, k = 1.6
    ours = make_neuron({"name": "klif", "v_reset": None}).double()
    with torch.no_grad():
        ours.k.fill_(1.6)
    v, spikes = torch.zeros(3, 4, dtype=D), []
    for t in range(7):
        f = torch.relu(1.6 * (v + (x[t] - v) / 2))
        spikes.append((f >= 1).to(D))
        v = f - spikes[-1]
    assert torch.equal(ours(x), torch.stack(spikes))
    ours.reset()
    ours.step_mode = "s"
    assert torch.equal(torch.stack([ours(x[t]) for t in range(7)]), torch.stack(spikes))


def test_glif_equations_and_spikingjelly_parity():
    torch.manual_seed(0)
    T, C = 6, 5
    x = torch.randn(T, 2, C, 3, 3, dtype=D) * 1.5
    state = {k[2:]: v for k, v in _saved(seq_neuron_state("glif", T, C))[1].items()}
    paper_names = {"Vth": "v_threshold", "leak": "linear_decay", "reVth": "v_subreset"}
    ours = make_neuron("glif").double()
    ours.load_state_dict({paper_names.get(k, k): v for k, v in state.items()})
    assert ours.alpha.shape == (C,) and ours.conduct.shape == (T, C) and ours.spec()["T"] == T
    expected = seq_neuron("glif", {f"1.{k}": v for k, v in state.items()}, x)
    assert torch.equal(ours(x), expected) and 0 < expected.mean() < 1
    ours.step_mode = "s"
    assert torch.equal(torch.stack([ours(x[t]) for t in range(T)]), expected)
    ours.reset()
    with pytest.raises(RuntimeError, match="covers only T steps"):
        for t in range(T + 1):
            ours(x[t % T])
    # soft gates = SpikingJelly's GatedLIFNode (its surrogate: the rectangle), forward and backward
    soft = make_neuron({"name": "glif", "gate_mode": "soft"}).double()
    soft.load_state_dict(ours.state_dict())
    theirs = sjn.GatedLIFNode(T=T, inplane=C, surrogate_function=sjs.Rect()).double()
    theirs.load_state_dict(soft.state_dict())
    xo, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = soft(xo), theirs(xs)
    torch.testing.assert_close(got, want, **TOL)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(xo.grad, xs.grad, **TOL)
    torch.testing.assert_close(soft.tau.grad, theirs.tau.grad, **TOL)
    # fresh: the code's initial values, sized from the first input
    fresh = make_neuron("glif")
    fresh(torch.zeros(4, 2, 3))
    assert fresh.T == 4 and torch.allclose(fresh.tau.sigmoid(), torch.full((3,), 0.25))
    assert torch.allclose(fresh.linear_decay.sigmoid(), torch.full((3,), 0.0625))
    assert torch.allclose(fresh.beta.sigmoid(), torch.full((3,), 0.65)) and fresh.conduct.shape == (4, 3)


def test_glif_hard_gates_pass_the_gradient_straight_through():
    torch.manual_seed(2)
    glif = make_neuron({"name": "glif", "T": 3, "channels": 2}).double()
    x = torch.randn(3, 4, 2, dtype=D)
    glif(x).sum().backward()
    assert glif.alpha.grad is not None and glif.alpha.grad.abs().sum() > 0  # the 0/1 gate still learns


# ------------------------------------------------------------------ CIFAR10-DVS VGGSNN (TEBN + LIF)
def vggsnn_state(T: int, classes: int = 10) -> dict:
    sd: dict[str, torch.Tensor] = {}
    widths = [(2, 64), (64, 128), "P", (128, 256), (256, 256), "P", (256, 512), (512, 512), "P", (512, 512),
              (512, 512), "P"]  # fmt: skip
    i = 0
    for w in widths:
        if w != "P":
            cin, cout = w
            sd[f"features.{i}.fwd.module.weight"] = _g(cout, cin, 3, 3, scale=2.5 / math.sqrt(cin * 9))
            sd[f"features.{i}.fwd.module.bias"] = _g(cout, scale=0.1)
            sd |= _bn_state(f"features.{i}.bn.bn.module.", cout)
            sd[f"features.{i}.bn.p"] = 1 + _g(T, 1, 1, 1, 1, scale=0.2)
            i += 1  # LIFSpike
        i += 1
    sd |= {"classifier.1.module.weight": _g(classes, 512, scale=0.2), "classifier.1.module.bias": _g(classes)}
    return sd


def vggsnn_reference(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """VGGSNN.forward on batch-first ``[N, T, 2, H, W]`` -> ``[N, T, classes]`` (TEBN code's LIFSpike, τ = 0.25)."""
    i = 0
    while f"features.{i}.fwd.module.weight" in sd or f"features.{i + 1}.fwd.module.weight" in sd:
        if f"features.{i}.fwd.module.weight" not in sd:  # the pool
            x = F.avg_pool2d(x.flatten(0, 1), 2).view(*x.shape[:3], x.shape[3] // 2, x.shape[4] // 2)
            i += 1
            continue
        N, T = x.shape[:2]
        y = F.conv2d(x.flatten(0, 1), sd[f"features.{i}.fwd.module.weight"], sd[f"features.{i}.fwd.module.bias"],
                     padding=1)  # fmt: skip
        y = _bn(y, sd, f"features.{i}.bn.bn.module.").view(N, T, *y.shape[1:])
        y = (y.transpose(0, 1) * sd[f"features.{i}.bn.p"]).transpose(0, 1)
        mem, spikes = 0.0, []
        for t in range(T):
            mem = 0.25 * mem + y[:, t]
            spike = (mem - 1.0 > 0).to(y.dtype)
            mem = mem * (1 - spike)
            spikes.append(spike)
        x, i = torch.stack(spikes, dim=1), i + 2
    x = F.avg_pool2d(x.flatten(0, 1), 2).view(*x.shape[:3], x.shape[3] // 2, x.shape[4] // 2)
    return F.linear(x.flatten(2), sd["classifier.1.module.weight"], sd["classifier.1.module.bias"])


def test_cifar10dvs_vggsnn_baseline(tmp_path):
    torch.manual_seed(0)
    T = 3
    saved, sd = _saved(vggsnn_state(T))
    path = tmp_path / "checkpoint_max.pth"
    torch.save({"model": saved, "optimizer": {}, "scheduler": {}, "epoch": 150, "best_acc": 80.1}, path)
    loaded = read_paper_checkpoint(path)
    ours = loaded.model.double().eval()
    assert loaded.layout.network == "VGGSNN" and ours.T == T and ours.neuron_spec["name"] == "lif"
    x = torch.rand(2, T, 2, 16, 16, dtype=D) * 4  # batch-first event frames, as the script feeds them
    expected = vggsnn_reference(sd, x)
    assert (expected[0] - expected[1]).abs().max() > 1e-2
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_steps(x), expected.transpose(0, 1), **TOL)


# ------------------------------------------------------------------ ImageNet: depths 50, 101, 152
@pytest.mark.parametrize("depth", [50, 101, 152])
def test_imagenet_bottleneck_depths_are_recognised_and_loaded(tmp_path, depth):
    """The key structure of train.py's sew_resnet{50,101,152} (PSN at sn*.fc.*, pe) maps onto paper_sew_resnet*.

    (The logits of the bottleneck networks against an independent SEW-ResNet are checked at depth 50 in
    tests/test_models_compat.py; the deeper ones repeat the same block.)"""
    torch.manual_seed(depth)
    ours_init = create_model(f"paper_sew_resnet{depth}", neuron="psn", T=2, num_classes=7)
    theirs: dict[str, torch.Tensor] = {}
    for key, value in ours_init.state_dict().items():
        stem, _, leaf = key.rpartition(".")
        if stem.split(".")[-1].startswith(("sn", "downsample_sn")) and leaf in ("weight", "bias"):
            key = f"{stem}.fc.{leaf}"  # IFNode5 keeps its weights in an nn.Linear
        theirs[key] = torch.randn_like(value.float()).to(value.dtype) if value.is_floating_point() else value
    path = tmp_path / f"checkpoint_{depth}.pth"
    args = argparse.Namespace(model=f"sew_resnet{depth}", T=2, epochs=320)
    torch.save({"model": theirs, "args": args, "epoch": 64, "max_test_acc1": 1.0}, path)
    loaded = read_paper_checkpoint(path)
    assert loaded.layout.architecture == f"paper_sew_resnet{depth}" and loaded.model.T == 2
    state = loaded.model.state_dict()
    assert torch.equal(state["layer3.0.sn3.weight"], theirs["layer3.0.sn3.fc.weight"])
    assert torch.equal(state["pe"], theirs["pe"]) and len(state) == len(theirs)
    for key, value in theirs.items():  # every tensor lands, unchanged, where the same network keeps it
        parts = key.split(".")
        neuron_fc = len(parts) >= 3 and parts[-2] == "fc" and parts[-3].startswith(("sn", "downsample_sn"))
        assert torch.equal(state[".".join(parts[:-2] + parts[-1:]) if neuron_fc else key], value), key
    if depth == 50:
        torch.save({"model": theirs, "args": argparse.Namespace(model="sew_resnet34")}, path)
        with pytest.raises(ValueError, match="args say --model sew_resnet34 but its keys are those of sew_resnet50"):
            load_paper_checkpoint(path)


# ------------------------------------------------------------------ errors and import-paper
def test_unrecognised_layouts_and_non_dicts_get_clear_errors(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, bad)
    with pytest.raises(ValueError, match=r"(?s)found 1 tensors under the top-level names \['encoder'\].*"
                                         r"sequential_cifar .*3-D conv.0.weight.*VGGSNN.*bn.p.*imagenet"):  # fmt: skip
        load_paper_checkpoint(bad)
    for payload, kind in (([torch.zeros(2)], "list"), (torch.zeros(3), "Tensor")):
        path = tmp_path / f"{kind}.pth"
        torch.save(payload, path)
        with pytest.raises(ValueError, match=f"holds a {kind}, not a dict"):
            load_paper_checkpoint(path)
    path = tmp_path / "nested.pth"
    torch.save({"net": [torch.zeros(1)]}, path)
    with pytest.raises(ValueError, match=r"no state dict under 'net' or 'model'.*'net' holds list"):
        load_paper_checkpoint(path)
    wide = seq_state("if5", T=4)
    wide["conv.2.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"neuron at 'conv.2' has keys \['extra', 'fc.bias', 'fc.weight'\]"):
        paper_layout(wide)


@pytest.mark.parametrize("code", ["klif", "glif", "if5pmd8"])
def test_import_paper_records_script_and_neuron(tmp_path, code):
    torch.manual_seed(3)
    sd = seq_state(code, T=5, classes=100)
    path = tmp_path / "checkpoint_max.pth"
    torch.save({"net": _saved(sd)[0], "lr_scheduler": {"T_max": 256}, "epoch": 200}, path)
    info = import_paper_checkpoint(path, f"{code}-test", tmp_path / "zoo")
    assert info.name == f"paper_seq_cnn.{code}-test" and info.neuron["name"] == SEQ_NAMES[code]
    assert info.dataset["name"] == "sequential CIFAR-100" and info.input.kind == "sequence"
    produced = info.dataset["produced_by"]
    assert produced["script"] == "sequential_cifar/train_secf10.py" and produced["neuron"] == code
    if code == "if5pmd8":
        assert produced["lambda_"] == info.neuron["lambda_"] == 1.0 and "T_max" in produced["lambda_source"]
    assert produced["network"] == "CIFAR10Net" and produced["epoch"] == 200
    rebuilt = create_model(info.name, manifest=tmp_path / "zoo" / "manifest.json")
    img = torch.randn(2, 3, 8, 5)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(img.permute(0, 3, 1, 2)),
                                   load_paper_checkpoint(path).eval()(img.permute(0, 3, 1, 2)))  # fmt: skip


def test_psn_zoo_import_paper_takes_the_neuron_and_lambda_the_file_cannot_say(tmp_path):
    """A lif/lifnr file outside its run folder: the CLI's --neuron names it; a bad code is refused clearly."""
    import subprocess
    import sys

    saved, _ = _saved(seq_state("lif", T=4))
    path = tmp_path / "checkpoint_max.pth"
    torch.save({"net": saved, "epoch": 3}, path)

    def cli(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "psn_zoo.cli", "import-paper", str(path), "--out",
                               str(tmp_path / "zoo"), *extra], capture_output=True, text=True, timeout=300,
                              check=False)  # fmt: skip

    refused = cli("--tag", "nr")
    assert refused.returncode != 0 and "lifnr" in refused.stderr and "Traceback" not in refused.stderr
    done = cli("--tag", "nr", "--neuron", "lifnr")
    assert done.returncode == 0, done.stderr[-2000:]
    entry = json.loads((tmp_path / "zoo" / "manifest.json").read_text())["entries"][0]
    assert entry["neuron"]["name"] == "lif_noreset" and entry["dataset"]["produced_by"]["neuron"] == "lifnr"
