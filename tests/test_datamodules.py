"""DataModules on native-format fixtures, read by Tonic's own dataset classes (no parser is mocked)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
import time
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tonic
import torch
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
    EmptySplitError,
    EmptySplitWarning,
    NCaltech101DataModule,
    NMNISTDataModule,
    SequentialDigitsDataModule,
    SHDDataModule,
    save_frames,
)
from psn_zoo.datamodules.native_formats import write_atis_bin


def _first_batch(dm, split: str = "train"):
    return next(iter(getattr(dm, f"{split}_dataloader")()))


def _prepared(dm):
    dm.prepare_data()
    dm.setup("fit")
    return dm


# ---------------------------------------------------------------------------------------------- N-MNIST
def test_nmnist_reads_native_bin_files(tmp_path):
    counts = write_nmnist(tmp_path, per_class=3)
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=5, batch_size=4, val_fraction=0.34, cache="none"))
    assert dm.input_shape == (5, 2, 34, 34) and dm.num_classes == 10
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 20, "val": 10, "test": 30}
    x, y = _first_batch(dm)
    assert x.shape == (4, 5, 2, 34, 34) and x.dtype == torch.float32 and y.dtype == torch.int64
    # every event of a file lands in its frames (ToFrame(n_time_bins) drops only events at the last timestamp)
    frames, label = dm.datasets["test"][0]
    assert label == 0 and counts["Test"][0] - 3 <= int(frames.sum()) <= counts["Test"][0]
    # the validation split is stratified, seeded and disjoint from training
    train_files, val_files = set(dm.sample_sources("train")), set(dm.sample_sources("val"))
    assert not train_files & val_files and len(train_files | val_files) == 30
    labels = [int(dm.datasets["val"][i][1]) for i in range(len(dm.datasets["val"]))]
    assert sorted(labels) == sorted(list(range(10)))
    again = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=5, val_fraction=0.34, cache="none"))
    assert set(again.sample_sources("val")) == val_files


def test_download_from_a_local_http_server(tmp_path, monkeypatch):
    """The real download path: Tonic fetches the archives over HTTP (127.0.0.1), checks md5, extracts."""
    source = tmp_path / "source"
    write_nmnist(source, per_class=1, pad=False)
    served = tmp_path / "served"
    served.mkdir()
    md5 = {}
    for folder, archive in (("Train", "train.zip"), ("Test", "test.zip")):
        with zipfile.ZipFile(served / archive, "w") as zf:
            for f in sorted((source / "NMNIST" / folder).rglob("*.bin")):
                zf.write(f, f.relative_to(source / "NMNIST"))
        md5[archive] = hashlib.md5((served / archive).read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setattr(tonic.datasets.NMNIST, "train_url", f"{base}/train.zip")
        monkeypatch.setattr(tonic.datasets.NMNIST, "test_url", f"{base}/test.zip")
        monkeypatch.setattr(tonic.datasets.NMNIST, "train_md5", md5["train.zip"])
        monkeypatch.setattr(tonic.datasets.NMNIST, "test_md5", md5["test.zip"])
        data = tmp_path / "data"
        dm = _prepared(NMNISTDataModule(data_dir=str(data), T=3, val_fraction=0.0, cache="none"))
    finally:
        server.shutdown()
    assert (data / "NMNIST" / "train.zip").exists() and len(dm.datasets["test"]) == 10
    assert _first_batch(dm, "test")[0].shape == (10, 3, 2, 34, 34)


def test_missing_data_without_network_fails_fast_and_clearly(tmp_path, monkeypatch):
    closed = "http://127.0.0.1:9/"  # the discard port: nothing listens, the connection is refused at once
    monkeypatch.setattr(tonic.datasets.NMNIST, "train_url", closed + "train.zip")
    monkeypatch.setattr(tonic.datasets.NMNIST, "test_url", closed + "test.zip")
    dm = NMNISTDataModule(data_dir=str(tmp_path), T=3)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as err:
        dm.prepare_data()
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert f"{tmp_path / 'NMNIST' / 'train.zip'}" in message and tonic.datasets.NMNIST.train_md5 in message
    assert "Train/<digit>/NNNNN.bin" in message and "could not be downloaded" in message
    assert not (tmp_path / "NMNIST" / "train.zip").exists()  # Tonic's empty partial download was removed


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_corrupt_sample_names_the_file(tmp_path, damage):
    write_nmnist(tmp_path, per_class=2)
    victim = tmp_path / "NMNIST" / "Test" / "3" / "00300.bin"
    victim.write_bytes(victim.read_bytes()[:-3] if damage == "truncate" else b"")
    dm = NMNISTDataModule(data_dir=str(tmp_path), T=4, cache="memory")
    dm.prepare_data()
    dm.setup()
    dm.train_dataloader()  # fills the training cache: the victim is a test sample
    with pytest.raises(CorruptSampleError, match=str(victim)):
        dm.test_dataloader()  # the test cache is filled before the loader is handed out


# ---------------------------------------------------------------------------------------------- caching
def test_disk_cache_is_keyed_by_every_preprocessing_parameter(tmp_path):
    write_nmnist(tmp_path, per_class=2)
    dm4 = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, cache="disk", val_fraction=0.0))
    first = dm4.datasets["test"][0][0]
    dm6 = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=6, cache="disk", val_fraction=0.0))
    assert dm6.datasets["test"][0][0].shape[0] == 6  # a changed T never reads the T=4 cache
    denoised = NMNISTDataModule(data_dir=str(tmp_path), T=4, cache="disk", denoise_us=5000)
    keys = {dm4.cache_key("test"), dm6.cache_key("test"), denoised.cache_key("test")}
    assert len(keys) == 3 and dm4.cache_key("train") != dm4.cache_key("test")
    assert len(list((tmp_path / "cache").glob("NMNIST-test-*"))) == 2
    # warm: with the source files gone, the cache alone serves the same frames
    shutil.rmtree(tmp_path / "NMNIST" / "Test")
    (tmp_path / "NMNIST" / "Test").mkdir()
    warm = NMNISTDataModule(data_dir=str(tmp_path), T=4, cache="disk", val_fraction=0.0)
    with mock.patch.object(tonic.datasets.NMNIST, "_check_exists", return_value=True):
        dataset = warm._cached(dm4.datasets["test"].dataset, "test")
    assert torch.equal(torch.as_tensor(dataset[0][0]).float(), first)


def test_memory_cache_with_workers(tmp_path):
    """Two worker processes fill the cache once; every epoch after that is served from it, in-process."""
    write_nmnist(tmp_path, per_class=3)
    dm = _prepared(
        NMNISTDataModule(data_dir=str(tmp_path), T=4, batch_size=8, num_workers=2, cache="memory", val_fraction=0.2)
    )
    assert dm.train_dataloader().num_workers == 0
    filled = dm.test_dataloader()  # each split's cache is filled when its first loader is made
    dm.val_dataloader()
    disk = NMNISTDataModule(data_dir=str(tmp_path), T=4, num_workers=2, cache="disk")
    assert disk.train_dataloader().num_workers == 2
    for sample in sorted((tmp_path / "NMNIST").rglob("*.bin")):
        if sample.is_file():
            sample.unlink()  # from now on only the cache can answer
    for epoch in range(2):
        seen = sum(len(y) for _, y in dm.train_dataloader())
        assert seen == len(dm.datasets["train"]), epoch
    assert sum(len(y) for _, y in dm.test_dataloader()) == 30 == sum(len(y) for _, y in filled)
    assert sum(len(y) for _, y in dm.val_dataloader()) == len(dm.datasets["val"]) == 10  # 1 per class


def test_augmentation_only_on_training_samples(tmp_path):
    write_nmnist(tmp_path, per_class=2)
    dm = _prepared(
        NMNISTDataModule(data_dir=str(tmp_path), T=3, random_flip=True, random_translate=3, val_fraction=0.5)
    )
    train = dm.datasets["train"]
    samples = []
    for epoch in range(8):
        dm.set_epoch(epoch)
        samples.append(train[0][0])
        assert torch.equal(train[0][0], samples[-1])  # a draw depends on (seed, epoch, index) only
    assert any(not torch.equal(samples[0], s) for s in samples[1:])  # random across epochs
    dm.set_epoch(0)
    assert torch.equal(train[0][0], samples[0])  # reproducible: epoch 0 again gives epoch 0's draw
    assert all(torch.equal(dm.datasets["val"][0][0], dm.datasets["val"][0][0]) for _ in range(3))


# ---------------------------------------------------------------------------------------------- other datasets
def test_dvsgesture_sorted_official_split(tmp_path):
    write_dvsgesture(tmp_path)
    dm = _prepared(DVSGestureDataModule(data_dir=str(tmp_path), T=4, spatial_factor=0.25, val_fraction=0.0))
    assert dm.input_shape == (4, 2, 32, 32) and dm.num_classes == 11
    assert len(dm.datasets["train"]) == 44 and len(dm.datasets["test"]) == 22
    sources = dm.sample_sources("test")
    assert sources == sorted(sources) and all("/user24_" in p for p in sources)
    assert [int(Path(p).stem) for p in sources] == [int(dm.datasets["test"][i][1]) for i in range(len(sources))]
    x, y = _first_batch(dm, "test")
    assert x.shape == (22, 4, 2, 32, 32)
    assert sorted(y.tolist()) == sorted(list(range(11)) * 2)


def test_cifar10dvs_paper_split(tmp_path):
    write_cifar10dvs(tmp_path, per_class=3)
    dm = _prepared(
        CIFAR10DVSDataModule(
            data_dir=str(tmp_path), T=4, test_per_class=1, val_fraction=0.0, spatial_factor=0.375, slicing="count"
        )
    )
    assert dm.input_shape == (4, 2, 48, 48) and dm.classes[0] == "airplane"
    assert len(dm.datasets["train"]) == 20 and len(dm.datasets["test"]) == 10
    assert all(Path(f).name.endswith("_0.aedat4") for f in dm.sample_sources("test"))  # first file of each class
    assert not set(dm.sample_sources("test")) & set(dm.sample_sources("train"))
    frames, label = dm.datasets["test"][3]
    assert label == 3 and frames.shape == (4, 2, 48, 48)
    per_frame = frames.sum((1, 2, 3))
    assert per_frame.max() - per_frame.min() <= 1  # slicing="count": equal event counts per frame


def test_cifar10dvs_test_split_is_the_papers_recordings_by_number(tmp_path):
    """The paper's split script takes ``cifar10_<class>_0 … _99`` (numbers, not text order) as the test split: with
    12 recordings per class and 3 for the test, _0, _1, _2, never _10 or _11 (text order's second and third)."""
    write_cifar10dvs(tmp_path, per_class=12)
    dm = _prepared(CIFAR10DVSDataModule(data_dir=str(tmp_path), T=4, test_per_class=3, val_fraction=0.0,
                                        spatial_factor=0.375))  # fmt: skip
    numbers = sorted({int(Path(f).stem.rsplit("_", 1)[1]) for f in dm.sample_sources("test")})
    assert numbers == [0, 1, 2] and len(dm.sample_sources("test")) == 30
    train = {int(Path(f).stem.rsplit("_", 1)[1]) for f in dm.sample_sources("train")}
    assert train == set(range(3, 12))


def test_cifar10dvs_copy_too_small_for_the_paper_split_says_so(tmp_path):
    """It used to fail inside the sampler: 'num_samples should be a positive integer value, but got num_samples=0'."""
    write_cifar10dvs(tmp_path, per_class=3)
    dm = CIFAR10DVSDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, spatial_factor=0.375)  # 100 per class
    with pytest.raises(EmptySplitError) as err:
        dm.prepare_data()
        dm.setup("fit")
    message = str(err.value)
    assert "too small for the paper's split" in message and "test_per_class=100" in message
    assert "airplane: 3" in message and "1000 per class" in message
    assert "--data.init_args.test_per_class below 3" in message


