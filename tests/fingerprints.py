"""Prediction fingerprints of the published checkpoints: logits on a fixed input, the same on every CPU.

    python tests/fingerprints.py        # add the entries tests/data/fingerprints.json lacks (after a new entry)
    python tests/fingerprints.py --all  # rewrite every entry from this machine (after weights were replaced)

Entries already recorded keep their values by default: the file is the reference the other CPUs are held to, so a
new entry measured on another CPU is added beside them (with the machine it was measured on) instead of moving the
old ones by round-off.

The input is built from scikit-learn's bundled digits with integer operations only (event counts, or pixel levels
k/16), so its bits are the same on every machine. tests/test_fingerprints.py recomputes the logits and compares:
predictions equal, logits within ``RTOL`` of the largest (docs/numerics.md states and measures the tolerance).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

PATH = Path(__file__).with_name("data") / "fingerprints.json"
BATCH, SEED = 16, 0
#: Logits may move by float32 round-off between CPUs (the classifier's sums run in the BLAS's order; 2·λ·√K·u with
#: K ≤ 4096 inputs per logit is 6e-5); a flipped spike would move them by a weight, far more.
RTOL = 1e-4


def _digits(batch: int, size: int, seed: int) -> np.ndarray:
    """scikit-learn's bundled digits (levels 0-16), upscaled ×3 by repetition into ``[batch, size, size]`` at random
    integer offsets: integers throughout, so the same everywhere."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    picks = rng.choice(len(digits.images), batch, replace=False)
    out = np.zeros((batch, size, size), dtype=np.int64)
    for i, k in enumerate(picks):
        big = np.kron(digits.images[k].astype(np.int64), np.ones((3, 3), dtype=np.int64))
        dy, dx = rng.integers(0, size - 24 + 1, 2)
        out[i, dy : dy + 24, dx : dx + 24] = big
    return out


def fixed_input(kind: str, shape: list[int], batch: int = BATCH, seed: int = SEED) -> torch.Tensor:
    """``[batch, *shape]`` from real digits. ``event_frames [T, 2, H, W]``: the digit moves one pixel right per
    step; ON / OFF counts where it brightens / darkens (level steps of 6). ``sequence [T, 1, W]``: the image's
    rows, levels k/16."""
    if kind == "event_frames":
        T, _, H, W = shape
        images = _digits(batch, H, seed)
        frames = np.zeros((batch, T, 2, H, W), dtype=np.float32)
        previous = np.zeros_like(images)
        for t in range(T):
            current = np.roll(images, t + 1, axis=2)
            frames[:, t, 0] = np.clip(current - previous, 0, None) // 6
            frames[:, t, 1] = np.clip(previous - current, 0, None) // 6
            previous = current
        return torch.from_numpy(frames)
    images = _digits(batch, shape[0], seed)
    return torch.from_numpy((images / 16).astype(np.float32)).reshape(batch, *shape)


def logits_of(name: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """The entry's logits on its fixed input (eval mode, fresh state) and the input's description."""
    import psn_zoo

    entry = psn_zoo.get_pretrained_info(name).to_dict()
    kind, shape = entry["input"]["kind"], list(entry["input"]["shape"])
    model = psn_zoo.load_pretrained(name)
    with torch.no_grad():
        logits = model(fixed_input(kind, shape))
    return logits, {"kind": kind, "shape": shape, "batch": BATCH, "seed": SEED}


def compute(recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fingerprints of every published entry: those in ``recorded`` (a previous file, same RTOL) as they were, the
    rest measured here."""
    import psn_zoo
    from psn_zoo.machine import machine_summary

    here = machine_summary()
    kept = recorded["entries"] if recorded and recorded.get("rtol") == RTOL else {}
    entries = {}
    for name in psn_zoo.list_pretrained():
        if name in kept:
            entries[name] = kept[name]
            continue
        logits, spec = logits_of(name)
        entries[name] = {"input": spec, "predictions": logits.argmax(1).tolist(), "logits": logits.tolist()}
        if kept:
            entries[name]["measured_on"] = here
    return {"rtol": RTOL, "measured_on": recorded["measured_on"] if kept else here, "entries": entries}


if __name__ == "__main__":
    import sys

    PATH.parent.mkdir(exist_ok=True)
    previous = json.loads(PATH.read_text()) if PATH.exists() and "--all" not in sys.argv[1:] else None
    PATH.write_text(json.dumps(compute(previous), indent=1) + "\n")
    print(f"wrote {PATH}")
