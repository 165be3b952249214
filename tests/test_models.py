"""Backbones: the registry sweep (every model × every neuron), input layouts, the method surface, streaming."""

from __future__ import annotations

import pytest
import torch

from psn_zoo.models import create_model, list_models, model_info
from psn_zoo.neurons import list_neurons

NEURON_SPECS = {
    "psn": "psn",
    "masked_psn": {"name": "masked_psn", "k": 2, "lambda_": 0.5},
    "sliding_psn": {"name": "sliding_psn", "k": 2},
    "if": "if",
    "lif": "lif",
    "plif": "plif",
    "lif_noreset": "lif_noreset",
    "channel_sliding_psn": {"name": "channel_sliding_psn", "k": 2},
    "fpt_lif": {"name": "fpt_lif", "K": 2},
    "paralif": "paralif",
    "pmsn": "pmsn",
    "klif": "klif",
    "glif": "glif",
}
#: Deeper copies of another swept model's blocks (the same Bottleneck code as paper_sew_resnet50): swept with one
#: neuron of each kind (serial, parallel, per-channel) instead of every neuron, to keep CI within its budget.
DEEP_REPEATS = {"paper_sew_resnet101", "paper_sew_resnet152"}
DEEP_NEURONS = ("lif", "psn", "glif")


def tiny_input(name: str, T: int, batch: int = 2) -> torch.Tensor:
    """A small batch-first input in the model's layout."""
    info = model_info(name)
    if info["input"] == "sequence":
        return torch.rand(batch, T, 3, 32)
    channels = info["defaults"]["in_channels"]
    size = info["defaults"].get("input_size", 32)
    return torch.rand(batch, T, channels, size, size) * 2


def test_every_neuron_is_covered_by_the_sweep():
    assert set(NEURON_SPECS) == set(list_neurons())


def _sweep_kwargs(name: str) -> dict:
    # VGGs: the neuron sweep uses the compact head (the 120 M-parameter torchvision head changes no neuron
    # code path and costs seconds per build); test_vgg_default_heads covers that head once per model.
    return {"head": "compact"} if name.startswith("spiking_vgg") else {}


SWEEP = [(name, neuron) for name in list_models() for neuron in NEURON_SPECS
         if name not in DEEP_REPEATS or neuron in DEEP_NEURONS]  # fmt: skip


def test_the_sweep_leaves_out_only_deeper_repeats():
    assert set(list_models()) >= DEEP_REPEATS
    assert {name for name, _ in SWEEP} == set(list_models())
    assert {(name, neuron) for name in list_models() for neuron in NEURON_SPECS} - set(SWEEP) == {
        (name, neuron) for name in DEEP_REPEATS for neuron in NEURON_SPECS if neuron not in DEEP_NEURONS
    }


@pytest.mark.parametrize(("name", "neuron"), SWEEP)
def test_registry_sweep_forward_backward(name, neuron):
    T, classes = 2, 5
    model = create_model(name, neuron=NEURON_SPECS[neuron], T=T, num_classes=classes, **_sweep_kwargs(name))
    x = tiny_input(name, T)
    out = model(x)
    assert out.shape == (2, classes)
    steps = model.forward_steps(x)
    assert steps.shape == (T, 2, classes)
    steps.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads[-2:])  # the classifier learns


@pytest.mark.parametrize("name", list_models("spiking_vgg*"))
def test_vgg_default_heads(name):
    model = create_model(name, neuron="psn", T=2, num_classes=5)
    assert model.get_classifier().in_features == 4096
    out = model(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 5)
    out.sum().backward()
    assert model.classifier[0].weight.grad is not None


