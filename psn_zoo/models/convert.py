"""State-dict converters: SpikingJelly 2.0.0 models and the paper's released checkpoints -> psn_zoo models.

SpikingJelly's ``spiking_resnet*``, ``sew_resnet*`` and ``spiking_vgg*`` use the same module names as ours, so
only the neurons' own keys change (e.g. PSN's ``bias [T, 1]`` -> ``[T]``):

    ours = create_model("sew_resnet18", neuron="psn", T=4, num_classes=10)
    ours.load_state_dict(from_spikingjelly(sj_model.state_dict(), ours))

The paper's checkpoints (figshare 24454912; ``fangwei123456/Parallel-Spiking-Neuron``) are dicts holding the
weights under ``net`` (CIFAR-10) or ``model`` (CIFAR10-DVS, ImageNet); ImageNet files also pickle an
``argparse.Namespace``. :func:`load_paper_checkpoint` reads them safely (``weights_only=True`` with only
``argparse.Namespace`` allowed), recognises the experiment from the key layout, builds the matching model
(``paper_cifar10_csnn``, ``paper_cifar10dvs_vgg``, ``paper_sew_resnet18/34``) and maps the keys:

Key mapping, paper -> psn_zoo:

- CIFAR-10: ``conv.{i}.*`` and ``fc.{1,3}.*`` keep their indices; PSN ``conv.{2,5,..}.fc.weight/bias`` and
  ``fc.2.fc.*`` become ``.weight/.bias`` (bias ``[T]``);
- CIFAR10-DVS: ``features.{i}.fwd.module.{0,1}.*`` -> ``features.{i}.{0,1}.*``; sliding PSN
  ``features.{i}.weight/threshold`` -> ``.weight/.bias``; ``classifier.0.module.1.*`` -> ``classifier.1.*``;
- ImageNet: torchvision names and ``pe`` unchanged; PSN ``sn1.fc.*``, ``layerX.Y.sn{1,2}.fc.*``,
  ``layerX.0.downsample_sn.fc.*`` -> ``.weight/.bias``.

The masked PSN's λ is not stored by the paper's code; a released model has λ = 1.
"""

from __future__ import annotations

import argparse
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..hub.metadata import CheckpointInfo, entry_name
from ..hub.publish import ensure_new_entry, make_info, write_entry
from ..neurons import compat, neurons_of
from ..safe_load import load_torch_file
from .registry import build_model

StateDict = Mapping[str, torch.Tensor]


def _neuron_prefixes(model: nn.Module) -> dict[str, str]:
    """``{module name + ".": neuron kind}`` for every neuron of ``model``."""
    names = {id(m): n for n, m in model.named_modules()}
    return {f"{names[id(m)]}.": compat.neuron_kind(m) for m in neurons_of(model)}


def _map_neurons(state: StateDict, model: nn.Module, mapper) -> dict[str, torch.Tensor]:
    prefixes = _neuron_prefixes(model)
    out: dict[str, torch.Tensor] = {}
    claimed: set[str] = set()
    for prefix, kind in prefixes.items():
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        claimed.update(prefix + k for k in own)
        out.update({prefix + k: v for k, v in mapper(kind, own).items()})
    out.update({k: v for k, v in state.items() if k not in claimed})
    return out


def from_spikingjelly(state: StateDict, model: nn.Module) -> dict[str, torch.Tensor]:
    """A SpikingJelly 2.0.0 model's state dict, keyed and shaped for the equivalent psn_zoo ``model``."""
    return _map_neurons(state, model, compat.state_from_spikingjelly)


def to_spikingjelly(state: StateDict, model: nn.Module) -> dict[str, torch.Tensor]:
    """The inverse of :func:`from_spikingjelly` (``model`` is the psn_zoo model the state belongs to)."""
    return _map_neurons(state, model, compat.state_to_spikingjelly)


