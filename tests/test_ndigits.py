"""The embedded N-Digits dataset and the sequential-digits task."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
import pytest
import tonic
import torch

from psn_zoo.datamodules import NDigitsDataModule, SequentialDigitsDataModule, generate_ndigits
from psn_zoo.datamodules import ndigits as nd

ROOT = Path(__file__).resolve().parents[1]
SMALL = nd.NDigitsConfig(images_per_class=4, recordings=2)
#: recordings_fingerprint(SMALL): the 80 recordings of SMALL (60 train, 20 test), generator v2. Measured on an AMD
#: EPYC (AVX-512) and on every emulated CPU below, where generator v1 gave 4 different event sets (native, torch's
#: scalar kernels, MKL's Intel AVX-512 path, MKL's Intel AVX2 path).
SMALL_FINGERPRINT = "e70887f9d1226f29bd243c4652fc3eece938df0c565ed6455dd2e9ff1046b1ca"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.bin")):
        if f.is_file():
            h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small_ndigits(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nd") / "ndigits"
    return root, generate_ndigits(root, SMALL)


def test_unmodified_tonic_nmnist_reads_the_generated_files(small_ndigits):
    root, meta = small_ndigits
    train = tonic.datasets.NMNIST(save_to=str(root), train=True)
    test = tonic.datasets.NMNIST(save_to=str(root), train=False)
    assert len(train) == meta["samples"]["Train"] == 30 * 2 and len(test) == meta["samples"]["Test"] == 10 * 2
    events, label = train[0]
    assert events.dtype.names == ("x", "y", "t", "p") and 0 <= label <= 9
    assert events["x"].max() < 34 and events["y"].max() < 34 and set(np.unique(events["p"])) == {0, 1}
    assert 300_000 < events["t"].max() < 2**23 and np.all(np.diff(events["t"]) >= 0)
    assert sorted(set(train.targets)) == list(range(10))


def test_small_split_fingerprint(small_ndigits):
    """The committed fingerprint: what the files hold, what the generator recorded and what it computes in memory."""
    root, meta = small_ndigits
    assert meta["generator_version"] == nd.GENERATOR_VERSION == 2
    assert meta["fingerprint"] == nd.folder_fingerprint(root) == SMALL_FINGERPRINT
    assert nd.recordings_fingerprint(SMALL, split="Test") == nd.folder_fingerprint(root, "Test") != SMALL_FINGERPRINT


def test_recordings_do_not_depend_on_batching_or_threads():
    """Each recording draws from its own generator, so batch size and worker threads change nothing."""
    assert nd.recordings_fingerprint(SMALL, batch=7, workers=3) == SMALL_FINGERPRINT
    assert nd.recordings_fingerprint(SMALL, batch=1000, workers=1) == SMALL_FINGERPRINT


def test_default_test_split_fingerprint():
    """The test split of the default N-Digits (1077 recordings, the published accuracies' split), computed in
    memory: the split alone costs a fifth of the whole (the full split's fingerprint is checked by generate_ndigits
    wherever it is generated, and was measured with it)."""
    expected = nd.FINGERPRINTS[nd.NDigitsConfig().digest()]
    assert nd.recordings_fingerprint(nd.NDigitsConfig(), split="Test") == expected["Test"]
    assert len(expected["all"]) == 64 and expected["all"] != expected["Test"]


def test_generation_warns_when_a_published_split_comes_out_different(tmp_path, monkeypatch):
    tiny = nd.NDigitsConfig(images_per_class=1, recordings=1)
    monkeypatch.setitem(nd.FINGERPRINTS, tiny.digest(), {"all": "0" * 64})
    with pytest.warns(RuntimeWarning, match="will not reproduce exactly"):
        meta = generate_ndigits(tmp_path / "nd", tiny)
    assert meta["complete"] and meta["fingerprint"] == nd.folder_fingerprint(tmp_path / "nd")


def test_log_table_is_the_exactly_rounded_log():
    """Every entry of the log-intensity table is round(2^20 · ln(0.1 + 0.9·k/2^16)) computed in exact decimal
    arithmetic, and no exact value lies within 1e-9 (units of 2^-20) of a rounding boundary, so any log
    accurate to 1e-15 gives the same table (portable_log is within a few ulp of numpy's)."""
    table = nd.log_intensity_table(0.1)
    assert table.dtype == np.int32 and len(table) == 2**16 + 1 and not table.flags.writeable
    getcontext().prec = 30
    scale, low, span, steps = Decimal(2) ** 20, Decimal(1) / 10, Decimal(9) / 10, Decimal(2) ** 16
    margin = Decimal(1)
    for k, entry in enumerate(table.tolist()):
        exact = (low + span * k / steps).ln() * scale
        assert int(exact.to_integral_value()) == entry, k
        margin = min(margin, abs(abs(exact - exact.to_integral_value()) - Decimal("0.5")))
    assert margin > Decimal("1e-9")
    x = np.random.default_rng(0).uniform(0.1, 1.0, 100_000)
    assert np.all(np.abs(nd.portable_log(x) - np.log(x)) <= 4 * np.spacing(np.abs(np.log(x))))


def test_fixed_point_sampling_matches_grid_sample():
    """The exact fixed-point sampling sees what v1's float grid_sample saw: intensities within 2^-15 (canvas and
    intensity rounded to 2^-16, the position to 2^-16 px, bilinear slopes at most 1 per px), so log intensities
    within 9·2^-15 (the slope of log(0.1 + 0.9·I) is at most 9) plus the table's 2^-21."""
    config = nd.NDigitsConfig()
    images, _ = nd.mnist_style_digits(2)
    canvas, pad = nd.fixed_point_canvas(images, config)
    rng = np.random.default_rng(0)
    size = config.sensor
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    for _ in range(5):
        offset = rng.uniform(-1.0, 8.0, (len(images), 2))
        ours = nd.sample_log_intensity(canvas, pad, offset, config).reshape(-1, size, size) * 2.0**-nd.LOG_BITS
        frame = torch.zeros(len(images), 1, size, size, dtype=torch.float64)
        frame[:, 0, :28, :28] = torch.from_numpy(images.astype(np.float64))
        off = torch.from_numpy(offset)
        grid = torch.stack(
            [(xs - off[:, :1, None]) * (2 / (size - 1)) - 1, (ys - off[:, 1:, None]) * (2 / (size - 1)) - 1], -1
        )
        sampled = torch.nn.functional.grid_sample(
            frame, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        v1 = torch.log(0.1 + 0.9 * sampled[:, 0]).numpy()
        assert np.abs(ours - v1).max() <= 9 * 2.0**-15 + 2.0**-21


def test_every_pixel_fires_as_many_on_as_off_events():
    """The saccade path is closed, so each pixel ends at the log intensity it started at; with exact arithmetic it
    has fired as many ON as OFF events (a return to a level it left is an exact tie, and it fires). Float
    rounding decided those ties in v1 (50.6 % ON events over the default split; 9 % of the firing pixels tie)."""
    config = nd.NDigitsConfig(images_per_class=1, recordings=1, noise_hz=0.0)
    images, _ = nd.mnist_style_digits(1)
    recordings = nd.simulate_recordings(images, config, [nd.recording_generator(config, i) for i in range(10)])
    for events in recordings:
        pixel = events["y"] * config.sensor + events["x"]
        on = np.bincount(pixel[events["p"] == 1], minlength=config.sensor**2)
        off = np.bincount(pixel[events["p"] == 0], minlength=config.sensor**2)
        assert len(events) > 3000 and np.array_equal(on, off)


# Generator v2 as first committed (e6f6541), kept as the reference the faster code must match bit for bit: the
# committed fingerprints pin the default configuration, this pins the arithmetic for any configuration.
def _v2_sample_log_intensity(canvas: np.ndarray, pad: int, offset: np.ndarray, config: nd.NDigitsConfig) -> np.ndarray:
    """Generator v2's first sampling: float64 on the whole sensor, np.take of flat indices."""
    n, side, size = len(canvas), canvas.shape[1], config.sensor
    sub = 1 << nd.SUBPIXEL_BITS
    source = np.rint(np.asarray(offset, dtype=np.float64) * -sub).astype(np.int64)  # (x, y) − offset, fixed point
    cell, weight = source >> nd.SUBPIXEL_BITS, (source & (sub - 1)).astype(np.float64)  # floor and fraction
    if cell.min() < -pad or cell.max() > pad - 1:
        raise ValueError(f"an offset in {offset.min():.2f} … {offset.max():.2f} px leaves the {pad} px padding")
    rows = (np.arange(size + 1)[:, None] * side + np.arange(size)).reshape(-1)  # size + 1 rows of size pixels
    at = (np.arange(n) * side * side + (pad + cell[:, 1]) * side + pad + cell[:, 0])[:, None] + rows
    flat = canvas.reshape(-1)
    left, right = np.take(flat, at), np.take(flat[1:], at)  # [n, (size + 1)·size], right = left's neighbour
    right -= left
    right *= weight[:, :1]
    left *= sub
    left += right  # interpolated along x: intensity · 2^(nd.INTENSITY_BITS + nd.SUBPIXEL_BITS)
    along_x = left.reshape(n, size + 1, size)
    value = along_x[:, 1:] - along_x[:, :-1]
    value *= weight[:, 1:, None]
    value += along_x[:, :-1] * sub  # and along y: intensity · 2^(nd.INTENSITY_BITS + 2·nd.SUBPIXEL_BITS)
    value *= 2.0 ** -(2 * nd.SUBPIXEL_BITS)
    value += 0.5
    index = np.floor(value, out=value).astype(np.intp).reshape(n, size * size)  # exact: round half up
    return nd.log_intensity_table(float(config.background))[index]


def _v2_simulate_recordings(
    images: np.ndarray, config: nd.NDigitsConfig, rngs: list[np.random.Generator]
) -> list[np.ndarray]:
    """Generator v2's first simulation loop: every pixel of the sensor, one step at a time."""
    n, size = len(images), config.sensor
    if len(rngs) != n:
        raise ValueError(f"simulate_recordings needs one generator per image: {n} images, {len(rngs)} generators")
    pixels = size * size
    speed, origin, threshold = np.empty(n), np.empty((n, 2)), np.empty((n, size, size))
    for i, rng in enumerate(rngs):
        speed[i] = rng.uniform(1 - config.speed_jitter, 1 + config.speed_jitter)
        origin[i] = rng.uniform(-config.position_jitter_px, config.position_jitter_px, 2)
        contrast = config.contrast * rng.uniform(1 - config.contrast_jitter, 1 + config.contrast_jitter)
        threshold[i] = contrast * (1 + config.pixel_mismatch * rng.standard_normal((size, size)))
    threshold = np.rint(np.maximum(threshold, 0.05) * 2.0**nd.LOG_BITS).astype(np.int32).reshape(-1)
    canvas, pad = nd.fixed_point_canvas(images, config)
    path = np.asarray(nd.SACCADE_PATH, dtype=np.float64)
    legs = len(nd.SACCADE_PATH) - 1

    def log_intensity(t_us: float) -> np.ndarray:
        progress = np.minimum(t_us / (config.saccade_us * speed), legs)  # legs done, per recording
        leg = np.minimum(np.floor(progress).astype(np.int64), legs - 1)
        frac = (progress - leg)[:, None]
        offset = path[leg] + frac * (path[leg + 1] - path[leg]) + origin  # [n, 2] (dx, dy)
        return _v2_sample_log_intensity(canvas, pad, offset, config).reshape(-1)

    duration = int(np.ceil(config.saccade_us * legs * (1 + config.speed_jitter) / config.dt_us)) * config.dt_us
    reference = log_intensity(0.0)  # the log intensity at each pixel's last event (fixed point, exact)
    chunks = []
    for t in range(config.dt_us, duration + 1, config.dt_us):
        delta = log_intensity(float(t)) - reference
        hit = np.flatnonzero(np.abs(delta) >= threshold)  # row-major: recording, y, x
        if len(hit):
            d, th = delta[hit], threshold[hit]
            count = np.abs(d) // th
            reference[hit] += np.sign(d) * count * th
            recording, pixel = np.divmod(hit, pixels)
            y, x = np.divmod(pixel, size)
            rows = np.column_stack([recording, y, x, d > 0, np.full(len(hit), t)])
            chunks.append(np.repeat(rows, count, axis=0))  # [recording, y, x, p, end of step]
    events = np.concatenate(chunks) if chunks else np.zeros((0, 5), dtype=np.int64)
    events = events[np.argsort(events[:, 0], kind="stable")]
    bounds = np.searchsorted(events[:, 0], np.arange(n + 1))
    out = []
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


@pytest.mark.parametrize(
    "config",
    [
        nd.NDigitsConfig(),
        nd.NDigitsConfig(sensor=40, position_jitter_px=2.5, speed_jitter=0.2, contrast=0.3, background=0.2),
        nd.NDigitsConfig(sensor=30, position_jitter_px=0.0, contrast_jitter=0.3, pixel_mismatch=0.2, dt_us=700),
    ],
    ids=["default", "large-sensor-jittery", "small-sensor-cropped"],
)
def test_simulation_matches_the_first_v2_code_for_any_configuration(config):
    """The windowed int64 simulation gives the same events as v2's first (whole-sensor, float64) code, also
    where the sensor crops the digit, the jitter is larger or the background brighter."""
    images, _ = nd.mnist_style_digits(3)
    ids = list(range(len(images)))
    fast = nd.simulate_recordings(images, config, [nd.recording_generator(config, i) for i in ids])
    slow = _v2_simulate_recordings(images, config, [nd.recording_generator(config, i) for i in ids])
    assert sum(len(e) for e in fast) > 1000 * len(images)
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


# Emulated CPUs: controls that make a library take another CPU's code path, in a fresh process. Measured here (AMD
# EPYC, AVX-512), one control at a time, on generator v1, which they all fed (see the module docstring):
# - ATEN_CPU_CAPABILITY=default: torch's scalar kernels; grid_sample rounds differently, v1's events changed;
#   =avx2: torch's AVX2 kernels (capability AVX2), v1's events unchanged;
# - NPY_DISABLE_CPU_FEATURES (numpy's dispatch targets, X86_V4 ... in numpy 2.4; "AVX512F" is silently ignored):
#   numpy's float64 log (X86_V4) and float32 log (X86_V3) change; v1 did not use them;
# - MKL_CBWR / MKL_ENABLE_INSTRUCTIONS: no change here, MKL takes its generic path on AMD; once
#   mkl_serv_intel_cpu_true() says Intel (the shim below) MKL takes its AVX-512 path, or its AVX2 path with
#   MKL_ENABLE_INSTRUCTIONS=AVX2: torch.log (MKL's vsLn) differs in 8 % of floats, v1's events changed, and v1's
#   default split generated that way scores exactly the published (Intel) accuracies;
# - GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA: libm's exp and log change (numpy's normal and Poisson samplers
#   compare against them; the same 1.2e8 draws came out).
# The profiles below combine them into three other machines.
_INTEL_SHIM = "int mkl_serv_intel_cpu_true(void) { return 1; }\nint mkl_serv_intel_cpu(void) { return 1; }\n"
_NUMPY_CORE = getattr(np, "_core", None) or np.core
_DISPATCH = list(getattr(_NUMPY_CORE._multiarray_umath, "__cpu_dispatch__", []))
EMULATIONS: dict[str, dict[str, str]] = {
    "intel-avx512": {"LD_PRELOAD": "<intel shim>"},  # a Xeon: MKL's Intel AVX-512 path, the rest as here
    "intel-avx2": {
        "LD_PRELOAD": "<intel shim>",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "NPY_DISABLE_CPU_FEATURES": " ".join(f for f in _DISPATCH if "512" in f or f == "X86_V4"),
    },
    "bare-x86-64": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "NPY_DISABLE_CPU_FEATURES": " ".join(_DISPATCH),
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA",
    },
}
_CHILD = f"""
import hashlib, json, math, random, struct
import numpy as np, torch
from psn_zoo.datamodules import ndigits as nd
features = (getattr(np, "_core", None) or np.core)._multiarray_umath.__cpu_features__
r = random.Random(0)
xs = [r.uniform(-20.0, 5.0) for _ in range(20000)]
libm = [math.exp(x) for x in xs] + [math.log(1.0 + abs(x)) for x in xs]
print(json.dumps({{
    "fingerprint": nd.recordings_fingerprint(nd.{SMALL!r}),
    "torch": torch.backends.cpu.get_cpu_capability(),
    "numpy_off": sorted(k for k, v in features.items() if not v),
    "mkl_log": hashlib.sha256(torch.log(torch.linspace(0.1, 1.0, 100_003)).numpy().tobytes()).hexdigest(),
    "libm": hashlib.sha256(struct.pack(f"{{len(libm)}}d", *libm)).hexdigest(),
}}))
"""


def _glibc_at_least(major: int, minor: int) -> bool:
    name, version = platform.libc_ver()
    return name == "glibc" and tuple(int(v) for v in version.split(".")[:2]) >= (major, minor)


def _cpu_vendor() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line.split(":")[1].strip() for line in text.splitlines() if line.startswith("vendor_id")), "")