def test_an_empty_split_names_the_argument_to_change(tmp_path):
    write_nmnist(tmp_path, per_class=2)
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=3, val_fraction=0.0, cache="none"))
    assert len(_first_batch(dm)[0]) > 0  # training and test are fine
    expected = r"NMNIST: the val split holds no sample\. val_fraction is 0.*--data.init_args.val_fraction"
    with pytest.warns(EmptySplitWarning, match=expected + r".*--data.init_args.val_split test.*validation is skipped"):
        assert len(dm.val_dataloader()) == 0
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=3, val_fraction=0.2, cache="none"))  # 2 per class
    with pytest.warns(EmptySplitWarning, match=r"val_fraction=0.2 rounds to no held-out sample"):
        dm.val_dataloader()
    test_side = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=3, val_fraction=0.0, val_split="test"))
    assert len(next(iter(test_side.val_dataloader()))[0]) > 0  # the fix the message names works
    digits = SequentialDigitsDataModule(images_per_class=3)
    with pytest.warns(EmptySplitWarning, match=r"SequentialDigits: the val split holds no sample"):
        digits.val_dataloader()
    empty = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=3, val_fraction=0.0, cache="none"))
    empty.datasets["train"] = torch.utils.data.Subset(empty.datasets["train"], [])  # e.g. a split rule leaving none
    with pytest.raises(EmptySplitError, match=r"NMNIST: the train split holds no sample\. check that data_dir"):
        empty.train_dataloader()