# ------------------------------------------------------------------------------------ paper checkpoints
_DVS_LAYER = re.compile(r"^features\.(\d+)\.fwd\.module\.(\d+)\.(.+)$")  # VGGPSN: Conv, BN in one container
_DVS_HEAD = re.compile(r"^classifier\.0\.module\.1\.(.+)$")
_SNN_CONV = re.compile(r"^features\.(\d+)\.fwd\.module\.(weight|bias)$")  # VGGSNN (TEBNLayer): the conv alone
_SNN_BN = re.compile(r"^features\.(\d+)\.bn\.bn\.module\.(.+)$")
_SNN_P = re.compile(r"^features\.(\d+)\.bn\.p$")
_SNN_HEAD = re.compile(r"^classifier\.1\.module\.(.+)$")
#: CIFAR10-DVS key -> psn_zoo key: the first pattern that matches is expanded (VGGPSN and VGGSNN layouts).
_DVS_RENAMES = (
    (_DVS_LAYER, r"features.\1.\2.\3"),
    (_DVS_HEAD, r"classifier.1.\1"),
    (_SNN_CONV, r"features.\1.0.\2"),
    (_SNN_BN, r"features.\1.1.bn.\2"),
    (_SNN_P, r"features.\1.1.p"),
    (_SNN_HEAD, r"classifier.1.\1"),
)
#: The sequential-CIFAR script's run folder, ``<neu>_e<epochs>_b<batch>_<opt>_lr<lr>_c<channels>[_amp][_P<P>][_ei]``.
_SEQ_RUN = re.compile(r"^(?P<neu>[a-z0-9_]+?)_e(?P<epochs>\d+)_b\d+_")

#: The script's neuron code -> psn_zoo neuron spec (the arguments its ``create_neuron`` passes).
SEQ_NEURONS: dict[str, dict[str, Any]] = {
    "if5": {"name": "psn"},
    "if5pmd8": {"name": "masked_psn"},  # + k (the script's -P, read from mask0) and λ
    "mspsn": {"name": "sliding_psn", "exp_init": False},  # + k (its -P)
    "lif": {"name": "lif", "tau": 2.0, "v_reset": None, "detach_reset": True},
    "plif": {"name": "plif", "init_tau": 2.0, "v_reset": None, "detach_reset": True},
    "plif_torch": {"name": "plif", "init_tau": 2.0, "v_reset": None, "detach_reset": True},
    "klif": {"name": "klif", "v_reset": None},
    "glif": {"name": "glif"},
    "lifnr": {"name": "lif_noreset", "tau": 2.0},
}
SEQ_SCRIPT_EPOCHS = 64  # train_secf10.py's default -epochs (the paper's runs passed 256)
_RESNET_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (3, 4, 6, 3)): 50,
                  ("bottleneck", (3, 4, 23, 3)): 101, ("bottleneck", (3, 8, 36, 3)): 152}  # fmt: skip

#: What each layout needs (the unrecognised-layout error lists it).
KNOWN_LAYOUTS = {
    "cifar10 (cifar10/train_cf10.py, CIFAR10Net)": "4-D conv.0.weight, PSN at conv.2.fc.weight [T, T], fc.1.weight, "
    "fc.3.weight, under 'net'",
    "sequential_cifar (sequential_cifar/train_secf10.py, CIFAR10Net)": "3-D conv.0.weight [C, 3, 3] (Conv1d), "
    "fc.1.weight, fc.3.weight and the neuron's keys at conv.2 (fc.weight [+ fc.mask0]: if5 [if5pmd8]; weight + "
    "threshold: mspsn; w: plif; k: klif; 1.alpha ... 1.conduct: glif; none: lif or lifnr), under 'net'",
    "cifar10dvs VGGPSN (cifar10dvs/train_vgg.py -method PSN)": "features.{i}.fwd.module.{0,1}.*, sliding PSN "
    "features.{i}.weight/threshold, classifier.0.module.1.*, under 'model'",
    "cifar10dvs VGGSNN (cifar10dvs/train_vgg.py, default -method)": "features.{i}.fwd.module.weight/bias, "
    "features.{i}.bn.bn.module.*, features.{i}.bn.p [T, 1, 1, 1, 1], classifier.1.module.*, under 'model'",
    "imagenet (imagenet/train.py, sew_resnet18/34/50/101/152)": "conv1.weight, pe [T, 1, 1, 1, 1], "
    "layer{1..4}.{j}.conv*/bn*/sn*.fc.*, fc.weight, under 'model'",
}


@dataclass(frozen=True)
class PaperLayout:
    """What a paper checkpoint's keys say: the experiment, the authors' script, network and neuron code, and the
    registered psn_zoo architecture with the builder arguments that rebuild it."""

    experiment: str  # "cifar10", "sequential_cifar", "cifar10dvs", "imagenet"
    script: str
    network: str
    neuron_code: str  # the script's name for the neuron ("if5", "if5pmd8", "mspsn", "lif", ..., "LIFSpike")
    architecture: str
    model_kwargs: dict[str, Any]