def test_list_models_patterns_and_info():
    names = list_models()
    for expected in [
        "spiking_resnet18", "spiking_resnet34", "spiking_resnet50",
        "sew_resnet18", "sew_resnet34", "sew_resnet50",
        "spiking_vgg11", "spiking_vgg11_bn", "spiking_vgg13", "spiking_vgg13_bn", "spiking_vgg16", "spiking_vgg16_bn",
        "paper_cifar10_csnn", "paper_cifar10dvs_vgg", "paper_seq_cnn", "paper_sew_resnet18", "paper_sew_resnet34",
    ]:  # fmt: skip
        assert expected in names
    assert list_models("sew*") == ["sew_resnet18", "sew_resnet34", "sew_resnet50"]
    assert set(list_models(paper=True)) == {n for n in names if n.startswith("paper_")}
    info = model_info("sew_resnet18")
    assert info["family"] == "sew_resnet" and info["spikingjelly"] == "sew_resnet18"
    assert info["defaults"]["cnf"] == "ADD" and info["defaults"]["neuron"] == "psn"


def test_unknown_model_and_arguments():
    with pytest.raises(ValueError, match=r"unknown model 'sew_resnet19'.*sew_resnet18"):
        create_model("sew_resnet19")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['depth'\].*takes neuron, T, num_classes"):
        create_model("sew_resnet18", depth=3)
    with pytest.raises(ValueError, match="unknown neuron 'lyf'"):
        create_model("sew_resnet18", neuron="lyf")
    with pytest.raises(ValueError, match="cnf must be one of"):
        create_model("sew_resnet18", cnf="OR")
    with pytest.raises(ValueError, match="T must be a positive integer"):
        create_model("sew_resnet18", T=0)
    model = create_model("spiking_resnet18", neuron="lif", tau=3.0, num_classes=3)
    assert model.layer1[0].sn1.tau == 3.0  # extra keyword arguments go to the neuron


def test_input_layouts_and_errors():
    model = create_model("sew_resnet18", neuron="psn", T=4, num_classes=3, in_channels=2).eval()
    image = torch.rand(2, 2, 32, 32)
    frames = image.unsqueeze(1).repeat(1, 4, 1, 1, 1)
    assert torch.equal(model(image), model(frames))  # a static image is repeated over T
    with pytest.raises(ValueError, match=r"built with in_channels=2 but the input has 3 channels"):
        model(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"built for T=4 but the input has 6 time steps.*\[B, T, \.\.\.\]"):
        model(torch.rand(2, 6, 2, 32, 32))
    with pytest.raises(ValueError, match=r"expects a static image \[B, C, H, W\] or event frames"):
        model(torch.rand(2, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(2, 2, 32, 32, dtype=torch.uint8))
    # a sliding-PSN model is not tied to one T
    flexible = create_model("sew_resnet18", neuron={"name": "sliding_psn", "k": 2}, T=4, num_classes=3)
    assert flexible(torch.rand(1, 7, 3, 32, 32)).shape == (1, 3)


def test_common_method_surface():
    model = create_model("spiking_vgg11_bn", neuron="psn", T=2, num_classes=7, head="compact")
    x = torch.rand(3, 3, 32, 32)
    features = model.forward_features(x)  # batch-first in, batch-first out
    assert features.shape == (3, 2, model.num_features) and model.num_features == 512
    assert model.forward_head(features).shape == (3, 7)
    assert model.forward_head(features, pre_logits=True).shape == (3, 512)  # averaged over time
    assert model.num_params == sum(p.numel() for p in model.parameters())
    model.reset_classifier(11)
    assert model(x).shape == (3, 11) and model.num_classes == 11
    model.reset_classifier(0)
    assert model(x).shape == (3, 512)
    for name in list_models():
        m = create_model(name, T=2, num_classes=4)
        assert isinstance(m.get_classifier(), torch.nn.Linear) and m.get_classifier().out_features == 4


# a membrane that carries state from one call to the next unless reset, and a threshold low enough that every layer
# fires at initialisation (with the default threshold the deep layers are silent and any output would match)
SURFACE_NEURON = {"name": "lif", "tau": 2.0, "v_threshold": 0.05}


@pytest.mark.parametrize("name", [n for n in list_models() if n not in DEEP_REPEATS])
def test_forward_features_and_head_are_batch_first_pure_and_compose_to_forward(name):
    T = 3
    model = create_model(name, neuron=SURFACE_NEURON, T=T, num_classes=4, **_sweep_kwargs(name)).eval()
    x = tiny_input(name, T, batch=2) * 3
    with torch.no_grad():
        logits = model(x)
        assert not torch.equal(logits[0], logits[1]), "the network must respond to its input"
        features = model.forward_features(x)
        assert features.shape[:2] == (2, T) and features.dim() == 3
        assert torch.equal(model.forward_features(x), features)  # pure: no membrane kept between calls
        head = model.forward_head(features)
        assert torch.equal(model.forward_head(features), head)
        assert torch.equal(head, logits)  # forward == forward_head(forward_features(...)), bit for bit
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)  # classifier input
        # the explicit time-first variants give the same numbers
        x_seq = x.transpose(0, 1)
        assert torch.equal(model(x_seq, time_first=True), logits)
        assert torch.equal(model.forward_features(x_seq, time_first=True), features.transpose(0, 1))
        assert torch.equal(model.forward_head(features.transpose(0, 1), time_first=True), head)
    assert all(getattr(n, "v", None) is None for n in model.neuron_layers())