def test_ncaltech101_integer_labels_and_documented_split(tmp_path):
    write_ncaltech101(tmp_path, per_category=5)
    dm = _prepared(NCaltech101DataModule(data_dir=str(tmp_path), T=3, spatial_factor=0.25, val_fraction=0.0))
    assert dm.classes == ["Faces_easy", "accordion", "airplanes"] and dm.num_classes == 3
    assert len(dm.datasets["train"]) == 12 and len(dm.datasets["test"]) == 3
    x, y = _first_batch(dm, "test")
    assert x.shape == (3, 3, 2, 45, 60) and y.tolist() == [0, 1, 2]


def test_shd_sequences(tmp_path):
    write_shd(tmp_path)
    dm = _prepared(SHDDataModule(data_dir=str(tmp_path), T=10, spatial_factor=0.2, val_fraction=0.25))
    assert dm.input_shape == (10, 1, 140) and dm.num_classes == 20
    x, y = _first_batch(dm)
    assert x.shape[1:] == (10, 1, 140) and y.max() < 20
    assert len(dm.datasets["test"]) == 20


@pytest.mark.parametrize("augment", [{"random_translate": 2}, {"random_flip": True}])
def test_shd_refuses_camera_augmentations(tmp_path, augment):
    """A vertical shift of a 1 x 700 frame blanked it (33 of 40 training samples all zero), a flip reversed the
    frequencies: refused when the DataModule is made."""
    with pytest.raises(ValueError, match="one row of 700 cochlear channels"):
        SHDDataModule(data_dir=str(tmp_path), T=4, **augment)