def _layout_error(state: StateDict, problem: str = "unrecognised checkpoint layout") -> ValueError:
    keys = sorted(state)
    prefixes = sorted({k.split(".", 1)[0] for k in keys})
    needs = "\n".join(f"  - {name}: {need}" for name, need in KNOWN_LAYOUTS.items())
    return ValueError(
        f"{problem}: found {len(keys)} tensors under the top-level names {prefixes}, e.g. {keys[:6]}. "
        f"The layouts of the paper's scripts (fangwei123456/Parallel-Spiking-Neuron) are:\n{needs}\n"
        "Any other network: build it with psn_zoo.create_model and load its weights yourself."
    )


def detect_paper_experiment(state: StateDict) -> str:
    """``"cifar10"``, ``"sequential_cifar"``, ``"cifar10dvs"`` or ``"imagenet"`` from a paper checkpoint's keys."""
    keys = set(state)
    if any(_DVS_LAYER.match(k) or _SNN_CONV.match(k) for k in keys):
        return "cifar10dvs"
    if "pe" in keys and "conv1.weight" in keys:
        return "imagenet"
    if {"conv.0.weight", "fc.1.weight", "fc.3.weight"} <= keys:
        dims = state["conv.0.weight"].dim()
        if dims == 3:
            return "sequential_cifar"
        if dims == 4:
            return "cifar10"
    raise _layout_error(state)


def _neuron_code(state: StateDict, prefix: str) -> str | None:
    """The sequential-CIFAR script's neuron code from the keys of the neuron at ``prefix`` (None: no parameters,
    which is ``lif`` or ``lifnr``)."""
    own = {k[len(prefix) :] for k in state if k.startswith(prefix)}
    if own == {"fc.weight", "fc.bias", "fc.mask0", "fc.mask1"}:
        return "if5pmd8"
    if own == {"fc.weight", "fc.bias"}:
        return "if5"
    if own == {"weight", "threshold"}:
        return "mspsn"
    if own == {"w"}:
        return "plif"
    if own == {"k"}:
        return "klif"
    if own == {f"1.{k}" for k in compat.GLIF_PAPER_NAMES}:
        return "glif"
    if not own:
        return None
    raise _layout_error(state, f"the neuron at {prefix[:-1]!r} has keys {sorted(own)}, which no script neuron has")


def _run_folder(source: str | Path | None) -> tuple[str | None, int | None]:
    """``(neuron code, epochs)`` from the sequential-CIFAR script's run folder name, when ``source`` sits in one."""
    if source is None:
        return None, None
    m = _SEQ_RUN.match(Path(source).parent.name)
    if not m or m["neu"] not in SEQ_NEURONS:
        return None, None
    return m["neu"], int(m["epochs"])


def paper_layout(state: StateDict, *, neuron: str | None = None, source: str | Path | None = None) -> PaperLayout:
    """Recognise a paper checkpoint's layout from its keys and shapes.

    ``neuron``: the script's neuron code (``"lif"``/``"lifnr"``, ...) where the keys cannot tell (the two
    parameter-free sequential-CIFAR baselines save identical keys); otherwise it is read from the run folder of
    ``source`` (``lif_e256_b128_...``), and an error names the choice when neither says.
    """
    experiment = detect_paper_experiment(state)
    if experiment == "cifar10":
        if "conv.2.fc.weight" not in state:
            raise _layout_error(state, "a CIFAR-10 (conv2d) checkpoint without the PSN keys conv.2.fc.weight: the "
                                       "released cifar10/train_cf10.py builds PSN (if5) only")  # fmt: skip
        channels, in_channels = state["conv.0.weight"].shape[:2]
        hidden, flat = state["fc.1.weight"].shape
        return PaperLayout(experiment, "cifar10/train_cf10.py", "CIFAR10Net", "if5", "paper_cifar10_csnn", {
            "neuron": "psn", "T": state["conv.2.fc.weight"].shape[0], "channels": channels,
            "in_channels": in_channels, "fc_hidden": hidden, "input_size": round((flat / channels) ** 0.5) * 4,
            "num_classes": state["fc.3.weight"].shape[0],
        })  # fmt: skip
    if experiment == "sequential_cifar":
        return _seq_layout(state, neuron, source)
    if experiment == "cifar10dvs":
        return _dvs_layout(state)
    return _imagenet_layout(state)


