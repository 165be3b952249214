"""Writers for the native on-disk formats that Tonic 1.7.0's dataset classes read, and its existence check.

Each writer is the inverse of the reader Tonic uses, so a file written here is parsed by Tonic's own code:

- ATIS ``.bin`` (N-MNIST, N-Caltech101): 5 bytes per event, ``x``, ``y``, ``p<<7 | t[22:16]``, ``t[15:8]``,
  ``t[7:0]`` (µs; ``y == 240`` is an overflow marker, so it is never written) -> ``tonic.io.read_mnist_file``;
- AEDAT 4 (CIFAR10-DVS): magic, an ``IOHeader`` flatbuffer, then size-prefixed ``EVTS`` event packets of
  ``struct {int64 t; int16 x; int16 y; bool on}`` -> ``aedat.Decoder`` via ``tonic.io.read_aedat4``;
- DVS128 Gesture ``.npy``: a plain ``(N, 4)`` array ``[x, y, p, t_ms]``;
- SHD ``.h5``: ``spikes/times`` (s), ``spikes/units``, ``labels``, ``extra/keys``, ``extra/speaker``;
- ASL-DVS ``.mat``: ``ts``, ``x``, ``y``, ``pol``.

Tonic decides whether a dataset is present by "archive file exists and at least N files of the data type
are under the folder" (never an md5). :func:`satisfy_existence_check` writes an empty placeholder archive
and, when fewer than N real files exist, adds symbolic links named ``*.<ext>`` to an empty directory inside a
hidden ``.pad`` folder: ``pathlib`` counts them, ``os.walk`` never reads them, so the unmodified Tonic class
loads exactly the real files.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np


# ---------------------------------------------------------------------------------------------- ATIS .bin
def encode_atis_bin(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> bytes:
    """Events (``t`` in µs, < 2**23) as Orchard's 40-bit ATIS TD records."""
    x, y, t, p = (np.asarray(a, dtype=np.int64) for a in (x, y, t, p))
    if len(t) and (t.min() < 0 or t.max() >= 2**23):
        raise ValueError("ATIS .bin timestamps must lie in [0, 2**23) µs")
    if len(x) and (x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 239):
        raise ValueError("ATIS .bin needs x in [0, 255] and y in [0, 239] (y == 240 marks a timestamp overflow)")
    raw = np.empty((len(t), 5), dtype=np.uint8)
    raw[:, 0] = x
    raw[:, 1] = y
    raw[:, 2] = ((p & 1) << 7) | ((t >> 16) & 0x7F)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    return raw.tobytes()


def write_atis_bin(path: str | Path, x, y, t, p) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_atis_bin(x, y, t, p))


# ---------------------------------------------------------------------------------------------- AEDAT 4
_AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"


def _aedat4_description(width: int, height: int) -> bytes:
    return (
        '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="originalModuleName" type="string">capture</attr>'
        '<attr key="originalOutputName" type="string">events</attr>'
        '<attr key="typeDescription" type="string">Array of events (polarity ON/OFF).</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
        f'<attr key="sizeX" type="int">{width}</attr><attr key="sizeY" type="int">{height}</attr>'
        '<attr key="source" type="string">DVS128</attr></node></node></node></dv>'
    ).encode()


def _ioheader(description: bytes) -> bytes:
    """Flatbuffer ``IOHeader`` with only ``description`` set (compression none, data position -1)."""
    buf = bytearray(struct.pack("<I", 20) + b"IOHE" + struct.pack("<HHHHH", 10, 8, 0, 0, 4) + b"\x00\x00")
    buf += struct.pack("<iI", 12, 4) + struct.pack("<I", len(description)) + description + b"\x00"
    buf += b"\x00" * (-len(buf) % 4)
    return bytes(buf)


def _event_packet(t, x, y, on) -> bytes:
    """Size-prefixed ``EventPacket`` flatbuffer (identifier ``EVTS``) holding 16-byte events."""
    events = np.zeros(len(t), dtype=np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("_", "V3")]))
    events["t"], events["x"], events["y"], events["on"] = t, x, y, np.asarray(on, dtype=bool)
    body = struct.pack("<I", 16) + b"EVTS" + struct.pack("<HHH", 6, 8, 4) + b"\x00\x00" + struct.pack("<iI", 8, 12)
    body += b"\x00" * 8 + struct.pack("<I", len(t)) + events.tobytes()
    return struct.pack("<I", len(body)) + body


