"""Is the local evaluation data the data a checkpoint's numbers were measured on?

A published entry records the fingerprint of the split its metrics were measured on (``eval_data`` in the
manifest, :class:`psn_zoo.hub.metadata.EvalData`). The fingerprint of a split has one definition per dataset: its
DataModule's ``fingerprint(split)`` (``psn_zoo.datamodules.NDigitsDataModule.fingerprint``: the sha256 listing of the
split's ``.bin`` files; ``psn_zoo.datamodules.SequentialDigitsDataModule.fingerprint``: the sha256 of its images and
labels). :func:`eval_data_of` asks the DataModule, :func:`compare_eval_data` says whether the two agree and why
not, and :class:`EvalDataFingerprint` (a default callback of the ``psn-zoo`` CLI) does both in ``psn-zoo validate``
and ``test``::

    psn-zoo validate --config configs/seqdigits_psn.yaml --model.pretrained paper_seq_cnn.seqdigits_psn_t28 \\
        --data.init_args.val_split test

prints, before the metrics, the local split's fingerprint and either "MATCHES ... should reproduce exactly" or
"DIFFERS ... will differ" with the reasons it can see (arguments of the DataModule, sample count, the files).
During ``fit`` the callback stores the test split's fingerprint in every checkpoint, so ``psn-zoo validate
--ckpt_path run.ckpt`` compares with the data that run was trained next to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from ..hub.metadata import CheckpointInfo, EvalData

_SPLIT_NAMES = {"train": "training", "val": "validation (holdout)", "test": "test"}
# DataModule arguments that never change what a test evaluation reads (the holdout, training augmentation, loading)
_NOT_EVALUATION = frozenset({"val_split", "val_fraction", "random_translate", "random_flip", "batch_size",
                             "num_workers", "cache", "data_dir"})  # fmt: skip


def eval_data_of(datamodule: Any, split: str = "test") -> EvalData:
    """The :class:`EvalData` of ``split`` of ``datamodule`` (its ``fingerprint(split)``, ``name``, sample count)."""
    fingerprint = getattr(datamodule, "fingerprint", None)
    if not callable(fingerprint):
        raise TypeError(
            f"{type(datamodule).__name__} has no fingerprint(split) method, so its data cannot be compared with a "
            "checkpoint's; add one to the DataModule (see psn_zoo.datamodules.SequentialDigitsDataModule.fingerprint)"
        )
    sha256 = fingerprint(split)
    datasets = getattr(datamodule, "datasets", None) or {}
    samples = len(datasets[split]) if split in datasets else None
    return EvalData(dataset=str(getattr(datamodule, "name", type(datamodule).__name__)), split=split,
                    sha256=sha256, samples=samples)  # fmt: skip


def with_eval_data(info: CheckpointInfo, datamodule: Any) -> CheckpointInfo:
    """``info`` with the :class:`EvalData` of its metrics' split (``info.dataset["split"]``) of ``datamodule``: how
    an entry of an older manifest gets the field (give it the entry's DataModule, ``dataset.init_args``), and what
    publishing records for a new one."""
    return dataclasses.replace(info, eval_data=eval_data_of(datamodule, str(info.dataset.get("split", "test"))))


def _short(sha256: str) -> str:
    return f"{sha256[:16]}..."


def _describe(data: EvalData, full: bool = False) -> str:
    samples = f", {data.samples} samples" if data.samples is not None else ""
    return f"{data.dataset} {data.split} split{samples}, sha256 {data.sha256 if full else _short(data.sha256)}"


@dataclasses.dataclass(frozen=True)
class FingerprintCheck:
    """The local evaluation data against a reference (a published entry or a checkpoint).

    ``matches`` is None when there is nothing to compare (no reference, or no local fingerprint).
    """

    source: str
    local: EvalData | None
    reference: EvalData | None
    reasons: tuple[str, ...] = ()
    top1: float | None = None
    evaluated_split: str | None = None
    other_arguments: tuple[str, ...] = ()  # the reference's DataModule arguments this run sets otherwise

    @property
    def matches(self) -> bool | None:
        if self.local is None or self.reference is None:
            return None
        return (self.local.dataset, self.local.split, self.local.sha256) == (
            self.reference.dataset,
            self.reference.split,
            self.reference.sha256,
        )

    def message(self) -> str:
        """The plain-language report (several lines)."""
        published = f"published top-1 {100 * self.top1:.2f} %" if self.top1 is not None else "recorded numbers"
        source_numbers = "published numbers" if self.top1 is not None else "recorded numbers"
        lines = []
        if self.local is None:
            lines.append(f"Evaluation data: no fingerprint ({'; '.join(self.reasons)}).")
        else:
            lines.append(f"Evaluation data here: {_describe(self.local, full=True)}")
        if self.reference is None:
            if self.local is not None:
                lines.append(
                    f"{self.source} records no evaluation-data fingerprint (written before eval_data existed, or "
                    "not by psn_zoo), so whether the numbers reproduce cannot be checked."
                )
        elif self.matches and not self.other_arguments:
            lines.append(
                f"It MATCHES the data {self.source} was measured on ({_short(self.reference.sha256)}): the "
                f"{published} should reproduce exactly."
            )
        elif self.matches:
            lines.append(
                f"It MATCHES the data {self.source} was measured on ({_short(self.reference.sha256)}), but this run "
                f"sets DataModule arguments otherwise ({'; '.join(self.other_arguments)}): the numbers measured here "
                f"may differ from the {published}."
            )
        elif self.local is not None:
            lines.append(
                f"It DIFFERS from the data {self.source} was measured on ({_describe(self.reference)}): the numbers "
                f"measured here will differ from the {published}."
            )
            lines += [f"  why: {reason}" for reason in self.reasons]
        reference_split = self.reference.split if self.reference is not None else "test"
        if self.evaluated_split is not None and self.evaluated_split != reference_split:
            lines.append(
                f"Note: this run evaluates the {_SPLIT_NAMES.get(self.evaluated_split, self.evaluated_split)} split, "
                f"but the {source_numbers} are for the {reference_split} split: pass --data.init_args.val_split "
                f"{reference_split} to measure them."
            )
        return "\n".join(lines)


def _argument_differences(expected: Mapping[str, Any], datamodule: Any) -> list[str]:
    """``name=here, entry`` for each DataModule argument of the entry that the local DataModule sets otherwise,
    except those that never change a test evaluation (holdout, training augmentation, loading)."""
    here = dict(getattr(datamodule, "hparams", {}) or {})
    out = []
    for key, value in expected.items():
        if key not in _NOT_EVALUATION and key in here and here[key] != value:
            out.append(f"{key}={here[key]!r} here, {value!r} for the entry")
    return out


def compare_eval_data(
    reference: EvalData | Mapping[str, Any] | None,
    local: EvalData | None,
    *,
    source: str,
    datamodule: Any = None,
    expected_args: Mapping[str, Any] | None = None,
    top1: float | None = None,
    evaluated_split: str | None = None,
) -> FingerprintCheck:
    """Compare the local split's :class:`EvalData` with ``reference`` and explain a difference.

    ``expected_args`` are the DataModule arguments the reference was measured with (a manifest entry's
    ``dataset.init_args``); those the local ``datamodule`` sets otherwise are named as the likely cause.
    """
    if isinstance(reference, Mapping):
        reference = EvalData.from_dict(reference)
    arguments = _argument_differences(expected_args or {}, datamodule) if datamodule is not None else []
    reasons: list[str] = []
    if reference is not None and local is not None and local.sha256 != reference.sha256:
        if local.dataset != reference.dataset:
            reasons.append(f"another dataset: {local.dataset} here, {reference.dataset} for {source}")
        if local.split != reference.split:
            reasons.append(f"another split: {local.split} here, {reference.split} for {source}")
        if local.samples is not None and reference.samples is not None and local.samples != reference.samples:
            reasons.append(f"{local.samples} samples here, {reference.samples} for {source}")
        if arguments:
            reasons.append("the DataModule's arguments differ: " + "; ".join(arguments))
        elif local.dataset == reference.dataset:
            reasons.append(
                "the same DataModule arguments gave different data here: the local copy was modified, is incomplete "
                "or was produced by other software (a dataset generated by another generator version, other "
                "numpy/scipy/scikit-learn builds); delete the local copy and let prepare_data() make it again, and "
                "if it still differs, report it with the two fingerprints"
            )
    return FingerprintCheck(source=source, local=local, reference=reference, reasons=tuple(reasons), top1=top1,
                            evaluated_split=evaluated_split, other_arguments=tuple(arguments))  # fmt: skip


def _evaluated_split(datamodule: Any, stage: str) -> str:
    """The split a ``validate`` (``val_dataloader``: holdout or test, by ``val_split``) or ``test`` run reads."""
    if stage == "test":
        return "test"
    return "test" if getattr(datamodule, "val_split", "holdout") == "test" else "val"


class EvalDataFingerprint(Callback):
    """Reports whether ``psn-zoo validate`` / ``test`` evaluates the data the checkpoint's numbers came from.

    At the start of a validate or test run: the fingerprint of the local split (the DataModule's
    ``fingerprint(split)``) against the ``eval_data`` of the ``--model.pretrained`` entry, or against the
    fingerprint a ``--ckpt_path`` checkpoint recorded when it was trained; printed on rank 0 and kept in
    :attr:`check`. During ``fit`` it records the test split's :class:`EvalData` in every checkpoint.

    Args:
        split: the split to fingerprint; None: the reference's split (``"test"`` for published entries).
    """

    def __init__(self, split: str | None = None) -> None:
        self.split = split
        self.check: FingerprintCheck | None = None
        self._recorded: EvalData | None = None  # fit: the test split, stored in checkpoints
        self._from_checkpoint: EvalData | None = None
        self._checkpoint_origin: str | None = None

    # --------------------------------------------------------------------------------- checkpoints
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is not None and callable(getattr(datamodule, "fingerprint", None)):
            try:
                self._recorded = eval_data_of(datamodule, self.split or "test")
            except (OSError, ValueError, KeyError, RuntimeError) as err:  # never stop a fit over a missing test split
                rank_zero_warn(f"no evaluation-data fingerprint stored in this run's checkpoints: {err}")

    def state_dict(self) -> dict[str, Any]:
        return {"eval_data": self._recorded.to_dict()} if self._recorded is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        raw = state_dict.get("eval_data")
        self._from_checkpoint = EvalData.from_dict(raw) if raw is not None else None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._checkpoint_origin = checkpoint.get("fine_tuned_from")

    # --------------------------------------------------------------------------------- evaluation
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":  # not the validation loop inside fit
            self._report(trainer, pl_module, "validate")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, "test")

    def _reference(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[str, Any, dict, float | None]:
        """``(source, reference EvalData or None, the entry's DataModule arguments, its top-1)``."""
        from ..hub import get_pretrained_info, list_pretrained

        pretrained = (getattr(pl_module, "hparams", None) or {}).get("pretrained")
        if isinstance(pretrained, str) and pretrained in list_pretrained():
            info = get_pretrained_info(pretrained)
            top1 = info.metrics.get("top1")
            return f"entry {pretrained}", info.eval_data, dict(info.dataset.get("init_args", {})), top1
        if trainer.ckpt_path:
            origin = f" (fine-tuned from {self._checkpoint_origin})" if self._checkpoint_origin else ""
            return f"checkpoint {trainer.ckpt_path}{origin}", self._from_checkpoint, {}, None
        return "this model", None, {}, None

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        source, reference, expected_args, top1 = self._reference(trainer, pl_module)
        datamodule = trainer.datamodule
        split = self.split or (reference.split if reference is not None else "test")
        evaluated = _evaluated_split(datamodule, stage) if datamodule is not None else None
        try:
            local = eval_data_of(datamodule, split) if datamodule is not None else None
            problem = () if datamodule is not None else ("no DataModule",)
        except TypeError as err:  # a DataModule without fingerprint(): say so, evaluate anyway
            local, problem = None, (str(err),)
        check = compare_eval_data(reference, local, source=source, datamodule=datamodule,
                                  expected_args=expected_args, top1=top1, evaluated_split=evaluated)  # fmt: skip
        if problem:
            check = dataclasses.replace(check, reasons=problem)
        self.check = check
        if trainer.is_global_zero:
            print(check.message(), flush=True)