def _seq_layout(state: StateDict, neuron: str | None, source: str | Path | None) -> PaperLayout:
    code = _neuron_code(state, "conv.2.")
    if _neuron_code(state, "fc.2.") != code:
        raise _layout_error(state, "the neurons at conv.2 and fc.2 are of different kinds")
    folder_code, _ = _run_folder(source)
    if neuron is not None and neuron not in SEQ_NEURONS:
        raise ValueError(f"neuron={neuron!r} is not a neuron code of train_secf10.py; one of {sorted(SEQ_NEURONS)}")
    if code is None:
        if neuron not in (None, "lif", "lifnr"):
            raise ValueError(f"neuron={neuron!r} contradicts the checkpoint's keys: it has no neuron parameters, "
                             "like the script's 'lif' and 'lifnr'")  # fmt: skip
        code = neuron or (folder_code if folder_code in ("lif", "lifnr") else None)
        if code not in ("lif", "lifnr"):
            raise ValueError(
                "this sequential-CIFAR checkpoint has no neuron parameters, so it is the script's 'lif' (LIF, soft "
                "reset, detach_reset) or 'lifnr' (LIF without reset) baseline, which save identical keys: say which "
                "with neuron='lif' or neuron='lifnr', or keep the file in its run folder (lif_e256_b128_...)"
            )
    elif neuron is not None and SEQ_NEURONS[neuron]["name"] != SEQ_NEURONS[code]["name"]:
        raise ValueError(f"neuron={neuron!r} contradicts the checkpoint's keys, which are those of {code!r}")
    channels, in_channels = state["conv.0.weight"].shape[:2]
    hidden, flat = state["fc.1.weight"].shape
    spec = dict(SEQ_NEURONS[code])
    T = 32  # the script's CIFAR10Net(T=32): one step per image column
    if code in ("if5", "if5pmd8"):
        T = state["conv.2.fc.weight"].shape[0]
    elif code == "glif":
        T = state["conv.2.1.conduct"].shape[0]
    if code == "if5pmd8":
        spec["k"] = int(state["conv.2.fc.mask0"][-1].sum())  # the band of order P: P ones in the last row
    if code == "mspsn":
        spec["k"] = state["conv.2.weight"].shape[0]
    return PaperLayout("sequential_cifar", "sequential_cifar/train_secf10.py", "CIFAR10Net", code, "paper_seq_cnn", {
        "neuron": spec, "T": T, "channels": channels, "in_channels": in_channels, "fc_hidden": hidden,
        "length": flat // channels * 4, "num_classes": state["fc.3.weight"].shape[0],
    })  # fmt: skip


def _dvs_layout(state: StateDict) -> PaperLayout:
    tebn = any(_SNN_P.match(k) for k in state)
    head = "classifier.1.module.weight" if tebn else "classifier.0.module.1.weight"
    first = "features.0.fwd.module.weight" if tebn else "features.0.fwd.module.0.weight"
    if head not in state or first not in state:
        raise _layout_error(state, f"a CIFAR10-DVS VGG without {head if head not in state else first}")
    classes, flat = state[head].shape
    kwargs: dict[str, Any] = {
        "num_classes": classes,
        "in_channels": state[first].shape[1],
        "input_size": round((flat / 512) ** 0.5) * 16,
    }
    if tebn:
        kwargs["T"] = state["features.0.bn.p"].shape[0]
        return PaperLayout("cifar10dvs", "cifar10dvs/train_vgg.py", "VGGSNN", "LIFSpike", "paper_cifar10dvs_vggsnn",
                           {"neuron": None, **kwargs})  # fmt: skip
    if "features.1.weight" not in state:
        raise _layout_error(state, "a CIFAR10-DVS VGGPSN without its sliding PSN keys features.1.weight/threshold")
    kwargs["neuron"] = {"name": "sliding_psn", "k": state["features.1.weight"].shape[0]}
    return PaperLayout("cifar10dvs", "cifar10dvs/train_vgg.py", "VGGPSN", "MaskedSlidingPSN", "paper_cifar10dvs_vgg",
                       kwargs)  # fmt: skip


