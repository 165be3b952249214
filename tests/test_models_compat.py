"""Model-level compatibility: SpikingJelly 2.0.0 models and the paper's checkpoint layouts load into ours."""

from __future__ import annotations

import argparse
import copy

import pytest
import torch
from spikingjelly.activation_based import functional as sjf
from spikingjelly.activation_based import layer as sjl
from spikingjelly.activation_based import neuron as sjn
from spikingjelly.activation_based import surrogate as sjs
from spikingjelly.activation_based.model import sew_resnet as sj_sew
from spikingjelly.activation_based.model import spiking_resnet as sj_resnet
from spikingjelly.activation_based.model import spiking_vgg as sj_vgg
from torch import nn

from psn_zoo.models import create_model
from psn_zoo.models.convert import from_spikingjelly, load_paper_checkpoint, to_spikingjelly

SJ_BUILDERS = {
    "spiking_resnet18": sj_resnet.spiking_resnet18,
    "spiking_resnet34": sj_resnet.spiking_resnet34,
    "spiking_resnet50": sj_resnet.spiking_resnet50,
    "sew_resnet18": sj_sew.sew_resnet18,
    "sew_resnet34": sj_sew.sew_resnet34,
    "sew_resnet50": sj_sew.sew_resnet50,
    "spiking_vgg11": sj_vgg.spiking_vgg11,
    "spiking_vgg11_bn": sj_vgg.spiking_vgg11_bn,
    "spiking_vgg13_bn": sj_vgg.spiking_vgg13_bn,
    "spiking_vgg16_bn": sj_vgg.spiking_vgg16_bn,
}

NEURONS = {
    "psn": ({"name": "psn"}, lambda T: {"spiking_neuron": sjn.PSN, "T": T, "surrogate_function": sjs.ATan()}),
    "lif": ({"name": "lif"}, lambda T: {"spiking_neuron": sjn.LIFNode, "surrogate_function": sjs.ATan()}),
    "sliding_psn": (
        {"name": "sliding_psn", "k": 2},
        lambda T: {"spiking_neuron": sjn.SlidingPSN, "k": 2, "surrogate_function": sjs.ATan()},
    ),
}


def _randomise_batch_norm(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode BN is really exercised."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.8, 1.5)
            m.bias.data.uniform_(-0.1, 0.3)


@pytest.mark.parametrize(
    ("name", "neuron", "cnf"),
    [
        ("spiking_resnet18", "psn", None),
        ("spiking_resnet18", "lif", None),
        ("sew_resnet18", "psn", "ADD"),
        ("sew_resnet18", "sliding_psn", "IAND"),
        ("sew_resnet18", "lif", "AND"),
        ("spiking_vgg11_bn", "psn", None),
        ("spiking_vgg11", "lif", None),
        ("spiking_resnet34", "psn", None),
        ("spiking_resnet50", "psn", None),
        ("sew_resnet34", "psn", "ADD"),
        ("sew_resnet50", "psn", "ADD"),
        ("spiking_vgg13_bn", "psn", None),
        ("spiking_vgg16_bn", "lif", None),
    ],
)
def test_spikingjelly_weights_give_identical_logits(name, neuron, cnf):
    T, classes = 2, 6
    torch.manual_seed(0)
    ours_spec, sj_kwargs = NEURONS[neuron]
    extra = {"cnf": cnf} if cnf else {}
    theirs = SJ_BUILDERS[name](num_classes=classes, **extra, **sj_kwargs(T))
    sjf.set_step_mode(theirs, "m")
    _randomise_batch_norm(theirs)
    theirs.eval()
    ours = create_model(name, neuron=ours_spec, T=T, num_classes=classes, **extra).eval()
    ours.load_state_dict(from_spikingjelly(theirs.state_dict(), ours))
    x_seq = torch.rand(T, 2, 3, 32, 32) * 3
    with torch.no_grad():
        expected = theirs(x_seq)
        sjf.reset_net(theirs)
        got = ours.forward_steps(x_seq, time_first=True)
    assert got.shape == expected.shape == (T, 2, classes)
    assert torch.equal(got, expected), (got - expected).abs().max()


def test_spiking_vgg_trains_like_spikingjelly_dropout_included():
    """In training mode (batch statistics, dropout) the same seed gives SJ's logits bit for bit: our dropout draws
    one mask per sample for all time steps, in SJ's order and arithmetic (``layer.Dropout``)."""
    T, classes = 3, 5
    torch.manual_seed(0)
    theirs = sj_vgg.spiking_vgg11_bn(num_classes=classes, **NEURONS["psn"][1](T))
    sjf.set_step_mode(theirs, "m")
    for m in theirs.classifier:  # wider than the N(0, 0.01) init, so the classifier's neurons fire
        if isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.05)
    ours = create_model("spiking_vgg11_bn", neuron="psn", T=T, num_classes=classes)
    ours.load_state_dict(from_spikingjelly(theirs.state_dict(), ours))
    x_seq = torch.rand(T, 2, 3, 32, 32) * 3
    torch.manual_seed(1)
    expected = theirs(x_seq)
    torch.manual_seed(1)
    got = ours.forward_steps(x_seq, time_first=True)
    assert expected.abs().sum() > 0, "no spike reached the logits: the test would compare zeros"
    assert torch.equal(got, expected), (got - expected).abs().max()
    torch.manual_seed(2)  # another draw of the masks changes the logits: dropout is really on
    assert not torch.equal(ours.forward_steps(x_seq, time_first=True), expected)


