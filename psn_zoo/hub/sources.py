"""Where weight files come from, and the cache they go to — with sha256 checked on every load.

A file is found, in order, in: an explicit local path (the file or its folder); the folder of the manifest that
lists it (a release folder); the package's own ``psn_zoo.checkpoints`` (the repository's ``checkpoints/``); the cache
(``$PSN_ZOO_CACHE``, else ``$TORCH_HOME/hub/checkpoints``, torch.hub's convention); or is downloaded from an
``http(s)://`` or ``file://`` URL or a Hugging Face Hub repository (``hf://org/repo[@revision]``). Downloads (and
``file://`` copies) are written to a fresh partial file in the cache directory, created with ``O_EXCL | O_NOFOLLOW``
under an unguessable name (never through an existing file or link), read only up to the manifest's declared size
(one byte more is an error, at once), checked, then renamed into place, so the cache holds only complete, verified,
regular files (a short, long or wrong download is an error that leaves nothing behind). A symbolic link or anything
but a regular file at a cache entry's path is an error, never followed. Sources are tried in
order: one that cannot be reached, or lacks the file, passes to the next; wrong bytes stop the search at once.
``PSN_ZOO_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids the network: only the cache and local files are used, and a
miss says so. ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_CACHE`` are read when a file is fetched (huggingface_hub
itself reads them only when it is imported).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import stat
import urllib.parse
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm


class ChecksumError(RuntimeError):
    """A file's sha256 differs from the one its manifest promises."""


class OfflineError(FileNotFoundError):
    """Offline mode and the file is not in the cache."""


def cache_dir() -> Path:
    env = os.environ.get("PSN_ZOO_CACHE")
    if env:
        return Path(env).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("PSN_ZOO_OFFLINE", "HF_HUB_OFFLINE"))


def bundled_dir() -> Path:
    """The ``checkpoints/`` folder shipped with the package (the manifest and small weight files)."""
    return Path(str(resources.files("psn_zoo.checkpoints")))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, sha256: str) -> Path:
    actual = sha256_of(path)
    if actual != sha256:
        raise ChecksumError(
            f"{path} has sha256 {actual}, expected {sha256}: the file is corrupt or was modified. Delete it "
            "(it will be downloaded again) or restore the original"
        )
    return path


class SizeError(ChecksumError):
    """A source sent more bytes than the manifest declares for the file (reading stopped one byte past the size)."""


class CacheError(RuntimeError):
    """Something in the cache that psn_zoo did not write itself: a symbolic link, a folder, a planted partial file."""


_BLOCK = 1 << 16


def _part_path(dest: Path) -> Path:
    """A fresh, unguessable name for a partial download next to ``dest`` (hidden, so never taken for an entry)."""
    return dest.with_name(f".{dest.name}.part-{os.getpid()}-{secrets.token_hex(8)}")


def _open_part(part: Path) -> BinaryIO:
    """Create ``part`` for writing; never opens an existing file and never follows a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(part, flags, 0o644)
    except FileExistsError:
        raise CacheError(
            f"{part} already exists (a file or a symbolic link that psn_zoo did not create): a download never writes "
            "through an existing file in its cache. Delete it and retry"
        ) from None
    return os.fdopen(fd, "wb")


def _regular_cache_file(path: Path) -> bool:
    """True for a regular file, False when nothing is there; a link or anything else in the cache is an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISREG(mode):
        return True
    what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
    raise CacheError(
        f"{path} is {what}: psn_zoo's cache holds only regular files it wrote itself and never follows links there. "
        "Delete it (the file will be downloaded again)"
    )


def _copy_limited(read: Callable[[int], bytes], out: BinaryIO, size: int | None, origin: str, bar: tqdm) -> int:
    """Copy ``read``'s bytes to ``out`` and return their count; past ``size`` bytes: :class:`SizeError`, at once."""
    got = 0
    limit = None if size is None else size + 1
    while True:
        block = read(_BLOCK if limit is None else min(_BLOCK, limit - got))
        if not block:
            return got
        out.write(block)
        got += len(block)
        bar.update(len(block))
        if size is not None and got > size:
            raise SizeError(
                f"{origin} sent more than the {size} bytes its manifest declares: reading stopped after {got} bytes. "
                "The source is wrong or hostile; nothing was saved in the cache"
            )


