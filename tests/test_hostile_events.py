"""Corrupt event files in every supported native format: each is refused with a :class:`CorruptSampleError` that
names the file and the problem, never turned into plausible frames; valid files load exactly as Tonic reads them.

Before ``ValidEvents`` these all passed unnoticed: decreasing or constant timestamps became all-zero frames, x = -1
landed on the opposite edge (numpy's negative indexing), polarity 5 became ON (DVS128 Gesture's ``bool`` cast)
and -1 indexed the ON channel, NaN times became arbitrary integers; a deleted recording was reported as a dataset
that "could not be downloaded" or silently dropped from the split.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import struct
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tonic
from native_fixtures import (
    write_asldvs,
    write_cifar10dvs,
    write_dvsgesture,
    write_ncaltech101,
    write_nmnist,
    write_shd,
)

from psn_zoo.datamodules import (
    ASLDVSDataModule,
    CIFAR10DVSDataModule,
    CorruptSampleError,
    DatasetNotFoundError,
    DVSGestureDataModule,
    NCaltech101DataModule,
    NMNISTDataModule,
    SHDDataModule,
)
from psn_zoo.datamodules.errors import MissingSampleError
from psn_zoo.datamodules.native_formats import (
    _AEDAT4_MAGIC,
    _aedat4_description,
    _event_packet,
    _ioheader,
    write_asl_mat,
    write_atis_bin,
    write_dvsgesture_npy,
    write_shd_h5,
)
from psn_zoo.datamodules.validation import InvalidEvents, ValidEvents

CLOSED = "http://127.0.0.1:9/"  # nothing listens: a download attempt is refused at once


def _prepared(dm):
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _read(dm, path: Path):
    """Read the sample of ``path`` through the DataModule (whichever split holds it)."""
    for split in ("train", "val", "test"):
        sources = dm.sample_sources(split)
        if str(path) in sources:
            return dm.datasets[split][sources.index(str(path))]
    raise AssertionError(f"{path} is in no split")


def _refused(dm, path: Path, problem: str) -> CorruptSampleError:
    with pytest.raises(CorruptSampleError) as err:
        _read(dm, path)
    message = str(err.value)
    assert str(path) in message and re.search(problem, message), message
    assert isinstance(err.value.__cause__, InvalidEvents)
    return err.value


def _events(n: int, width: int, height: int, seed: int = 0, duration_us: int = 300_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, duration_us, n))
    return rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n)


# ---------------------------------------------------------------------------------------------- N-MNIST (ATIS .bin)
NMNIST_VICTIM = Path("NMNIST", "Test", "3", "00300.bin")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("decreasing", r"timestamps decrease: event 200 of 400 has t = 1000 µs after t = 250000 µs"),
        ("reversed", r"timestamps decrease: event 1 of 400"),
        ("one_timestamp", r"all 400 events share one timestamp \(t = 5000 µs\)"),
        ("one_event", r"all 1 events share one timestamp"),
    ],
)
def test_nmnist_timestamps_must_increase_and_span_time(tmp_path, damage, problem):
    write_nmnist(tmp_path, per_class=1)
    x, y, t, p = _events(400, 34, 34)
    t = np.linspace(0, 300_000, 400).astype(np.int64)
    if damage == "decreasing":
        t[200:] -= t[200] - 1000  # the second half restarts at 1 ms
        t[199] = 250_000
    elif damage == "reversed":
        t = t[::-1].copy()
    elif damage == "one_timestamp":
        t[:] = 5000
    else:
        x, y, t, p = x[:1], y[:1], t[:1], p[:1]
    write_atis_bin(tmp_path / NMNIST_VICTIM, x, y, t, p)
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache="none"))
    _refused(dm, tmp_path / NMNIST_VICTIM, problem)


def test_one_timestamp_is_refused_only_when_frames_are_binned_by_time(tmp_path):
    """Equal timestamps empty the frames of ``n_time_bins`` (refused); ``slicing="count"`` frames them all."""
    write_nmnist(tmp_path, per_class=1)
    x, y, _, p = _events(400, 34, 34)
    write_atis_bin(tmp_path / NMNIST_VICTIM, x, y, np.full(400, 5000), p)
    by_time = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache="none"))
    _refused(by_time, tmp_path / NMNIST_VICTIM, "share one timestamp")
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache="none", slicing="count"))
    frames, label = _read(dm, tmp_path / NMNIST_VICTIM)
    assert label == 3 and int(frames.sum()) == 400


def test_nmnist_coordinates_outside_the_34x34_sensor(tmp_path):
    write_nmnist(tmp_path, per_class=1)
    x, y, t, p = _events(300, 34, 34)
    x[17] = 40  # ToFrame raised a bare IndexError; y >= 34 in a 34-row frame likewise
    write_atis_bin(tmp_path / NMNIST_VICTIM, x, y, t, p)
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache="none"))
    _refused(dm, tmp_path / NMNIST_VICTIM, r"event 17 of 300: x = 40 lies outside the 34×34 sensor")


def test_ncaltech101_decreasing_timestamps(tmp_path):
    write_ncaltech101(tmp_path, per_category=5)
    victim = tmp_path / "NCALTECH101" / "Caltech101" / "accordion" / "image_0005.bin"
    x, y, t, p = _events(600, 200, 150)
    write_atis_bin(victim, x, y, t[::-1], p)
    dm = _prepared(NCaltech101DataModule(data_dir=str(tmp_path), T=3, val_fraction=0.0, cache="none"))
    _refused(dm, victim, r"timestamps decrease: event 1 of 600")


# ---------------------------------------------------------------------------------------------- DVS128 Gesture (.npy)
GESTURE_VICTIM = Path("DVSGesture", "ibmGestureTest", "user24_led", "7.npy")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("x", -1, r"event 10 of 500: x = -1 lies outside the 128×128 sensor \(pixel coordinates 0 ≤ x < 128\)"),
        ("y", -3, r"event 10 of 500: y = -3 lies outside the 128×128 sensor"),
        ("x", 128, r"event 10 of 500: x = 128 lies outside"),
        ("x", 65_536 + 5, r"event 10 of 500: x = 65541 lies outside"),  # Tonic's int16 cast made it 5
        ("p", 5, r"event 10 of 500: polarity p = 5 is not one of the format's values \{0, 1\}"),
        ("p", -1, r"polarity p = -1 is not one of"),
        ("p", 2, r"polarity p = 2 is not one of"),
    ],
)
def test_dvsgesture_values_the_format_cannot_hold(tmp_path, field, value, problem):
    """Before: x = -1 wrapped to column 127, polarity 5 (or -1, 2) was cast to bool, i.e. ON."""
    write_dvsgesture(tmp_path)
    events = dict(zip("xytp", _events(500, 128, 128, duration_us=1_000_000), strict=True))
    events[field][10] = value
    write_dvsgesture_npy(tmp_path / GESTURE_VICTIM, events["x"], events["y"], events["p"], events["t"])
    dm = _prepared(DVSGestureDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache="none"))
    _refused(dm, tmp_path / GESTURE_VICTIM, problem)


@pytest.mark.parametrize(
    ("value", "problem"), [(np.nan, r"event 3 of 500: x = nan is not a finite number"), (2.5, r"x = 2\.5 lies outside")]
)
def test_dvsgesture_float_files_with_nan_or_fractional_pixels(tmp_path, value, problem):
    write_dvsgesture(tmp_path)
    x, y, t, p = _events(500, 128, 128, duration_us=1_000_000)
    columns = np.stack([x, y, p, t // 1000], 1).astype(np.float64)
    columns[3, 0] = value
    np.save(tmp_path / GESTURE_VICTIM, columns)
    dm = _prepared(DVSGestureDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache="none"))
    _refused(dm, tmp_path / GESTURE_VICTIM, problem)


def test_dvsgesture_one_millisecond_recording_spans_no_time(tmp_path):
    write_dvsgesture(tmp_path)
    x, y, _, p = _events(500, 128, 128)
    write_dvsgesture_npy(tmp_path / GESTURE_VICTIM, x, y, p, np.full(500, 42_000))
    dm = _prepared(DVSGestureDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache="none"))
    _refused(dm, tmp_path / GESTURE_VICTIM, r"all 500 events share one timestamp \(t = 42000 µs\)")


# ---------------------------------------------------------------------------------------------- CIFAR10-DVS (AEDAT 4)
def _write_aedat4_unsorted(path: Path, t, x, y, p) -> None:
    """``write_aedat4`` sorts by time; a hostile file need not."""
    header = _ioheader(_aedat4_description(128, 128))
    packet = _event_packet(np.asarray(t), np.asarray(x), np.asarray(y), np.asarray(p))
    path.write_bytes(
        _AEDAT4_MAGIC + struct.pack("<I", len(header)) + header + struct.pack("<II", 0, len(packet)) + packet
    )


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("negative_x", r"event 5 of 800: x = 65535 lies outside the 128×128 sensor"),  # int16 -1 read as uint16
        ("decreasing", r"timestamps decrease: event 400 of 800"),
    ],
)
def test_cifar10dvs_aedat4(tmp_path, damage, problem):
    write_cifar10dvs(tmp_path, per_class=2)
    victim = tmp_path / "CIFAR10DVS" / "cat" / "cifar10_cat_1.aedat4"
    x, y, t, p = _events(800, 128, 128, duration_us=1_200_000)
    if damage == "negative_x":
        x[5] = -1
    else:
        t = np.concatenate([t[400:], t[:400]])
    _write_aedat4_unsorted(victim, t, x, y, p)
    dm = _prepared(CIFAR10DVSDataModule(data_dir=str(tmp_path), T=4, test_per_class=1, val_fraction=0.0, cache="none"))
    _refused(dm, victim, problem)


# ---------------------------------------------------------------------------------------------- SHD (.h5)
@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("nan_time", r"event 7 of 150: t = nan is not a finite number"),
        ("inf_time", r"event 7 of 150: t = inf is not a finite number"),
        ("unit_700", r"event 7 of 150: x = 700 lies outside the 700×1 sensor"),
        ("decreasing", r"timestamps decrease: event 1 of 150"),
        ("negative_time", r"event 0 of 150: timestamp t = -100000\.\d+ µs is negative"),
    ],
)
def test_shd_spikes(tmp_path, damage, problem):
    write_shd(tmp_path, n_train=20, n_test=20)
    rng = np.random.default_rng(9)
    samples = []
    for _ in range(20):
        times, units = np.sort(rng.uniform(0, 0.9, 150)), rng.integers(0, 700, 150)
        samples.append((times, units))
    times, units = samples[4]
    if damage == "nan_time":
        times[7] = np.nan
    elif damage == "inf_time":
        times[7] = np.inf
    elif damage == "unit_700":
        units[7] = 700
    elif damage == "decreasing":
        times[:] = times[::-1]
    else:
        times[0] = -0.1
    path = tmp_path / "SHD" / "shd_test.h5"
    write_shd_h5(path, samples, labels=np.arange(20))
    dm = _prepared(SHDDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache="none"))
    with pytest.raises(CorruptSampleError) as err:
        dm.datasets["test"][4]
    message = str(err.value)
    assert f"{path} (sample 4)" in message and re.search(problem, message), message
    dm.datasets["test"][3]  # its neighbours are fine


# ---------------------------------------------------------------------------------------------- ASL-DVS (.mat)
@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("p", -1, r"event 9 of 400: polarity p = -1 is not one of the format's values \{0, 1\}"),  # indexed ON
        ("x", -2, r"event 9 of 400: x = -2 lies outside the 240×180 sensor"),
        ("y", 180, r"event 9 of 400: y = -1 lies outside the 240×180 sensor"),  # Tonic flips y: 179 - 180
    ],
)
def test_asldvs_mat(tmp_path, field, value, problem):
    write_asldvs(tmp_path)
    victim = tmp_path / "ASLDVS" / "b" / "b_0003.mat"
    events = dict(zip("xytp", _events(400, 240, 180), strict=True))
    events[field][9] = value
    write_asl_mat(victim, events["x"], events["y"], events["t"], events["p"])
    with mock.patch.object(tonic.datasets.ASLDVS, "_check_exists", return_value=True):  # 100 800 files otherwise
        dm = _prepared(ASLDVSDataModule(data_dir=str(tmp_path), T=3, val_fraction=0.0, cache="none"))
    _refused(dm, victim, problem)


# ---------------------------------------------------------------------------------------------- caches
@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_corrupt_events_never_reach_a_cache(tmp_path, cache):
    write_nmnist(tmp_path, per_class=1)
    x, y, t, p = _events(300, 34, 34)
    write_atis_bin(tmp_path / NMNIST_VICTIM, x, y, t[::-1], p)
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache=cache))
    with pytest.raises(CorruptSampleError, match=re.escape(str(tmp_path / NMNIST_VICTIM)) + ".*timestamps decrease"):
        list(dm.test_dataloader())


# ---------------------------------------------------------------------------------------------- missing recordings
def test_a_deleted_recording_is_missing_from_the_local_copy_not_undownloadable(tmp_path, monkeypatch):
    """Tonic's existence check counts files: one fewer and it tries a download, which used to be the error."""
    monkeypatch.setattr(tonic.datasets.NMNIST, "train_url", CLOSED + "train.zip")
    monkeypatch.setattr(tonic.datasets.NMNIST, "test_url", CLOSED + "test.zip")
    write_nmnist(tmp_path, per_class=1)
    (tmp_path / NMNIST_VICTIM).unlink()
    with pytest.raises(MissingSampleError) as err:
        NMNISTDataModule(data_dir=str(tmp_path), T=3).prepare_data()
    message = str(err.value)
    assert isinstance(err.value, CorruptSampleError) and isinstance(err.value, DatasetNotFoundError)
    assert "missing from the local copy" in message and "could not be downloaded" not in message
    assert f"{tmp_path / 'NMNIST' / 'Test'} holds 9999 *.bin files" in message, message
    assert (tmp_path / "NMNIST" / "test.zip").exists()  # the placeholder archive was not touched


