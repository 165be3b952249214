"""Weights meeting another model than their own: what a checkpoint records (a published entry's metadata, a Lightning
checkpoint's hyperparameters) is checked where the tensors' shapes cannot tell (a LIF's weights do not show T, the
neuron or tau), on every path that loads weights: ``create_model``, fine-tuning (``SpikingClassifier(pretrained=)``)
and ``load_backbone_weights``. Arguments that loaded weights replace (initial values, the surrogate) stay free."""

from __future__ import annotations

import pytest
import torch

from psn_zoo.hub import get_pretrained_info
from psn_zoo.models import create_model, load_backbone_weights, read_weights
from psn_zoo.models.convert import from_spikingjelly, to_spikingjelly
from psn_zoo.neurons import NeuronSpec
from psn_zoo.training import SpikingClassifier

LIF = "paper_seq_cnn.seqdigits_lif_t28"
MASKED = "paper_seq_cnn.seqdigits_masked_psn_t28"


def classifier(entry: str, **overrides):
    """A SpikingClassifier fine-tuning ``entry``, built as the entry's model unless ``overrides`` say otherwise."""
    info = get_pretrained_info(entry)
    neuron = dict(info.neuron)
    kwargs = {"model": info.architecture, "neuron": neuron.pop("name"), "neuron_kwargs": neuron, "T": info.T,
              "num_classes": info.num_classes, "in_channels": info.in_channels,
              "model_kwargs": dict(info.model_kwargs), "log_input_samples": 0}  # fmt: skip
    return SpikingClassifier(**{**kwargs, **overrides}, pretrained=entry)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"T": 20}, "T=28 (this model: T=20)"),
        ({"neuron": "if", "neuron_kwargs": {"v_reset": None, "detach_reset": True}}, "neuron='lif' (this model: 'if')"),
        ({"neuron_kwargs": {"tau": 9.0, "v_reset": None, "detach_reset": True}}, "tau=2.0 (this model: 9.0)"),
        ({"neuron_kwargs": {"tau": 2.0}}, "v_reset=None (this model: 0.0)"),
    ],
)
def test_fine_tuning_refuses_weights_of_another_T_or_neuron(overrides, message):
    with pytest.raises(ValueError, match="belong to another model") as err:
        classifier(LIF, **overrides)
    text = str(err.value)
    assert message in text and "--model.neuron lif" in text and "read_weights(path)" in text, text


def test_a_lightning_checkpoint_s_hyperparameters_are_checked_too(tmp_path):
    info = get_pretrained_info(LIF)
    model = create_model(LIF)
    path = tmp_path / "run.ckpt"
    hparams = {"model": info.architecture, "model_kwargs": dict(info.model_kwargs), "T": info.T, "neuron": "lif",
               "neuron_kwargs": {k: v for k, v in info.neuron.items() if k != "name"}}  # fmt: skip
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "hyper_parameters": hparams},
               path)  # fmt: skip
    build = {"T": info.T, "num_classes": 10, "in_channels": 1, **info.model_kwargs}
    same = create_model(info.architecture, pretrained=str(path), neuron=info.neuron, **build)
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), model.state_dict().values(), strict=True))
    for neuron in ("if", {**info.neuron, "tau": 5.0}):
        with pytest.raises(ValueError, match="belong to another model"):
            create_model(info.architecture, pretrained=str(path), neuron=neuron, **build)
    with pytest.raises(ValueError, match=r"architecture paper_seq_cnn \(this model: sew_resnet18\)"):
        create_model("sew_resnet18", pretrained=str(path), neuron=info.neuron, T=28)
    other = create_model(info.architecture, neuron="if", **build)  # the way round the check, on purpose
    assert load_backbone_weights(other, read_weights(str(path))) == []


def test_what_weights_replace_may_differ_when_fine_tuning():
    """The masked PSN's λ comes with the weights, and the surrogate only shapes training."""
    module = classifier(MASKED, neuron_kwargs={"k": 28}, T=28)  # λ left at its default 0
    masked = [m for m in module.model.modules() if type(m).__name__ == "MaskedPSN"]
    assert masked and all(float(m.lambda_) == 1.0 for m in masked)
    classifier(LIF, neuron_kwargs={**{k: v for k, v in get_pretrained_info(LIF).neuron.items() if k != "name"},
                                   "surrogate": "sigmoid"})  # fmt: skip