def test_event_datasets_pickle_for_spawned_workers_and_take_any_seed(tmp_path):
    """Workers started by spawn or forkserver (macOS, Windows, Python 3.14's default) pickle the dataset: it held
    lambdas. A random augmentation takes any seed (one above ~1.8e6 overflowed manual_seed deep in a worker)."""
    import pickle

    write_shd(tmp_path)
    for seed in (0, 4_294_967_295, 20240101):
        dm = _prepared(SHDDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.25, seed=seed))
        train = pickle.loads(pickle.dumps(dm.datasets["train"]))
        assert torch.equal(train[0][0], dm.datasets["train"][0][0])
    from psn_zoo.datamodules.transforms import MapDataset, RandomFlipFrames

    frames = [(torch.rand(4, 2, 8, 8), 1)] * 4
    for seed in (3, 4_294_967_295, 10**30):
        data = MapDataset(frames, RandomFlipFrames(0.5), seed=seed)
        assert all(torch.equal(data[i][0], data[i][0]) for i in range(4))
    small = MapDataset(frames, RandomFlipFrames(0.5), seed=3)  # seeds that fitted keep their draws
    reference = torch.Generator().manual_seed((3 * 1_000_003) * 10_000_019 + 2)
    expected = frames[2][0].flip(-1) if torch.rand(1, generator=reference) < 0.5 else frames[2][0]
    assert torch.equal(small[2][0], expected)


def test_shd_missing_test_file_is_not_mistaken_for_present(tmp_path, monkeypatch):
    write_shd(tmp_path)
    (tmp_path / "SHD" / "shd_test.h5").unlink()
    monkeypatch.setattr(tonic.datasets.SHD, "base_url", "http://127.0.0.1:9/")
    with pytest.raises(DatasetNotFoundError, match=r"shd_test\.h5\.zip"):
        SHDDataModule(data_dir=str(tmp_path), T=4).prepare_data()


