"""A reader for W&B's offline transaction log ``run-<id>.wandb`` (wandb >= 0.19 ships none).

Format: a 7-byte header (``b":W&B"``, magic ``0xBEE1`` little-endian, a version byte), then LevelDB-log blocks of
32 KiB; a chunk is ``crc32 (4, LE) | length (2, LE) | type (1) | data``, the CRC being zlib's over the type byte
then the data; chunk types FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4 reassemble into one serialized
``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

_HEADER = struct.Struct("<4sHB")
_CHUNK = struct.Struct("<IHB")
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[pb.Record]:
    data = Path(path).read_bytes()
    ident, magic, version = _HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1 or version not in (0, 1):
        raise ValueError(f"{path} is not a W&B transaction log (header {ident!r} {magic:#x} v{version})")
    pos, pending = _HEADER.size, b""
    while pos + _CHUNK.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK.size:  # the rest of a block is padding
            pos += room
            continue
        crc, length, kind = _CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += room
            continue
        payload = data[pos + _CHUNK.size : pos + _CHUNK.size + length]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: CRC mismatch at byte {pos}")
        pos += _CHUNK.size + length
        pending = payload if kind in (_FULL, _FIRST) else pending + payload
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _value(item: Any) -> Any:
    kind = item.WhichOneof("value") if hasattr(item, "WhichOneof") and item.DESCRIPTOR.oneofs else None
    if kind in ("boolean", "integer", "number", "text"):
        return getattr(item, kind)
    raw = item.json if kind == "json" else item.value_json
    return json.loads(raw) if raw else None


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class RunLog:
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def read_run(path: str | Path) -> RunLog:
    """Config, history rows, summary, artifacts (with manifest entries) and exit code of one offline run."""
    run = RunLog()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            run.config.update({_key(i): _value(i) for i in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): _value(i) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): _value(i) for i in record.summary.update})
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": list(a.aliases),
                    "metadata": json.loads(a.metadata) if a.metadata else {},
                    "entries": [{"path": e.path, "digest": e.digest, "size": e.size} for e in a.manifest.contents],
                }
            )
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
