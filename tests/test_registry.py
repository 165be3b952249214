"""The neuron registry: names, specs as plain data, and clear errors for bad choices."""

from __future__ import annotations

import pytest
import torch

from psn_zoo.neurons import (
    PSN,
    LIFNode,
    MaskedPSN,
    NeuronSpec,
    SlidingPSN,
    list_neurons,
    list_surrogates,
    make_neuron,
    make_surrogate,
    neuron_factory,
    neuron_info,
)


def test_list_neurons_and_patterns():
    names = list_neurons()
    assert names == sorted(names)
    assert {"psn", "masked_psn", "sliding_psn", "if", "lif", "plif", "lif_noreset"} <= set(names)
    assert list_neurons("*psn") == ["channel_sliding_psn", "masked_psn", "psn", "sliding_psn"]
    assert list_neurons("nothing*") == []


def test_make_neuron_from_string_and_mapping():
    psn = make_neuron("psn", T=4)
    assert isinstance(psn, PSN) and psn.T == 4
    lif = make_neuron({"name": "lif", "tau": 3.0, "surrogate": {"name": "sigmoid", "alpha": 5.0}})
    assert isinstance(lif, LIFNode) and lif.tau == 3.0
    assert lif.surrogate.spec() == {"name": "sigmoid", "alpha": 5.0}
    assert isinstance(make_neuron("Sliding-PSN", k=3), SlidingPSN)  # case and dash insensitive
    assert isinstance(make_neuron("if5pmd8", T=4, k=2), MaskedPSN)  # the paper's code names are aliases


def test_spec_round_trips_through_plain_data():
    for spec in [
        {"name": "psn", "T": 8},
        {"name": "masked_psn", "T": 8, "k": 3, "lambda_": 0.5},
        {"name": "sliding_psn", "k": 2, "exp_init": False},
        {"name": "lif", "tau": 2.5, "v_reset": None, "detach_reset": True},
        {"name": "plif", "init_tau": 3.0},
        {"name": "if", "surrogate": "sigmoid"},
        {"name": "lif_noreset", "tau": 4.0},
    ]:
        neuron = make_neuron(spec)
        rebuilt = make_neuron(neuron.spec())
        assert rebuilt.spec() == neuron.spec()
        assert type(rebuilt) is type(neuron)
    assert NeuronSpec.parse("lifnr").to_dict() == {"name": "lif_noreset"}


def test_unknown_name_lists_choices_and_suggests():
    with pytest.raises(ValueError) as err:
        make_neuron("spn", T=4)
    message = str(err.value)
    assert "unknown neuron 'spn'" in message
    assert "'psn'" in message.split("Valid choices")[0]  # the suggestion
    for name in list_neurons():
        assert name in message


def test_bad_kwargs_list_the_accepted_ones():
    with pytest.raises(ValueError, match=r"'lif' got unexpected argument\(s\) \['T'\]; it accepts: tau, decay_input"):
        make_neuron("lif", T=4)
    with pytest.raises(ValueError, match="has no 'name'"):
        make_neuron({"tau": 2.0})
    with pytest.raises(TypeError, match="a neuron spec is a name or a mapping"):
        make_neuron(3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "psn", "T": 0}, "T must be a positive integer"),
        ({"name": "psn", "T": 2.5}, "T must be a positive integer"),
        ({"name": "masked_psn", "T": 4, "k": 5}, "order k=5 cannot exceed T=4"),
        ({"name": "masked_psn", "T": 4, "k": 2, "lambda_": 1.5}, r"lambda_ must be in \[0, 1\]"),
        ({"name": "lif", "tau": 0.5}, "tau must be > 1"),
        ({"name": "lif", "v_threshold": "high"}, "v_threshold must be a finite number"),
        ({"name": "lif", "surrogate": "relu"}, "unknown surrogate function 'relu'"),
        ({"name": "lif", "surrogate": {"name": "atan", "alpha": -1}}, "alpha must be a finite positive number"),
        ({"name": "lif", "step_mode": "x"}, "step_mode must be 'm'"),
    ],
)
def test_bad_values_fail_clearly(spec, message):
    with pytest.raises((ValueError, KeyError), match=message):
        make_neuron(spec)


