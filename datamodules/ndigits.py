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
recordings straddle train and test. Generation is deterministic in the seed, shows a progress bar, writes into
a temporary folder and renames it into place when complete, and records its parameters and event statistics
in ``ndigits.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from .base import stratified_split
from .native_formats import satisfy_existence_check, write_atis_bin
from .nmnist import NMNISTDataModule

GENERATOR_VERSION = 1
#: Offsets of the image on the sensor at the corners of the three saccades (px), as in N-MNIST.
SACCADE_PATH = ((0.0, 0.0), (3.5, 7.0), (7.0, 0.0), (0.0, 0.0))
NMNIST_EXISTENCE_THRESHOLD = 10_000  # tonic.datasets.NMNIST._check_exists wants this many .bin per split


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


def simulate_recordings(images: np.ndarray, config: NDigitsConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Event recordings ``(N,)`` of structured arrays ``x, y, t, p`` (t in µs), one per image ``[N, 28, 28]``."""
    n, size = len(images), config.sensor
    canvas = torch.zeros(n, 1, size, size)
    canvas[:, 0, :28, :28] = torch.from_numpy(images)
    speed = torch.from_numpy(rng.uniform(1 - config.speed_jitter, 1 + config.speed_jitter, n)).float()
    origin = torch.from_numpy(rng.uniform(-config.position_jitter_px, config.position_jitter_px, (n, 2))).float()
    contrast = config.contrast * rng.uniform(1 - config.contrast_jitter, 1 + config.contrast_jitter, n)
    threshold = (
        torch.from_numpy(contrast[:, None, None] * (1 + config.pixel_mismatch * rng.standard_normal((n, size, size))))
        .float()
        .clamp_min(0.05)
    )
    path = torch.tensor(SACCADE_PATH)
    legs = len(SACCADE_PATH) - 1
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )

    def log_intensity(t_us: float) -> torch.Tensor:
        progress = (t_us / (config.saccade_us * speed)).clamp(max=legs)  # legs done, per recording
        leg = progress.floor().long().clamp(max=legs - 1)
        frac = (progress - leg).unsqueeze(1)
        offset = path[leg] + frac * (path[leg + 1] - path[leg]) + origin  # [n, 2] (dx, dy)
        gx = (xs - offset[:, 0, None, None]) * (2 / (size - 1)) - 1
        gy = (ys - offset[:, 1, None, None]) * (2 / (size - 1)) - 1
        sampled = torch.nn.functional.grid_sample(
            canvas, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=True
        )[:, 0]
        return torch.log(config.background + (1 - config.background) * sampled)

    duration = int(np.ceil(config.saccade_us * legs * (1 + config.speed_jitter) / config.dt_us)) * config.dt_us
    reference = log_intensity(0.0)
    chunks = []
    for t in range(config.dt_us, duration + 1, config.dt_us):
        delta = log_intensity(float(t)) - reference
        count = torch.floor(delta.abs() / threshold).to(torch.int64)
        hit = count.nonzero()
        if len(hit):
            k = count[hit[:, 0], hit[:, 1], hit[:, 2]]
            on = (delta[hit[:, 0], hit[:, 1], hit[:, 2]] > 0).to(torch.int64)
            reference += torch.sign(delta) * count * threshold
            rows = torch.repeat_interleave(torch.cat([hit, on[:, None]], 1), k, dim=0).numpy()
            stamps = t - config.dt_us + rng.integers(0, config.dt_us, len(rows))
            chunks.append(np.column_stack([rows, stamps]))  # [recording, y, x, p, t]
    events = np.concatenate(chunks) if chunks else np.zeros((0, 5), dtype=np.int64)
    noise_counts = rng.poisson(config.noise_hz * size * size * duration * 1e-6, n)
    noise = np.column_stack(
        [
            np.repeat(np.arange(n), noise_counts),
            rng.integers(0, size, (noise_counts.sum(), 2)),
            rng.integers(0, 2, noise_counts.sum()),
            rng.integers(0, duration, noise_counts.sum()),
        ]
    )
    events = np.concatenate([events, noise])
    events = events[np.lexsort((events[:, 4], events[:, 0]))]
    bounds = np.searchsorted(events[:, 0], np.arange(n + 1))
    out = []
    for i in range(n):
        e = events[bounds[i] : bounds[i + 1]]
        rec = np.zeros(len(e), dtype=[("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
        rec["x"], rec["y"], rec["t"], rec["p"] = e[:, 2], e[:, 1], e[:, 4], e[:, 3]
        out.append(rec)
    return out


def generate_ndigits(root: str | Path, config: NDigitsConfig = NDigitsConfig(), batch: int = 256) -> dict[str, Any]:
    """Write N-Digits under ``root/NMNIST`` (unless a complete copy with the same config is there).

    Returns the metadata (config, sample counts, event statistics) also stored in ``root/ndigits.json``.
    """
    root = Path(root)
    meta_path = root / "ndigits.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("config_digest") == config.digest() and meta.get("complete"):
            return meta
    images, labels = mnist_style_digits(config.images_per_class)
    train_images, test_images = stratified_split(labels.tolist(), config.test_fraction, config.seed)
    splits = {"Train": train_images, "Test": test_images}
    rng = np.random.default_rng(config.seed)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    counts, n_events, n_on = {}, [], 0
    total = len(labels) * config.recordings
    try:
        with tqdm(total=total, desc="simulating N-Digits recordings", unit="rec") as bar:
            for folder, image_ids in splits.items():
                jobs = [(i, r) for i in image_ids for r in range(config.recordings)]
                for start_job in range(0, len(jobs), batch):
                    part = jobs[start_job : start_job + batch]
                    recs = simulate_recordings(images[[i for i, _ in part]], config, rng)
                    for (image_id, rec_id), events in zip(part, recs, strict=True):
                        sample_id = image_id * config.recordings + rec_id
                        path = tmp / "NMNIST" / folder / str(labels[image_id]) / f"{sample_id:05d}.bin"
                        write_atis_bin(path, events["x"], events["y"], events["t"], events["p"])
                        n_events.append(len(events))
                        n_on += int(events["p"].sum())
                    bar.update(len(part))
                counts[folder] = len(jobs)
        for folder, archive in (("Train", "train.zip"), ("Test", "test.zip")):
            satisfy_existence_check(
                tmp / "NMNIST" / folder, tmp / "NMNIST" / archive, ".bin", NMNIST_EXISTENCE_THRESHOLD
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave half a dataset behind
        raise
    n_events_arr = np.asarray(n_events)
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
        "seconds": round(time.perf_counter() - start, 1),
        "complete": True,
    }
    (tmp / "ndigits.json").write_text(json.dumps(meta, indent=2))
    if root.exists():  # an incomplete or outdated copy: replace it
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    return meta


class NDigitsDataModule(NMNISTDataModule):
    """N-Digits (embedded, offline, generated on first use) read through ``tonic.datasets.NMNIST``.

    Args:
        recordings: recordings per source image (3: 4311 train / 1080 test samples).
        images_per_class: use only the first n images of each digit (quick tests); None: all 1797.
        generator_seed: seed of the simulation and of the train/test split by image.
        **kwargs: the arguments of :class:`datamodules.NMNISTDataModule` (``T``, ``batch_size``, ``cache``...).
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
        self.metadata = generate_ndigits(self.tonic_root(), self.config)
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.metadata is None:
            meta = self.tonic_root() / "ndigits.json"
            if not meta.exists():  # setup without prepare_data (e.g. a bare script)
                self.prepare_data()
            else:
                self.metadata = json.loads(meta.read_text())
        super().setup(stage)

    def groups_of(self, dataset: Any, indices: list[int] | None) -> list[int]:
        """Recordings of the same source image stay together (the validation split is by image, as the test)."""
        ids = [int(Path(p).stem) // self.config.recordings for p in dataset.data]
        return [ids[i] for i in indices] if indices is not None else ids

    def download_help(self) -> str:
        return (
            f"N-Digits is generated locally (no download); generation into {self.tonic_root()} did not produce "
            "readable files. Delete that folder and run prepare_data() again."
        )