def _imagenet_layout(state: StateDict) -> PaperLayout:
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    counts = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    depth = _RESNET_DEPTHS.get((block, counts))
    conv2 = state.get("layer1.0.conv2.weight")
    if depth is None or conv2 is None or conv2.shape[0] != conv2.shape[1] or state["conv1.weight"].shape[0] != 64:
        raise _layout_error(state, f"an ImageNet SEW-ResNet with {block} blocks {list(counts)} (or grouped/wide "
                                   "convolutions: sew_resnext*/sew_wide_resnet* are not supported); the supported "
                                   "depths are 18, 34 (basic), 50, 101, 152 (bottleneck)")  # fmt: skip
    if "sn1.fc.weight" not in state:
        raise _layout_error(state, "an ImageNet SEW-ResNet without the PSN keys sn1.fc.weight (train.py builds PSN)")
    return PaperLayout("imagenet", "imagenet/train.py", f"sew_resnet{depth}", "if5", f"paper_sew_resnet{depth}", {
        "neuron": "psn", "T": state["pe"].shape[0], "num_classes": state["fc.weight"].shape[0],
        "in_channels": state["conv1.weight"].shape[1],
    })  # fmt: skip


def paper_model_kwargs(state: StateDict, experiment: str | None = None) -> tuple[str, dict[str, Any]]:
    """The registered model and builder arguments that reproduce a paper checkpoint's architecture."""
    layout = paper_layout(state)
    if experiment is not None and experiment != layout.experiment:
        raise ValueError(f"the checkpoint's keys are those of {layout.experiment!r}, not {experiment!r}")
    return layout.architecture, dict(layout.model_kwargs)


def from_paper(
    state: StateDict, model: nn.Module, experiment: str | None = None, *, lambda_: float = 1.0
) -> dict[str, torch.Tensor]:
    """A paper checkpoint's weights, keyed and shaped for the matching psn_zoo ``model``; ``lambda_``: the masked
    PSN's λ (not in the authors' files, see :func:`read_paper_checkpoint`)."""
    experiment = experiment or detect_paper_experiment(state)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if experiment == "cifar10dvs":
            key = next((m.expand(new) for pattern, new in _DVS_RENAMES if (m := pattern.match(key))), key)
        renamed[key] = value
    return _map_neurons(renamed, model, lambda kind, sd: compat.state_from_paper(kind, sd, lambda_))


def _read_checkpoint(path: str | Path) -> Any:
    """The paper's ``.pth`` files hold tensors plus an ``argparse.Namespace``; nothing else is unpickled."""
    return load_torch_file(path, allowed=(argparse.Namespace,))


def _paper_state(ckpt: Any, path: str | Path) -> StateDict:
    """The weights of a loaded paper ``.pth``: under ``net`` (CIFAR-10, sequential CIFAR) or ``model``, or the file
    is a bare state dict."""
    if not isinstance(ckpt, Mapping):
        raise ValueError(
            f"{path}: holds a {type(ckpt).__name__}, not a dict; the paper's scripts save a dict with the weights "
            "under 'net' (cifar10/, sequential_cifar/) or 'model' (cifar10dvs/, imagenet/), or a bare state dict "
            "{name: tensor}. Save model.state_dict() (not a list or a single tensor)"
        )
    state = ckpt.get("net", ckpt.get("model", ckpt))
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        where = "'net'" if "net" in ckpt else "'model'" if "model" in ckpt else "the top level"
        raise ValueError(
            f"{path}: no state dict under 'net' or 'model' (a mapping of names to tensors); {where} holds "
            f"{type(state).__name__}. Top-level keys: {sorted(map(str, ckpt))[:8]}"
        )
    return state


@dataclass
class PaperCheckpoint:
    """A loaded paper checkpoint: the psn_zoo ``model``, its ``layout``, and what the file says about its training
    (``epoch``, the masked PSN's ``lambda_`` and where that value comes from)."""

    model: nn.Module
    layout: PaperLayout
    epoch: int | None
    lambda_: float | None
    lambda_source: str | None

    def provenance(self) -> dict[str, Any]:
        """Plain data for an entry's metadata: which script, network and neuron produced the weights."""
        out: dict[str, Any] = {
            "repository": "fangwei123456/Parallel-Spiking-Neuron",
            "script": self.layout.script,
            "network": self.layout.network,
            "neuron": self.layout.neuron_code,
            "epoch": self.epoch,
        }
        if self.lambda_ is not None:
            out.update(lambda_=self.lambda_, lambda_source=self.lambda_source)
        return out