def test_asldvs_column_vectors_are_flattened(tmp_path):
    write_asldvs(tmp_path)
    with mock.patch.object(tonic.datasets.ASLDVS, "_check_exists", return_value=True):  # 100 800 files otherwise
        dm = _prepared(ASLDVSDataModule(data_dir=str(tmp_path), T=3, spatial_factor=0.25, val_fraction=0.0))
    x, y = _first_batch(dm)
    assert x.shape[1:] == (3, 2, 45, 60) and set(y.tolist()) <= {0, 1, 2}


def test_argument_validation():
    with pytest.raises(ValueError, match="T must be a positive integer"):
        NMNISTDataModule(T=0)
    with pytest.raises(ValueError, match="cache must be"):
        NMNISTDataModule(cache="ram")
    with pytest.raises(ValueError, match="slicing must be"):
        NMNISTDataModule(slicing="bins")


def test_save_frames_png_and_gif(tmp_path):
    import matplotlib.image

    frames = torch.zeros(4, 2, 34, 34)
    frames[:, 1, 10:20, 5:9] = 3
    frames[:, 0, 2:5, 20:30] = 1
    png = save_frames(frames, tmp_path / "sample.png", title="digit 7")
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 50 and image.shape[1] > 4 * 50 and image[..., :3].std() > 0.05
    gif = save_frames(frames.numpy(), tmp_path / "sample.gif")
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    with pytest.raises(ValueError, match=r"expected frames \[T, P, H, W\]"):
        save_frames(np.zeros((3, 34, 34)), tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------- disk cache identity
def _frames_by_source(dm, split: str) -> dict[str, torch.Tensor]:
    return {s: dm.datasets[split][i][0] for i, s in enumerate(dm.sample_sources(split))}


def _asl(tmp_path, **kwargs):
    with mock.patch.object(tonic.datasets.ASLDVS, "_check_exists", return_value=True):  # 30 of 100800 files
        return _prepared(ASLDVSDataModule(data_dir=str(tmp_path), T=4, val_fraction=0.0, **kwargs))


def test_disk_cache_serves_each_file_its_own_frames_whatever_the_split(tmp_path):
    """Cached frames follow the files: a split drawn differently (seed, test_per_class) or a local copy with other
    files never reads the frames another run cached for other samples (test samples leaked into training)."""
    write_asldvs(tmp_path, letters="abc", per_letter=10)
    first = _asl(tmp_path, cache="disk", seed=0)
    list(first.test_dataloader())  # fills the test cache of seed 0
    again = _asl(tmp_path, cache="disk", seed=1)
    truth = _asl(tmp_path, cache="none", seed=1)
    assert set(again.sample_sources("test")) != set(first.sample_sources("test"))
    for split in ("train", "test"):
        cached, fresh = _frames_by_source(again, split), _frames_by_source(truth, split)
        assert cached.keys() == fresh.keys() and all(torch.equal(cached[s], fresh[s]) for s in fresh), split

    cifar = tmp_path / "cifar"
    write_cifar10dvs(cifar, per_class=4)
    one = _prepared(CIFAR10DVSDataModule(data_dir=str(cifar), T=4, cache="disk", val_fraction=0.0, test_per_class=1))
    [one.datasets["train"][i] for i in range(len(one.datasets["train"]))]  # fills the train cache
    two = _prepared(CIFAR10DVSDataModule(data_dir=str(cifar), T=4, cache="disk", val_fraction=0.0, test_per_class=2))
    ref = _prepared(CIFAR10DVSDataModule(data_dir=str(cifar), T=4, cache="none", val_fraction=0.0, test_per_class=2))
    cached, fresh = _frames_by_source(two, "train"), _frames_by_source(ref, "train")
    assert cached.keys() == fresh.keys() and all(torch.equal(cached[s], fresh[s]) for s in fresh)

    write_nmnist(tmp_path, per_class=2)
    full = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, cache="disk", val_fraction=0.0))
    list(full.test_dataloader())
    (tmp_path / "NMNIST" / "Test" / "0" / "00000.bin").unlink()  # the local file list changes: samples shift
    (tmp_path / "NMNIST" / "Test" / ".pad" / "pad_extra.bin").symlink_to("_empty")  # (Tonic's file count)
    fewer = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, cache="disk", val_fraction=0.0))
    plain = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, cache="none", val_fraction=0.0))
    cached, fresh = _frames_by_source(fewer, "test"), _frames_by_source(plain, "test")
    assert len(fresh) == 19 and all(torch.equal(cached[s], fresh[s]) for s in fresh)


