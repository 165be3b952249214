"""The model API's edges a demanding timm user reaches (found in review): a temporal embedding fixes T, a re-headed
model keeps its dtype, streamed frames are checked like batches, lazily sized neurons and complex-valued ones are
refused by export with the way out, an input of the wrong size names the size the classifier was built for, and
measuring or exporting a model leaves it in the mode it was in, and the paper's CNNs check their sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from psn_zoo.efficiency import measure_efficiency
from psn_zoo.models import create_model, freeze_backbone
from psn_zoo.models import layers as L
from psn_zoo.models.base import SpikingModel
from psn_zoo.models.export import export_onnx, export_program

CSNN = {"T": 2, "channels": 4, "fc_hidden": 8, "input_size": 16, "num_classes": 3}


def test_a_temporal_embedding_fixes_T_whatever_the_neuron():
    model = create_model("paper_sew_resnet18", neuron="lif", T=4, num_classes=3)
    for steps in (1, 2, 6):  # 1 step was broadcast to 4 in silence; 2 and 6 failed inside
        with pytest.raises(ValueError, match=f"was built for T=4 but the input has {steps} time steps"):
            model.forward_steps(torch.rand(1, steps, 3, 16, 16))
    assert model.forward_steps(torch.rand(1, 4, 3, 16, 16)).shape == (4, 1, 3)


def test_reset_classifier_validates_first_and_keeps_the_model_s_dtype():
    model = create_model("sew_resnet18", neuron="lif", T=2, num_classes=3).double()
    model.reset_classifier(7)
    assert model(torch.rand(1, 3, 16, 16, dtype=torch.float64)).shape == (1, 7)
    assert model.get_classifier().weight.dtype == torch.float64
    for bad in (-1, 2.5, True, "5"):
        with pytest.raises(ValueError, match="reset_classifier: num_classes must be an integer >= 0"):
            model.reset_classifier(bad)
        assert model.num_classes == 7 and model.get_classifier().out_features == 7
    model.reset_classifier(0)
    model.reset_classifier(5)  # from an Identity head: still the model's dtype
    assert model.get_classifier().weight.dtype == torch.float64


def test_a_streamed_frame_is_checked_like_a_batch():
    model = create_model("sew_resnet18", neuron="lif", T=2, num_classes=3)
    model.set_step_mode("s")
    with pytest.raises(TypeError, match=r"expects a floating-point tensor, got torch\.uint8; use x\.float\(\)"):
        model.step(torch.ones(1, 3, 16, 16, dtype=torch.uint8))


@pytest.mark.parametrize(
    "name, kwargs, x, message",
    [
        ("paper_cifar10dvs_vgg.ndigits_psn_t4", {}, (1, 4, 2, 48, 48),
         r"built with input_size=34 \(its classifier takes 32 to 47 per side\) but got 48×48"),
        ("paper_seq_cnn.seqdigits_psn_t28", {}, (2, 28, 1, 32),
         r"built with length=28 \(its classifier takes 28 to 31\) but got 32"),
        ("paper_cifar10_csnn", {**CSNN, "neuron": "lif"}, (1, 3, 24, 24),
         r"built with input_size=16 \(its classifier takes 16 to 19 per side\) but got 24×24"),
    ],
)  # fmt: skip
def test_an_input_of_another_size_names_the_size_the_classifier_was_built_for(name, kwargs, x, message):
    model = create_model(name, **kwargs)
    with pytest.raises(ValueError, match=message):
        model(torch.rand(x))


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [("paper_seq_cnn", {"channels": 0}, "SequentialCNN: channels must be a positive integer, got 0"),
     ("paper_seq_cnn", {"channels": "8"}, "SequentialCNN: channels must be a positive integer, got '8'"),
     ("paper_seq_cnn", {"fc_hidden": -1}, "SequentialCNN: fc_hidden must be a positive integer, got -1"),
     ("paper_seq_cnn", {"fc_hidden": 16.5}, "SequentialCNN: fc_hidden must be a positive integer, got 16.5"),
     ("paper_seq_cnn", {"length": 0}, "SequentialCNN: length must be a positive integer, got 0"),
     ("paper_cifar10_csnn", {"channels": 0}, "CifarCSNN: channels must be a positive integer, got 0"),
     ("paper_cifar10_csnn", {"fc_hidden": -3}, "CifarCSNN: fc_hidden must be a positive integer, got -3"),
     ("paper_cifar10_csnn", {"input_size": 0}, "CifarCSNN: input_size must be a positive integer, got 0")],
)  # fmt: skip
def test_the_paper_cnns_refuse_sizes_that_are_not_positive_integers(name, kwargs, message):
    """channels=0 and length/input_size=0 built a model that failed at its first batch (or never), fc_hidden=-1 failed
    inside nn.Linear and channels="8" inside nn.Conv1d with a TypeError."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        create_model(name, neuron="lif", T=4, **kwargs)


def test_lazily_sized_neurons_are_refused_by_freeze_and_export_with_the_way_out():
    model = create_model("paper_cifar10_csnn", neuron="pmsn", **CSNN)
    x = torch.rand(1, 3, 16, 16)
    calls = (("freeze it", lambda: freeze_backbone(model)), ("export it", lambda: export_program(model, x)))
    for action, call in calls:
        with pytest.raises(ValueError, match=f"parameters do not exist yet: before you {action}, run one batch"):
            call()
    model(x)
    assert freeze_backbone(model)  # sized by the batch: both work now
    export_program(model, x)


def test_onnx_export_refuses_complex_valued_neurons_by_name(tmp_path):
    model = create_model("paper_cifar10_csnn", neuron="pmsn", **CSNN)
    model(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"PMSN computes with complex numbers.*export_program"):
        export_onnx(model, torch.rand(1, 3, 16, 16), tmp_path / "pmsn.onnx")
    assert not (tmp_path / "pmsn.onnx").exists()


def test_export_and_measuring_leave_the_model_in_its_mode():
    model = create_model("paper_cifar10_csnn", neuron="lif", **CSNN).train()
    x = torch.rand(2, 2, 3, 16, 16)
    export_program(model, x)
    assert model.training
    measure_efficiency(model, [(x, None)])
    assert model.training


class _Tiny(SpikingModel):
    """1×1 conv of ones -> one neuron layer of 2×2×2 -> flatten -> head: counts by hand."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2d(self.in_channels, 2, 1, bias=False)
        self.sn = self.make_neuron()
        self.flat = L.FlattenFeatures()
        self.fc = self.new_classifier(8)
        nn.init.constant_(self.conv.weight, 1.0)

    def _features(self, x):
        return self.flat(self.sn(self.conv(x)))


def test_efficiency_counts_at_the_data_s_T():
    """A sliding PSN of k = 2 taps over 4 steps spends 2·4 − 1 MACs per neuron (one tap reaches before step 0)."""
    model = _Tiny(T=2, num_classes=3, in_channels=1, neuron={"name": "sliding_psn", "k": 2})
    x = torch.zeros(1, 4, 1, 2, 2)
    report = measure_efficiency(model, [(x, None)])
    assert report.T == 4 and report.neuron_macs == 8 * (2 * 4 - 1)
    with pytest.raises(ValueError, match="different numbers of time steps"):
        measure_efficiency(model, [(x, None), (torch.zeros(1, 3, 1, 2, 2), None)])