def _arg(args: Any, name: str) -> Any:
    if isinstance(args, argparse.Namespace):
        return getattr(args, name, None)
    return args.get(name) if isinstance(args, Mapping) else None


def masked_psn_lambda(ckpt: Mapping[str, Any], source: str | Path | None = None) -> tuple[float, str]:
    """The masked PSN's λ when the sequential-CIFAR script saved ``ckpt``, and where each number comes from.

    The script sets ``λ = min(epoch / (epochs − 1) · 8, 1)`` at the start of every epoch and saves the checkpoint
    after that epoch's test, so the saved ``epoch`` and the run's ``-epochs`` give it back. ``-epochs`` is read from
    ``args`` when saved, else from the LR scheduler's ``T_max`` (the script's ``CosineAnnealingLR(opt, epochs)``),
    else from the run folder name (``..._e256_...``), else the script's default 64 is assumed with a warning. Without a
    saved epoch λ = 1 (a final model) is assumed, with a warning.
    """
    epoch = ckpt.get("epoch")
    if isinstance(epoch, torch.Tensor) and epoch.numel() == 1:
        epoch = int(epoch)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        warnings.warn(
            "the masked PSN's λ is not in the checkpoint and it has no saved 'epoch': assuming λ = 1 (a model at the "
            "end of train_secf10.py's schedule); pass lambda_= if it was saved earlier",
            stacklevel=3,
        )
        return 1.0, "assumed 1 (no saved epoch)"
    epochs, where = _arg(ckpt.get("args"), "epochs"), "args.epochs"
    scheduler = ckpt.get("lr_scheduler")
    if epochs is None and isinstance(scheduler, Mapping) and isinstance(scheduler.get("T_max"), int):
        epochs, where = scheduler["T_max"], "lr_scheduler T_max (= -epochs)"
    if epochs is None and (folder := _run_folder(source)[1]) is not None:
        epochs, where = folder, "the run folder name"
    if epochs is None:
        epochs, where = SEQ_SCRIPT_EPOCHS, f"assumed: train_secf10.py's default -epochs {SEQ_SCRIPT_EPOCHS}"
        warnings.warn(
            f"the masked PSN's λ is not in the checkpoint; recovered from epoch {epoch} with the script's default "
            f"-epochs {SEQ_SCRIPT_EPOCHS} (no args, LR scheduler or run folder says otherwise; the paper's runs used "
            "256): pass lambda_= if the run used another value",
            stacklevel=3,
        )
    if epochs < 2:
        return 1.0, f"epochs = {epochs} from {where}: the schedule is complete at once"
    lam = min(epoch / (epochs - 1) * 8, 1.0)  # the script's arithmetic: mk = epoch / (epochs - 1); min(mk * 8, 1.)
    return lam, f"min(epoch / (epochs - 1) * 8, 1) with epoch {epoch} (saved) and epochs {epochs} ({where})"


def read_paper_checkpoint(
    path: str | Path, model: nn.Module | None = None, *, neuron: str | None = None, lambda_: float | None = None
) -> PaperCheckpoint:
    """Read one of the paper scripts' ``.pth`` files (``weights_only=True``), recognise its layout, build the matching
    psn_zoo network (or use ``model``) and load it. ``neuron``: the sequential-CIFAR neuron code when the keys cannot
    tell (``"lif"``/``"lifnr"``); ``lambda_``: the masked PSN's λ, instead of recovering it (:func:`masked_psn_lambda`).
    """
    ckpt = _read_checkpoint(path)
    state = _paper_state(ckpt, path)
    args = ckpt.get("args")
    saved_neu = _arg(args, "neu")  # train_secf10.py's -neu, should args have been saved
    layout = paper_layout(state, neuron=neuron or (saved_neu if saved_neu in SEQ_NEURONS else None), source=path)
    if layout.experiment == "imagenet" and isinstance(model_arg := _arg(args, "model"), str) \
            and model_arg != layout.network:  # fmt: skip
        raise ValueError(f"{path}: its args say --model {model_arg} but its keys are those of {layout.network}")
    epoch = ckpt.get("epoch") if isinstance(ckpt.get("epoch"), int) else None
    lam = source = None
    kwargs = dict(layout.model_kwargs)
    if layout.neuron_code == "if5pmd8":
        lam, source = (float(lambda_), "given") if lambda_ is not None else masked_psn_lambda(ckpt, path)
        kwargs["neuron"] = {**kwargs["neuron"], "lambda_": lam}
        layout = PaperLayout(**{**layout.__dict__, "model_kwargs": kwargs})
    if model is None:
        model = build_model(layout.architecture, **kwargs)
    converted = from_paper(state, model, layout.experiment, lambda_=lam if lam is not None else 1.0)
    fix = f"Pass no model (one is built for the {layout.network} layout the file has), or build that network"
    _load_exactly(model, converted, str(path), fix)  # channel-wise neurons (GLIF) take their sizes from the file
    return PaperCheckpoint(model, layout, epoch, lam, source)


