"""Where weight files come from, and the cache they go to — with sha256 checked on every load.

A file is found, in order, in: an explicit local path (the file or its folder); the folder of the manifest that
lists it (a release folder); the package's own ``checkpoints/`` folder; the cache
(``$PSN_ZOO_CACHE``, else ``$TORCH_HOME/hub/checkpoints``, torch.hub's convention); or is downloaded from an
``http(s)://`` or ``file://`` URL or a Hugging Face Hub repository (``hf://org/repo[@revision]``). Downloads are
written to a temporary file in the cache directory, checked, then renamed into place, so the cache never holds a
partial or unverified file (a short or wrong download is an error that leaves nothing behind). Sources are tried in
order: one that cannot be reached, or lacks the file, passes to the next; wrong bytes stop the search at once.
``PSN_ZOO_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids the network: only the cache and local files are used, and a
miss says so. ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_CACHE`` are read when a file is fetched (huggingface_hub
itself reads them only when it is imported).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path

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
    return Path(str(resources.files("checkpoints")))


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


def _download(url: str, dest: Path, sha256: str, timeout: float) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "psn-zoo"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}", leave=False) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    got += len(block)
                    bar.update(len(block))
        if total is not None and got != total:  # urllib returns a short body silently when the server hangs up
            raise ConnectionError(f"download truncated: got {got} of {total} bytes (the connection was closed early)")
        actual = sha256_of(part)
        if actual != sha256:
            raise ChecksumError(
                f"{url} sent {dest.name} with sha256 {actual}, expected {sha256}: the server's copy is corrupt or was "
                f"modified. Nothing was saved in the cache {dest.parent}"
            )
        part.replace(dest)  # atomic: the cache only ever holds complete, verified files
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def _hf_cache_dir() -> str | None:
    """huggingface_hub reads ``HF_HUB_CACHE``/``HF_HOME`` once, at import; read them at call time, as
    ``PSN_ZOO_CACHE`` is (None: huggingface_hub's own default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return str(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return None


def _from_hf(spec: str, filename: str, sha256: str, endpoint: str | None) -> Path:
    """The verified file from ``hf://org/repo[@revision]`` (huggingface_hub's cache layout and offline rules).

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
    return verify(Path(path), sha256)


def fetch(
    filename: str,
    sha256: str,
    sources: tuple[str, ...] = (),
    *,
    local: str | Path | None = None,
    release_dir: str | Path | None = None,
    timeout: float = 60.0,
    hf_endpoint: str | None = None,
) -> Path:
    """A verified local copy of ``filename`` (see the module docstring for the search order).

    ``local``: the file itself, or a folder holding it. ``release_dir``: the folder of the manifest that lists the
    file (a release folder written by ``psn-zoo publish``/``import-*`` keeps the weights next to its manifest).
    """
    if local is not None:
        path = Path(local).expanduser()
        return verify(path / filename if path.is_dir() else path, sha256)
    folders = ([Path(release_dir).expanduser()] if release_dir is not None else []) + [bundled_dir()]
    for folder in folders:
        if (folder / filename).exists():
            return verify(folder / filename, sha256)
    cached = cache_dir() / filename
    if cached.exists():
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
        if offline():
            errors.append(f"offline mode: not downloading {source}")
            continue
        url = source if source.endswith(filename) else urllib.parse.urljoin(source.rstrip("/") + "/", filename)
        if url.startswith("file://"):
            local_file = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
            if not local_file.exists():
                errors.append(f"{url}: no such file")
                continue
            verify(local_file, sha256)
            cached.parent.mkdir(parents=True, exist_ok=True)
            part = cached.with_name(f".{cached.name}.part-{os.getpid()}")
            try:
                shutil.copyfile(local_file, part)
                part.replace(cached)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            return cached
        try:
            return _download(url, cached, sha256, timeout)
        except (OSError, http.client.HTTPException) as err:
            errors.append(f"{url}: {err}")
    kind = OfflineError if offline() else FileNotFoundError
    raise kind(f"could not get {filename} (cache: {cache_dir()}): " + "; ".join(errors))
