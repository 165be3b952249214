"""CIFAR-10/100 (binary release) and their sequential variants, on native-format fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from native_fixtures import write_cifar_binary

from psn_zoo.datamodules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DatasetNotFoundError,
    SequentialCIFAR10DataModule,
)


def test_cifar10_reads_binary_records(tmp_path):
    write_cifar_binary(tmp_path)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=8, augment="none", val_fraction=0.2)
    dm.prepare_data()  # present: no download
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 80, "val": 20, "test": 20}
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.tolist() == list(range(8))
    raw = np.fromfile(tmp_path / "cifar-10-batches-bin" / "test_batch.bin", dtype=np.uint8).reshape(-1, 3073)
    first = torch.from_numpy(raw[0, 1:].reshape(3, 32, 32)).float() / 255
    expected = (first - torch.tensor(dm.mean).view(3, 1, 1)) / torch.tensor(dm.std).view(3, 1, 1)
    assert torch.allclose(x[0], expected)


def test_cifar100_fine_labels_and_sequential_layout(tmp_path):
    write_cifar_binary(tmp_path, hundred=True, per_file=120)
    dm = CIFAR100DataModule(data_dir=str(tmp_path), augment="flip")
    dm.setup()
    assert dm.num_classes == 100 and sorted(set(dm.datasets["test"].dataset.tensors[1].tolist())) == list(range(100))
    write_cifar_binary(tmp_path)
    seq = SequentialCIFAR10DataModule(data_dir=str(tmp_path), batch_size=4, augment="none")
    seq.setup()
    x, _ = next(iter(seq.test_dataloader()))
    assert x.shape == (4, 32, 3, 32) and seq.input_shape == (32, 3, 32)
    flat = CIFAR10DataModule(data_dir=str(tmp_path), augment="none")
    flat.setup()
    assert torch.equal(x[1][:, :, 5], flat.datasets["test"][1][0][:, 5, :].t())  # step t = column t


def test_truncated_batch_and_offline_download(tmp_path, monkeypatch):
    write_cifar_binary(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetNotFoundError, match=r"data_batch_3\.bin is truncated"):
        CIFAR10DataModule(data_dir=str(tmp_path)).setup()
    monkeypatch.setattr(CIFAR10DataModule, "url", "http://127.0.0.1:9/cifar-10-binary.tar.gz")
    empty = tmp_path / "empty"
    with pytest.raises(DatasetNotFoundError, match=r"c32a1d4ab5d03f1284b67883e8d87530"):
        CIFAR10DataModule(data_dir=str(empty)).prepare_data()
    assert not (empty / "cifar-10-binary.tar.gz").exists()


def test_loaders_read_the_right_split_in_a_seeded_order(tmp_path):
    write_cifar_binary(tmp_path)
    held = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=100, augment="none", val_fraction=0.2)
    assert len(held.val_dataloader().dataset) == 20 and held.val_dataloader().dataset is held.datasets["val"]
    no_val = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=100, augment="none", val_fraction=0.0)
    assert no_val.val_dataloader().dataset is no_val.datasets["test"]  # nothing held out: validate on test
    assert no_val.predict_dataloader().dataset is no_val.datasets["test"]
    first, again = (next(iter(held.train_dataloader()))[1] for _ in range(2))
    assert torch.equal(first, again) and not torch.equal(first, first.sort().values)  # shuffled, by the seed


def test_imagenet_evaluates_on_its_val_folder(tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image

    from psn_zoo.datamodules import ImageNetDataModule

    for split, n in (("train", 3), ("val", 2)):
        for wnid in ("n01440764", "n01443537"):
            folder = tmp_path / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (300, 260), (40 * i, 90, 200)).save(folder / f"{wnid}_{i}.JPEG")
    dm = ImageNetDataModule(data_dir=str(tmp_path), batch_size=4, num_workers=0)
    assert dm.test_dataloader().dataset is dm.datasets["val"] and len(dm.datasets["val"]) == 4
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 224, 224) and y.tolist() == [0, 0, 1, 1]
    assert len(dm.train_dataloader().dataset) == 6