def test_a_recording_the_archive_lists_is_named_when_missing(tmp_path):
    """With the real archive present, the missing file is named, even where Tonic's count is still met."""
    write_nmnist(tmp_path, per_class=1)
    location = tmp_path / "NMNIST"
    with zipfile.ZipFile(location / "test.zip", "w") as archive:
        for f in sorted((location / "Test").rglob("*.bin")):
            if f.is_file():
                archive.write(f, f.relative_to(location).as_posix())
    (tmp_path / NMNIST_VICTIM).unlink()
    (location / "Test" / ".pad" / "pad_extra.bin").symlink_to("_empty", target_is_directory=True)  # count is met
    with pytest.raises(MissingSampleError) as err:
        NMNISTDataModule(data_dir=str(tmp_path), T=3).prepare_data()
    message = str(err.value)
    assert f"1 recording(s) listed in {location / 'test.zip'} are missing from the local copy: " in message
    assert str(tmp_path / NMNIST_VICTIM) in message, message


def test_a_recording_deleted_after_setup_is_named(tmp_path):
    write_nmnist(tmp_path, per_class=1)
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=3, val_fraction=0.0, cache="none"))
    (tmp_path / NMNIST_VICTIM).unlink()
    with pytest.raises(MissingSampleError) as err:
        _read(dm, tmp_path / NMNIST_VICTIM)
    assert f"{tmp_path / NMNIST_VICTIM} (sample 3 of NMNIST) is missing from the local copy" in str(err.value)