def _load_exactly(model: nn.Module, state: StateDict, shown: str, fix: str) -> None:
    """Load every tensor of ``state`` into ``model``, the classifier included (an import keeps it)."""
    from ._builder import load_backbone_weights

    if load_backbone_weights(model, state, origin=shown, fix=fix):
        raise ValueError(f"the classifier in {shown} has another number of classes than the model. {fix}")


def load_paper_checkpoint(
    path: str | Path, model: nn.Module | None = None, *, neuron: str | None = None, lambda_: float | None = None
) -> nn.Module:
    """Build the matching paper network and load one of the paper's ``.pth`` checkpoints into it
    (:func:`read_paper_checkpoint` without the provenance)."""
    return read_paper_checkpoint(path, model, neuron=neuron, lambda_=lambda_).model


# ------------------------------------------------------------------------------------- release entries
# Importing a checkpoint builds the model, so it lives here, not in psn_zoo.hub (which knows nothing of models); the
# files, manifest record and card are written by psn_zoo.hub.publish.

_SEQ = ("sequence", {"read": "[B, 3, H, W] -> x.permute(0, 3, 1, 2): one image column per step",
                     "normalize": "CIFAR-10/100 mean/std"}, "configs/seqcifar10_psn.yaml")  # fmt: skip
_PAPER = {  # experiment -> (dataset, input kind, transform, recipe); the sample shape comes from the model
    "cifar10": ("CIFAR-10", "static_image", {"normalize": "CIFAR-10 mean/std"}, "configs/cifar10_csnn_psn.yaml"),
    "sequential_cifar": ("sequential CIFAR", *_SEQ),
    "cifar10dvs": ("CIFAR10-DVS", "event_frames", {"ToFrame": "n_event_bins=T", "size": 48},
                   "configs/cifar10dvs_vgg_sliding_t10.yaml"),
    "imagenet": ("ImageNet", "static_image", {"eval": "Resize(256), CenterCrop(224)"},
                 "configs/imagenet_sew_resnet18_psn.yaml"),
}  # fmt: skip


