"""Where weight files come from, and the cache they go to — with sha256 checked on every load.

A file is found, in order, in: an explicit local path; the package's own ``checkpoints/`` folder; the cache
(``$PSN_ZOO_CACHE``, else ``$TORCH_HOME/hub/checkpoints``, torch.hub's convention); or is downloaded from an
``http(s)://`` or ``file://`` URL or a Hugging Face Hub repository (``hf://org/repo[@revision]``). Downloads are
written to a temporary file in the cache directory, checked, then renamed into place, so the cache never holds a
partial or unverified file. ``PSN_ZOO_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids the network: only the cache
and local files are used, and a miss says so.
"""

from __future__ import annotations

import hashlib
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
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}", leave=False) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        verify(part, sha256)
        part.replace(dest)  # atomic: the cache only ever holds complete, verified files
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def _from_hf(spec: str, filename: str, sha256: str, endpoint: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, _, revision = spec.removeprefix("hf://").partition("@")
    try:
        path = hf_hub_download(repo, filename, revision=revision or None, local_files_only=offline(), endpoint=endpoint)
    except LocalEntryNotFoundError as err:
        raise OfflineError(f"offline mode: {filename} of {repo} is not in the Hugging Face cache ({err})") from None
    return verify(Path(path), sha256)


def fetch(
    filename: str,
    sha256: str,
    sources: tuple[str, ...] = (),
    *,
    local: str | Path | None = None,
    timeout: float = 60.0,
    hf_endpoint: str | None = None,
) -> Path:
    """A verified local copy of ``filename`` (see the module docstring for the search order)."""
    if local is not None:
        return verify(Path(local).expanduser(), sha256)
    shipped = bundled_dir() / filename
    if shipped.exists():
        return verify(shipped, sha256)
    cached = cache_dir() / filename
    if cached.exists():
        return verify(cached, sha256)
    if not sources:
        raise FileNotFoundError(f"{filename} is neither shipped with psn_zoo nor in the cache {cache_dir()}")
    errors = []
    for source in sources:
        if source.startswith("hf://"):
            try:
                return _from_hf(source, filename, sha256, hf_endpoint)
            except OfflineError as err:
                errors.append(str(err))
                continue
        if offline():
            errors.append(f"offline mode: not downloading {source}")
            continue
        url = source if source.endswith(filename) else urllib.parse.urljoin(source.rstrip("/") + "/", filename)
        if url.startswith("file://"):
            local_file = Path(urllib.parse.urlparse(url).path)
            verify(local_file, sha256)
            cached.parent.mkdir(parents=True, exist_ok=True)
            part = cached.with_name(f".{cached.name}.part-{os.getpid()}")
            shutil.copyfile(local_file, part)
            part.replace(cached)
            return cached
        try:
            return _download(url, cached, sha256, timeout)
        except (OSError, ChecksumError) as err:
            if isinstance(err, ChecksumError):
                raise
            errors.append(f"{url}: {err}")
    kind = OfflineError if offline() else FileNotFoundError
    raise kind(f"could not get {filename} (cache: {cache_dir()}): " + "; ".join(errors))