def test_surrogates_registry():
    assert list_surrogates() == ["atan", "rect", "sigmoid", "triangle"]  # rect: GLIF, triangle: the TEBN LIF
    assert make_surrogate("atan").alpha == 2.0
    assert make_surrogate("sigmoid").alpha == 4.0
    with pytest.raises(ValueError, match="takes only 'alpha'"):
        make_surrogate({"name": "atan", "beta": 1})


def test_neuron_factory_injects_T_only_where_needed():
    assert neuron_factory("psn", T=4)().T == 4
    assert isinstance(neuron_factory("lif", T=4)(), LIFNode)  # T is not a LIF argument: ignored
    assert neuron_factory({"name": "sliding_psn", "k": 3}, T=16)().k == 3
    with pytest.raises(ValueError, match="fixes T=8 but the model runs T=4"):
        neuron_factory({"name": "psn", "T": 8}, T=4)
    with pytest.raises(ValueError, match="needs the number of time steps"):
        neuron_factory("psn")
    with pytest.raises(ValueError, match="unknown neuron"):
        neuron_factory("psm", T=4)
    a, b = neuron_factory("psn", T=4)(), neuron_factory("psn", T=4)()
    assert a is not b and not torch.equal(a.weight, b.weight)  # a fresh, freshly initialised layer per call


def test_neuron_info():
    info = neuron_info("psn")
    assert info["class"] == "PSN" and info["needs_T"] and not info["causal"] and info["aliases"] == ["if5"]
    assert "T" in info["kwargs"] and "step_mode" not in info["kwargs"]


@pytest.mark.parametrize(("spec", "missing"), [("sliding_psn", "'k'"), ("masked_psn", "'T', 'k'"), ("psn", "'T'")])
def test_a_neuron_built_without_a_required_argument_names_it(spec, missing):
    """``sliding_psn`` without ``k`` used to raise the constructor's bare TypeError."""
    from psn_zoo.neurons import make_neuron

    with pytest.raises(ValueError, match=rf"neuron '{spec}' needs argument\(s\) \[{missing}\].*--model.neuron_kwargs"):
        make_neuron(spec)


def test_a_model_supplies_T_but_not_the_order_k():
    from psn_zoo.models import create_model

    with pytest.raises(ValueError, match=r"'masked_psn' needs argument\(s\) \['k'\]"):
        create_model("paper_seq_cnn", neuron="masked_psn", T=28)


# ------------------------------------------------------------------ one home for a neuron type's identity
_ARGS = {"psn": {"T": 6}, "masked_psn": {"T": 6, "k": 2}, "sliding_psn": {"k": 2}, "channel_sliding_psn": {"k": 2}}


@pytest.mark.parametrize("name", list_neurons())
def test_the_class_is_the_one_home_of_a_neurons_identity(name):
    """Registry name, spec()'s name, the SpikingJelly mapping's kind, the CLI's flags and the MAC count all read the
    class: change the class attribute and every reader follows."""
    from psn_zoo.efficiency import neuron_macs_per_neuron
    from psn_zoo.neurons import NEURONS, compat

    cls = NEURONS.get(name).obj
    neuron = make_neuron(name, **_ARGS.get(name, {}))
    assert cls.name == name and type(neuron) is cls
    assert neuron.spec()["name"] == name == compat.neuron_kind(neuron)
    assert NeuronSpec.parse(name).neuron_class is cls
    info = neuron_info(name)
    assert (info["causal"], info["needs_T"], info["reset"]) == (cls.causal, cls.needs_T, cls.reset_kind)
    assert info["aliases"] == sorted(cls.aliases)
    assert all(NEURONS.get(alias).obj is cls for alias in cls.aliases)
    if hasattr(neuron, "initialize_parameters"):  # per-channel neurons size themselves from their first input
        neuron(torch.zeros(6, 2, 3))
    assert neuron_macs_per_neuron(neuron, 6) == neuron.macs_per_neuron(6)
    assert NEURONS.get(name).meta == {}  # the registry keeps no second copy of the facts


