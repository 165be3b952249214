"""Reading ``torch.save`` files without ever unpickling code: ``weights_only=True``, errors that name the file."""

from __future__ import annotations

import contextlib
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

__all__ = ["checked_checkpoint", "load_torch_file"]


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
