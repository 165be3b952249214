"""N-Digits: an embedded, offline stand-in for N-MNIST, recorded the way N-MNIST was, in its exact format.

scikit-learn's bundled handwritten digits (``load_digits``: 1797 images, 8×8, 10 classes; no download) are
upscaled MNIST-style (bicubic ×2.5 into a 20×20 box centred on a 28×28 canvas), placed on a 34×34 sensor and
moved along N-MNIST's three saccades (a triangle, (0,0) → (3.5,7) → (7,0) → (0,0) px, ~105 ms per leg). An
idealised DVS pixel emits an event whenever its log intensity ``log(0.1 + 0.9·I)`` moved by the contrast
threshold (0.4, as measured against a real N-MNIST recording) since its last event: ON when brighter. Each
image is recorded several times with jitter (sensor position, per-recording threshold, per-pixel threshold
mismatch, saccade speed) plus uniform background activity.

The recordings are written as ``NMNIST/{Train,Test}/<digit>/NNNNN.bin`` ATIS files, so the unmodified
``tonic.datasets.NMNIST`` reads them; the split is by source image (stratified, seeded), so no image's
recordings straddle train and test. Generation shows a progress bar, writes into a temporary folder and
renames it into place when complete, and records its parameters, event statistics and fingerprint in
``ndigits.json``.

**Determinism (generator version 2).** The recordings are a function of the configuration alone: the same bits
on every x86-64 CPU (Intel or AMD, AVX2-only or AVX-512), whichever code paths NumPy, MKL, PyTorch or libm take
there, for any ``batch`` and thread count. After the source images, no result depends on a rounding:

- the images (scipy's bicubic zoom: compiled C without run-time CPU dispatch, the same under every emulated CPU)
  are rounded to multiples of 2^-16, and the image's position on the sensor to multiples of 2^-16 px, so bilinear
  sampling adds products of integers below 2^49: exact in int64 (as in the float64 of the first v2 code), in any
  order, with or without FMA;
- the log intensity comes from a table ``round(2^20 · ln(0.1 + 0.9·k/2^16))``, k = 0 … 2^16, built from IEEE-754
  basic operations only (:func:`portable_log`); the tests check every entry against exact decimal arithmetic (no
  exact value lies within 1e-9 of a rounding boundary). Contrast thresholds are multiples of 2^-20 too, so event
  detection is integer arithmetic. A pixel whose log intensity returns exactly to a level it left (dark → bright
  → dark: 9 % of the firing pixels) fires its last event, as ``|Δ log I| ≥ threshold`` says, so every pixel fires
  as many ON as OFF events over the closed saccade;
- every random draw of a recording comes from its own NumPy ``Generator``, seeded with ``(seed, sample id)``.
  PCG64 streams are platform-independent; the normal and Poisson samplers use libm only inside comparisons, which
  flip only for a libm result within an ulp of the other side (~1e-16 per draw; glibc's FMA and non-FMA libm gave
  the same 1.2e8 draws).

``tests/test_ndigits.py`` checks fingerprints (:func:`recordings_fingerprint`, the sha256 of the written files) in
fresh processes on emulated CPUs: MKL's Intel AVX-512 and AVX2 paths (through a vendor shim), PyTorch's AVX2 and
scalar kernels, NumPy without AVX-512 or without any SIMD dispatch, libm without FMA. Not covered: other
architectures (the arithmetic is IEEE-754 basic operations, but the zoom's compiled code may differ) and other
scipy builds.

Version 1 computed the log intensity with ``torch.log`` in float32, which runs MKL's VML ``vsLn``: MKL picks its
code path by CPU vendor and ISA (a generic one on AMD, its AVX-512 or AVX2 one on Intel: three roundings that
differ in 8 % of floats), and ``grid_sample``'s vectorised kernel rounds differently from its scalar one. Those
roundings decided the exact ties above, so Intel and AMD machines generated different splits (the published
accuracies moved by 0.1–0.3 points); v1's ON share of 50.6 % was that rounding too (v2: 50.0 %, and 3.5 % more
events). :data:`FINGERPRINTS` holds the default split's fingerprints, which :func:`generate_ndigits` checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from tqdm.auto import tqdm

from .base import stratified_split
from .errors import EmptySplitError
from .native_formats import encode_atis_bin, satisfy_existence_check, write_atis_bin
from .nmnist import NMNISTDataModule

GENERATOR_VERSION = 2
#: Offsets of the image on the sensor at the corners of the three saccades (px), as in N-MNIST.
SACCADE_PATH = ((0.0, 0.0), (3.5, 7.0), (7.0, 0.0), (0.0, 0.0))
NMNIST_EXISTENCE_THRESHOLD = 10_000  # tonic.datasets.NMNIST._check_exists wants this many .bin per split
#: Fixed-point resolutions (bits after the binary point) of the exact simulation.
INTENSITY_BITS = 16  # canvas and sampled intensities: multiples of 2^-16 of full scale
SUBPIXEL_BITS = 16  # the image's position on the sensor: multiples of 2^-16 px
LOG_BITS = 20  # log intensities and contrast thresholds: multiples of 2^-20
#: Recordings simulated together: a batch's arrays (~0.6 MB each) stay in a core's cache (256: 2x slower).
BATCH = 64


@dataclasses.dataclass(frozen=True)
class NDigitsConfig:
    """Everything that determines the generated recordings (its hash names the folder)."""

    recordings: int = 3
    images_per_class: int | None = None
    test_fraction: float = 0.2
    seed: int = 0
    sensor: int = 34
    saccade_us: int = 105_000
    dt_us: int = 1000
    contrast: float = 0.4
    contrast_jitter: float = 0.05
    pixel_mismatch: float = 0.03
    position_jitter_px: float = 1.0
    speed_jitter: float = 0.05
    background: float = 0.1
    noise_hz: float = 0.5

    def digest(self) -> str:
        payload = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]


#: :func:`recordings_fingerprint` of the default split, ``NDigitsConfig()`` (4314 train / 1077 test recordings),
#: by config digest: all recordings (``"all"``) and the test split alone (``"Test"``, what the published
#: accuracies are measured on). Measured on an AMD EPYC host (AVX-512), natively and on emulated Intel AVX-512 and
#: bare x86-64 CPUs; :func:`generate_ndigits` warns when a copy it writes differs.
FINGERPRINTS: dict[str, dict[str, str]] = {
    NDigitsConfig().digest(): {
        "all": "e08ea9aafb6fc8c8cd366fa7833437afc7af88371da3f7ba6e3e1417a1fe7c81",
        "Test": "cda4c9df8defe90d936b2e9d3aea0c2daf7cd7e4f4e1d7088308d55d7a4d2956",
    },
}


def mnist_style_digits(images_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits as ``[N, 28, 28]`` floats in [0, 1] (20×20 ink box, 4 px border) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images, digits.target.astype(np.int64)
    if images_per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:images_per_class] for c in range(10)])
        images, labels = images[np.sort(keep)], labels[np.sort(keep)]
    out = np.zeros((len(images), 28, 28), dtype=np.float32)
    for i, image in enumerate(images):
        out[i, 4:24, 4:24] = np.clip(ndimage.zoom(image / 16.0, 2.5, order=3), 0.0, 1.0)
    return out, labels


_LN2 = 0.6931471805599453
_SQRT_HALF = 0.7071067811865476


def portable_log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive normal float64 values from IEEE-754 basic operations only (``frexp``, +, −, ×, ÷).

    Each operation is correctly rounded by the standard, so the result is the same bits on every CPU and SIMD
    path (``np.log``, ``torch.log`` and libm are not: they differ across AVX2/AVX-512/MKL code paths in the last
    bit). Accuracy: a few ulp (``ln x = e·ln 2 + 2·atanh(s)``, ``s = (m−1)/(m+1)``, ``|s| ≤ 0.172``, 13 terms).
    """
    m, e = np.frexp(np.asarray(x, dtype=np.float64))  # x = m·2^e, m in [0.5, 1): exact
    low = m < _SQRT_HALF
    m = np.where(low, m * 2.0, m)  # m in [√½, √2): exact
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    series = np.full_like(s, 2.0 / 25.0)
    for k in range(11, -1, -1):  # 2·atanh(s)/s = Σ 2·z^k/(2k+1), Horner, highest order first
        series = series * z + 2.0 / (2 * k + 1)
    return s * series + (e - low).astype(np.float64) * _LN2