def test_a_class_attribute_is_what_the_readers_see(monkeypatch):
    from psn_zoo.neurons import compat

    monkeypatch.setattr(SlidingPSN, "causal", False)
    monkeypatch.setattr(SlidingPSN, "reset_kind", "exact")
    assert not NeuronSpec.parse("sliding_psn").causal
    assert neuron_info("sliding_psn")["reset"] == "exact" and not neuron_info("sliding_psn")["streamable"]
    with pytest.raises(ValueError, match="not causal"):
        make_neuron("sliding_psn", k=2, step_mode="s")
    assert compat.neuron_kind(make_neuron("sliding_psn", k=2)) == "sliding_psn"


def test_registering_a_neuron_needs_its_own_name_and_a_known_reset_kind():
    from psn_zoo.neurons.registry import register_neuron

    class Unnamed(LIFNode):
        pass

    with pytest.raises(TypeError, match="declares no registry name"):
        register_neuron(Unnamed)

    class OddReset(LIFNode):
        name = "odd_reset_test_only"
        reset_kind = "sometimes"

    with pytest.raises(ValueError, match="reset_kind"):
        register_neuron(OddReset)
    with pytest.raises(TypeError, match="SpikingNeuron"):
        register_neuron(torch.nn.ReLU)


def test_an_unregistered_subclass_is_not_mistaken_for_its_parent():
    from psn_zoo.neurons import compat

    class MyLIF(LIFNode):
        pass

    with pytest.raises(TypeError, match="not a registered psn_zoo neuron"):
        compat.neuron_kind(MyLIF())


def test_the_documented_own_neuron_registers_and_is_read_from_its_class():
    """docs/neurons.md "Your own neuron", run as written in a fresh process (registration is process-wide)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "neurons.md").read_text()
    block = re.search(r"## Your own neuron.*?```python\n(.*?)```", doc, re.S).group(1)
    check = """
import torch
from psn_zoo.neurons import make_neuron, neuron_info, compat
from psn_zoo.efficiency import neuron_macs_per_neuron
n = make_neuron("hrelu")
x = torch.tensor([[0.5, 1.5]]).repeat(3, 1)
assert n(x).tolist() == [[0.0, 1.0]] * 3 and n.spec()["name"] == "hard_relu" == compat.neuron_kind(n)
info = neuron_info("hard_relu")
assert info["causal"] and info["streamable"] and info["reset_free"] and info["aliases"] == ["hrelu"]
assert neuron_macs_per_neuron(n, 4) == (0.0, 4.0)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", block + check], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_builders_receive_one_parsed_neuron_spec(monkeypatch):
    """create_model parses the neuron once (name + the neuron's own keyword arguments) and hands the builder one
    NeuronSpec; the builder never sees loose neuron arguments."""
    import inspect

    from psn_zoo._registry import Entry
    from psn_zoo.models import create_model
    from psn_zoo.models.registry import MODELS

    entry, seen = MODELS.get("sew_resnet18"), {}

    def spy(**kwargs):
        seen.update(kwargs)
        return entry.obj(**kwargs)

    spy.__signature__ = inspect.signature(entry.obj)
    monkeypatch.setitem(MODELS._entries, "sew_resnet18", Entry(entry.name, spy, entry.meta))
    model = create_model("sew_resnet18", neuron="lif", tau=3.0, T=2, num_classes=3, in_channels=2)
    assert isinstance(seen["neuron"], NeuronSpec) and seen["neuron"].to_dict() == {"name": "lif", "tau": 3.0}
    assert "tau" not in seen and model.neuron_spec == {"name": "lif", "tau": 3.0}
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['taux'\]"):
        create_model("sew_resnet18", neuron="lif", taux=3.0)
