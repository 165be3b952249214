"""Shared benchmark helpers: repeated timing with medians, peak-RSS measurement, table printing."""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Ratio:
    """A speed ratio over paired repeats: median, min and max."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"


def time_pair(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    *,
    rounds: int = 3,
    min_reps: int = 3,
    budget_s: float = 0.6,
) -> tuple[float, float, Ratio]:
    """Median seconds of ``ours`` and ``theirs`` and the speed ratio theirs / ours.

    Each implementation runs in blocks (warm-up, then repeats) so it is timed in its own steady state
    (allocator and cache), and the blocks alternate for ``rounds`` rounds so slow drifts of the machine
    hit both. The ratio's range is the lowest and highest of the per-round ratios of medians.
    """
    samples: dict[str, list[float]] = {"ours": [], "theirs": []}
    round_ratios = []
    for _ in range(rounds):
        medians = {}
        for label, fn in (("ours", ours), ("theirs", theirs)):
            block = _block(fn, min_reps=min_reps, budget_s=budget_s)
            samples[label] += block
            medians[label] = statistics.median(block)
        round_ratios.append(medians["theirs"] / medians["ours"])
    med_ours, med_theirs = statistics.median(samples["ours"]), statistics.median(samples["theirs"])
    return med_ours, med_theirs, Ratio(med_theirs / med_ours, min(round_ratios), max(round_ratios))


def _block(fn: Callable[[], object], *, min_reps: int, budget_s: float, max_reps: int = 50) -> list[float]:
    fn()
    fn()  # warm-up: lazy init, first-touch page faults, allocator steady state
    gc.collect()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def time_one(fn: Callable[[], object], *, min_reps: int = 5, budget_s: float = 0.6) -> float:
    """Median seconds of ``fn`` in its steady state."""
    return statistics.median(_block(fn, min_reps=min_reps, budget_s=budget_s))


# ----------------------------------------------------------------------------------- peak memory
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_delta(fn: Callable[[], object]) -> int:
    """Bytes by which the process's peak resident set grows while ``fn`` runs (Linux).

    Run it in a process started with ``MALLOC_MMAP_THRESHOLD_`` set low (see :func:`run_worker`), so
    every tensor buffer is its own mapping and is returned to the OS when freed.
    """
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    fn()
    return _status("VmHWM") - before


def run_worker(module: str, payload: Sequence[dict]) -> list[dict]:
    """Run ``python -m <module> --worker`` with ``payload`` on stdin (JSON) and return its JSON answer."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", module, "--worker"],
        input=json.dumps(list(payload)),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Print (and return) a Markdown table."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text