@functools.lru_cache(maxsize=8)
def log_intensity_table(background: float) -> np.ndarray:
    """``round(2^LOG_BITS · ln(background + (1 − background)·k/2^INTENSITY_BITS))`` for k = 0 … 2^INTENSITY_BITS.

    int32, read-only; the log intensity of every fixed-point intensity the simulation can sample.
    """
    k = np.arange((1 << INTENSITY_BITS) + 1, dtype=np.float64)
    x = background + (1.0 - background) * (k * 2.0**-INTENSITY_BITS)
    table = np.rint(portable_log(x) * 2.0**LOG_BITS).astype(np.int32)
    table.flags.writeable = False
    return table


def fixed_point_canvas(images: np.ndarray, config: NDigitsConfig) -> tuple[np.ndarray, int]:
    """Images ``[n, h, w]`` in [0, 1] at the sensor's top-left corner on zero canvases, in units of
    2^-INTENSITY_BITS (float64 holding integers), padded by ``pad`` px on every side so that each window the
    saccades reach fits: ``([n, size + 2·pad, size + 2·pad], pad)``."""
    pad = math.ceil(max(abs(c) for corner in SACCADE_PATH for c in corner) + config.position_jitter_px) + 2
    side = config.sensor + 2 * pad
    h, w = images.shape[1:]
    canvas = np.zeros((len(images), side, side))
    canvas[:, pad : pad + h, pad : pad + w] = np.rint(images.astype(np.float64) * 2.0**INTENSITY_BITS)
    return canvas, pad