def test_disk_cache_is_keyed_by_reader_options(tmp_path):
    """``first_saccade_only`` is applied inside Tonic's reader: a cache filled without it is never read with it."""
    write_nmnist(tmp_path, per_class=1)

    def frames(cache: str, first_saccade_only: bool) -> torch.Tensor:
        dm = NMNISTDataModule(
            data_dir=str(tmp_path), T=4, cache=cache, val_fraction=0.0, first_saccade_only=first_saccade_only
        )
        return _prepared(dm).datasets["test"][0][0]

    whole = frames("disk", False)
    saccade = frames("disk", True)
    assert torch.equal(saccade, frames("none", True)) and saccade.sum() < whole.sum()
    assert torch.equal(frames("disk", False), whole)


def test_a_partly_written_cache_entry_is_written_again(tmp_path):
    """A writer killed after the frames but before the label left an entry every later run failed on (KeyError):
    it is made again; entries are written under a temporary name and renamed, never through a link."""
    import subprocess
    import sys

    write_nmnist(tmp_path, per_class=1)

    def first_test_sample():
        return _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, cache="disk", val_fraction=0.0)).datasets[
            "test"
        ][0]

    good = first_test_sample()
    (entry,) = (tmp_path / "cache").glob("NMNIST-test-*/**/0_0.hdf5")
    killed = (
        "import os, signal, sys, h5py, numpy as np\n"
        "f = h5py.File(sys.argv[1], 'w')\n"
        "f.create_dataset('data/0', data=np.ones((4, 2, 34, 34), np.int16)); f.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", killed, str(entry)]).returncode == -9
    for _ in range(2):
        frames, label = first_test_sample()
        assert torch.equal(frames, good[0]) and label == good[1]
    precious = tmp_path / "precious.txt"
    precious.write_text("not a cache entry")
    entry.unlink()
    entry.symlink_to(precious)  # an entry that is a link: replaced, never written through
    assert torch.equal(first_test_sample()[0], good[0])
    assert precious.read_text() == "not a cache entry" and not entry.is_symlink()
    assert not list(entry.parent.glob("*.tmp"))