@pytest.fixture(scope="module")
def intel_shim(tmp_path_factory) -> Path | None:
    """A library that tells MKL (linked into torch) the CPU is Intel's, so AMD machines take Intel's code paths."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    folder = tmp_path_factory.mktemp("shim")
    (folder / "intel.c").write_text(_INTEL_SHIM)
    built = subprocess.run([compiler, "-shared", "-fPIC", "-o", str(folder / "libintel.so"), str(folder / "intel.c")],
                           capture_output=True, text=True, check=False)  # fmt: skip
    return folder / "libintel.so" if built.returncode == 0 else None


@pytest.fixture(scope="module")
def children(intel_shim) -> dict[str, dict | None]:
    """The child's report from this machine as it is (``native``) and from each emulated CPU, all run at once
    (each costs a fresh interpreter's imports). None where the MKL shim could not be built."""
    controls = {"native": {}, **EMULATIONS}
    emulation_controls = {c for e in EMULATIONS.values() for c in e}
    started = {}
    for name, settings in controls.items():
        if "LD_PRELOAD" in settings and intel_shim is None:
            continue
        env = {k: v for k, v in os.environ.items() if k not in emulation_controls}
        env.update({k: str(intel_shim) if v == "<intel shim>" else v for k, v in settings.items()})
        env["OMP_NUM_THREADS"] = "1"
        started[name] = subprocess.Popen([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    reports: dict[str, dict | None] = dict.fromkeys(controls)
    for name, proc in started.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"under {controls[name]}:\n{err[-3000:]}"
        reports[name] = json.loads(out.strip().splitlines()[-1])
    return reports


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the emulated CPUs are x86-64 ones")
@pytest.mark.parametrize("name", list(EMULATIONS))
def test_emulated_cpus_generate_the_same_recordings(name, children):
    """SMALL's 80 recordings, generated in a fresh process on each emulated CPU, have the committed fingerprint;
    where this machine can show it, each control really changed its library's code path."""
    controls, native, child = EMULATIONS[name], children["native"], children[name]
    if child is None:
        pytest.skip("no C compiler to build the MKL vendor shim")
    assert native["fingerprint"] == child["fingerprint"] == SMALL_FINGERPRINT, (name, child)
    torch_path = controls.get("ATEN_CPU_CAPABILITY", "").upper()
    if torch_path == "DEFAULT" or (torch_path == "AVX2" and native["torch"] == "AVX512"):
        assert child["torch"] == torch_path
    assert set(controls.get("NPY_DISABLE_CPU_FEATURES", "").split()) <= set(child["numpy_off"])
    if "LD_PRELOAD" in controls and _cpu_vendor() == "AuthenticAMD" and torch.backends.mkl.is_available():
        assert child["mkl_log"] != native["mkl_log"]  # MKL's Intel path, not its generic AMD one
    if "GLIBC_TUNABLES" in controls and _glibc_at_least(2, 33) and "fma" in Path("/proc/cpuinfo").read_text():
        assert child["libm"] != native["libm"]  # libm's non-FMA exp and log (hwcaps names since 2.33)


def test_event_statistics_resemble_nmnist(small_ndigits):
    """N-MNIST recordings average ~4.3k events, half of them ON (a real sample: 4325, 50 %)."""
    _, meta = small_ndigits
    assert 3000 < meta["events_per_sample"]["mean"] < 6000
    assert 0.45 < meta["on_ratio"] < 0.55
    assert meta["complete"] and meta["config"]["recordings"] == 2


def test_three_saccades_move_the_digit(small_ndigits):
    root, _ = small_ndigits
    events, _ = tonic.datasets.NMNIST(save_to=str(root), train=True)[0]
    per_saccade = np.histogram(events["t"], bins=[0, 105_000, 210_000, 330_000])[0]
    assert (per_saccade > 0.2 * len(events)).all()  # every leg of the triangle produces events
    stabilized = tonic.datasets.nmnist.stabilize(events)  # tonic's inverse of the saccade path
    assert np.ptp(stabilized["x"]) < np.ptp(events["x"])


def test_split_is_by_source_image(small_ndigits):
    root, _ = small_ndigits
    ids = {
        split: {int(p.stem) // SMALL.recordings for p in (root / "NMNIST" / split).rglob("*.bin") if p.is_file()}
        for split in ("Train", "Test")
    }
    assert ids["Train"] and ids["Test"] and not ids["Train"] & ids["Test"]


def test_generation_is_deterministic_and_reused(tmp_path, small_ndigits):
    root, meta = small_ndigits
    again = generate_ndigits(tmp_path / "copy", SMALL)
    assert _digest(tmp_path / "copy") == _digest(root) and again["events_per_sample"] == meta["events_per_sample"]
    other = generate_ndigits(tmp_path / "other", nd.NDigitsConfig(images_per_class=4, recordings=2, seed=1))
    assert _digest(tmp_path / "other") != _digest(root) and other["config_digest"] != meta["config_digest"]
    stamp = (tmp_path / "copy" / "ndigits.json").stat().st_mtime_ns
    generate_ndigits(tmp_path / "copy", SMALL)  # complete and same config: nothing is rewritten
    assert (tmp_path / "copy" / "ndigits.json").stat().st_mtime_ns == stamp


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = nd.write_atis_bin

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(nd, "write_atis_bin", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_ndigits(tmp_path / "nd", SMALL)
    # no recording, temporary folder or metadata; only the empty lock file stays (unlinking a lock file lets a
    # waiting process lock the removed file while a third locks a new one)
    assert [p.name for p in tmp_path.iterdir()] == [".nd.lock"] and (tmp_path / ".nd.lock").stat().st_size == 0


def test_ndigits_datamodule(tmp_path):
    dm = NDigitsDataModule(
        data_dir=str(tmp_path), images_per_class=4, recordings=2, T=6, batch_size=8, val_fraction=0.3
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.input_shape == (6, 2, 34, 34) and dm.num_classes == 10
    assert dm.metadata["samples"] == {"Train": 60, "Test": 20}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 6, 2, 34, 34) and x.sum() > 0 and y.dtype == torch.int64
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 60
    image = {split: {int(Path(p).stem) // 2 for p in dm.sample_sources(split)} for split in ("train", "val")}
    assert image["val"] and not image["train"] & image["val"]  # the holdout is by source image, like the test
    fresh = NDigitsDataModule(data_dir=str(tmp_path), images_per_class=4, recordings=2, T=6)
    fresh.setup()  # a second process: finds the generated data, no prepare_data needed
    assert fresh.metadata["config_digest"] == dm.metadata["config_digest"]


def test_sequential_digits():
    dm = SequentialDigitsDataModule(batch_size=16, images_per_class=20)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 28, 1, 28) and dm.input_shape == (28, 1, 28) and y.max() <= 9
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes == {"train": 140, "val": 20, "test": 40}  # 16 of 20 images per class for training, 2 of them val
    # column t of the image is time step t
    image = dm.datasets["test"].dataset.tensors[0][0]
    assert torch.equal(dm.datasets["test"][0][0][:, 0, :], image.t())


def test_permuted_sequential_digits_read_every_pixel_once_in_one_fixed_order():
    from psn_zoo.datamodules.seqdigits import pixel_permutation

    plain = SequentialDigitsDataModule(batch_size=16, images_per_class=20)
    permuted = SequentialDigitsDataModule(batch_size=16, images_per_class=20, permute_pixels=True)
    other_split = SequentialDigitsDataModule(batch_size=16, images_per_class=20, permute_pixels=True, seed=1)
    for dm in (plain, permuted, other_split):
        dm.setup()
    order = pixel_permutation(0)
    assert sorted(order.tolist()) == list(range(784)) and not torch.equal(order, torch.arange(784))
    assert torch.equal(order, pixel_permutation(0)) and not torch.equal(order, pixel_permutation(1))
    for dm in (permuted, other_split):  # the same order for every split and every data seed
        for split in ("val", "test"):  # not shifted: step t holds pixels order[28t : 28t + 28]
            image = dm.datasets[split].dataset.tensors[0][3]
            assert torch.equal(dm.datasets[split][3][0].reshape(-1), image.reshape(-1)[order])
        assert dm.datasets["train"][3][0].shape == (28, 1, 28) == dm.input_shape
    x_plain, y_plain = next(iter(plain.test_dataloader()))
    x_perm, y_perm = next(iter(permuted.test_dataloader()))
    assert torch.equal(y_plain, y_perm)  # same images, same split: only the reading order differs
    assert torch.equal(x_plain.flatten(1).sort(1).values, x_perm.flatten(1).sort(1).values)
    assert not torch.equal(x_plain, x_perm)


def test_disk_cache_keys_differ_between_configurations(tmp_path):
    """Two N-Digits configurations under one data_dir never share cached frames."""
    small = NDigitsDataModule(data_dir=str(tmp_path), images_per_class=2, T=4, cache="disk")
    large = NDigitsDataModule(data_dir=str(tmp_path), images_per_class=3, T=4, cache="disk")
    assert small.tonic_root() != large.tonic_root()
    assert small.cache_key("test") != large.cache_key("test")


_PREPARE = """
import sys
from psn_zoo.datamodules import NDigitsDataModule
dm = NDigitsDataModule(images_per_class=4, recordings=2, data_dir=sys.argv[1], batch_size=8)
dm.prepare_data()
dm.setup("fit")
print("SAMPLES", len(dm.train_dataloader().dataset))
"""


def test_concurrent_prepare_into_one_fresh_folder(tmp_path):
    """Two processes (DDP ranks, parallel jobs) preparing N-Digits into the same fresh folder: one generates under
    a file lock, the other waits and reads the finished copy (one of them used to fail with DatasetNotFoundError)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _PREPARE, str(tmp_path)], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "SAMPLES" in out
    assert len({out.split("SAMPLES")[1].strip() for out, _ in outs}) == 1
    roots = [p for p in tmp_path.iterdir() if p.name.startswith("ndigits-")]
    assert len(roots) == 1 and nd.folder_fingerprint(roots[0]) == SMALL_FINGERPRINT
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_a_killed_generation_leaves_nothing_once_the_next_run_is_done(tmp_path):
    """``kill -9`` mid-generation cannot clean up; the next run (holding the lock) removes the stale temporary
    folder and generates the complete copy."""
    root = tmp_path / "ndigits"
    code = (
        "import sys; from psn_zoo.datamodules import ndigits as nd; "
        "nd.generate_ndigits(sys.argv[1], nd.NDigitsConfig(images_per_class=40, recordings=3), batch=8, workers=1)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    stale: list[Path] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # until recordings are in its temporary folder
        stale = list(tmp_path.glob(".ndigits.tmp-*"))
        if stale and any(stale[0].rglob("*.bin")):
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert stale and stale[0].exists() and not root.exists()
    meta = generate_ndigits(root, SMALL)
    assert meta["complete"] and nd.folder_fingerprint(root) == SMALL_FINGERPRINT
    assert not list(tmp_path.glob(".ndigits.tmp-*"))


@pytest.mark.parametrize("images_per_class", [1, 2])
def test_too_few_images_for_a_test_split_names_the_argument_not_the_generator(tmp_path, images_per_class):
    """round(2 × 0.2) = 0 test images per digit: the split is empty, which says so (it blamed generation: "delete
    that folder"), before anything is generated."""
    from psn_zoo.datamodules import EmptySplitError

    dm = NDigitsDataModule(data_dir=str(tmp_path), images_per_class=images_per_class, T=4)
    message = rf"images_per_class={images_per_class} with test_fraction=0.2 leaves the test split without images"
    for step in (dm.prepare_data, dm.setup):
        with pytest.raises(EmptySplitError, match=message + r".*images_per_class >= 3"):
            step()
    assert not any(tmp_path.iterdir())