def _bilinear_log_intensity(
    canvas: np.ndarray, top: np.ndarray, left: np.ndarray, weight: np.ndarray, shape: tuple[int, int], table: np.ndarray
) -> np.ndarray:
    """Log intensities ``[n, h·w]`` (int32, units of 2^-LOG_BITS) of ``h × w`` windows of the canvases ``[n, side,
    side]`` (integers, float64 or int64): pixel ``(v, u)`` of window ``i`` interpolates ``canvas[i]`` bilinearly
    between rows ``top[i] + v``, ``+ 1`` and columns ``left[i] + u``, ``+ 1`` with weights ``weight[i] = (wx, wy)``
    (integers, units of 2^-SUBPIXEL_BITS px), rounds the intensity half up to 2^-INTENSITY_BITS and looks it up.

    Integer arithmetic on ``[n, h + 1, w + 1]`` corners: every product and sum is an exact integer below 2^49.
    """
    n, (h, w) = len(canvas), shape
    sub = 1 << SUBPIXEL_BITS
    windows = sliding_window_view(canvas, (h + 1, w + 1), axis=(1, 2))  # a view: [n, ·, ·, h + 1, w + 1]
    corner = windows[np.arange(n), top, left].astype(np.int64, copy=False)  # a copy: [n, h + 1, w + 1]
    wx, wy = weight[:, 0, None, None], weight[:, 1, None, None]
    along_x = corner[:, :, :-1] * (sub - wx)
    along_x += corner[:, :, 1:] * wx  # intensity · 2^(INTENSITY_BITS + SUBPIXEL_BITS) < 2^33
    value = along_x[:, :-1] * (sub - wy)
    value += along_x[:, 1:] * wy  # intensity · 2^(INTENSITY_BITS + 2·SUBPIXEL_BITS) < 2^49
    value += 1 << (2 * SUBPIXEL_BITS - 1)
    value >>= 2 * SUBPIXEL_BITS  # round half up to 2^-INTENSITY_BITS
    return table[value.reshape(n, h * w)]