def test_state_dict_round_trip_to_spikingjelly():
    ours = create_model("sew_resnet18", neuron="psn", T=4, num_classes=3)
    theirs = sj_sew.sew_resnet18(num_classes=3, cnf="ADD", spiking_neuron=sjn.PSN, T=4)
    theirs.load_state_dict(to_spikingjelly(ours.state_dict(), ours))
    assert theirs.layer1[0].sn1.bias.shape == (4, 1)
    back = from_spikingjelly(theirs.state_dict(), ours)
    for key, value in ours.state_dict().items():
        assert torch.equal(back[key], value), key


# ------------------------------------------------------------------------------------------------------
# Replicas of the paper's networks, re-typed from ../shared/notes/psn-paper.md §2 and §5 with SpikingJelly
# layers (the paper repository is not installable). Their state dicts have the paper's exact key layout.
class IFNode5(nn.Module):
    """The paper's PSN: ``fc = nn.Linear(T, T)`` with bias −1, ``h = fc.bias + fc.weight @ x``."""

    def __init__(self, T: int, surrogate_function=None):
        super().__init__()
        self.fc = nn.Linear(T, T)
        nn.init.constant_(self.fc.bias, -1.0)
        self.surrogate_function = surrogate_function or sjs.ATan()

    def forward(self, x_seq):
        h = torch.addmm(self.fc.bias.unsqueeze(1), self.fc.weight, x_seq.flatten(1))
        return self.surrogate_function(h).view(x_seq.shape)


class PaperCIFAR10Net(nn.Module):
    """``cifar10/train_cf10.py`` CIFAR10Net (narrower here for speed)."""

    def __init__(self, channels=16, T=4, hidden=64):
        super().__init__()
        self.T = T
        conv = []
        for i in range(2):
            for j in range(3):
                conv += [
                    sjl.Conv2d(3 if i == j == 0 else channels, channels, 3, padding=1, bias=False),
                    sjl.BatchNorm2d(channels),
                    IFNode5(T),
                ]
            conv.append(sjl.AvgPool2d(2, 2))
        self.conv = nn.Sequential(*conv)
        self.fc = nn.Sequential(sjl.Flatten(), sjl.Linear(channels * 64, hidden), IFNode5(T), sjl.Linear(hidden, 10))
        sjf.set_step_mode(self, "m")

    def forward(self, x):
        x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        return self.fc(self.conv(x_seq)).mean(0)


class SeqToANNContainer(nn.Module):
    """The TEBN code's batch-first ``SeqToANNContainer``: ``[N, T, ...]`` through ANN layers."""

    def __init__(self, *layers):
        super().__init__()
        self.module = nn.Sequential(*layers)

    def forward(self, x):
        y = self.module(x.flatten(0, 1))
        return y.view(x.shape[0], x.shape[1], *y.shape[1:])