def test_layout_is_never_guessed_when_batch_equals_t():
    T = 4
    model = create_model("sew_resnet18", neuron=SURFACE_NEURON, T=T, num_classes=3, in_channels=2).eval()
    x = torch.rand(T, T, 2, 32, 32) * 3  # B == T: the shape cannot tell the layouts apart
    with torch.no_grad():
        batch_first = model(x)
        time_first = model(x, time_first=True)
        assert torch.equal(batch_first, model(x.transpose(0, 1).contiguous(), time_first=True))
        assert torch.equal(time_first, model(x.transpose(0, 1).contiguous()))
    assert not torch.equal(batch_first, time_first)  # read as the argument says, not guessed
    model = create_model("sew_resnet18", neuron="psn", T=T, num_classes=3, in_channels=2)  # tied to T = 4
    with pytest.raises(ValueError, match=r"time_first=True expects \[T, B, C, H, W\]"):
        model(torch.rand(2, 2, 32, 32), time_first=True)
    with pytest.raises(ValueError, match=r"built for T=4 but the input has 6 time steps on dim 0.*time_first=True"):
        model(torch.rand(6, 2, 2, 32, 32), time_first=True)
    features = model.forward_features(torch.rand(2, T, 2, 32, 32))
    with pytest.raises(ValueError, match=r"built for T=4 but the input has 2 time steps on dim 1"):
        model.forward_head(features.transpose(0, 1))  # [T, B, F] given where [B, T, F] is expected
    with pytest.raises(ValueError, match=r"forward_head expects features \[B, T, F\]"):
        model.forward_head(features[:, 0])


def test_streaming_mode_refuses_every_multi_step_pass():
    model = create_model("sew_resnet18", neuron="lif", T=2, num_classes=2)
    model.set_step_mode("s")
    x = torch.rand(1, 2, 3, 32, 32)
    for call in (model, model.forward_steps, model.forward_features):
        with pytest.raises(RuntimeError, match="streaming mode"):
            call(x)
    with pytest.raises(RuntimeError, match="streaming mode"):
        model.forward_head(torch.rand(1, 2, 512))


def test_states_are_reset_around_every_forward():
    model = create_model("sew_resnet18", neuron="lif", T=3, num_classes=2).eval()
    x = torch.rand(1, 3, 32, 32)
    first = model(x)
    assert all(n.v is None for n in model.neuron_layers())  # no membrane (and graph) kept after forward
    assert torch.equal(model(x), first)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("paper_cifar10_csnn", {"neuron": "psn", "T": 4}, 70_113_174),
        ("paper_cifar10dvs_vgg", {}, 9_271_522),
        ("paper_sew_resnet18", {"neuron": "psn", "T": 4}, 11_689_916),
        ("paper_sew_resnet34", {"neuron": "psn", "T": 4}, 21_798_396),
        ("paper_seq_cnn", {"neuron": "psn", "T": 32}, 520_810),
        ("paper_seq_cnn", {"neuron": {"name": "sliding_psn", "k": 32}, "T": 32}, 513_649),
        ("paper_seq_cnn", {"neuron": "lif_noreset", "T": 32}, 513_418),
        ("paper_seq_cnn", {"neuron": "psn", "T": 32, "num_classes": 100}, 543_940),
    ],
)
def test_parameter_counts_match_the_paper(name, kwargs, expected):
    """The counts of ../shared/notes/psn-paper.md §2, i.e. the same architectures."""
    assert create_model(name, **kwargs).num_params == expected


