"""Neurons at their edges, found by a red-team review: each test failed on the code before its fix.

- neurons sized on first use (PMSN, channel-wise sliding PSN, GLIF) whose first input ran under inference mode;
- a surrogate whose forward is not Θ, on the fused paths of the PSN family and the serial neurons;
- half-precision streaming of the sliding and masked PSN against their multi-step mode;
- argument checks: strict booleans, finite surrogate widths, ParaLIF's learnable decays, the surrogate's spelling in
  ``NeuronSpec.differences``;
- a NaN membrane of the serial neurons (SpikingJelly keeps it NaN; the hard reset used to clear it);
- ``step_mode`` in a model's neuron spec, and a surrogate that is neither a name nor a spec.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from test_frontier_neurons import SmoothSpike

from psn_zoo.models import create_model
from psn_zoo.neurons import NeuronSpec, compat, make_neuron, neuron_factory, plain_ops, reset_states

LAZY = [{"name": "pmsn"}, {"name": "channel_sliding_psn", "k": 2}, {"name": "glif"}]


@pytest.mark.parametrize("spec", LAZY, ids=lambda s: s["name"])
def test_a_neuron_sized_under_inference_mode_still_trains(spec):
    """``Trainer.validate`` before ``fit`` runs the first batch under ``torch.inference_mode``: the parameters made
    then must be ordinary ones (PMSN's backward failed on inference tensors; GLIF's got no gradient at all)."""
    neuron = make_neuron(spec)
    with torch.inference_mode():
        neuron(torch.randn(4, 2, 3, 5))
    assert not any(p.is_inference() for p in neuron.parameters())
    reset_states(neuron)
    before = {name: p.detach().clone() for name, p in neuron.named_parameters()}
    optimiser = torch.optim.SGD(neuron.parameters(), lr=0.5)
    neuron(torch.randn(4, 2, 3, 5, requires_grad=True) * 3).sum().backward()
    assert all(p.grad is not None for p in neuron.parameters())
    optimiser.step()
    assert any(not torch.equal(before[name], p) for name, p in neuron.named_parameters())


@pytest.mark.parametrize("spec", LAZY, ids=lambda s: s["name"])
def test_a_lazy_neuron_refuses_what_cannot_size_it(spec):
    """An integer first input gets the dtype error (not the mixin's "not fully initialized"); a 0-channel one is
    refused instead of sizing the neuron to 0 channels for good, and a real input afterwards still works."""
    neuron = make_neuron(spec)
    with pytest.raises(TypeError, match="floating-point input"):
        neuron(torch.ones(4, 2, 3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="0 channels"):
        neuron(torch.randn(4, 2, 0, 5))
    assert neuron(torch.randn(4, 2, 3, 5)).shape == (4, 2, 3, 5)
    assert neuron.channels == 3


FUSED = [
    {"name": "psn", "T": 4},
    {"name": "masked_psn", "T": 4, "k": 2, "lambda_": 1.0},
    {"name": "masked_psn", "T": 4, "k": 2, "lambda_": 0.5},
    {"name": "sliding_psn", "k": 2},
    {"name": "if"},
    {"name": "lif"},
    {"name": "lif", "v_reset": None},
    {"name": "plif"},
]


@pytest.mark.parametrize("spec", FUSED, ids=lambda s: "-".join(map(str, s.values())))
def test_a_surrogate_with_its_own_forward_is_honoured_on_every_path(spec):
    """The fused kernels threshold in the surrogate's place; a subclass that overrides ``forward`` runs the plain
    ops instead (``Surrogate.fires_heaviside``), so its values come out — the same as under ``plain_ops()``."""
    torch.manual_seed(0)
    neuron = make_neuron({**spec, "surrogate": SmoothSpike()})
    x = torch.randn(4, 2, 300)  # 600 columns: the C kernel's size
    with torch.no_grad():
        fused = neuron(x)
        reset_states(neuron)
        with plain_ops():
            plain = neuron(x)
    assert not bool(((fused == 0) | (fused == 1)).all()), "the smooth forward was replaced by a step"
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("spec", [{"name": "sliding_psn", "k": 3}, {"name": "masked_psn", "T": 8, "k": 3,
                                                                    "lambda_": 1.0}], ids=lambda s: s["name"])
def test_half_precision_streaming_equals_multi_step(spec, dtype):
    """Streaming accumulates a half-precision input in fp32 with the fp32 taps, as the multi-step kernels do (it
    used to accumulate in the input's dtype: 61 of 153 600 bf16 spikes differed)."""
    torch.manual_seed(3)
    neuron = make_neuron(spec)
    with torch.no_grad():
        for p in neuron.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = (torch.randn(8, 4, 4000) * 2).to(dtype)
    with torch.no_grad():
        multi = neuron(x)
        reset_states(neuron)
        neuron.step_mode = "s"
        stream = torch.stack([neuron(x_t) for x_t in x])
    assert stream.dtype == dtype
    assert torch.equal(stream, multi)


@pytest.mark.parametrize(("name", "arg"), [
    ("lif", "decay_input"), ("lif", "detach_reset"), ("plif", "decay_input"), ("klif", "scale_reset"),
    ("sliding_psn", "exp_init"), ("fpt_lif", "detach_reset"), ("paralif", "learn_tau"),
    ("channel_sliding_psn", "mul_free"), ("channel_sliding_psn", "exp_init"),
])  # fmt: skip
@pytest.mark.parametrize("value", ["false", 0, None])
def test_true_false_arguments_are_strict(name, arg, value):
    """``bool("false")`` is True: a string (a command line's ``'{"decay_input": "false"}'``) or a number is refused,
    naming the argument, instead of silently turning the option on."""
    extra = {"k": 2} if name in ("sliding_psn", "channel_sliding_psn") else {}
    with pytest.raises(ValueError, match=f"{arg} must be true or false"):
        make_neuron({"name": name, **extra, arg: value})
    assert getattr(make_neuron({"name": name, **extra, arg: False}), arg) is False


def test_numeric_arguments_without_a_finite_meaning_are_refused():
    with pytest.raises(ValueError, match="alpha must be a finite positive number"):
        make_neuron({"name": "lif", "surrogate": {"name": "atan", "alpha": float("inf")}})
    for arg, value in (("tau_mem", 1e17), ("tau_syn", 1e-3), ("tau_mem", 1e-3)):
        with pytest.raises(ValueError, match=f"learn_tau, {arg}=.*no finite logit"):
            make_neuron({"name": "paralif", "learn_tau": True, arg: value})
    assert make_neuron({"name": "paralif", "learn_tau": True, "tau_mem": 1e6}).w_mem.isfinite()


def test_a_spelled_out_default_surrogate_builds_the_same_neuron():
    """``"atan"``, ``{"name": "atan"}`` and ``{"name": "atan", "alpha": 2.0}`` build the same neuron, so
    ``differences`` is empty (a checkpoint request spelling the default out was refused)."""
    assert NeuronSpec.parse("lif").differences(make_neuron("lif").spec()) == []
    spelled = {"name": "psn", "T": 4, "surrogate": {"name": "atan", "alpha": 2.0}}
    assert NeuronSpec.parse({"name": "psn", "T": 4}).differences(spelled) == []
    assert NeuronSpec.parse({"name": "psn", "surrogate": {"name": "atan"}}).differences({"name": "psn"}) == []
    other = NeuronSpec.parse("lif").differences({"name": "lif", "surrogate": {"name": "atan", "alpha": 3.0}})
    assert len(other) == 1 and other[0].startswith("surrogate=")


@pytest.mark.parametrize("triton", ["0", "1"])
@pytest.mark.parametrize("spec", [{"name": "if"}, {"name": "lif"}, {"name": "plif"},
                                  {"name": "lif", "v_reset": None}], ids=lambda s: "-".join(map(str, s.values())))
def test_a_nan_membrane_stays_nan_as_in_spikingjelly(spec, triton, monkeypatch):
    """A NaN input current: SpikingJelly's membrane stays NaN and never fires again; the hard reset used to clear
    it to ``v_reset`` (then an IF neuron fired on). Spikes equal SpikingJelly's on the PyTorch path and in the
    Triton kernels (interpreted here). ``-inf`` and finite neighbours keep their parity too."""
    monkeypatch.setenv("PSN_ZOO_TRITON", triton)
    x = torch.full((6, 1, 4), 1.5)  # a membrane reset to v_reset fires again within two steps
    x[0, 0, 0] = float("nan")
    x[2, 0, 1] = float("nan")
    x[0, 0, 2] = -float("inf")
    neuron = make_neuron(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            ours = neuron(x)
    theirs = compat.to_spikingjelly(neuron)
    with torch.no_grad():
        expected = theirs(x)
    assert torch.equal(ours, expected)
    assert not ours[1:, 0, 0].any() and not ours[3:, 0, 1].any()


def test_fpt_lif_counts_the_macs_its_docs_state():
    """docs/neurons.md: ``T`` for the first iteration and ``T − 1`` for each further one per sample (each a decay
    filter run as a recurrence); at ``K >= T`` the serial LIF's ``T`` (the same spikes)."""
    assert make_neuron({"name": "fpt_lif", "K": 3}).macs_per_neuron(8) == (8 + 2 * 7, 0.0)
    assert make_neuron({"name": "fpt_lif", "K": 1}).macs_per_neuron(8) == (8.0, 0.0)  # the reset-free LIF's
    assert make_neuron({"name": "fpt_lif", "K": 8}).macs_per_neuron(8) == (8.0, 0.0)


@pytest.mark.parametrize("spec", [{"name": "lif", "step_mode": "s"}, {"name": "sliding_psn", "k": 4, "step_mode": "s"},
                                  {"name": "lif", "step_mode": "m"}], ids=lambda s: "-".join(map(str, s.values())))
def test_a_model_s_neuron_spec_refuses_step_mode_with_the_way_to_stream(spec):
    """``{"name": "lif", "step_mode": "s"}`` built a model in multi-step mode whose neurons each read the whole
    ``[T, B, ...]`` input as one step: no temporal dynamics, in silence (``--model.neuron_kwargs`` trained it). A
    model's neurons follow the model's mode; a neuron built on its own still takes ``step_mode``."""
    with pytest.raises(ValueError, match=rf"sets step_mode='{spec['step_mode']}', but a model's neurons run in the "
                       r"model's mode .*drop step_mode from the spec .*model\.set_step_mode\('s'\)"):  # fmt: skip
        create_model("paper_seq_cnn", neuron=spec, T=8, num_classes=5, in_channels=1, channels=4, length=8)
    with pytest.raises(ValueError, match="sets step_mode"):
        neuron_factory(spec, T=8)
    assert make_neuron(spec).step_mode == spec["step_mode"]


@pytest.mark.parametrize("surrogate", [3, None, ["atan"], {"name": 3}])
def test_a_surrogate_that_is_neither_a_name_nor_a_spec_is_a_value_error(surrogate):
    """``--model.neuron_kwargs '{"surrogate": 3}'`` was a TypeError (a traceback on the command line), not the
    one-line error of every other bad value."""
    with pytest.raises(ValueError, match=r"surrogate (must be a name|spec \{'name': 3\}: 'name' must be one of) "
                       r"\(?atan, rect, sigmoid, triangle"):  # fmt: skip
        make_neuron({"name": "lif", "surrogate": surrogate})
