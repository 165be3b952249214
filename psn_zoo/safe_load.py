"""Reading ``torch.save`` files without ever unpickling code: ``weights_only=True``, errors that name the file."""

from __future__ import annotations

from pathlib import Path

__all__ = ["load_torch_file"]


def load_torch_file(path: str | Path, allowed: tuple[type, ...] = ()):
    """``torch.load(path, weights_only=True)`` (plus the ``allowed`` classes), with an error that names the file.

    A file that needs any other Python object to unpickle (possibly code to run) is refused with a short
    ``ValueError`` instead of torch's ``UnpicklingError``, whose text suggests ``weights_only=False``.
    """
    import pickle
    import re

    import torch

    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({found[1]})" if found else ""
        raise ValueError(
            f"{path} is not a plain tensor file: loading it would unpickle an arbitrary Python object{what}, which "
            "psn_zoo never does (it could run code). Only tensors and plain containers are accepted; save the state "
            "dict alone (torch.save(model.state_dict(), path)) or convert the file to safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable torch file (truncated or corrupt?): {err}") from None
