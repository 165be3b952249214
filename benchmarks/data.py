"""Data loading: N-Digits at T = 10, cold vs warm-cache epochs, 0 and 2 workers, against a tiny model's step.

*cold* is an epoch that reads every ``.bin`` file through ``tonic.datasets.NMNIST`` and frames it
(``cache="none"``, what the first epoch costs); *fill* is the memory cache's one pass over the data (with the
workers); *warm* is an epoch served from the cache (memory: in-process; disk: Tonic's DiskCachedDataset, second
epoch). The tiny model is the width-1/8 paper
CIFAR10-DVS VGG with PSN at T = 10 on 34×34 frames; its training throughput is the bar the data must clear.

    python -m benchmarks.data [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from benchmarks._common import print_table
from datamodules import NDigitsDataModule
from psn_zoo.models import create_model

T, BATCH = 10, 32


def epoch_samples_per_s(dm: NDigitsDataModule) -> float:
    start = time.perf_counter()
    n = sum(len(y) for _, y in dm.train_dataloader())
    return n / (time.perf_counter() - start)


def model_samples_per_s() -> float:
    model = create_model("paper_cifar10dvs_vgg", neuron="psn", T=T, input_size=34, width_mult=0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(BATCH, T, 2, 34, 34), torch.randint(0, 10, (BATCH,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(5):
        step()
    return 5 * BATCH / (time.perf_counter() - start)


def run(data_dir: str) -> dict:
    common = {"data_dir": data_dir, "T": T, "batch_size": BATCH}
    NDigitsDataModule(**common).prepare_data()  # generate once, outside the timings
    rows, records = [], []
    for workers in (0, 2):
        cold_dm = NDigitsDataModule(**common, num_workers=workers, cache="none")
        cold_dm.setup()
        cold = epoch_samples_per_s(cold_dm)
        warm = {}
        for cache in ("memory", "disk"):
            dm = NDigitsDataModule(**common, num_workers=workers, cache=cache)
            start = time.perf_counter()
            dm.setup()
            fill_s = time.perf_counter() - start
            first = epoch_samples_per_s(dm)
            warm[cache] = (epoch_samples_per_s(dm), fill_s, first)
        n = len(dm.datasets["train"]) + len(dm.datasets["val"]) + len(dm.datasets["test"])
        fill = n / warm["memory"][1]
        record = {"workers": workers, "cold": cold, "memory_fill": fill,
                  **{f"warm_{c}": v[0] for c, v in warm.items()}, "disk_first_epoch": warm["disk"][2]}  # fmt: skip
        records.append(record)
        rows.append([
            workers, f"{cold:.0f}", f"{fill:.0f}", f"{warm['memory'][0]:.0f}", f"{warm['memory'][0] / cold:.1f}x",
            f"{warm['disk'][2]:.0f}", f"{warm['disk'][0]:.0f}", f"{warm['disk'][0] / cold:.1f}x",
        ])  # fmt: skip
    model = model_samples_per_s()
    headers = ["workers", "cold samples/s", "memory fill samples/s", "warm memory samples/s", "memory warm/cold",
               "disk 1st epoch samples/s", "disk warm samples/s", "disk warm/cold"]  # fmt: skip
    table = print_table(headers, rows)
    line = f"tiny model (paper_cifar10dvs_vgg ×1/8, PSN, T={T}) trains at {model:.0f} samples/s"
    print(line)
    return {"records": records, "model_samples_per_s": model, "table": table, "note": line}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="where N-Digits is (or is generated); default: a temporary folder")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.data_dir or tmp)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