def _content_length(header: str | None, origin: str) -> int | None:
    """The byte count a server announces (None without one); a malformed one is a broken source (the next is tried)."""
    if header is None or not header.strip():
        return None
    if not (header.strip().isascii() and header.strip().isdigit()):
        raise ConnectionError(f"{origin} sent a malformed Content-Length {header[:40]!r}: a broken server or proxy")
    return int(header) or None


def _check_declared_length(total: int | None, size: int | None, origin: str) -> None:
    if total is not None and size is not None and total > size:
        raise SizeError(
            f"{origin} announces {total} bytes but its manifest declares {size}: refused before reading. The source "
            "is wrong or hostile; nothing was saved in the cache"
        )


def _write_atomically(
    dest: Path, fill: Callable[[BinaryIO], None], check: Callable[[Path], None] | None = None
) -> Path:
    """``fill`` a fresh partial file next to ``dest``, ``check`` it, then rename it into place. On any failure the
    partial file is removed and ``dest`` is untouched; a rename never follows a link at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    out = _open_part(part)
    try:
        with out:
            fill(out)
        if check is not None:
            check(part)
        part.replace(dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def _sha256_check(sha256: str, origin: str, dest: Path) -> Callable[[Path], None]:
    def check(part: Path) -> None:
        actual = sha256_of(part)
        if actual != sha256:
            raise ChecksumError(
                f"{origin} sent {dest.name} with sha256 {actual}, expected {sha256}: the source's copy is corrupt or "
                f"was modified. Nothing was saved in the cache {dest.parent}"
            )

    return check


def _http_fill(url: str, label: str, size: int | None, timeout: float) -> Callable[[BinaryIO], None]:
    def fill(out: BinaryIO) -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "psn-zoo"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = _content_length(response.headers.get("Content-Length"), url)
            _check_declared_length(total, size, url)
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {label}", leave=False) as bar:
                got = _copy_limited(response.read, out, size, url, bar)
        if total is not None and got != total:  # urllib returns a short body silently when the server hangs up
            raise ConnectionError(f"download truncated: got {got} of {total} bytes (the connection was closed early)")

    return fill


def _download(url: str, dest: Path, sha256: str, timeout: float, size: int | None = None) -> Path:
    return _write_atomically(dest, _http_fill(url, dest.name, size, timeout), _sha256_check(sha256, url, dest))


def _copy_local(source: Path, dest: Path, sha256: str, size: int | None) -> Path:
    def fill(out: BinaryIO) -> None:
        with open(source, "rb") as f, tqdm(disable=True) as bar:
            _copy_limited(f.read, out, size, f"file://{source}", bar)

    return _write_atomically(dest, fill, _sha256_check(sha256, f"file://{source}", dest))


def download_untrusted(url: str, folder: Path, *, timeout: float = 60.0) -> Path:
    """Download ``url`` (http or https) into ``folder``, which the caller owns and removes, with no content check:
    for a file that no manifest lists, such as a Lightning checkpoint given by URL (read it with weights_only)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "download"
    return _write_atomically(folder / name, _http_fill(url, name, None, timeout))


def _hf_cache_dir() -> str | None:
    """huggingface_hub reads ``HF_HUB_CACHE``/``HF_HOME`` once, at import; read them at call time, as
    ``PSN_ZOO_CACHE`` is (None: huggingface_hub's own default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return str(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return None


def _hf_download(spec: str, filename: str, endpoint: str | None) -> Path:
    """``filename`` of ``hf://org/repo[@revision]`` through ``hf_hub_download`` (huggingface_hub's cache layout and
    offline rules), unchecked: callers verify it.

    Raises :class:`OfflineError` for a cache miss in offline mode and an ``OSError`` when the Hub cannot be reached or
    lacks the repository, revision or file (so that :func:`fetch` tries the next source).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, _, revision = spec.removeprefix("hf://").partition("@")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None  # HF reads it at import only
    try:
        path = hf_hub_download(
            repo,
            filename,
            revision=revision or None,
            local_files_only=offline(),
            endpoint=endpoint,
            cache_dir=_hf_cache_dir(),
        )
    except LocalEntryNotFoundError as err:
        if offline():
            raise OfflineError(f"offline mode: {filename} of {repo} is not in the Hugging Face cache") from None
        where = endpoint or "the Hugging Face Hub"
        raise ConnectionError(
            f"could not get {filename} of {repo} from {where}, and it is not in the Hugging Face cache ({err})"
        ) from None
    return Path(path)


