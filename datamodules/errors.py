"""Errors that say what is wrong with the data and how to fix it, and the guard that names bad files."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .validation import InvalidEvents


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk and could not be downloaded; the message says which files to put where."""


class CorruptSampleError(RuntimeError):
    """A sample file could not be read, or holds events that make no sense (truncated, corrupt, empty, events
    outside the sensor, bad polarities, decreasing timestamps...); the message names the file and the problem."""


class MissingSampleError(CorruptSampleError, DatasetNotFoundError):
    """A recording is missing from the local copy of a dataset (deleted, or never extracted). A
    :class:`CorruptSampleError` (the copy is damaged) and a :class:`DatasetNotFoundError` (what callers that
    handle a missing dataset catch); the message names the file, or says how many are missing and where."""


class EmptySplitError(ValueError):
    """A training or test split holds no sample: a dataset copy too small for the split protocol, or split
    arguments that leave nothing on one side; the message names the argument or the files to change."""


class EmptySplitWarning(UserWarning):
    """The validation split holds no sample (validation is skipped); the message names the argument to change."""


def require_samples(owner: Any, split: str, dataset: Any) -> Any:
    """``dataset``, unless ``split`` of the DataModule ``owner`` is empty: an empty training or test split raises an
    :class:`EmptySplitError` naming the fix (a DataModule may add its own advice with ``empty_split_help(split)``);
    an empty validation split warns with the fix (Lightning then skips validation, which tiny runs may want)."""
    if len(dataset):
        return dataset
    name = getattr(owner, "name", type(owner).__name__)
    fraction = getattr(owner, "val_fraction", None)
    has_val_split = hasattr(owner, "val_split")
    if split == "val" and not fraction:
        fix = (
            "val_fraction is 0, so no training sample is held out for validation: set --data.init_args.val_fraction "
            "(e.g. 0.1)" + (" or --data.init_args.val_split test (validate on the test split)" if has_val_split else "")
        )
    elif split == "val":
        fix = (
            f"val_fraction={fraction} rounds to no held-out sample in any class: raise val_fraction"
            + (" or set --data.init_args.val_split test" if has_val_split else "")
        )
    else:
        fix = "check that data_dir holds the whole dataset"
    extra = owner.empty_split_help(split) if hasattr(owner, "empty_split_help") else ""
    message = f"{name}: the {split} split holds no sample. {extra or fix}"
    if split == "val":
        warnings.warn(message + " (validation is skipped)", EmptySplitWarning, stacklevel=2)
        return dataset
    raise EmptySplitError(message)


class RequireEvents:
    """First step of every pipeline: an empty recording means a truncated or corrupt file, not a sample."""

    def __call__(self, events: np.ndarray) -> np.ndarray:
        if len(events) == 0:
            raise ValueError("the recording holds no events (empty or truncated file)")
        return events

    def __repr__(self) -> str:
        return "RequireEvents()"


class NamedErrors:
    """Wrap a Tonic dataset so a failing ``__getitem__`` raises :class:`CorruptSampleError` naming the file."""

    def __init__(self, dataset: Any, describe: Callable[[int], str] | None = None) -> None:
        self.dataset = dataset
        self.describe = describe or (lambda i: str(dataset.data[i]))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except InvalidEvents as err:
            raise CorruptSampleError(
                f"{self.describe(index)} is corrupt (sample {index} of {type(self.dataset).__name__}): {err}. "
                "Delete the file (or the dataset folder) and download the dataset again"
            ) from err
        except FileNotFoundError as err:
            raise MissingSampleError(
                f"{self.describe(index)} (sample {index} of {type(self.dataset).__name__}) is missing from the "
                f"local copy: it was listed when the dataset was opened and is gone now ({err.strerror}). Restore "
                "it, or delete the dataset folder and download the dataset again"
            ) from err
        except Exception as err:
            raise CorruptSampleError(
                f"cannot read sample {index} of {type(self.dataset).__name__} from {self.describe(index)}: "
                f"{type(err).__name__}: {err}. The file is probably truncated or corrupt: delete it (or the "
                "dataset folder) and download the dataset again"
            ) from err
