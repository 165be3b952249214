"""The timm-style entry points: ``create_model(name, pretrained=True | tag | path | "hf-hub:...", num_classes=...)``
with ``arch.tag`` names, ``list_models(pretrained=True)``, ``model.pretrained_cfg``, re-heading, freezing.
(The ``hf-hub:`` round trip against a local Hub is in test_hub.py.)"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

import psn_zoo
from psn_zoo.hub import CheckpointInfo, ChecksumError, default_pretrained, get_pretrained_info, list_pretrained
from psn_zoo.hub.metadata import write_manifest
from psn_zoo.hub.sources import bundled_dir
from psn_zoo.models import create_model, freeze_backbone, list_models, load_pretrained, unfreeze
from psn_zoo.models._builder import classifier_keys

SMALL = "paper_seq_cnn.seqdigits_psn_t28"  # the smallest shipped entry (0.5 MB)
EVENTS = "paper_cifar10dvs_vgg.ndigits_psn_t4"


def stored(name: str) -> dict[str, torch.Tensor]:
    info = get_pretrained_info(name)
    return {k: v.float() for k, v in load_file(str(bundled_dir() / info.weights.file)).items()}


def same_state(model: torch.nn.Module, state: dict[str, torch.Tensor], skip: set[str] = frozenset()) -> bool:
    own = model.state_dict()
    return set(own) - skip == set(state) - skip and all(torch.equal(own[k], state[k]) for k in own if k not in skip)


def sample(info: CheckpointInfo, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(batch, *info.input.shape) * 3


# ================================================================================================ names
@pytest.mark.parametrize("arch", sorted({get_pretrained_info(n).architecture for n in list_pretrained()}))
def test_pretrained_true_loads_the_architecture_s_best_entry(arch):
    entries = [get_pretrained_info(n) for n in list_pretrained(f"{arch}.*")]
    best = max(entries, key=lambda i: i.metrics["top1"])
    model = create_model(arch, pretrained=True)  # raised "argument of type 'bool' is not iterable"
    assert model.pretrained_cfg.metrics["top1"] == best.metrics["top1"]
    assert model.pretrained_cfg.name == default_pretrained(arch)
    assert same_state(model, stored(model.pretrained_cfg.name)) and not model.training


def test_the_default_entry_is_the_best_top1_then_the_first_name(tmp_path):
    base = get_pretrained_info(SMALL)

    def entry(tag: str, top1: float | None) -> CheckpointInfo:
        metrics = {**base.metrics, "top1": top1} if top1 is not None else {}
        return dataclasses.replace(base, name=f"paper_seq_cnn.{tag}", metrics=metrics)

    entries = {e.name: e for e in (entry("b", 0.9), entry("c", 0.9), entry("a", 0.8), entry("z", None))}
    write_manifest(tmp_path / "manifest.json", entries)
    assert default_pretrained("paper_seq_cnn", manifest=tmp_path / "manifest.json") == "paper_seq_cnn.b"
    del entries["paper_seq_cnn.b"], entries["paper_seq_cnn.c"], entries["paper_seq_cnn.a"]
    write_manifest(tmp_path / "manifest.json", entries)
    assert default_pretrained("paper_seq_cnn", manifest=tmp_path / "manifest.json") == "paper_seq_cnn.z"
    with pytest.raises(KeyError, match=r"no published checkpoint for 'sew_resnet50'.*hf-hub:org/repo"):
        default_pretrained("sew_resnet50")
    with pytest.raises(KeyError, match="no published checkpoint for 'sew_resnet50'"):
        create_model("sew_resnet50", pretrained=True)


def test_arch_tag_names_load_their_entry():
    info = get_pretrained_info(SMALL)
    reference = load_pretrained(SMALL)
    for model in (
        create_model(SMALL),
        create_model(SMALL, pretrained=True),
        create_model(info.architecture, pretrained=info.tag),
        create_model(info.architecture, pretrained=SMALL),
        psn_zoo.create_model(SMALL),
    ):
        assert model.pretrained_cfg == info and model.pretrained_info is model.pretrained_cfg
        assert isinstance(model.pretrained_cfg, CheckpointInfo) and model.reinitialized == ()
        assert same_state(model, reference.state_dict()) and not model.training
    untrained = create_model(SMALL, pretrained=False)  # the entry's architecture, T and neuron; fresh weights
    assert untrained.pretrained_cfg is None and untrained.training
    assert (untrained.T, untrained.neuron_spec["name"]) == (info.T, info.neuron["name"])
    assert not same_state(untrained, reference.state_dict())
    with pytest.raises(ValueError, match="already names its weights"):
        create_model(SMALL, pretrained="seqdigits_lif_t28")
    with pytest.raises(ValueError, match="of another architecture"):
        create_model("sew_resnet18", pretrained=SMALL)
    with pytest.raises(KeyError, match="Did you mean"):
        create_model(SMALL.replace("psn", "pns"))
    with pytest.raises(TypeError, match="pretrained must be True/False"):
        create_model("paper_seq_cnn", pretrained=3)


def test_list_models_with_pretrained_lists_entries():
    assert list_models(pretrained=True) == list_pretrained()
    assert list_models("*psn*", pretrained=True) == [n for n in list_pretrained() if "psn" in n]
    assert list_models(pretrained=True, paper=False) == [n for n in list_pretrained() if not n.startswith("paper_")]
    assert SMALL in psn_zoo.list_models("paper_seq_cnn.*", pretrained=True)
    assert "paper_seq_cnn" in list_models() and SMALL not in list_models()


# ============================================================================================ re-heading
def test_another_num_classes_reinitialises_only_the_classifier(caplog):
    info = get_pretrained_info(SMALL)
    weights = stored(SMALL)
    with caplog.at_level(logging.WARNING, logger="psn_zoo"):
        model = create_model(SMALL, num_classes=3)
    head = set(classifier_keys(model))
    assert head == {"fc.3.weight", "fc.3.bias"} and model.reinitialized == tuple(sorted(head))
    assert same_state(model, weights, skip=head)  # everything else is the checkpoint's
    assert model.get_classifier().weight.shape == (3, weights["fc.3.weight"].shape[1])
    assert model.num_classes == 3 and model.pretrained_cfg.num_classes == info.num_classes
    assert any("re-initialised for num_classes=3" in r.getMessage() and SMALL in r.getMessage() for r in caplog.records)
    with torch.no_grad():
        assert model(sample(info)).shape == (2, 3)
    for same in (create_model(SMALL, num_classes=info.num_classes), load_pretrained(SMALL, num_classes=10)):
        assert same.reinitialized == () and same_state(same, weights)
    assert load_pretrained(SMALL, num_classes=5).reinitialized == model.reinitialized
    assert create_model(info.architecture, pretrained=info.tag, num_classes=4).num_classes == 4
    features = create_model(SMALL, num_classes=0)  # no classifier: the pooled features
    assert isinstance(features.get_classifier(), torch.nn.Identity)
    with torch.no_grad():
        assert features(sample(info)).shape == (2, features.num_features)
    with pytest.raises(ValueError, match="does not match the request: T=8"):
        create_model(SMALL, num_classes=3, T=8)  # T, neuron and channels are still the checkpoint's


# ================================================================================================ paths
def test_pretrained_path_file_or_pushed_folder(tmp_path):
    info = get_pretrained_info(SMALL)
    build = info.build_kwargs()
    path = bundled_dir() / info.weights.file
    for given in (path, str(path)):
        model = create_model(info.architecture, pretrained=given, **build)
        assert same_state(model, stored(SMALL)) and model.pretrained_cfg is None and not model.training
    reheaded = create_model(info.architecture, pretrained=path, **{**build, "num_classes": 2})
    assert reheaded.reinitialized == ("fc.3.bias", "fc.3.weight")
    # a sha256-named file is verified against its name
    wrong = tmp_path / "mine-deadbeef.safetensors"
    shutil.copyfile(path, wrong)
    with pytest.raises(ChecksumError, match=r"named for sha256 deadbeef.*corrupt or was modified"):
        create_model(info.architecture, pretrained=wrong, **build)
    # a folder as psn-zoo push writes it: config.json + weights, both checked
    folder = tmp_path / "pushed"
    folder.mkdir()
    shutil.copyfile(path, folder / info.weights.file)
    (folder / "config.json").write_text(json.dumps(info.to_dict()))
    model = create_model(info.architecture, pretrained=folder)
    assert model.pretrained_cfg == info and same_state(model, stored(SMALL))
    data = bytearray((folder / info.weights.file).read_bytes())
    data[-1] ^= 1
    (folder / info.weights.file).write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"expected {info.weights.sha256}"):
        create_model(info.architecture, pretrained=folder)
    with pytest.raises(ValueError, match="holds a paper_seq_cnn checkpoint"):
        create_model("sew_resnet18", pretrained=folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"without config\.json"):
        create_model(info.architecture, pretrained=folder)


# ============================================================================================== surface
def test_an_event_frames_checkpoint_refuses_an_unbatched_sample():
    model = load_pretrained(EVENTS)
    one = sample(model.pretrained_cfg, batch=1)[0]  # [T, C, H, W]: one sample, or T static images?
    with pytest.raises(ValueError, match=r"trained on event frames.*x\.unsqueeze\(0\)"):
        model(one)
    with torch.no_grad():
        assert model(one.unsqueeze(0)).shape == (1, model.num_classes)


def test_freeze_backbone_trains_only_the_classifier_as_the_cli_flag_does():
    from psn_zoo.training import SpikingClassifier

    common = {"neuron": "psn", "T": 4, "num_classes": 3, "in_channels": 1}
    arch_kwargs = {"channels": 8, "length": 28, "fc_hidden": 16}
    model = create_model("paper_seq_cnn", **common, **arch_kwargs)
    frozen = freeze_backbone(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(classifier_keys(model)) and trainable
    assert set(frozen) == {n for n, _ in model.named_parameters()} - trainable and frozen
    flagged = SpikingClassifier(model="paper_seq_cnn", freeze_backbone=True, model_kwargs=arch_kwargs, **common)
    assert {n for n, p in flagged.model.named_parameters() if p.requires_grad} == trainable
    model(torch.rand(2, 4, 1, 28) * 3).sum().backward()
    assert all((p.grad is not None) == (n in trainable) for n, p in model.named_parameters())
    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