def test_an_interrupted_cache_write_leaves_no_entry(tmp_path, monkeypatch):
    import psn_zoo.datamodules.base as base

    write_nmnist(tmp_path, per_class=1)
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=4, cache="disk", val_fraction=0.0))

    def dies_midway(data, targets, file_path, compress=True):
        import h5py

        with h5py.File(file_path, "w") as f:
            f.create_dataset("data/0", data=data)
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "save_to_disk_cache", dies_midway, raising=False)
    monkeypatch.setattr(tonic.cached_dataset, "save_to_disk_cache", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        dm.datasets["test"][0]
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []  # no entry, no temporary file


# ---------------------------------------------------------------------------------------------- spatial_factor
@pytest.mark.parametrize("factor", [0.5, 0.7, 0.3])
def test_any_spatial_factor_frames_every_event_as_tonic_places_it(tmp_path, factor):
    """Tonic's Downsample puts pixel W-1 at int((W-1)·f): the frame is that + 1 wide (0.7: 24, not int(34·0.7) = 23,
    which crashed calling valid files corrupt); factors that worked keep their frames (0.5: 17)."""
    write_nmnist(tmp_path, per_class=1)
    x, y, t, p = (
        np.array([0, 10, 33, 33]),
        np.array([0, 5, 33, 20]),
        np.array([0, 10, 20, 30_000]),
        np.array([0, 1, 1, 0]),
    )
    write_atis_bin(tmp_path / "NMNIST" / "Test" / "0" / "00000.bin", x, y, t, p)
    dm = _prepared(NMNISTDataModule(data_dir=str(tmp_path), T=2, spatial_factor=factor, cache="none", val_fraction=0))
    side = int(33 * factor) + 1
    assert dm.input_shape == (2, 2, side, side) and (factor != 0.5 or side == int(34 * factor) == 17)
    frames = torch.stack([dm.datasets["test"][i][0] for i in range(len(dm.datasets["test"]))])
    assert frames.shape[-2:] == (side, side)
    events = tonic.datasets.NMNIST(str(tmp_path), train=False)[0][0]
    expected = tonic.transforms.Compose(
        [tonic.transforms.Downsample(spatial_factor=factor), tonic.transforms.ToFrame((side, side, 2), n_time_bins=2)]
    )(events)
    np.testing.assert_array_equal(frames[0].numpy(), expected)
    assert frames[0][:, :, side - 1, side - 1].sum() == 1  # the event at (33, 33)


def test_spatial_factors_that_framed_every_pixel_keep_their_frame_size():
    """Where ``int(W·f)`` held Tonic's last pixel (every factor that worked on any recording), the size is unchanged."""
    from psn_zoo.datamodules.base import downsampled

    sizes = {34, 128, 240, 180, 346, 260, 700, 304}
    for size in sizes:
        for factor in [k / 100 for k in range(1, 101)]:
            if int((size - 1) * factor) < int(size * factor):  # the old size held pixel W-1
                assert downsampled(size, factor) == int(size * factor), (size, factor)
            assert downsampled(size, factor) == int((size - 1) * factor) + 1


# ---------------------------------------------------------------------------------------------- N-Caltech101 classes
def test_ncaltech101_classes_are_never_an_empty_listing(tmp_path):
    """Before the download the class count is an error with the download help, not 0 (a 0-class model, then a
    KeyError once the data arrived); after it, the category folders."""
    dm = NCaltech101DataModule(data_dir=str(tmp_path), T=4, cache="none", val_fraction=0.0)
    for _ in range(2):
        with pytest.raises(DatasetNotFoundError, match=r"holds none yet.*prepare_data\(\)(.|\n)*N-Caltech101-archive"):
            _ = dm.num_classes
    write_ncaltech101(tmp_path)
    dm.prepare_data()
    dm.setup()
    assert dm.num_classes == 3 and len(dm.datasets["test"]) == 3


def test_a_resumed_fit_with_workers_sees_the_epoch_it_resumes(tmp_path):
    """With workers, a resumed fit's first iterator is made before Lightning and the classifier set the epoch: it
    replayed epoch 0's order and augmentation. The resumed epoch 1 now sees the uninterrupted run's epoch 1."""
    import lightning as L

    write_cifar10dvs(tmp_path / "data", per_class=4)

    def data():
        return CIFAR10DVSDataModule(data_dir=str(tmp_path / "data"), T=2, test_per_class=1, cache="none",
                                    spatial_factor=0.125, batch_size=8, num_workers=2, random_flip=True,
                                    random_translate=2, val_fraction=0.0)  # fmt: skip

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin, self.seen = torch.nn.Linear(1, 1), {}

        def on_train_epoch_start(self):
            self.trainer.datamodule.set_epoch(self.current_epoch)  # as SpikingClassifier does

        def training_step(self, batch, index):
            x, _ = batch
            self.seen.setdefault(self.current_epoch, []).append(x.flatten(1).sum(1) + x.flatten(1).argmax(1))
            return self.lin.weight.sum() * 0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    kw = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0,
          "accelerator": "cpu", "max_epochs": 2}  # fmt: skip
    every = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    full = Recorder()
    L.Trainer(callbacks=[every], default_root_dir=tmp_path, **kw).fit(full, data())
    [first] = sorted((tmp_path / "ckpt").glob("epoch=0*.ckpt"))
    resumed = Recorder()
    L.Trainer(default_root_dir=tmp_path / "resumed", **kw).fit(resumed, data(), ckpt_path=first)
    same = [torch.equal(a, b) for a, b in zip(resumed.seen[1], full.seen[1], strict=True)]
    assert all(same), "the resumed epoch 1 differs from the uninterrupted run's"
    assert not all(torch.equal(a, b) for a, b in zip(full.seen[0], full.seen[1], strict=True))  # epochs do differ
