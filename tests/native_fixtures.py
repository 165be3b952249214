"""Small datasets written in each Tonic dataset's native format and folder layout (never mocked parsers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psn_zoo.datamodules.native_formats import (
    satisfy_existence_check,
    write_aedat4,
    write_asl_mat,
    write_atis_bin,
    write_dvsgesture_npy,
    write_shd_h5,
)

CIFAR10DVS_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_events(rng: np.random.Generator, n: int, width: int, height: int, duration_us: int = 300_000):
    t = np.sort(rng.integers(0, duration_us, n))
    return rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n)


def write_nmnist(root: Path, per_class: int = 2, seed: int = 0, pad: bool = True) -> dict[str, list[int]]:
    """``root/NMNIST/{Train,Test}/<digit>/NNNNN.bin``; returns the event count of every written file by split."""
    rng = np.random.default_rng(seed)
    counts: dict[str, list[int]] = {}
    for folder, archive in (("Train", "train.zip"), ("Test", "test.zip")):
        counts[folder] = []
        for digit in range(10):
            for i in range(per_class):
                n = int(rng.integers(200, 400))
                write_atis_bin(
                    root / "NMNIST" / folder / str(digit) / f"{digit * 100 + i:05d}.bin", *random_events(rng, n, 34, 34)
                )
                counts[folder].append(n)
        if pad:
            satisfy_existence_check(root / "NMNIST" / folder, root / "NMNIST" / archive, ".bin", 10_000)
    return counts


def write_dvsgesture(root: Path, seed: int = 0) -> None:
    """Users 1-2 (train) and 24 (test), 11 gestures each, under two lighting conditions."""
    rng = np.random.default_rng(seed)
    for folder, users in (("ibmGestureTrain", (1, 2)), ("ibmGestureTest", (24,))):
        for user in users:
            for lighting in ("fluorescent", "led"):
                for label in range(11):
                    x, y, t, p = random_events(rng, 500, 128, 128, 1_000_000)
                    write_dvsgesture_npy(
                        root / "DVSGesture" / folder / f"user{user:02d}_{lighting}" / f"{label}.npy", x, y, p, t
                    )
        archive = root / "DVSGesture" / f"{folder}.tar.gz"
        satisfy_existence_check(root / "DVSGesture" / folder, archive, ".npy", 100, pad_name="user99_pad")


def write_cifar10dvs(root: Path, per_class: int = 3, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in CIFAR10DVS_CLASSES:
        for i in range(per_class):
            x, y, t, p = random_events(rng, 800, 128, 128, 1_200_000)
            write_aedat4(root / "CIFAR10DVS" / name / f"cifar10_{name}_{i}.aedat4", t, x, y, p)
    satisfy_existence_check(root / "CIFAR10DVS", root / "CIFAR10DVS" / "CIFAR10DVS.zip", ".aedat4", 1000)


def write_ncaltech101(root: Path, categories=("Faces_easy", "accordion", "airplanes"), per_category: int = 5) -> None:
    rng = np.random.default_rng(1)
    for category in categories:
        for i in range(per_category):
            x, y, t, p = random_events(rng, 600, 200, 150)
            write_atis_bin(
                root / "NCALTECH101" / "Caltech101" / category / f"image_{i + 1:04d}.bin", x + 3, y + 5, t, p
            )
    satisfy_existence_check(
        root / "NCALTECH101" / "Caltech101", root / "NCALTECH101" / "N-Caltech101-archive.zip", ".bin", 8709
    )


def write_shd(root: Path, n_train: int = 40, n_test: int = 20) -> None:
    rng = np.random.default_rng(2)
    for split, n in (("train", n_train), ("test", n_test)):
        samples = []
        for _ in range(n):
            k = int(rng.integers(100, 300))
            samples.append((np.sort(rng.uniform(0, 0.9, k)), rng.integers(0, 700, k)))
        write_shd_h5(root / "SHD" / f"shd_{split}.h5", samples, labels=np.arange(n) % 20)
        (root / "SHD" / f"shd_{split}.h5.zip").touch()


def write_asldvs(root: Path, letters: str = "abc", per_letter: int = 5) -> None:
    rng = np.random.default_rng(3)
    for letter in letters:
        for i in range(per_letter):
            x, y, t, p = random_events(rng, 400, 240, 180)
            write_asl_mat(root / "ASLDVS" / letter / f"{letter}_{i:04d}.mat", x, y, t, p)
    (root / "ASLDVS" / "ASLDVS.zip").touch()


def write_cifar_binary(root: Path, hundred: bool = False, per_file: int = 20, seed: int = 4) -> None:
    """CIFAR binary release records: ``label (or coarse, fine) + 3072 bytes`` (R, G, B planes of 32×32)."""
    rng = np.random.default_rng(seed)
    folder, files = (
        ("cifar-100-binary", ["train.bin", "test.bin"])
        if hundred
        else ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"])
    )
    classes = 100 if hundred else 10
    for name in files:
        labels = np.arange(per_file) % classes
        head = np.stack([labels // 5, labels], 1) if hundred else labels[:, None]
        pixels = rng.integers(0, 256, (per_file, 3072))
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_bytes(np.concatenate([head, pixels], 1).astype(np.uint8).tobytes())