def import_paper_checkpoint(
    path: str | Path, tag: str, out_dir: str | Path, notes: str = "", *, overwrite: bool = False,
    neuron: str | None = None, lambda_: float | None = None, license: str = "unknown",
) -> CheckpointInfo:  # fmt: skip
    """A ``.pth`` of the paper's code (read with ``weights_only=True``) -> a psn_zoo entry whose ``dataset`` records
    which script, network and neuron produced it (``produced_by``) and whose ``training.imported_from`` says that
    the paper's code trained it (its recipe is psn_zoo's for the same experiment).

    The metrics are left to be measured (``psn-zoo validate``); the paper's own number is in the recipe. An entry
    already listed under the name is replaced only with ``overwrite``. ``neuron``/``lambda_``: see
    :func:`read_paper_checkpoint`. ``license``: the weights' (``unknown`` by default: the release states none).
    """
    entry_name("paper", tag)  # a bad tag fails before the file is read
    loaded = read_paper_checkpoint(path, neuron=neuron, lambda_=lambda_)
    model, layout = loaded.model, loaded.layout
    name = entry_name(layout.architecture, tag)
    ensure_new_entry(Path(out_dir), name, overwrite)
    dataset, kind, transform, recipe = _PAPER[layout.experiment]
    if layout.experiment == "sequential_cifar":
        classes = 100 if model.num_classes == 100 else 10
        dataset = f"sequential CIFAR-{classes}"
        recipe = f"configs/seqcifar{classes}_{layout.model_kwargs['neuron']['name']}.yaml"
        if not (Path(__file__).resolve().parents[2] / recipe).exists():
            recipe = f"configs/seqcifar{classes}_psn.yaml"  # the paper's baselines have no recipe of their own
    if layout.experiment == "imagenet" and (Path(__file__).resolve().parents[2] / (
            own := f"configs/imagenet_sew_resnet{layout.network[10:]}_psn.yaml")).exists():  # fmt: skip
        recipe = own
    model_kwargs = {k: v for k, v in layout.model_kwargs.items() if k not in ("neuron", "T", "num_classes",
                                                                              "in_channels")}  # fmt: skip
    side = model_kwargs.get("input_size", 224)
    if kind == "static_image":
        shape = [model.in_channels, side, side]
    elif kind == "sequence":
        shape = [model.T, model.in_channels, model_kwargs["length"]]
    else:
        shape = [model.T, model.in_channels, side, side]
        transform = {**transform, "size": side}
    produced_by = loaded.provenance()
    return write_entry(
        out_dir,
        name,
        model.state_dict(),
        lambda weights: make_info(
            name=name,
            model=model,
            weights=weights,
            classes=[str(i) for i in range(model.num_classes)],
            input_spec={"kind": kind, "shape": shape, "sensor_size": None, "transform": transform},
            dataset={
                "name": dataset,
                "split": "test (the paper's protocol)",
                "source": str(path),
                "produced_by": produced_by,
            },
            metrics={},
            recipe=recipe,
            model_kwargs=model_kwargs,
            notes=notes or f"Imported from {layout.script} ({layout.network}, neuron {layout.neuron_code}).",
            license=license,
            training={"imported_from": f"a checkpoint of the paper's code ({layout.script}, {Path(path).name})"},
        ),
        overwrite=overwrite,
    )


def import_spikingjelly_state(
    path: str | Path, architecture: str, tag: str, out_dir: str | Path, *, neuron: str | Mapping[str, Any], T: int,
    num_classes: int, in_channels: int = 3, model_kwargs: Mapping[str, Any] | None = None, image_size: int = 224,
    notes: str = "", overwrite: bool = False, license: str = "unknown",
) -> CheckpointInfo:  # fmt: skip
    """A SpikingJelly 2.0.0 model state dict (``torch.save``d, read with ``weights_only=True``) -> an entry.

    ``neuron`` is a spec (``"lif"`` or ``{"name": "lif", "tau": 2.0}``); ``model_kwargs`` are the builder's other
    arguments as SpikingJelly's model was built (e.g. ``{"cnf": "IAND"}`` for a SEW-ResNet): they are not in the
    state dict, so they must be given. An entry already listed under the name is replaced only with ``overwrite``.
    ``license``: the weights' licence (``unknown`` by default: a state dict says nothing of it); the record says
    that the weights were trained outside psn_zoo (``training.imported_from``), on data it does not know.
    """
    name = entry_name(architecture, tag)
    ensure_new_entry(Path(out_dir), name, overwrite)
    state = load_torch_file(path)
    state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} holds no state dict: save SpikingJelly's model with torch.save(net.state_dict(), path) (a dict "
            "of tensors, possibly under 'model' or 'state_dict')"
        )
    extra = dict(model_kwargs or {})
    model = build_model(architecture, neuron=neuron, T=T, num_classes=num_classes, in_channels=in_channels, **extra)
    fix = (
        "Give --arch, --neuron, --T, --num-classes, --in-channels and --model-kwargs (e.g. '{\"cnf\": \"ADD\"}') as "
        "SpikingJelly's model was built"
    )
    _load_exactly(model, from_spikingjelly(state, model), str(path), fix)
    return write_entry(
        out_dir,
        name,
        model.state_dict(),
        lambda weights: make_info(
            name=name,
            model=model,
            weights=weights,
            classes=[str(i) for i in range(num_classes)],
            input_spec={
                "kind": "static_image",
                "shape": [in_channels, image_size, image_size],
                "sensor_size": None,
                "transform": {},
            },
            dataset={"name": "unknown", "split": "n/a", "source": str(path)},
            metrics={},
            recipe="(imported from SpikingJelly)",
            model_kwargs=extra,
            notes=notes or "Imported from a SpikingJelly 2.0.0 state dict.",
            license=license,
            training={"imported_from": f"a SpikingJelly 2.0.0 state dict ({Path(path).name})"},
        ),
        overwrite=overwrite,
    )