# ---------------------------------------------------------------------------------------------- valid files
def _tonic_frames(dm, index: int) -> np.ndarray:
    """What a fresh, unmodified Tonic dataset and ToFrame make of test sample ``index`` (no validation)."""
    test_set, members = dm._members["test"]
    cls = dm.tonic_dataset
    train = {"train": False} if "train" in inspect.signature(cls).parameters else {}
    reference = cls(save_to=str(dm.tonic_root()), **train)
    i = members[index]
    events, _ = reference[i] if isinstance(dm, SHDDataModule) else reference[reference.data.index(test_set.data[i])]
    assert events.dtype == cls.dtype
    events = events.reshape(-1)  # ASL-DVS: (N, 1)
    frames = tonic.transforms.ToFrame(sensor_size=dm.sensor_size, n_time_bins=dm.T)(events)
    return frames.reshape(frames.shape[0], frames.shape[1], -1) if isinstance(dm, SHDDataModule) else frames


@pytest.mark.parametrize(
    ("module", "write", "extra"),
    [
        (NMNISTDataModule, write_nmnist, {}),
        (DVSGestureDataModule, write_dvsgesture, {}),
        (CIFAR10DVSDataModule, write_cifar10dvs, {"test_per_class": 1}),
        (NCaltech101DataModule, write_ncaltech101, {}),
        (SHDDataModule, write_shd, {}),
        (ASLDVSDataModule, write_asldvs, {}),
    ],
)
def test_valid_files_load_exactly_as_tonic_reads_them(tmp_path, module, write, extra):
    write(tmp_path)
    dm = module(data_dir=str(tmp_path), T=5, val_fraction=0.0, cache="none", **extra)
    patch = (
        mock.patch.object(tonic.datasets.ASLDVS, "_check_exists", return_value=True)
        if module is ASLDVSDataModule
        else contextlib.nullcontext()
    )
    with patch:
        _prepared(dm)
        for index in (0, len(dm.datasets["test"]) - 1):
            frames, _ = dm.datasets["test"][index]
            np.testing.assert_array_equal(frames.numpy(), _tonic_frames(dm, index))


