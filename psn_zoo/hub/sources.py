"""Where weight files come from, and the cache they go to — with sha256 checked on every load.

A file is found, in order, in: an explicit local path (the file or its folder); the folder of the manifest that
lists it (a release folder); the package's own ``psn_zoo.checkpoints`` (the repository's ``checkpoints/``); the cache
(``$PSN_ZOO_CACHE``, else ``$TORCH_HOME/hub/checkpoints``, torch.hub's convention); or is downloaded from an
``http(s)://`` or ``file://`` URL or a Hugging Face Hub repository (``hf://owner/name[@revision]``). Downloads (and
``file://`` copies) are written to a fresh partial file in the cache directory, created with ``O_EXCL | O_NOFOLLOW``
under an unguessable name (never through an existing file or link), read only up to the manifest's declared size
(one byte more is an error, at once), checked, then renamed into place, so the cache holds only complete, verified,
regular files (a short, long or wrong download is an error that leaves nothing behind). A symbolic link or anything
but a regular file at a cache entry's path is an error, never followed. Sources are tried in
order: one that cannot be reached, or lacks the file, passes to the next; wrong bytes stop the search at once.

``hf://`` files are downloaded the same way, by this module (from the URL ``huggingface_hub.hf_hub_url`` builds, with
huggingface_hub's token, which is never sent to another host a redirect leads to), not by ``hf_hub_download``: no
path is ever made from what a server sends. Repository ids and revisions are checked strictly first
(:func:`psn_zoo.hub.metadata.split_hf_source`). ``PSN_ZOO_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids the network:
only the cache and local files are used, and a miss says so. ``HF_ENDPOINT`` is read when a file is fetched
(huggingface_hub itself reads it only when it is imported).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import math
import os
import secrets
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import BinaryIO, TypeVar

from tqdm.auto import tqdm

from .metadata import HF_COMMIT, CheckpointInfo, ManifestError, split_hf_source

_T = TypeVar("_T")


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


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """How psn_zoo's downloads follow redirects: to ``http(s)://`` URLs only; an ``authorization`` (a Hub token) goes
    again only to the origin it was meant for, never to the storage host a Hub redirects a large file to (nor to any
    other host); the first ``X-Repo-Commit`` header seen is kept (the Hub sends it before redirecting LFS files)."""

    def __init__(self, url: str, authorization: str | None = None) -> None:
        super().__init__()
        self.origin, self.authorization, self.commit = _origin(url), authorization, None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if self.commit is None:
            self.commit = headers.get("X-Repo-Commit")
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise ConnectionError(f"{req.full_url} redirects to {newurl[:100]!r}: only http(s) redirects are followed")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and self.authorization and _origin(newurl) == self.origin:
            new.add_unredirected_header("Authorization", self.authorization)
        return new


def _http_fill(
    url: str, label: str, size: int | None, timeout: float, redirects: _Redirects | None = None
) -> Callable[[BinaryIO], None]:
    def fill(out: BinaryIO) -> None:
        follow = redirects if redirects is not None else _Redirects(url)
        request = urllib.request.Request(url, headers={"User-Agent": "psn-zoo"})
        if follow.authorization:
            request.add_unredirected_header("Authorization", follow.authorization)
        with urllib.request.build_opener(follow).open(request, timeout=timeout) as response:
            if follow.commit is None:
                follow.commit = response.headers.get("X-Repo-Commit")
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


# ============================================================================================ Hugging Face Hub
# Files of hf://owner/name[@revision] are fetched by psn_zoo's own downloader above, from the URL huggingface_hub's
# hf_hub_url builds, with huggingface_hub's token: never through hf_hub_download, whose cache paths come from the
# server's ETag and X-Repo-Commit headers. Weights go to psn_zoo's cache like any download (size-limited, sha256
# checked, renamed into place); a repository's config.json, once validated, to <cache>/hf/<owner>/<name>/<commit>/,
# with <cache>/hf/<owner>/<name>/refs/<revision> naming the commit a branch or tag was last read at (for offline use).


def _hf_endpoint(endpoint: str | None) -> str | None:
    """``endpoint``, else ``$HF_ENDPOINT`` read now (huggingface_hub reads it only at import), else None (its own)."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _hf_authorization() -> str | None:
    """``Bearer <token>`` with huggingface_hub's token (``$HF_TOKEN``, else the one ``hf auth login`` stored), as
    ``hf_hub_download`` sends it; None without one or with ``$HF_HUB_DISABLE_IMPLICIT_TOKEN``."""
    if os.environ.get("HF_HUB_DISABLE_IMPLICIT_TOKEN", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    from huggingface_hub.utils import get_token

    token = get_token()
    return f"Bearer {token}" if token else None


def _hf_request(spec: str, filename: str, endpoint: str | None, run: Callable[[str, _Redirects], _T]) -> _T:
    """``run(url, redirects)`` for ``filename`` of ``hf://owner/name[@revision]`` (both checked strictly), with
    errors as :class:`OSError` naming the file, the repository and the Hub, so that :func:`fetch` tries the next
    source: :class:`FileNotFoundError` for a 404 (no such repository, revision or file), else ConnectionError."""
    from huggingface_hub import constants, hf_hub_url

    repo, revision = split_hf_source(spec)
    if filename != Path(filename).name or filename.startswith(".") or "\\" in filename:
        raise ValueError(f"{filename!r} is not a plain file name")
    endpoint = _hf_endpoint(endpoint)
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    where = f"{filename} of {repo} from {endpoint or constants.ENDPOINT}"
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ValueError(f"the Hugging Face Hub endpoint must be an http(s) URL, not {url!r}")
    try:
        return run(url, _Redirects(url, _hf_authorization()))
    except urllib.error.HTTPError as err:
        code = err.headers.get("X-Error-Code") if err.headers is not None else None
        kind = FileNotFoundError if err.code == 404 else ConnectionError
        status = f"HTTP {err.code} {code or err.reason}"
        raise kind(f"could not get {where} at revision {revision or 'main'}: {status}") from None
    except urllib.error.URLError as err:
        raise ConnectionError(f"could not get {where}: {err.reason}") from None
    except (http.client.HTTPException, TimeoutError) as err:
        raise ConnectionError(f"could not get {where}: {err!r}") from None


def _from_hf(
    spec: str, filename: str, sha256: str, endpoint: str | None, dest: Path, size: int | None, timeout: float
) -> Path:
    """``filename`` of ``hf://owner/name[@revision]`` downloaded into ``dest`` as any download is (size-limited,
    sha256-checked, renamed into place; see :func:`_write_atomically`)."""

    def run(url: str, redirects: _Redirects) -> Path:
        fill = _http_fill(url, filename, size, timeout, redirects)
        return _write_atomically(dest, fill, _sha256_check(sha256, f"{spec} ({url})", dest))

    return _hf_request(spec, filename, endpoint, run)


_HF_METADATA_LIMIT = 1 << 20  # a config.json is a few KB; anything this large is not one


def _read_cache_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file in the cache (None when absent), at most ``limit`` of them (else CacheError)."""
    if not _regular_cache_file(path):
        return None
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CacheError(f"{path} is over {limit} bytes: psn_zoo never wrote it. Delete it (it will be fetched again)")
    return data


def hf_metadata_file(
    spec: str,
    filename: str = "config.json",
    *,
    endpoint: str | None = None,
    check: Callable[[bytes], None] | None = None,
    timeout: float = 60.0,
) -> tuple[bytes, str]:
    """The bytes of a small metadata file of ``hf://owner/name[@revision]`` and the commit they were read at.

    The commit (the Hub's ``X-Repo-Commit``, a 40-hex git hash) pins the weights to the same revision as their
    metadata. Reading stops past 1 MiB (:class:`SizeError`: a metadata file is a few KB). ``check(data)`` runs
    before anything is cached, so the cache holds only files that passed it. A file pinned to a commit and cached
    is read without a request; offline (``PSN_ZOO_OFFLINE``/``HF_HUB_OFFLINE``), or when the Hub cannot be reached,
    a branch or tag is read at the commit it was last read at. Errors as :func:`_hf_request`.
    """
    repo, revision = split_hf_source(spec)
    rev = revision or "main"
    folder = cache_dir() / "hf" / repo
    ref = folder / "refs" / urllib.parse.quote(rev, safe="")

    def cached() -> tuple[bytes, str] | None:
        commit = rev
        if not HF_COMMIT.fullmatch(rev):
            text = _read_cache_file(ref, 64)
            if text is None:
                return None
            commit = text.decode("ascii", "replace").strip()
            if not HF_COMMIT.fullmatch(commit):
                raise CacheError(f"{ref} does not name a commit: psn_zoo never wrote it. Delete it")
        data = _read_cache_file(folder / commit / filename, _HF_METADATA_LIMIT)
        return None if data is None else (data, commit)

    if HF_COMMIT.fullmatch(rev) or offline():
        found = cached()
        if found is not None:
            return found
        if offline():
            raise OfflineError(f"offline mode: {filename} of {repo}@{rev} is not in the cache {cache_dir()}")

    def run(url: str, redirects: _Redirects) -> tuple[bytes, str]:
        buffer = io.BytesIO()
        _http_fill(url, filename, _HF_METADATA_LIMIT, timeout, redirects)(buffer)
        commit = redirects.commit or (rev if HF_COMMIT.fullmatch(rev) else None)
        if commit is None or not HF_COMMIT.fullmatch(commit) or (HF_COMMIT.fullmatch(rev) and commit != rev):
            raise ConnectionError(
                f"{url} answered with commit {commit!r} (X-Repo-Commit) for revision {rev!r}: not a Hugging Face "
                "Hub endpoint, or a wrong one; nothing was saved"
            )
        return buffer.getvalue(), commit

    try:
        data, commit = _hf_request(spec, filename, endpoint, run)
    except SizeError:
        raise SizeError(
            f"{filename} of {spec} is over 1 MiB (reading stopped there): not a psn_zoo metadata file. Nothing was "
            "saved in the cache"
        ) from None
    except FileNotFoundError:
        raise
    except ConnectionError:  # the Hub cannot be reached: what the cache has, as huggingface_hub does
        found = None if HF_COMMIT.fullmatch(rev) else cached()
        if found is None:
            raise
        return found
    if check is not None:
        check(data)
    _write_atomically(folder / commit / filename, lambda out: out.write(data))
    if rev != commit:
        _write_atomically(ref, lambda out: out.write(commit.encode()))
    return data, commit


def _names_a_file(url: str) -> bool:
    """Is ``url`` the weights file itself (its path ends in ``.safetensors``, whatever its name), not a folder?"""
    return urllib.parse.urlparse(url).path.endswith(".safetensors")


def _check_size(path: Path, size: int | None) -> Path:
    """``path`` if it has the ``size`` bytes its record declares (or ``size`` is None), else :class:`ManifestError`."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise ManifestError(
            f"field 'weights.size' is {size} but {path} has {actual} bytes (its sha256 matches, so the file is "
            "right): the record does not describe its weights. Correct the record's size, or publish the entry again"
        )
    return path


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
    ``size``: the manifest's byte count; a download stops reading one byte past it (:class:`SizeError`), and a
    verified file of another size is a :class:`ManifestError` (the record is wrong).
    """
    return _check_size(
        _fetch(filename, sha256, sources, local=local, release_dir=release_dir, timeout=timeout,
               hf_endpoint=hf_endpoint, size=size),
        size,
    )  # fmt: skip


def _fetch(
    filename: str,
    sha256: str,
    sources: tuple[str, ...],
    *,
    local: str | Path | None,
    release_dir: str | Path | None,
    timeout: float,
    hf_endpoint: str | None,
    size: int | None,
) -> Path:
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
            if offline():
                errors.append(f"offline mode: not downloading {source}")
                continue
            try:
                return _from_hf(source, filename, sha256, hf_endpoint, cached, size, timeout)
            except OSError as err:  # Hub unreachable, no such repository/revision/file: try the next source
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


#: safetensors' names of the floating-point dtypes a record's ``weights.dtype`` names
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def check_weights_record(info: CheckpointInfo, path: str | Path) -> None:
    """Check ``info``'s record against its (sha256-verified) weights file ``path``, read from the safetensors header:
    ``weights.size`` (the file's bytes), ``weights.dtype`` (every floating-point tensor's) and ``params`` (at least
    the elements of the ``*.weight``/``*.bias`` tensors, at most those of all floating-point tensors: the header
    does not tell parameters from buffers such as BatchNorm's running statistics). A record that disagrees is a
    :class:`ManifestError` naming the field, the record's value and the file's."""
    from safetensors import safe_open

    path = Path(path)

    def fail(field: str, recorded: object, found: str) -> ManifestError:
        return ManifestError(
            f"checkpoint entry {info.name!r}: field {field!r} is {recorded!r} but its weights file {path.name} "
            f"{found}: the record does not describe its weights (they match its sha256). Correct the record, or "
            "publish the entry again"
        )

    actual_size = path.stat().st_size
    if actual_size != info.weights.size:
        raise fail("weights.size", info.weights.size, f"has {actual_size} bytes")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {key: f.get_slice(key) for key in f.keys()}  # noqa: SIM118 (not iterable)
            tensors = {key: (t.get_dtype(), math.prod(t.get_shape())) for key, t in header.items()}
    except Exception as err:  # SafetensorError: not a safetensors file at all
        why = f"{path} is not a safetensors file ({err})"
        raise ValueError(f"{why}: the weights of {info.name} are unreadable") from None
    floats = {key: (dtype, n) for key, (dtype, n) in tensors.items() if dtype in _SAFETENSORS_DTYPES}
    dtypes = sorted({_SAFETENSORS_DTYPES[dtype] for dtype, _ in floats.values()})
    if dtypes and dtypes != [info.weights.dtype]:
        raise fail("weights.dtype", info.weights.dtype, f"holds {' and '.join(dtypes)} tensors")
    most = sum(n for _, n in floats.values())
    least = sum(n for key, (_, n) in floats.items() if key.endswith((".weight", ".bias")) or key in ("weight", "bias"))
    if not least <= info.params <= most:
        counted = f"{most}" if least == most else f"between {least} and {most}"
        raise fail("params", info.params, f"holds {counted} parameters")