def write_aedat4(path: str | Path, t, x, y, p, width: int = 128, height: int = 128, per_packet: int = 4096) -> None:
    """An uncompressed AEDAT 4 file with one polarity-event stream (the CIFAR10-DVS layout Tonic reads)."""
    t = np.asarray(t, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t, x, y, p = t[order], np.asarray(x)[order], np.asarray(y)[order], np.asarray(p)[order]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = _ioheader(_aedat4_description(width, height))
    with open(path, "wb") as f:
        f.write(_AEDAT4_MAGIC + struct.pack("<I", len(header)) + header)
        for start in range(0, max(len(t), 1), per_packet):
            window = slice(start, start + per_packet)
            packet = _event_packet(t[window], x[window], y[window], p[window])
            f.write(struct.pack("<II", 0, len(packet)) + packet)


# ---------------------------------------------------------------------------------------------- npy / h5 / mat
def write_dvsgesture_npy(path: str | Path, x, y, p, t_us) -> None:
    """DVS128 Gesture as Tonic's preprocessed release stores it: ``(N, 4)`` int ``[x, y, p, t_ms]``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.stack([np.asarray(x), np.asarray(y), np.asarray(p), np.asarray(t_us) // 1000], 1).astype(np.int64))


def write_shd_h5(path: str | Path, samples: list[tuple[np.ndarray, np.ndarray]], labels, keys=None) -> None:
    """Heidelberg spiking digits layout; ``samples`` are ``(times_s, units)`` pairs."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(samples),), dtype=h5py.vlen_dtype(np.float32))
        units = f.create_dataset("spikes/units", (len(samples),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (times_s, units_i) in enumerate(samples):
            times[i] = np.asarray(times_s, dtype=np.float32)
            units[i] = np.asarray(units_i, dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        keys = keys if keys is not None else [f"class-{i}" for i in range(20)]
        f.create_dataset("extra/keys", data=np.array([k.encode() for k in keys]))
        f.create_dataset("extra/speaker", data=np.zeros(len(samples), dtype=np.uint16))


def write_asl_mat(path: str | Path, x, y, t, p) -> None:
    """ASL-DVS ``.mat`` with ``ts``, ``x``, ``y``, ``pol`` column vectors (as MATLAB writes them)."""
    from scipy import io as scipy_io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    col = lambda a: np.asarray(a, dtype=np.int64).reshape(-1, 1)  # noqa: E731
    scipy_io.savemat(path, {"ts": col(t), "x": col(x), "y": col(y), "pol": col(p)})


# ---------------------------------------------------------------------------------------------- existence check
def satisfy_existence_check(
    folder: str | Path,
    archive: str | Path,
    extension: str,
    needed: int,
    real_files: Iterable[Path] | None = None,
    pad_name: str = ".pad",
) -> int:
    """Make Tonic's ``_check_exists`` pass for ``folder`` without touching its samples.

    Writes the empty placeholder ``archive`` and, if fewer than ``needed`` files ``*<extension>`` exist under
    ``folder``, links named ``<pad_name>/pad_NNNNNN<extension>`` to an empty directory (DVS128 Gesture needs
    ``pad_name="user99_pad"``: Tonic parses every sub-folder name as ``user<N>_<lighting>``). Returns the number
    of links.
    """
    folder = Path(folder)
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.touch()
    have = len(list(real_files)) if real_files is not None else len(list(folder.glob(f"**/*{extension}")))
    missing = max(0, needed - have)
    if missing:
        pad = folder / pad_name
        (pad / "_empty").mkdir(parents=True, exist_ok=True)
        for i in range(missing):
            link = pad / f"pad_{i:06d}{extension}"
            if not os.path.lexists(link):
                os.symlink("_empty", link, target_is_directory=True)
    return missing