class Layer(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.fwd = SeqToANNContainer(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.fwd(x)


class BatchFirstSlidingPSN(nn.Module):
    """``cifar10dvs/models.py`` MaskedSlidingPSN: batch-first ``[N, T, *]``, ``weight [k]``, ``threshold []``."""

    def __init__(self, order=2):
        super().__init__()
        self.k = order
        self.weight = nn.Parameter(torch.tensor([0.5 ** (order - 1 - i) for i in range(order)]))
        self.threshold = nn.Parameter(torch.tensor(-1.0))
        self.surrogate_function = sjs.ATan()

    def forward(self, x):
        T = x.shape[1]
        w = torch.zeros(T, T, dtype=x.dtype)
        for i in range(T):
            start = max(0, i + 1 - self.k)
            w[i, start : i + 1] = self.weight[self.k - (i + 1 - start) :]
        h = torch.nn.functional.linear(x.transpose(1, -1), w).transpose(1, -1) + self.threshold
        return self.surrogate_function(h)


class PaperVGGPSN(nn.Module):
    def __init__(self):
        super().__init__()
        widths = [(2, 64), (64, 128), "P", (128, 256), (256, 256), "P", (256, 512), (512, 512), "P",
                  (512, 512), (512, 512), "P"]  # fmt: skip
        features = []
        for w in widths:
            features += [nn.AvgPool2d(2)] if w == "P" else [Layer(*w), BatchFirstSlidingPSN()]
        self.features = nn.Sequential(*[SeqToANNContainer(m) if isinstance(m, nn.AvgPool2d) else m for m in features])
        self.classifier = nn.Sequential(SeqToANNContainer(nn.Dropout(0.25), nn.Linear(4608, 10)))

    def forward(self, x):  # x: [N, T, 2, 48, 48]
        return self.classifier(self.features(x).flatten(2))  # [N, T, 10]


class PaperSEWResNet(sj_sew.SEWResNet):
    """``imagenet/sew_resnet.py``: SJ's SEW-ResNet with an average-pool stem and a temporal embedding ``pe``."""

    def __init__(self, layers, T=4, block=sj_sew.BasicBlock):
        super().__init__(block, layers, num_classes=10, cnf="ADD", spiking_neuron=IFNode5, T=T)
        self.T = T
        self.maxpool = sjl.AvgPool2d(3, 2, 1)
        self.pe = nn.Parameter(torch.zeros(T, 1, 1, 1, 1))
        nn.init.trunc_normal_(self.pe, std=0.02)
        sjf.set_step_mode(self, "m")

    def forward(self, x):
        x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1) + self.pe
        return self._forward_impl(x_seq)  # [T, N, classes]


def _perturb(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "fc.weight" in name and p.shape[0] == p.shape[1]:
                p.add_(torch.randn_like(p) * 0.3)  # neuron weights away from their init
    _randomise_batch_norm(model)
    return model.double().eval()


def test_paper_cifar10_checkpoint(tmp_path):
    paper = _perturb(PaperCIFAR10Net())
    path = tmp_path / "checkpoint_max.pth"
    torch.save({"net": paper.state_dict(), "optimizer": {}, "epoch": 899, "max_test_acc": 0.9532}, path)
    ours = load_paper_checkpoint(path).double().eval()
    assert type(ours).__name__ == "CifarCSNN" and ours.T == 4 and ours.num_classes == 10
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), paper(x), rtol=1e-12, atol=1e-12)


def test_paper_cifar10dvs_checkpoint(tmp_path):
    paper = _perturb(PaperVGGPSN())
    with torch.no_grad():
        for m in paper.modules():
            if isinstance(m, BatchFirstSlidingPSN):
                m.weight.add_(torch.randn(2, dtype=m.weight.dtype) * 0.2)
    path = tmp_path / "checkpoint_max.pth"
    torch.save({"model": paper.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 171, "best_acc": 82.3}, path)
    ours = load_paper_checkpoint(path).double().eval()
    assert ours.neuron_spec["name"] == "sliding_psn" and ours.in_channels == 2
    x = torch.rand(2, 4, 2, 48, 48, dtype=torch.float64) * 3
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_steps(x), paper(x).transpose(0, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("layers", "block"),
    [([2, 2, 2, 2], sj_sew.BasicBlock), ([3, 4, 6, 3], sj_sew.BasicBlock), ([3, 4, 6, 3], sj_sew.Bottleneck)],
    ids=["R18", "R34", "R50"],
)
def test_paper_imagenet_checkpoint_with_namespace(tmp_path, layers, block):
    paper = _perturb(PaperSEWResNet(layers, block=block))
    depth = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34 if block is sj_sew.BasicBlock else 50}[tuple(layers)]
    args = argparse.Namespace(model=f"sew_resnet{depth}", T=4, lr=0.1, cnf="ADD")  # what train.py saves
    path = tmp_path / "checkpoint_max_test_acc1.pth"
    torch.save({"model": paper.state_dict(), "args": args, "epoch": 277, "max_test_acc1": 67.63}, path)
    ours = load_paper_checkpoint(path).double().eval()
    assert type(ours).__name__ == "SpikingResNet" and ours.cnf == "ADD" and hasattr(ours, "pe")
    assert len(ours.layer3) == layers[2]
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_steps(x), paper(x), rtol=1e-12, atol=1e-12)


def test_paper_checkpoint_errors(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, bad)
    with pytest.raises(ValueError, match="unrecognised checkpoint layout"):
        load_paper_checkpoint(bad)

    class Payload:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))

    evil = tmp_path / "evil.pth"
    torch.save({"net": {}, "payload": Payload()}, evil)
    with pytest.raises(ValueError, match=r"is not a plain tensor file.*never does"):
        load_paper_checkpoint(evil)
    assert not (tmp_path / "PWNED").exists() and not __import__("pathlib").Path("PWNED").exists()


def test_converter_needs_matching_architecture():
    ours = create_model("sew_resnet18", neuron="psn", T=4, num_classes=3)
    theirs = sj_sew.sew_resnet18(num_classes=3, cnf="ADD", spiking_neuron=sjn.PSN, T=8)
    with pytest.raises(RuntimeError, match="size mismatch"):
        ours.load_state_dict(from_spikingjelly(theirs.state_dict(), ours))
    assert copy.deepcopy(ours).state_dict().keys() == ours.state_dict().keys()
