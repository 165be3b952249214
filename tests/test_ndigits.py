"""The embedded N-Digits dataset and the sequential-digits task."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tonic
import torch

from datamodules import NDigitsDataModule, SequentialDigitsDataModule, generate_ndigits
from datamodules import ndigits as nd

SMALL = nd.NDigitsConfig(images_per_class=4, recordings=2)


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
    assert list(tmp_path.iterdir()) == []


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
    from datamodules.seqdigits import pixel_permutation

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
