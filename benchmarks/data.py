"""Data loading: N-Digits at T = 10, our DataModule against SpikingJelly 2.0.0's own N-MNIST pipeline.

Both read the SAME generated N-Digits recordings (N-MNIST's ``.bin`` format):

- ours, ``NDigitsDataModule`` (``tonic.datasets.NMNIST`` + ``ToFrame(n_time_bins=10)``): *cold* is an epoch
  that reads every ``.bin`` file and frames it (``cache="none"``); *fill* is the memory cache's one pass over the
  training split (by the workers); *warm* is an epoch served from the cache (memory: in-process; disk: Tonic's
  ``DiskCachedDataset``, its second epoch).
- SpikingJelly, ``spikingjelly.datasets.NMNIST(root, train=True, data_type="frame", frames_number=10,
  split_by="time")``: its one-off preprocessing (``.bin`` → ``events_np/*.npz`` → ``frames_number_10_split_by_time/
  *.npz``, SJ's own code and thread pool), then an epoch over the frame files through a ``DataLoader``. Only the
  two steps that need the network are replaced: the md5 check of the real N-MNIST archives (ours are generated)
  and their extraction, which becomes symlinks from ``extract/{Train,Test}/<digit>`` to our class folders.

Epochs alternate (ours cold, SJ, ours warm) for ``repeats`` rounds with 0 and 2 workers; ratios are medians of
the per-round ratios with their range. The tiny model (the width-1/8 paper CIFAR10-DVS VGG, PSN, T = 10) gives
the training throughput the data must clear.

    python -m benchmarks.data [--data-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import Ratio, emit, environment, markdown_table, progress
from psn_zoo.datamodules import NDigitsDataModule
from psn_zoo.models import create_model

T, BATCH = 10, 32
GRIDS = {
    "quick": {"images_per_class": 40, "workers": [0, 2], "repeats": 2},
    "full": {"images_per_class": None, "workers": [0, 2], "repeats": 3},
}


# ----------------------------------------------------------------------------------- ours
def epoch_samples_per_s(loader) -> float:
    start = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - start)


def _clear_disk_cache(dm: NDigitsDataModule) -> None:
    """Remove this DataModule's own disk-cache folders, so the first disk epoch really fills them."""
    for split in ("train", "test"):
        shutil.rmtree(dm.data_dir / "cache" / f"{dm.name}-{split}-{dm.cache_key(split)}", ignore_errors=True)


