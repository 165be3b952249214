"""Loopback HTTP servers for the checkpoint-hub tests (stdlib only, bound to 127.0.0.1 on a free port).

- :class:`FileServer` serves a dict of files and can misbehave on purpose: send other bytes (``corrupt``), or
  promise a ``Content-Length`` it does not deliver and hang up (``truncate``). It records every request.
- :class:`HostileHub` answers every Hub download request with what the test chose: any ``X-Repo-Commit`` and
  ``ETag`` (paths such as ``../../x`` included), more bytes than the file has, or a redirect elsewhere.
- :class:`FakeHub` is a minimal Hugging Face Hub: enough of the HTTP API that ``huggingface_hub`` 2.4 uses for
  ``hf_hub_download`` (``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``, ``ETag``, and for
  LFS files a redirect to a separate "CDN" host carrying ``X-Linked-Etag``/``X-Linked-Size``) and for
  ``HfApi.create_repo`` + ``upload_folder`` without Xet (``/api/repos/create``, ``/api/validate-yaml``,
  ``/api/models/{repo}/preupload/{rev}``, the git-LFS batch API with a basic ``PUT`` transfer and ``verify``, and the
  ndjson ``/api/models/{repo}/commit/{rev}``). Repositories, commits and LFS objects live in memory and can be
  inspected by the test.

Both are context managers: ``with FileServer({...}) as server: server.url``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import http.server
import json
import re
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class _Handler(http.server.BaseHTTPRequestHandler):
    """Dispatches every request to ``self.server.app.handle(self)``."""

    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after a test

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _dispatch(self) -> None:
        self.server.app.record(self)  # type: ignore[attr-defined]
        self.server.app.handle(self)  # type: ignore[attr-defined]

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # ------------------------------------------------------------------ helpers for the apps
    def body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def reply_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


class _App:
    """Owns one or more ``ThreadingHTTPServer`` threads; subclasses implement :meth:`handle`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.headers_seen: list[dict[str, str]] = []  # header names lower-cased
        self._lock = threading.Lock()
        self._servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def _serve(self) -> str:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.app = self  # type: ignore[attr-defined]
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._servers.append((httpd, thread))
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    def record(self, handler: _Handler) -> None:
        with self._lock:
            self.requests.append((handler.command, urllib.parse.urlsplit(handler.path).path))
            self.headers_seen.append({k.lower(): v for k, v in handler.headers.items()})

    def handle(self, handler: _Handler) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        for httpd, thread in self._servers:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
        self._servers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_padded(handler: _Handler, data: bytes, extra: int, owner) -> None:
    """Writes ``data`` then ``extra`` zero bytes as the response body; ``owner.sent`` counts the bytes the client
    accepted and ``owner.done`` (a :class:`threading.Event`) is set when the body ends or the client hung up."""
    block = b"\0" * (1 << 20)
    try:
        handler.wfile.write(data)
        owner.sent = len(data)
        while owner.sent < len(data) + extra:
            chunk = block[: len(data) + extra - owner.sent]
            handler.wfile.write(chunk)
            owner.sent += len(chunk)
    except OSError:
        pass
    finally:
        owner.done.set()


class FileServer(_App):
    """Serves ``files`` (``{url path without leading '/': bytes}``) under :attr:`url`.

    ``mode``: ``"ok"``; ``"corrupt"`` (same length, one byte flipped); ``"truncate"`` (``Content-Length`` of the
    whole file, then only the first half and the connection closes).
    """

    def __init__(self, files: dict[str, bytes], mode: str = "ok") -> None:
        super().__init__()
        if mode not in ("ok", "corrupt", "truncate"):
            raise ValueError(mode)
        self.files, self.mode = dict(files), mode
        self.url = self._serve() + "/"

    def gets(self, name: str | None = None) -> int:
        """How many GET requests asked for ``name`` (any file when None)."""
        return sum(1 for m, p in self.requests if m == "GET" and (name is None or p == f"/{name}"))

    def handle(self, handler: _Handler) -> None:
        data = self.files.get(urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path.lstrip("/")))
        if data is None or handler.command not in ("GET", "HEAD"):
            handler.reply(404, b"not found")
            return
        if self.mode == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if self.mode == "truncate":
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.reply(200, data, {"Content-Type": "application/octet-stream"})


# ---------------------------------------------------------------------------------------------- fake Hub
@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)  # paths stored as LFS pointers


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("POST", re.compile(rf"^/{_REPO}\.git/info/lfs/objects/verify$"), "lfs_verify"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    # the "CDN": a different origin (port), as the real Hub redirects LFS downloads off the Hub host
    ("PUT", re.compile(r"^/cdn/upload/(?P<oid>[0-9a-f]{64})$"), "cdn_upload"),
    ("GET", re.compile(r"^/cdn/lfs/(?P<oid>[0-9a-f]{64})$"), "cdn_download"),
]


