"""Reading ``torch.save`` files without ever unpickling code: ``weights_only=True``, errors that name the file."""

from __future__ import annotations

import contextlib
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

__all__ = ["checked_checkpoint", "load_safetensors", "load_torch_file"]

#: OS errors that say what is wrong with the path itself (clear as they are); any other failure to read a file's
#: contents means it is not the kind of file it was given as
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _why(err: BaseException) -> str:
    """A short reason for a parser's failure: its message, or its type where the message says nothing (a bare
    ``KeyError: 101`` from the unpickler)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text.split(". ")[0].rstrip(".")  # the first sentence (torch's zip reader adds a paragraph of advice)
    return text if len(text) > 12 else f"{type(err).__name__}: {text}".rstrip(": ")


def load_torch_file(path: str | Path, allowed: tuple[type, ...] = ()):
    """``torch.load(path, weights_only=True)`` (plus the ``allowed`` classes), with an error that names the file.

    A file that needs any other Python object to unpickle (possibly code to run) is refused with a short
    ``ValueError`` instead of torch's ``UnpicklingError``, whose text suggests ``weights_only=False``. Any other file
    that is not a ``torch.save`` file (text, a truncated or corrupt file: the weights-only unpickler then fails with
    whatever error the bytes lead it to, ``KeyError``, ``IndexError``...) is a ``ValueError`` saying so; a missing
    or unreadable path keeps its own ``OSError``.
    """
    import pickle
    import re

    import torch

    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        operand = re.search(r"Unsupported operand (\d+)", str(err))
        if found is None and (operand is not None or "weights_only" not in str(err)):  # bytes no pickle writes
            why = f"pickle opcode {operand[1]}, which torch.save never writes" if operand else _why(err)
            raise ValueError(_not_a(path, "torch checkpoint", why)) from None
        what = f" ({found[1]})" if found else ""
        raise ValueError(
            f"{path} is not a plain tensor file: loading it would unpickle an arbitrary Python object{what}, which "
            "psn_zoo never does (it could run code). Only tensors and plain containers are accepted; save the state "
            "dict alone (torch.save(model.state_dict(), path)) or convert the file to safetensors"
        ) from None
    except (*_PATH_ERRORS, MemoryError):
        raise
    except Exception as err:  # the weights-only unpickler fails on foreign bytes with any error type
        raise ValueError(_not_a(path, "torch checkpoint", err)) from None


def _not_a(path: str | Path, kind: str, err: BaseException | str) -> str:
    fix = (
        "a file written by torch.save or Lightning's Trainer (.ckpt, .pt, .pth)"
        if kind == "torch checkpoint"
        else "a file written by safetensors (save_file), as psn-zoo publish writes them"
    )
    why = err if isinstance(err, str) else _why(err)
    return f"{path} is not a {kind} (truncated, corrupt or another kind of file: {why}); give {fix}"


def load_safetensors(path: str | Path, shown: str | Path | None = None) -> dict:
    """``safetensors.torch.load_file(path)`` with an error that names the file (``shown``, default ``path``): a
    file that is not a safetensors file (corrupt, truncated, another format) is a one-line ``ValueError``, never
    safetensors' ``SafetensorError`` with a traceback."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (*_PATH_ERRORS, MemoryError):
        raise
    except Exception as err:  # SafetensorError (header, offsets), or an OS error reading a broken file
        raise ValueError(_not_a(shown if shown is not None else path, "safetensors file", err)) from None


def _is_url(source: str) -> bool:
    return "://" in source


def suffix_of(source: str | Path) -> str:
    """The file suffix of a path or of a URL's path (``.ckpt``, ``.safetensors``...)."""
    text = str(source)
    return Path(urllib.parse.urlsplit(text).path if _is_url(text) else text).suffix


@contextlib.contextmanager
def local_copy(source: str | Path, *, what: str = "checkpoint", timeout: float = 60.0) -> Iterator[Path]:
    """``source`` as a local file: a path, a ``file://`` URL, or an ``http(s)://`` URL downloaded into a private
    temporary folder (never into a shared cache) that is removed when the context ends. Other schemes are refused."""
    text = str(source)
    scheme = urllib.parse.urlsplit(text).scheme.lower() if _is_url(text) else ""
    if scheme in ("", "file"):
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path)) if scheme else Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{what} {text} does not exist (or is not a file)")
        yield path
        return
    if scheme not in ("http", "https"):
        raise ValueError(
            f"{what} {text}: psn_zoo reads files from local paths and http(s):// URLs only, not {scheme}://. Copy the "
            "file to a local path first"
        )
    from .hub.sources import download_untrusted

    with tempfile.TemporaryDirectory(prefix="psn_zoo-download-") as folder:
        try:
            path = download_untrusted(text, Path(folder), timeout=timeout)
        except OSError as err:
            raise ConnectionError(f"could not download the {what} {text}: {err}") from None
        yield path


@contextlib.contextmanager
def checked_checkpoint(source: str | Path, *, timeout: float = 60.0) -> Iterator[Path]:
    """:func:`local_copy` of the torch checkpoint ``source``, already read once with ``weights_only=True``.

    A file that would unpickle anything but tensors and plain containers is refused with :func:`load_torch_file`'s
    error (naming ``source``), so it never reaches a loader, Lightning's included, that might unpickle it with
    ``weights_only=False`` (as Lightning does by default for http(s) URLs).
    """
    with local_copy(source, timeout=timeout) as path:
        try:
            ckpt = load_torch_file(path)
        except ValueError as err:
            raise ValueError(str(err).replace(str(path), str(source), 1)) from None
        parts = ("state_dict", "hyper_parameters")
        if not isinstance(ckpt, dict) or any(not isinstance(ckpt.get(k, {}), dict) for k in parts):
            raise ValueError(
                f"{source} is not a Lightning checkpoint (a dict whose state_dict and hyper_parameters are dicts, as "
                "Trainer.save_checkpoint writes); for a bare state dict use --model.pretrained instead"
            )
        yield path