def model_samples_per_s(steps: int = 5) -> float:
    model = create_model("paper_cifar10dvs_vgg", neuron="psn", T=T, input_size=34, width_mult=0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(BATCH, T, 2, 34, 34), torch.randint(0, 10, (BATCH,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------- SpikingJelly
def spikingjelly_nmnist(source: Path) -> type:
    """SpikingJelly 2.0.0's ``NMNIST`` reading the N-MNIST-format recordings under ``source`` (``Train/<digit>``,
    ``Test/<digit>``) instead of the downloaded archives; everything after the extraction is SJ's own code."""
    from spikingjelly.datasets import NMNIST

    source = Path(source).resolve()

    class OfflineNMNIST(NMNIST):
        @classmethod
        def _check_downloaded_files(cls, download_root: Path) -> None:
            pass  # SJ checks the md5 of the real N-MNIST Train.zip/Test.zip; our recordings are generated

        @classmethod
        def _download_all_files(cls, download_root: Path) -> None:
            pass  # N-MNIST is not downloadable by SJ anyway (it raises NotImplementedError)

        @classmethod
        def extract_downloaded_files(cls, download_root: Path, extract_root: Path) -> None:
            for split in ("Train", "Test"):
                (extract_root / split).mkdir(parents=True, exist_ok=True)
                for folder in sorted((source / split).iterdir()):
                    # only the class folders: Tonic's existence-check padding (.pad) is not a recording
                    if folder.is_dir() and folder.name.isdigit():
                        os.symlink(folder, extract_root / split / folder.name, target_is_directory=True)

    return OfflineNMNIST


def spikingjelly_preprocess(source: Path, root: Path, frames: int = T) -> dict[str, Any]:
    """Run SJ's one-off preprocessing into ``root``; returns the two timings and the train/test datasets."""
    cls = spikingjelly_nmnist(source)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cls(str(root), train=True, data_type="event")  # download check, extract, .bin -> events_np/*.npz
    events_s = time.perf_counter() - start
    start = time.perf_counter()
    train = cls(str(root), train=True, data_type="frame", frames_number=frames, split_by="time")  # all splits
    frames_s = time.perf_counter() - start
    test = cls(str(root), train=False, data_type="frame", frames_number=frames, split_by="time")
    return {"events_to_npz_s": events_s, "npz_to_frames_s": frames_s, "train": train, "test": test}


def sj_loader(dataset, workers: int, batch: int = BATCH) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers)


# ----------------------------------------------------------------------------------- the benchmark
def run(
    data_dir: str | Path,
    images_per_class: int | None = None,
    workers: list[int] | tuple[int, ...] = (0, 2),
    repeats: int = 3,
    *,
    recordings: int = 3,
    spikingjelly: bool = True,
    disk: bool = True,
    model: bool = True,
    show_progress: bool = True,
) -> dict:
    """Measure the data pipelines on N-Digits under ``data_dir`` (generated there if absent)."""
    env = environment()
    data_dir = Path(data_dir)
    common = {"data_dir": str(data_dir), "T": T, "batch_size": BATCH, "images_per_class": images_per_class,
              "recordings": recordings}  # fmt: skip
    start = time.perf_counter()
    base = NDigitsDataModule(**common, cache="none")
    base.prepare_data()  # generate once, outside the timings
    generation_s = time.perf_counter() - start
    source = base.tonic_root() / "NMNIST"
    counts = {split: sum(1 for _ in (source / split).glob("[0-9]/*.bin")) for split in ("Train", "Test")}

    sj: dict[str, Any] = {}
    sj_error = None
    tmp = None
    if spikingjelly:
        tmp = tempfile.mkdtemp(prefix="sj-nmnist-", dir=data_dir)
        try:
            sj = spikingjelly_preprocess(source, Path(tmp) / "NMNIST")
        except Exception as err:  # report why SJ's pipeline could not run, measure ours anyway
            sj_error = f"{type(err).__name__}: {err}"
    try:
        records = []
        for w in progress(list(workers), "data (workers)", disable=not show_progress):
            records.append(_measure_workers(common, w, repeats, sj.get("train"), disk))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    model_sps = model_samples_per_s() if model else None
    subset = "all 1797 images" if images_per_class is None else f"{images_per_class} images per class"
    subset += f", {recordings} recording{'s' if recordings > 1 else ''} each"
    return _report(env, records, counts, generation_s, sj, sj_error, model_sps, repeats, subset)


def _measure_workers(common: dict, workers: int, repeats: int, sj_train, disk: bool) -> dict:
    cold_dm = NDigitsDataModule(**common, num_workers=workers, cache="none")
    cold_dm.setup()
    mem_dm = NDigitsDataModule(**common, num_workers=workers, cache="memory")
    mem_dm.setup()
    start = time.perf_counter()
    mem_dm.train_dataloader()  # fills the training split's memory cache (with the workers)
    fill_s = time.perf_counter() - start
    n_train = len(mem_dm.datasets["train"])
    samples: dict[str, list[float]] = {"cold": [], "sj": [], "warm_memory": []}
    for _ in range(repeats):
        samples["cold"].append(epoch_samples_per_s(cold_dm.train_dataloader()))
        if sj_train is not None:
            samples["sj"].append(epoch_samples_per_s(sj_loader(sj_train, workers)))
        samples["warm_memory"].append(epoch_samples_per_s(mem_dm.train_dataloader()))
    record: dict[str, Any] = {
        "workers": workers,
        "train_samples": n_train,
        "sj_train_samples": len(sj_train) if sj_train is not None else None,
        "memory_fill_s": fill_s,
        "memory_fill_samples_per_s": n_train / fill_s,
        "samples_per_s": {k: v for k, v in samples.items() if v},
        "cold": statistics.median(samples["cold"]),
        "warm_memory": statistics.median(samples["warm_memory"]),
        "memory_warm_over_cold": Ratio.of(
            [w / c for w, c in zip(samples["warm_memory"], samples["cold"], strict=True)]
        ),
    }
    if samples["sj"]:
        record["sj"] = statistics.median(samples["sj"])
        record["cold_over_sj"] = Ratio.of([c / s for c, s in zip(samples["cold"], samples["sj"], strict=True)])
        record["warm_memory_over_sj"] = Ratio.of(
            [w / s for w, s in zip(samples["warm_memory"], samples["sj"], strict=True)]
        )
    if disk:
        disk_dm = NDigitsDataModule(**common, num_workers=workers, cache="disk")
        _clear_disk_cache(disk_dm)
        disk_dm.setup()
        first = epoch_samples_per_s(disk_dm.train_dataloader())
        warm = [epoch_samples_per_s(disk_dm.train_dataloader()) for _ in range(repeats)]
        record["disk_first_epoch"] = first
        record["warm_disk"] = statistics.median(warm)
        record["disk_warm_over_cold"] = Ratio.of([d / c for d, c in zip(warm, samples["cold"], strict=True)])
        _clear_disk_cache(disk_dm)
    return record


def _report(env, records, recordings, generation_s, sj, sj_error, model_sps, repeats, subset) -> dict:
    has_sj = "sj" in records[0]
    has_disk = "warm_disk" in records[0]
    headers = ["workers", "ours cold samples/s"]
    if has_sj:
        headers += ["SJ frames epoch samples/s", "ours cold / SJ (min-max)"]
    headers += ["ours warm memory samples/s", "memory warm/cold (min-max)"]
    if has_sj:
        headers += ["ours warm / SJ (min-max)"]
    headers += ["memory fill samples/s"]
    if has_disk:
        headers += ["disk 1st epoch samples/s", "disk warm samples/s", "disk warm/cold (min-max)"]
    rows = []
    for r in records:
        row = [r["workers"], f"{r['cold']:.0f}"]
        if has_sj:
            row += [f"{r['sj']:.0f}", str(r["cold_over_sj"])]
        row += [f"{r['warm_memory']:.0f}", str(r["memory_warm_over_cold"])]
        if has_sj:
            row += [str(r["warm_memory_over_sj"])]
        row += [f"{r['memory_fill_samples_per_s']:.0f}"]
        if has_disk:
            row += [f"{r['disk_first_epoch']:.0f}", f"{r['warm_disk']:.0f}", str(r["disk_warm_over_cold"])]
        rows.append(row)
    epochs = markdown_table(headers, rows)
    total = recordings["Train"] + recordings["Test"]
    one_off_rows = []
    if sj:
        sj_total = sj["events_to_npz_s"] + sj["npz_to_frames_s"]
        one_off_rows += [
            ["SpikingJelly", "`.bin` → `events_np/*.npz` (train + test)", f"{sj['events_to_npz_s']:.2f}",
             f"{total / sj['events_to_npz_s']:.0f}"],
            ["SpikingJelly", f"npz → `frames_number_{T}_split_by_time/*.npz`", f"{sj['npz_to_frames_s']:.2f}",
             f"{total / sj['npz_to_frames_s']:.0f}"],
            ["SpikingJelly", "total, before the first epoch", f"{sj_total:.2f}", f"{total / sj_total:.0f}"],
        ]  # fmt: skip
    for r in records:
        one_off_rows.append(
            ["ours", f"memory-cache fill of the training split ({r['workers']} workers)", f"{r['memory_fill_s']:.2f}",
             f"{r['memory_fill_samples_per_s']:.0f}"]
        )  # fmt: skip
    one_off_rows.append(["ours", "none needed: a cold epoch frames the `.bin` files directly", "0", "-"])
    one_off = markdown_table(["pipeline", "one-off step", "seconds", "recordings/s"], one_off_rows, left=(0, 1))

    notes, headline = [], {}
    mem = [r["memory_warm_over_cold"].median for r in records]
    headline["memory_warm_over_cold"] = {str(r["workers"]): r["memory_warm_over_cold"].median for r in records}
    notes.append(
        "memory warm/cold: "
        + ", ".join(f"{r['memory_warm_over_cold']} with {r['workers']} workers" for r in records)
        + f" (max {max(mem):.1f}x)"
    )
    if has_sj:
        headline["ours_cold_over_sj"] = {str(r["workers"]): r["cold_over_sj"].median for r in records}
        headline["ours_warm_memory_over_sj"] = {str(r["workers"]): r["warm_memory_over_sj"].median for r in records}
        headline["sj_preprocessing_s"] = sj["events_to_npz_s"] + sj["npz_to_frames_s"]
        notes.append(
            "ours cold / SJ epoch over its preprocessed frame files: "
            + ", ".join(f"{r['cold_over_sj']} with {r['workers']} workers" for r in records)
            + "; ours warm memory / SJ: "
            + ", ".join(f"{r['warm_memory_over_sj']} with {r['workers']} workers" for r in records)
        )
        notes.append(
            f"SJ's one-off preprocessing of the {total} recordings took {headline['sj_preprocessing_s']:.1f} s "
            f"(events → npz {sj['events_to_npz_s']:.1f} s, frames {sj['npz_to_frames_s']:.1f} s); our pipeline "
            "needs none, and a frame-count or T change re-runs SJ's frame step into a new folder."
        )
        notes.append(
            "SJ's frames (`split_by='time'`: T equal time slices from the first to the last event, integrated by "
            "bincount) and ours (Tonic `ToFrame(n_time_bins=T)`) are both event counts, `float32 [T, 2, 34, 34]`; "
            "SJ's epoch covers the whole Train folder, ours holds 10 % of it out for validation, so compare samples/s, "
            "not epoch times."
        )
    elif sj_error:
        notes.append(f"SpikingJelly's N-MNIST pipeline could not run offline: {sj_error}")
    if model_sps is not None:
        headline["tiny_model_samples_per_s"] = model_sps
        best = max(max(r["warm_memory"] for r in records), max(r["cold"] for r in records))
        notes.append(
            f"tiny model (paper_cifar10dvs_vgg ×1/8, PSN, T={T}) trains at {model_sps:.0f} samples/s: the data "
            f"pipeline serves {min(r['cold'] for r in records) / model_sps:.0f}× (cold) to "
            f"{best / model_sps:.0f}× (warm) what it consumes."
        )
    if has_disk:
        disk = [r["disk_warm_over_cold"].median for r in records]
        verdict = "slower than" if max(disk) < 1 else "about as fast as" if min(disk) < 1.2 else "faster than"
        notes.append(
            f"disk warm/cold {min(disk):.2f}-{max(disk):.2f}: Tonic's DiskCachedDataset (HDF5 per sample) is "
            f"{verdict} reading these small `.bin` files; it is there for expensive preprocessing such as Denoise."
        )
    description = (
        f"`python -m benchmarks.data`: N-Digits ({subset}: {recordings['Train']} Train / "
        f"{recordings['Test']} Test recordings in N-MNIST's `.bin` format), T = {T}, batch {BATCH}, samples/s of one "
        f"training epoch (median of {repeats} alternating rounds). SpikingJelly 2.0.0's own N-MNIST pipeline "
        "(`spikingjelly.datasets.NMNIST(root, train=True, data_type='frame', frames_number=10, split_by='time')`) "
        "reads the same files: only its download md5 check and archive extraction are replaced (by symlinks from "
        "`extract/{Train,Test}/<digit>` to our class folders); its `.bin` → npz conversion, frame integration and "
        "frame loading are its own code. Its epoch is a plain `DataLoader(shuffle=True)` over the frame files."
    )
    return {
        "description": description,
        "environment": env,
        "records": records,
        "recordings": recordings,
        "generation_s": generation_s,
        "spikingjelly": {k: v for k, v in sj.items() if k.endswith("_s")} or None,
        "spikingjelly_error": sj_error,
        "model_samples_per_s": model_sps,
        "table": epochs,
        "tables": [("Epochs", epochs), ("One-off preprocessing", one_off)],
        "summary": notes,
        "notes": notes,
        "headline": headline,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="where N-Digits is (or is generated); default: a temporary folder")
    parser.add_argument("--quick", action="store_true", help="40 images per class, 2 rounds")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    grid = GRIDS["quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.data_dir or tmp, **grid)
    emit(result, name="data", title="Data loading", json_path=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
