"""Neuron parameter mapping to and from SpikingJelly 2.0.0 and the paper's code (fangwei123456/Parallel-Spiking-Neuron).

psn_zoo keys (shapes) -> SpikingJelly 2.0.0 keys -> paper-repo keys:

- ``psn``: ``weight [T,T]``, ``bias [T]`` -> ``neuron.PSN``: ``weight``, ``bias [T,1]``
  -> ``IFNode5``: ``fc.weight``, ``fc.bias [T]``;
- ``masked_psn``: ``weight``, ``bias [T]``, ``mask [T,T]``, ``lambda_ []`` -> ``neuron.MaskedPSN``: ``weight``,
  ``bias [T,1]``, ``mask0``, ``mask1`` (all ones), ``_lambda_`` -> ``IFNode5PorderMaskD``: ``fc.weight``,
  ``fc.bias``, ``fc.mask0``, ``fc.mask1``, λ not saved (1 for a final model);
- ``sliding_psn``: ``weight [k]``, ``bias []`` -> ``neuron.SlidingPSN``: same keys -> ``MaskedSlidingPSN``:
  ``weight``, ``threshold`` (same sign: an additive bias);
- ``plif``: ``w []`` -> ``neuron.ParametricLIFNode``: ``w`` -> the sequential-CIFAR script's ``plif``: ``w``;
- ``klif``: ``k []`` -> ``neuron.KLIFNode``: ``k`` -> the script's ``klif`` (SJ's ``KLIFNode``): ``k``;
- ``glif``: ``alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset [C]``, ``conduct [T, C]`` ->
  ``neuron.GatedLIFNode(inplane=C)``: same keys -> ``glif.LIFSpike_CW`` (wrapped at index 1 of an
  ``nn.Sequential``): ``1.alpha, 1.beta, 1.gamma, 1.tau, 1.Vth, 1.leak, 1.reVth, 1.conduct``;
- ``if``, ``lif``, ``lif_noreset``: no parameters.

Functions here work on one neuron's own keys (no prefix); model converters apply them per layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .lif import IFNode, LIFNode, ParametricLIFNode
from .psn import PSN, MaskedPSN, SlidingPSN
from .surrogate import ATan, Sigmoid, Surrogate, make_surrogate

StateDict = Mapping[str, torch.Tensor]

#: The GLIF code's parameter names (``glif.LIFSpike_CW``) -> psn_zoo's (= SpikingJelly's ``GatedLIFNode``).
GLIF_PAPER_NAMES = {"alpha": "alpha", "beta": "beta", "gamma": "gamma", "tau": "tau", "Vth": "v_threshold",
                    "leak": "linear_decay", "reVth": "v_subreset", "conduct": "conduct"}  # fmt: skip


def neuron_kind(neuron: nn.Module) -> str:
    """The registry name of a psn_zoo neuron instance (its class's ``name``)."""
    from .registry import NEURONS

    name = getattr(type(neuron), "name", None)
    if not isinstance(name, str) or name not in NEURONS or NEURONS.get(name).obj is not type(neuron):
        raise TypeError(f"{type(neuron).__name__} is not a registered psn_zoo neuron")
    return name


def _expect(sd: StateDict, keys: tuple[str, ...], source: str, kind: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise KeyError(f"{source} state for a {kind!r} neuron lacks {missing}; it has {sorted(sd)}")


# ------------------------------------------------------------------------------- SpikingJelly
def state_from_spikingjelly(kind: str, sd: StateDict) -> dict[str, torch.Tensor]:
    """SpikingJelly 2.0.0 neuron keys -> psn_zoo neuron keys for neuron ``kind``."""
    if kind == "psn":
        _expect(sd, ("weight", "bias"), "SpikingJelly", kind)
        return {"weight": sd["weight"], "bias": sd["bias"].reshape(-1)}
    if kind == "masked_psn":
        _expect(sd, ("weight", "bias", "mask0", "_lambda_"), "SpikingJelly", kind)
        return {
            "weight": sd["weight"],
            "bias": sd["bias"].reshape(-1),
            "mask": sd["mask0"],
            "lambda_": sd["_lambda_"],
        }
    if kind == "sliding_psn":
        _expect(sd, ("weight", "bias"), "SpikingJelly", kind)
        return {"weight": sd["weight"], "bias": sd["bias"]}
    if kind == "plif":
        _expect(sd, ("w",), "SpikingJelly", kind)
        return {"w": sd["w"]}
    if kind == "klif":
        _expect(sd, ("k",), "SpikingJelly", kind)
        return {"k": sd["k"]}
    if kind == "glif":
        _expect(sd, tuple(GLIF_PAPER_NAMES.values()), "SpikingJelly", kind)
        return {k: sd[k] for k in GLIF_PAPER_NAMES.values()}
    if sd:
        raise ValueError(
            f"SpikingJelly 2.0.0 has no {kind!r} neuron with parameters, yet the state dict has "
            f"{', '.join(sorted(sd))} for it: is the model built with the neuron the SpikingJelly network used?"
        )
    return {}


def state_to_spikingjelly(kind: str, sd: StateDict) -> dict[str, torch.Tensor]:
    """psn_zoo neuron keys -> SpikingJelly 2.0.0 neuron keys (the inverse of :func:`state_from_spikingjelly`)."""
    if kind == "psn":
        return {"weight": sd["weight"], "bias": sd["bias"].reshape(-1, 1)}
    if kind == "masked_psn":
        return {
            "weight": sd["weight"],
            "bias": sd["bias"].reshape(-1, 1),
            "mask0": sd["mask"],
            "mask1": torch.ones_like(sd["mask"]),
            "_lambda_": sd["lambda_"],
        }
    if kind in ("sliding_psn", "plif", "klif", "glif"):
        return dict(sd)
    if sd:  # learned parameters SpikingJelly has no place for: dropping them would export another network
        raise ValueError(
            f"SpikingJelly 2.0.0 has no {kind!r} neuron, so its learned parameters ({', '.join(sorted(sd))}) cannot "
            "be exported; keep the model in psn_zoo's format (safetensors), or train it with a neuron SpikingJelly has"
        )
    return {}


def state_from_paper(kind: str, sd: StateDict, lambda_: float = 1.0) -> dict[str, torch.Tensor]:
    """Paper-repo neuron keys (``IFNode5``, ``IFNode5PorderMaskD``, ``MaskedSlidingPSN``, SJ's ``ParametricLIFNode``
    and ``KLIFNode``, ``glif.LIFSpike_CW`` in its ``nn.Sequential``) -> psn_zoo keys.

    The repo does not save the masked PSN's λ: ``lambda_`` is the value to load (the caller recovers it from the
    saved epoch and the script's schedule; a final model has λ = 1).
    """
    if kind == "psn":
        _expect(sd, ("fc.weight", "fc.bias"), "paper", kind)
        return {"weight": sd["fc.weight"], "bias": sd["fc.bias"].reshape(-1)}
    if kind == "masked_psn":
        _expect(sd, ("fc.weight", "fc.bias", "fc.mask0"), "paper", kind)
        return {
            "weight": sd["fc.weight"],
            "bias": sd["fc.bias"].reshape(-1),
            "mask": sd["fc.mask0"],
            "lambda_": torch.tensor(float(lambda_)),
        }
    if kind == "sliding_psn":
        _expect(sd, ("weight", "threshold"), "paper", kind)
        return {"weight": sd["weight"], "bias": sd["threshold"].reshape(())}
    if kind == "plif":
        _expect(sd, ("w",), "paper", kind)
        return {"w": sd["w"]}
    if kind == "klif":
        _expect(sd, ("k",), "paper", kind)
        return {"k": sd["k"]}
    if kind == "glif":
        _expect(sd, tuple(f"1.{k}" for k in GLIF_PAPER_NAMES), "paper", kind)
        return {ours: sd[f"1.{theirs}"] for theirs, ours in GLIF_PAPER_NAMES.items()}
    return {}


def _sj_surrogate(surrogate: Surrogate) -> nn.Module:
    from spikingjelly.activation_based import surrogate as sj_surrogate

    if isinstance(surrogate, ATan):
        return sj_surrogate.ATan(alpha=surrogate.alpha)
    if isinstance(surrogate, Sigmoid):
        return sj_surrogate.Sigmoid(alpha=surrogate.alpha)
    raise ValueError(f"no SpikingJelly equivalent for surrogate {surrogate.spec()}")


def to_spikingjelly(neuron: nn.Module) -> nn.Module:
    """The equivalent SpikingJelly 2.0.0 neuron (multi-step, same parameters). Needs ``spikingjelly``."""
    from spikingjelly.activation_based import neuron as sj

    kind = neuron_kind(neuron)
    sg = _sj_surrogate(neuron.surrogate)
    if kind == "psn":
        out = sj.PSN(neuron.T, surrogate_function=sg)
    elif kind == "masked_psn":
        out = sj.MaskedPSN(neuron.k, neuron.T, float(neuron.lambda_), surrogate_function=sg, step_mode="m")
    elif kind == "sliding_psn":
        out = sj.SlidingPSN(neuron.k, neuron.exp_init, surrogate_function=sg, step_mode="m")
    elif kind in ("if", "lif", "plif"):
        common: dict[str, Any] = {
            "v_threshold": neuron.v_threshold,
            "v_reset": neuron.v_reset,
            "surrogate_function": sg,
            "detach_reset": neuron.detach_reset,
            "step_mode": "m",
        }
        if kind == "if":
            out = sj.IFNode(**common)
        elif kind == "lif":
            out = sj.LIFNode(tau=neuron.tau, decay_input=neuron.decay_input, **common)
        else:
            out = sj.ParametricLIFNode(init_tau=neuron.init_tau, decay_input=neuron.decay_input, **common)
    else:
        raise ValueError(f"SpikingJelly 2.0.0 has no {kind!r} neuron")
    out.load_state_dict(state_to_spikingjelly(kind, neuron.state_dict()))
    return out.to(next(iter(neuron.parameters()), torch.empty(0)).device)


def from_spikingjelly(sj_neuron: nn.Module) -> nn.Module:
    """The psn_zoo neuron equivalent to a SpikingJelly 2.0.0 neuron instance, parameters copied."""
    name = type(sj_neuron).__name__
    surrogate = _surrogate_from_sj(sj_neuron.surrogate_function)
    if name == "PSN":
        ours: nn.Module = PSN(sj_neuron.T, surrogate=surrogate)
        kind = "psn"
    elif name == "MaskedPSN":
        ours = MaskedPSN(sj_neuron.T, sj_neuron.k, float(sj_neuron.lambda_), surrogate=surrogate)
        kind = "masked_psn"
    elif name == "SlidingPSN":
        ours = SlidingPSN(sj_neuron.k, surrogate=surrogate)
        kind = "sliding_psn"
    elif name in ("IFNode", "LIFNode", "ParametricLIFNode"):
        common = {
            "v_threshold": sj_neuron.v_threshold,
            "v_reset": sj_neuron.v_reset,
            "detach_reset": sj_neuron.detach_reset,
            "surrogate": surrogate,
        }
        if name == "IFNode":
            ours, kind = IFNode(**common), "if"
        elif name == "LIFNode":
            ours, kind = LIFNode(tau=sj_neuron.tau, decay_input=sj_neuron.decay_input, **common), "lif"
        else:
            tau = float(1.0 / sj_neuron.w.detach().sigmoid())
            ours = ParametricLIFNode(init_tau=tau, decay_input=sj_neuron.decay_input, **common)
            kind = "plif"
    else:
        raise ValueError(f"no psn_zoo equivalent for SpikingJelly neuron {name}")
    ours.load_state_dict(state_from_spikingjelly(kind, sj_neuron.state_dict()))
    return ours


def _surrogate_from_sj(sg: nn.Module) -> Surrogate:
    name = type(sg).__name__.lower()
    if name not in ("atan", "sigmoid"):
        raise ValueError(f"SpikingJelly surrogate {type(sg).__name__} has no psn_zoo equivalent (atan, sigmoid)")
    return make_surrogate({"name": name, "alpha": float(sg.alpha)})