@pytest.mark.parametrize(
    ("name", "neuron", "kwargs"),
    [
        ("sew_resnet18", {"name": "sliding_psn", "k": 2}, {}),
        ("spiking_resnet18", "lif", {}),
        ("spiking_vgg11_bn", {"name": "masked_psn", "k": 2, "lambda_": 1.0}, {"head": "compact"}),
        ("paper_seq_cnn", {"name": "masked_psn", "k": 4, "lambda_": 1.0}, {}),
        ("paper_sew_resnet18", "plif", {}),
        ("paper_cifar10dvs_vgg", None, {}),
    ],
)
def test_streaming_equals_multi_step(name, neuron, kwargs):
    """A model of causal neurons run frame by frame gives the multi-step logits, step by step."""
    T = 5
    model = create_model(name, neuron=neuron, T=T, num_classes=4, **kwargs).eval()
    x = tiny_input(name, T)
    with torch.no_grad():
        expected = model.forward_steps(x)
        model.set_step_mode("s")
        streamed = torch.stack([model.step(x[:, t]) for t in range(T)])
    torch.testing.assert_close(streamed, expected, rtol=1e-5, atol=1e-5)
    model.set_step_mode("m")
    torch.testing.assert_close(model.forward_steps(x), expected, rtol=0, atol=0)


def test_dropout_mask_is_shared_over_time_and_kept_while_streaming():
    from psn_zoo.models.layers import Dropout

    drop = Dropout(0.5).train()
    x_seq = torch.ones(6, 3, 40)
    out = drop(x_seq)
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert all(torch.equal(out[t], out[0]) for t in range(6))  # one mask for every step of a sample
    assert not torch.equal(out[0, 0], out[0, 1])  # but its own mask per sample
    torch.manual_seed(3)
    multi = drop(x_seq)
    torch.manual_seed(3)
    streamed = torch.stack([drop(x_seq[t]) for t in range(6)])  # one draw, kept until reset
    assert torch.equal(streamed, multi)
    drop.reset()
    assert drop.mask is None
    assert torch.equal(drop.eval()(x_seq), x_seq)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


def test_reset_states_forgets_streaming_dropout_masks():
    model = create_model("spiking_vgg11_bn", neuron="lif", T=2, num_classes=3, head="compact")
    model.set_step_mode("s")
    model.step(torch.rand(2, 3, 32, 32))  # training mode: the head's dropout draws its stream mask
    dropout = model.classifier[0]
    assert dropout.mask is not None
    model.reset_states()
    assert dropout.mask is None
    # the model-free helper too: the dropout is a StatefulModule, like the neurons, in any container
    from psn_zoo.models.layers import Dropout
    from psn_zoo.neurons import StatefulModule, make_neuron, reset_states

    net = torch.nn.Sequential(make_neuron("lif", step_mode="s"), Dropout(0.5)).train()
    net(torch.rand(4, 8) * 3)
    assert isinstance(net[1], StatefulModule) and net[1].mask is not None and net[0].v is not None
    reset_states(net)
    assert net[1].mask is None and net[0].v is None


def test_streaming_needs_causal_neurons_and_mode():
    model = create_model("sew_resnet18", neuron="psn", T=2, num_classes=2)
    with pytest.raises(ValueError, match="PSN is not causal"):
        model.set_step_mode("s")
    lif = create_model("sew_resnet18", neuron="lif", T=2, num_classes=2)
    with pytest.raises(RuntimeError, match=r"call set_step_mode\('s'\)"):
        lif.step(torch.rand(1, 3, 32, 32))
    lif.set_step_mode("s")
    with pytest.raises(RuntimeError, match="streaming mode"):
        lif(torch.rand(1, 3, 32, 32))