class FakeHub(_App):
    """A Hugging Face Hub good enough for ``hf_hub_download`` and a Xet-less ``HfApi.upload_folder``.

    ``lfs_patterns``: paths answered ``uploadMode: "lfs"`` by preupload (the rest are "regular" git blobs, sent
    base64 in the commit). :attr:`repos` holds the repositories, :attr:`lfs_objects` the uploaded LFS bytes by
    sha256, :attr:`commit_payloads` each commit's parsed ndjson lines.
    """

    def __init__(self, lfs_patterns: Iterable[str] = ("*.safetensors",)) -> None:
        super().__init__()
        self.lfs_patterns = tuple(lfs_patterns)
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.commit_payloads: list[list[dict[str, Any]]] = []
        self.url = self._serve()
        self.cdn_url = self._serve()

    # ------------------------------------------------------------------ test-side helpers
    def add_repo(self, repo_id: str) -> Repo:
        repo = Repo(repo_id)
        first = Commit(self._oid(repo_id, "init"), None, "initial commit", {".gitattributes": b"*.safetensors lfs\n"})
        repo.commits[first.oid] = first
        repo.refs["main"] = first.oid
        self.repos[repo_id] = repo
        return repo

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        commit = self.repos[repo_id].resolve(revision)
        assert commit is not None, revision
        data = commit.files[path]
        return self.lfs_objects[data.decode()] if path in commit.lfs else data

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    @staticmethod
    def _oid(*parts: Any) -> str:
        return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    # ------------------------------------------------------------------ dispatch
    def handle(self, handler: _Handler) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path)
        for method, pattern, name in _ROUTES:
            if handler.command == method and (match := pattern.match(path)):
                with self._lock:
                    getattr(self, f"_{name}")(handler, **match.groupdict())
                return
        handler.reply_json(404, {"error": f"fake hub: no route for {handler.command} {path}"})

    def _repo_or_404(self, handler: _Handler, repo_id: str) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            handler.reply_json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo

    # ------------------------------------------------------------------ API
    def _create_repo(self, handler: _Handler) -> None:
        payload = json.loads(handler.body())
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.repos:
            handler.reply_json(409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"})
            return
        self.add_repo(repo_id)
        handler.reply_json(200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self, handler: _Handler) -> None:
        import yaml

        content = json.loads(handler.body())["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(match[1]) if match else None
        except yaml.YAMLError as err:
            handler.reply_json(400, {"errors": [{"message": f"invalid YAML: {err}"}]})
            return
        if not isinstance(meta, dict):
            handler.reply_json(400, {"errors": [{"message": "README.md has no YAML metadata block"}]})
            return
        handler.reply_json(200, {"errors": [], "warnings": []})

    def _preupload(self, handler: _Handler, repo: str, rev: str) -> None:
        payload = json.loads(handler.body())
        if (found := self._repo_or_404(handler, repo)) is None:
            return
        files = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if any(fnmatch.fnmatch(f["path"], p) for p in self.lfs_patterns) else "regular",
                "shouldIgnore": False,
                "oid": None,
            }
            for f in payload["files"]
        ]
        handler.reply_json(200, {"files": files, "commitOid": found.refs.get("main")})

    def _lfs_batch(self, handler: _Handler, repo: str) -> None:
        payload = json.loads(handler.body())
        if self._repo_or_404(handler, repo) is None:
            return
        assert payload["operation"] == "upload" and "basic" in payload["transfers"], payload
        objects = []
        for obj in payload["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.cdn_url}/cdn/upload/{obj['oid']}", "header": {}},
                    "verify": {"href": f"{self.url}/{repo}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(entry)
        handler.reply_json(200, {"transfer": "basic", "objects": objects})

    def _cdn_upload(self, handler: _Handler, oid: str) -> None:
        data = handler.body()
        if hashlib.sha256(data).hexdigest() != oid:
            handler.reply_json(400, {"error": f"content does not hash to {oid}"})
            return
        self.lfs_objects[oid] = data
        handler.reply(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, handler: _Handler, repo: str) -> None:
        payload = json.loads(handler.body())
        data = self.lfs_objects.get(payload["oid"])
        if data is None or len(data) != payload["size"]:
            handler.reply_json(404, {"error": "LFS object not found"})
            return
        handler.reply_json(200, {"success": True})

    def _commit(self, handler: _Handler, repo: str, rev: str) -> None:
        assert handler.headers.get("Content-Type") == "application/x-ndjson", handler.headers
        lines = [json.loads(line) for line in handler.body().splitlines() if line.strip()]
        self.commit_payloads.append(lines)
        if (found := self._repo_or_404(handler, repo)) is None:
            return
        if rev not in found.refs:  # commits go onto a branch
            handler.reply_json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
            return
        parent = found.commits[found.refs[rev]]
        files, lfs = dict(parent.files), set(parent.lfs)
        header = next(item["value"] for item in lines if item["key"] == "header")
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                assert value["encoding"] == "base64", value
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    handler.reply_json(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                    return
                files[value["path"]] = value["oid"].encode()
                lfs.add(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                files.pop(value["path"], None)
                lfs.discard(value["path"])
            elif key != "header":
                handler.reply_json(400, {"error": f"fake hub: unsupported commit operation {key}"})
                return
        oid = self._oid(repo, parent.oid, header, sorted((p, hashlib.sha256(d).hexdigest()) for p, d in files.items()))
        found.commits[oid] = Commit(oid, parent.oid, header["summary"], files, lfs)
        found.refs[rev] = oid
        handler.reply_json(
            200,
            {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "success": True, "pullRequestUrl": None},
        )

    # ------------------------------------------------------------------ downloads
    def _resolve(self, handler: _Handler, repo: str, rev: str, path: str) -> None:
        if (found := self._repo_or_404(handler, repo)) is None:
            return
        commit = found.resolve(rev)
        if commit is None:
            handler.reply_json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
            return
        common = {"X-Repo-Commit": commit.oid}
        if path not in commit.files:
            handler.reply_json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", **common})
            return
        if path in commit.lfs:
            oid = commit.files[path].decode()
            pointer = (
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(self.lfs_objects[oid])}\n"
            )
            handler.reply(
                302,
                b"",
                {
                    **common,
                    "Location": f"{self.cdn_url}/cdn/lfs/{oid}",
                    "ETag": f'"{git_blob_sha1(pointer.encode())}"',
                    "X-Linked-Etag": f'"{oid}"',
                    "X-Linked-Size": str(len(self.lfs_objects[oid])),
                },
            )
            return
        data = commit.files[path]
        handler.reply(200, data, {**common, "ETag": f'"{git_blob_sha1(data)}"'})

    def _cdn_download(self, handler: _Handler, oid: str) -> None:
        data = self.lfs_objects.get(oid)
        if data is None:
            handler.reply(404, b"no such object")
            return
        handler.reply(200, data, {"Content-Type": "application/octet-stream", "ETag": f'"{oid}"'})


# ------------------------------------------------------------------------------------------- hostile Hub
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>[^/]+)$")


class HostileHub(_App):
    """Answers ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` for any repository and revision with ``files[file]``
    under the headers the test sets: ``commit`` (``X-Repo-Commit``) and ``etag`` (``ETag``, quoted), whatever they
    are; ``extra`` bytes of zeros after the file, announced by ``Content-Length`` when ``announce`` (else the body just
    runs on); or a 302 to ``redirect + file`` (with an ``X-Repo-Commit``, as the Hub redirects LFS files). A file not
    in ``files`` is a 404 as the Hub sends it. :attr:`sent` counts the body bytes a client accepted, :attr:`done` is
    set when a body ends or the client hung up. Attributes may be changed between requests."""

    def __init__(self, files: dict[str, bytes], *, commit: str = "c" * 40, etag: str | None = None, extra: int = 0,
                 announce: bool = True, redirect: str | None = None) -> None:  # fmt: skip
        super().__init__()
        self.files, self.commit, self.etag = dict(files), commit, etag
        self.extra, self.announce, self.redirect = extra, announce, redirect
        self.sent = 0
        self.done = threading.Event()
        self.url = self._serve()

    def handle(self, handler: _Handler) -> None:
        match = _RESOLVE.match(urllib.parse.urlsplit(handler.path).path)
        name = urllib.parse.unquote(match["path"]) if match else None
        if name not in self.files:
            handler.reply_json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        data = self.files[name]
        common = {"X-Repo-Commit": self.commit, "ETag": f'"{self.etag or git_blob_sha1(data)}"'}
        if self.redirect is not None:
            handler.reply(302, b"", {**common, "Location": self.redirect + name})
            return
        handler.send_response(200)
        for key, value in common.items():
            handler.send_header(key, value)
        if self.announce:
            handler.send_header("Content-Length", str(len(data) + self.extra))
        handler.end_headers()
        if handler.command == "HEAD":
            return
        stream_padded(handler, data, self.extra, self)