def _from_hf(spec: str, filename: str, sha256: str, endpoint: str | None) -> Path:
    """The verified file from ``hf://org/repo[@revision]`` (see :func:`_hf_download`)."""
    return verify(_hf_download(spec, filename, endpoint), sha256)


_HF_METADATA_LIMIT = 1 << 20  # a config.json is a few KB; anything this large is not one


def hf_metadata_file(spec: str, filename: str = "config.json", *, endpoint: str | None = None) -> tuple[bytes, str]:
    """The bytes of a small metadata file of ``hf://org/repo[@revision]`` and the commit they were read at.

    The commit (huggingface_hub's snapshot folder, a 40-hex git hash) pins the weights to the same revision as their
    metadata. Files over 1 MiB are refused (a metadata file is a few KB). Errors as :func:`_hf_download`.
    """
    path = _hf_download(spec, filename, endpoint)
    size = path.stat().st_size
    if size > _HF_METADATA_LIMIT:
        raise SizeError(f"{filename} of {spec} is {size} bytes: not a psn_zoo metadata file (at most 1 MiB)")
    commit = path.parent.name
    if not (len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)):
        commit = spec.partition("@")[2] or "main"  # not huggingface_hub's snapshot layout: the revision asked for
    return path.read_bytes(), commit


def _names_a_file(url: str) -> bool:
    """Is ``url`` the weights file itself (its path ends in ``.safetensors``, whatever its name), not a folder?"""
    return urllib.parse.urlparse(url).path.endswith(".safetensors")


def fetch(
    filename: str,
    sha256: str,
    sources: tuple[str, ...] = (),
    *,
    local: str | Path | None = None,
    release_dir: str | Path | None = None,
    timeout: float = 60.0,
    hf_endpoint: str | None = None,
    size: int | None = None,
) -> Path:
    """A verified local copy of ``filename`` (see the module docstring for the search order).

    ``local``: the file itself, or a folder holding it. ``release_dir``: the folder of the manifest that lists the
    file (a release folder written by ``psn-zoo publish``/``import-*`` keeps the weights next to its manifest).
    ``size``: the manifest's byte count; a download stops reading one byte past it (:class:`SizeError`).
    """
    if local is not None:
        path = Path(local).expanduser()
        return verify(path / filename if path.is_dir() else path, sha256)
    folders = ([Path(release_dir).expanduser()] if release_dir is not None else []) + [bundled_dir()]
    for folder in folders:
        if (folder / filename).exists():
            return verify(folder / filename, sha256)
    cached = cache_dir() / filename
    if _regular_cache_file(cached):
        return verify(cached, sha256)
    if not sources:
        where = ", ".join(str(f) for f in folders)
        raise FileNotFoundError(f"{filename} is neither in {where} nor in the cache {cache_dir()}, and has no sources")
    errors = []
    for source in sources:
        if source.startswith("hf://"):
            try:
                return _from_hf(source, filename, sha256, hf_endpoint)
            except OSError as err:  # offline miss, Hub unreachable, no such repo/revision/file: try the next source
                errors.append(f"{source}: {err}")
                continue
        url = source if _names_a_file(source) else urllib.parse.urljoin(source.rstrip("/") + "/", filename)
        if url.startswith("file://"):  # a local file: no download, so offline mode allows it
            local_file = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
            if not local_file.exists():
                errors.append(f"{url}: no such file")
                continue
            return _copy_local(local_file, cached, sha256, size)
        if offline():
            errors.append(f"offline mode: not downloading {source}")
            continue
        try:
            return _download(url, cached, sha256, timeout, size)
        except (OSError, http.client.HTTPException) as err:
            errors.append(f"{url}: {err}")
    kind = OfflineError if offline() else FileNotFoundError
    raise kind(f"could not get {filename} (cache: {cache_dir()}): " + "; ".join(errors))