def test_valid_events_hands_on_tonics_dtype():
    dtype = tonic.datasets.DVSGesture.dtype
    wide = np.zeros(3, dtype=[(n, np.float64) for n in dtype.names])
    wide["x"], wide["p"], wide["t"] = [0, 5, 127], [0, 1, 1], [0, 10, 20]
    out = ValidEvents(128, 128, dtype=dtype)(wide)
    assert out.dtype == dtype and out["p"].tolist() == [False, True, True] and out["x"].tolist() == [0, 5, 127]
    native = np.zeros(2, dtype=dtype)
    native["t"] = [0, 1]
    assert ValidEvents(128, 128, dtype=dtype)(native) is native  # valid Tonic events pass untouched
    with pytest.raises(InvalidEvents, match="holds no events"):
        ValidEvents(128, 128)(native[:0])


# ---------------------------------------------------------------------------------------------- too short for T frames
@pytest.mark.parametrize(
    ("slicing", "t", "problem", "enough"),
    [
        ("time", [100, 101, 102], r"spans 2 µs \(t = 100 … 102 µs\), less than T=4.*n_time_bins=4", 2),
        ("count", [100, 5000, 90_000], r"holds 3 events, fewer than T=4.*n_event_bins=4", 3),
    ],
)
def test_a_recording_too_short_for_t_frames_is_refused(tmp_path, slicing, t, problem, enough):
    """Fewer µs than frames (time slicing) or fewer events than frames (count slicing) made T all-zero frames."""
    write_nmnist(tmp_path, per_class=1)
    write_atis_bin(tmp_path / NMNIST_VICTIM, np.array([3, 4, 5]), np.array([3, 4, 5]), np.array(t), np.array([1, 0, 1]))
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, cache="none", slicing=slicing))
    _refused(dm, tmp_path / NMNIST_VICTIM, problem)
    kwargs = {"val_fraction": 0.0, "cache": "none", "slicing": slicing}
    fits = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=enough, **kwargs))
    frames, label = _read(fits, tmp_path / NMNIST_VICTIM)  # 2 µs for 2 frames, 3 events for 3 frames: framed
    assert label == 3 and frames.shape[0] == enough and int(frames.sum()) == {"time": 2, "count": 3}[slicing]


def test_the_span_check_survives_a_stored_transform():
    """``bins`` is not stored (the ToFrame after the check states T): a rebuilt transform checks it all the same."""
    from psn_zoo.datamodules import build_transform
    from psn_zoo.datamodules.transform_spec import step_spec

    dm = NMNISTDataModule(T=4, cache="none")
    spec = [step_spec(step) for step in dm.preprocessing().steps]
    assert "bins" not in spec[0]["kwargs"] and spec[0]["kwargs"]["time_bins"] is True
    rebuilt = build_transform(spec)
    assert rebuilt.steps[0] == dm.event_check() and rebuilt.steps[0].bins == 4
    events = np.zeros(3, dtype=tonic.datasets.NMNIST.dtype)
    events["t"] = [0, 1, 3]
    with pytest.raises(InvalidEvents, match="spans 3 µs"):
        rebuilt(events)
    events["t"] = [0, 1, 4]
    assert rebuilt(events).sum() == 3 - 1  # ToFrame(n_time_bins) leaves out the events at the last timestamp