def _fixed_point_source(offset: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """``(cell, weight)`` (int64, ``[..., 2]`` as ``(x, y)``) of the source position ``(x, y) − offset`` rounded to
    2^-SUBPIXEL_BITS px: its floor (px) and fraction (units of 2^-SUBPIXEL_BITS); checked against the padding."""
    sub = 1 << SUBPIXEL_BITS
    source = np.rint(np.asarray(offset, dtype=np.float64) * -sub).astype(np.int64)
    cell, weight = source >> SUBPIXEL_BITS, source & (sub - 1)
    if cell.size and (cell.min() < -pad or cell.max() > pad - 1):
        raise ValueError(f"an offset in {offset.min():.2f} … {offset.max():.2f} px leaves the {pad} px padding")
    return cell, weight


def sample_log_intensity(canvas: np.ndarray, pad: int, offset: np.ndarray, config: NDigitsConfig) -> np.ndarray:
    """Log intensity ``[n, size²]`` (int32, units of 2^-LOG_BITS) the sensor's pixels see when each image of
    :func:`fixed_point_canvas` (``[n, side, side]``) is shifted by ``offset[i] = (dx, dy)`` px.

    Pixel ``(x, y)`` samples the image bilinearly at ``(x − dx, y − dy)`` with zero padding, as
    ``grid_sample(align_corners=True)`` does, from a position rounded to 2^-SUBPIXEL_BITS px; the intensity is
    rounded (half up) to 2^-INTENSITY_BITS and looked up in :func:`log_intensity_table`. Every product and sum is
    an exact integer below 2^49, so the result is the same in any order, on any CPU.
    """
    cell, weight = _fixed_point_source(offset, pad)
    table = log_intensity_table(float(config.background))
    size = config.sensor
    return _bilinear_log_intensity(canvas, pad + cell[:, 1], pad + cell[:, 0], weight, (size, size), table)


def _ink_box(canvas: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last index along ``axis`` (1: rows, 2: columns) where each canvas ``[n, side, side]`` is nonzero
    (``(side, -1)`` for an empty one)."""
    ink = (canvas != 0).any(axis=3 - axis)  # [n, side]
    side = ink.shape[1]
    first = np.where(ink.any(1), ink.argmax(1), side)
    last = np.where(ink.any(1), side - 1 - ink[:, ::-1].argmax(1), -1)
    return first, last


def simulate_recordings(
    images: np.ndarray, config: NDigitsConfig, rngs: Sequence[np.random.Generator]
) -> list[np.ndarray]:
    """Event recordings ``(N,)`` of structured arrays ``x, y, t, p`` (t in µs), one per image ``[N, 28, 28]``.

    Recording ``i`` draws all its randomness from ``rngs[i]`` (jitter, thresholds, timestamps, noise), so it
    does not depend on which other images share the call. Exact fixed-point arithmetic throughout (module
    docstring): the result is the same bits on every CPU.

    Only the pixels that can see ink are simulated: recording ``i`` in an ``h × w`` window of the sensor at
    ``(y0[i], x0[i])`` (the smallest size that holds every recording's ink and saccades); a pixel outside it
    samples zeros at every step, so its log intensity never changes and it never fires. Events come out in the
    same order as from the whole sensor (by step, then row-major), so the recordings are the same bits.
    """
    n, size = len(images), config.sensor
    if len(rngs) != n:
        raise ValueError(f"simulate_recordings needs one generator per image: {n} images, {len(rngs)} generators")
    speed, origin, threshold = np.empty(n), np.empty((n, 2)), np.empty((n, size, size))
    for i, rng in enumerate(rngs):
        speed[i] = rng.uniform(1 - config.speed_jitter, 1 + config.speed_jitter)
        origin[i] = rng.uniform(-config.position_jitter_px, config.position_jitter_px, 2)
        contrast = config.contrast * rng.uniform(1 - config.contrast_jitter, 1 + config.contrast_jitter)
        threshold[i] = contrast * (1 + config.pixel_mismatch * rng.standard_normal((size, size)))
    threshold = np.rint(np.maximum(threshold, 0.05) * 2.0**LOG_BITS).astype(np.int32)
    canvas, pad = fixed_point_canvas(images, config)
    canvas = canvas.astype(np.int64)
    path = np.asarray(SACCADE_PATH, dtype=np.float64)
    legs = len(SACCADE_PATH) - 1
    duration = int(np.ceil(config.saccade_us * legs * (1 + config.speed_jitter) / config.dt_us)) * config.dt_us
    times = np.arange(0, duration + 1, config.dt_us)  # step 0 (t = 0) sets the reference

    # the image's offset on the sensor at every step, [steps, n, 2] (dx, dy), elementwise as one step at a time
    progress = np.minimum(times.astype(np.float64)[:, None] / (config.saccade_us * speed), legs)  # legs done
    leg = np.minimum(np.floor(progress).astype(np.int64), legs - 1)
    frac = (progress - leg)[..., None]
    offset = path[leg] + frac * (path[leg + 1] - path[leg]) + origin
    cell, weight = _fixed_point_source(offset, pad)  # [steps, n, 2] each

    # the window of each recording: pixel x reads canvas columns pad + cell_x + x and + 1 (rows alike)
    window_from, window_size = np.empty((n, 2), np.int64), [0, 0]
    for axis in (0, 1):  # x, then y
        first, last = _ink_box(canvas, 2 - axis)
        lo = np.clip(first - 1 - pad - cell[:, :, axis].max(0), 0, size - 1)
        hi = np.clip(last - pad - cell[:, :, axis].min(0), 0, size - 1)
        window_size[axis] = max(1, int((hi - lo).max()) + 1)
        window_from[:, axis] = np.minimum(lo, size - window_size[axis])
    (w, h), (x0, y0) = window_size, window_from.T
    window_y, window_x = y0[:, None, None] + np.arange(h)[:, None], x0[:, None, None] + np.arange(w)
    threshold = threshold[np.arange(n)[:, None, None], window_y, window_x].reshape(-1)  # [n·h·w]
    top, left = pad + cell[:, :, 1] + y0, pad + cell[:, :, 0] + x0  # [steps, n]
    table = log_intensity_table(float(config.background))

    def log_intensity(step: int) -> np.ndarray:
        return _bilinear_log_intensity(canvas, top[step], left[step], weight[step], (h, w), table).reshape(-1)

    reference = log_intensity(0)  # the log intensity at each pixel's last event (fixed point, exact)
    chunks = []
    for step in range(1, len(times)):
        delta = log_intensity(step) - reference
        hit = np.flatnonzero(np.abs(delta) >= threshold)  # row-major: recording, y, x
        if len(hit):
            d, th = delta[hit], threshold[hit]
            count = np.abs(d) // th
            reference[hit] += np.sign(d) * count * th
            recording, pixel = np.divmod(hit, h * w)
            y, x = np.divmod(pixel, w)
            end = np.full(len(hit), times[step])
            rows = np.column_stack([recording, y0[recording] + y, x0[recording] + x, d > 0, end])
            chunks.append(np.repeat(rows, count, axis=0))  # [recording, y, x, p, end of step]
    events = np.concatenate(chunks) if chunks else np.zeros((0, 5), dtype=np.int64)
    events = events[np.argsort(events[:, 0], kind="stable")]
    bounds = np.searchsorted(events[:, 0], np.arange(n + 1))
    out = []
    pixels = size * size
    for i, rng in enumerate(rngs):
        e = events[bounds[i] : bounds[i + 1]]
        stamps = e[:, 4] - config.dt_us + rng.integers(0, config.dt_us, len(e))  # uniform within the step
        noise = rng.poisson(config.noise_hz * pixels * duration * 1e-6)
        noise_yx = rng.integers(0, size, (noise, 2))
        noise_p = rng.integers(0, 2, noise)
        noise_t = rng.integers(0, duration, noise)
        y = np.concatenate([e[:, 1], noise_yx[:, 0]])
        x = np.concatenate([e[:, 2], noise_yx[:, 1]])
        p = np.concatenate([e[:, 3], noise_p])
        t = np.concatenate([stamps, noise_t])
        order = np.argsort(t, kind="stable")
        rec = np.zeros(len(t), dtype=[("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
        rec["x"], rec["y"], rec["t"], rec["p"] = x[order], y[order], t[order], p[order]
        out.append(rec)
    return out


def recording_generator(config: NDigitsConfig, sample_id: int) -> np.random.Generator:
    """The random generator of one recording: seeded with ``(config.seed, sample_id)``."""
    return np.random.default_rng([config.seed, sample_id])


def _plan(config: NDigitsConfig) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """The source images and every recording to make, as ``(path, image index, sample id)``: train, then test."""
    images, labels = mnist_style_digits(config.images_per_class)
    train_images, test_images = stratified_split(labels.tolist(), config.test_fraction, config.seed)
    jobs = []
    for folder, image_ids in (("Train", train_images), ("Test", test_images)):
        for i in image_ids:
            for r in range(config.recordings):
                sample_id = i * config.recordings + r
                jobs.append((f"{folder}/{labels[i]}/{sample_id:05d}.bin", i, sample_id))
    return images, jobs


def _simulate_plan(
    images: np.ndarray, jobs: list[tuple[str, int, int]], config: NDigitsConfig, batch: int, workers: int | None
) -> Iterator[tuple[str, np.ndarray]]:
    """Simulate ``jobs`` ``batch`` at a time, ``workers`` batches in parallel threads (NumPy releases the GIL),
    and yield ``(path, events)`` in order. Each recording has its own generator, so neither changes the events."""
    parts = [jobs[first : first + batch] for first in range(0, len(jobs), batch)]

    def simulate(part: list[tuple[str, int, int]]) -> list[np.ndarray]:
        rngs = [recording_generator(config, sample_id) for _, _, sample_id in part]
        return simulate_recordings(images[[i for _, i, _ in part]], config, rngs)

    workers = max(1, min(workers or os.cpu_count() or 1, 4, len(parts)))
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[tuple[list[tuple[str, int, int]], Future[list[np.ndarray]]]] = deque()
        for part in parts:
            pending.append((part, pool.submit(simulate, part)))
            while len(pending) > workers or (pending and part is parts[-1]):  # at most workers + 1 in memory
                done, future = pending.popleft()
                yield from zip([path for path, _, _ in done], future.result(), strict=True)


def iter_recordings(
    config: NDigitsConfig = NDigitsConfig(), batch: int = BATCH, workers: int | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """``(path, events)`` of every recording, ``path`` relative to the ``NMNIST`` folder (``Train/3/00042.bin``).

    Train first, then test, by source image. ``batch`` recordings are simulated together, ``workers`` batches at
    a time (default: one per CPU core, at most 4); they change the speed and memory, never the events.
    """
    images, jobs = _plan(config)
    yield from _simulate_plan(images, jobs, config, batch, workers)


def _fingerprint(digests: Mapping[str, str]) -> str:
    listing = "".join(f"{digests[path]}  {path}\n" for path in sorted(digests))
    return hashlib.sha256(listing.encode()).hexdigest()


def recordings_fingerprint(
    config: NDigitsConfig = NDigitsConfig(), split: str | None = None, batch: int = BATCH, workers: int | None = None
) -> str:
    """sha256 of the ``.bin`` files :func:`generate_ndigits` writes for ``config`` (only ``split``'s, ``"Train"``
    or ``"Test"``, if given), computed in memory: nothing is written, and a split alone costs only its recordings.

    The sha256 of the ``sha256sum`` listing (``<sha256>  <path>``, sorted by path, paths relative to ``NMNIST``):
    ``cd <root>/NMNIST && find . -name '*.bin' -type f | cut -c3- | LC_ALL=C sort | xargs sha256sum | sha256sum``
    gives the same, as does :func:`folder_fingerprint`.
    """
    if split not in (None, "Train", "Test"):
        raise ValueError(f"split must be None, 'Train' or 'Test', got {split!r}")
    images, jobs = _plan(config)
    jobs = [job for job in jobs if split is None or job[0].startswith(f"{split}/")]
    return _fingerprint(
        {
            path: hashlib.sha256(encode_atis_bin(e["x"], e["y"], e["t"], e["p"])).hexdigest()
            for path, e in _simulate_plan(images, jobs, config, batch, workers)
        }
    )


def folder_fingerprint(root: str | Path, split: str | None = None) -> str:
    """The fingerprint of the ``.bin`` files under ``root/NMNIST`` (or ``root/NMNIST/<split>``), as
    :func:`recordings_fingerprint` computes it."""
    base = Path(root) / "NMNIST"
    return _fingerprint(
        {
            p.relative_to(base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (base / split if split else base).rglob("*.bin")
            if p.is_file()
        }
    )


def generate_ndigits(
    root: str | Path, config: NDigitsConfig = NDigitsConfig(), batch: int = BATCH, workers: int | None = None
) -> dict[str, Any]:
    """Write N-Digits under ``root/NMNIST`` (unless a complete copy with the same config is there).

    Returns the metadata (config, sample counts, event statistics, fingerprint) also stored in
    ``root/ndigits.json``. Warns when a configuration with a fingerprint in :data:`FINGERPRINTS` (the default
    split) comes out different, which would make published accuracies irreproducible here.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(root.parent / f".{root.name}.lock"):  # DDP ranks and parallel jobs: one generates, the rest wait
        meta_path = root / "ndigits.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("config_digest") == config.digest() and meta.get("complete"):
                return meta
        for stale in root.parent.glob(f".{root.name}.tmp-*"):  # left by a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        return _generate(root, config, batch, workers)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path`` (created if needed), released on exit or when the process dies."""
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _generate(root: Path, config: NDigitsConfig, batch: int, workers: int | None) -> dict[str, Any]:
    """Simulate into a temporary folder beside ``root``, then rename it into place (the caller holds the lock)."""
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    counts: dict[str, int] = {"Train": 0, "Test": 0}
    n_events, n_on, digests = [], 0, {}
    images, jobs = _plan(config)

    def pad() -> None:  # Tonic's check wants 10000 .bin per split: links, made by a thread while simulating
        for folder, archive in (("Train", "train.zip"), ("Test", "test.zip")):
            planned = [rel for rel, _, _ in jobs if rel.startswith(f"{folder}/")]
            satisfy_existence_check(
                tmp / "NMNIST" / folder, tmp / "NMNIST" / archive, ".bin", NMNIST_EXISTENCE_THRESHOLD, planned
            )

    try:
        with ThreadPoolExecutor(1) as padder:  # joined before anything below removes the folder
            padding = padder.submit(pad)
            with tqdm(total=len(jobs), desc="simulating N-Digits recordings", unit="rec") as bar:
                for rel, events in _simulate_plan(images, jobs, config, batch, workers):
                    path = tmp / "NMNIST" / rel
                    write_atis_bin(path, events["x"], events["y"], events["t"], events["p"])
                    digests[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
                    counts[rel.split("/", 1)[0]] += 1
                    n_events.append(len(events))
                    n_on += int(events["p"].sum())
                    bar.update(1)
            padding.result()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave half a dataset behind
        raise
    n_events_arr = np.asarray(n_events)
    fingerprint = _fingerprint(digests)
    expected = FINGERPRINTS.get(config.digest(), {}).get("all")
    if expected is not None and fingerprint != expected:
        warnings.warn(
            f"N-Digits generator v{GENERATOR_VERSION} produced fingerprint {fingerprint} for {config}, not the "
            f"published {expected}: the published N-Digits accuracies will not reproduce exactly on this machine. "
            "Please report it with `python -c 'import numpy, torch; numpy.show_runtime(); "
            "print(torch.__config__.show())'`.",
            RuntimeWarning,
            stacklevel=2,
        )
    meta = {
        "generator_version": GENERATOR_VERSION,
        "config": dataclasses.asdict(config),
        "config_digest": config.digest(),
        "samples": counts,
        "events_per_sample": {
            "mean": float(n_events_arr.mean()),
            "min": int(n_events_arr.min()),
            "max": int(n_events_arr.max()),
        },
        "on_ratio": n_on / float(n_events_arr.sum()),
        "fingerprint": fingerprint,
        "seconds": round(time.perf_counter() - start, 1),
        "complete": True,
    }
    (tmp / "ndigits.json").write_text(json.dumps(meta, indent=2))
    if root.exists():  # an incomplete or outdated copy: replace it
        shutil.rmtree(root)
    os.replace(tmp, root)
    return meta


class NDigitsDataModule(NMNISTDataModule):
    """N-Digits (embedded, offline, generated on first use) read through ``tonic.datasets.NMNIST``.

    Args:
        recordings: recordings per source image (3: 4311 train / 1080 test samples).
        images_per_class: use only the first n images of each digit (quick tests); None: all 1797.
        generator_seed: seed of the simulation and of the train/test split by image.
        **kwargs: the arguments of :class:`psn_zoo.datamodules.NMNISTDataModule` (``T``, ``batch_size``, ``cache``...).
    """

    name = "NDigits"

    def __init__(
        self, recordings: int = 3, images_per_class: int | None = None, generator_seed: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.config = NDigitsConfig(recordings=recordings, images_per_class=images_per_class, seed=generator_seed)
        self.metadata: dict[str, Any] | None = None

    def tonic_root(self) -> Path:
        return self.data_dir / f"ndigits-{self.config.digest()}"

    def tonic_folder(self) -> str:
        return "NMNIST"

    def prepare_data(self) -> None:
        self._check_split_fits()
        self.metadata = generate_ndigits(self.tonic_root(), self.config)
        super().prepare_data()

    def _check_split_fits(self) -> None:
        """Each side of the split by image needs an image of every digit: ``round(n · test_fraction)`` of the ``n``
        images per digit are test images (:func:`stratified_split`)."""
        n, fraction = self.config.images_per_class, self.config.test_fraction
        if n is None or 0 < round(n * fraction) < n:
            return
        fits = next((k for k in range(n, 1000) if 0 < round(k * fraction) < k), None)
        side = "test" if round(n * fraction) == 0 else "train"
        raise EmptySplitError(
            f"{self.name}: images_per_class={n} with test_fraction={fraction} leaves the {side} split without "
            f"images (round({n} × {fraction}) = {round(n * fraction)} test images per digit): use "
            + (f"images_per_class >= {fits}, or " if fits else "")
            + "images_per_class=None (all 1797 images)"
        )

    def setup(self, stage: str | None = None) -> None:
        self._check_split_fits()
        if self.metadata is None:
            meta = self.tonic_root() / "ndigits.json"
            if not meta.exists():  # setup without prepare_data (e.g. a bare script)
                self.prepare_data()
            else:
                self.metadata = json.loads(meta.read_text())
        super().setup(stage)

    def fingerprint(self, split: str = "test") -> str:
        """The sha256 fingerprint of the local files of ``split`` (``"train"``, ``"val"``: the holdout, ``"test"``)
        that this DataModule reads, as :func:`folder_fingerprint` defines it: the sha256 of the ``sha256sum``
        listing of the files, paths relative to the ``NMNIST`` folder (they hold the labels). A faithful copy of the
        default test split gives ``FINGERPRINTS[NDigitsConfig().digest()]["Test"]``. Reads every file of the split.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        base = (self.tonic_root() / "NMNIST").resolve()
        digests = {}
        for source in self.sample_sources(split):  # sets the DataModule up (and generates the data) if needed
            path = Path(source).resolve()
            digests[path.relative_to(base).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
        return _fingerprint(digests)

    def groups_of(self, dataset: Any, indices: list[int] | None) -> list[int]:
        """Recordings of the same source image stay together (the validation split is by image, as the test)."""
        ids = [int(Path(p).stem) // self.config.recordings for p in dataset.data]
        return [ids[i] for i in indices] if indices is not None else ids

    def download_help(self) -> str:
        return (
            f"N-Digits is generated locally (no download); generation into {self.tonic_root()} did not produce "
            "readable files. Delete that folder and run prepare_data() again."
        )