def test_neuron_spec_differences_fill_in_defaults():
    lif = NeuronSpec.parse({"name": "lif", "tau": 2.0})
    assert lif.differences("lif") == [] and lif.differences({"name": "lif", "v_threshold": 1.0}) == []
    assert lif.differences({"name": "lif", "tau": 3.0}) == ["tau=3.0 (here: 2.0)"]
    assert lif.differences("if") == ["neuron='if' (here: 'lif')"]
    assert lif.differences({"name": "lif", "surrogate": "sigmoid"}, pinned_only=True) == []
    assert NeuronSpec.parse({"name": "masked_psn", "k": 4}).differences(
        {"name": "masked_psn", "k": 4, "lambda_": 1.0}, pinned_only=True) == []  # fmt: skip


def test_create_model_accepts_neuron_defaults_and_builds_other_settings_without_weights():
    model = create_model(LIF, v_threshold=1.0, neuron={"name": "lif", "tau": 2.0, "v_threshold": 1.0})
    assert model.pretrained_cfg.name == LIF
    with pytest.raises(ValueError, match=r"v_threshold=2.0 \(checkpoint's neuron: 1.0\)"):
        create_model(LIF, v_threshold=2.0)
    with pytest.raises(ValueError, match=r"taus=2.0 \(not an argument of paper_seq_cnn or of its 'lif' neuron"):
        create_model(LIF, taus=2.0)
    fresh = create_model(LIF, pretrained=False, T=8, tau=3.0)
    assert fresh.T == 8 and fresh.neuron_spec["tau"] == 3.0 and fresh.pretrained_cfg is None


@pytest.mark.parametrize(
    "arch, kwargs, x",
    [
        ("paper_seq_cnn", {"T": 28, "in_channels": 1, "channels": 8, "length": 28, "fc_hidden": 16}, (2, 28, 1, 28)),
        ("sew_resnet18", {"T": 2}, (1, 3, 32, 32)),
        ("spiking_vgg11_bn", {"T": 2}, (1, 3, 32, 32)),
        ("paper_cifar10dvs_vgg", {"T": 2, "input_size": 16, "width_mult": 0.0625}, (1, 2, 2, 16, 16)),
        ("paper_cifar10_csnn", {"T": 2, "channels": 8, "fc_hidden": 16}, (1, 3, 32, 32)),
    ],
)
def test_num_classes_zero_builds_a_feature_extractor(arch, kwargs, x):
    model = create_model(arch, num_classes=0, neuron="lif", **kwargs)
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    assert model(torch.rand(x)).shape == (x[0], model.num_features)


def test_a_features_only_state_dict_loads_with_or_without_a_classifier(tmp_path):
    kwargs = {"T": 28, "in_channels": 1, "channels": 8, "length": 28, "fc_hidden": 16, "neuron": "lif"}
    features = create_model("paper_seq_cnn", num_classes=0, **kwargs)
    path = tmp_path / "features.pt"
    torch.save(features.state_dict(), path)
    again = create_model("paper_seq_cnn", pretrained=str(path), num_classes=0, **kwargs)
    assert again.reinitialized == ()
    headed = create_model("paper_seq_cnn", pretrained=str(path), num_classes=5, **kwargs)
    assert headed.reinitialized == ("fc.3.bias", "fc.3.weight")
    full = create_model("paper_seq_cnn", num_classes=10, **kwargs)
    assert load_backbone_weights(features, full.state_dict()) == []  # a classifier the model has none for


def test_export_to_spikingjelly_refuses_to_drop_learned_neuron_parameters():
    model = create_model("paper_seq_cnn.seqdigits_permuted_pmsn_t28")
    with pytest.raises(ValueError, match=r"SpikingJelly 2\.0\.0 has no .pmsn. neuron, so its learned parameters"):
        to_spikingjelly(model.state_dict(), model)
    lif = create_model(LIF)  # parameter-free neurons have nothing to drop
    back = from_spikingjelly(to_spikingjelly(lif.state_dict(), lif), lif)
    assert back.keys() == lif.state_dict().keys()


def test_metadata_whose_input_shape_contradicts_its_T_is_refused():
    from psn_zoo.hub import ManifestError
    from psn_zoo.hub.metadata import CheckpointInfo

    raw = get_pretrained_info(LIF).to_dict()
    raw["input"] = {**raw["input"], "shape": [5, *raw["input"]["shape"][1:]]}
    with pytest.raises(ManifestError, match=r"has 5 time steps but T is 28"):
        CheckpointInfo.from_dict(raw)
