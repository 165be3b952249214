"""Matplotlib figures of the benchmarks (Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ratio_grid(
    panels: Mapping[tuple[int, int], Mapping[str, Sequence[tuple[float, float]]]],
    *,
    row_titles: Sequence[str],
    col_titles: Sequence[str],
    ylabel: str,
    path: str | Path,
    suptitle: str = "",
    xlabel: str = "T (time steps)",
) -> Path:
    """A grid of log-log line plots: ``panels[(row, col)]`` maps a line label to its ``(x, y)`` points; x is
    drawn on a log2 axis, y on a log axis with a dashed line at 1 (parity)."""
    rows, cols = len(row_titles), len(col_titles)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False, sharey="row")
    for (r, c), lines in panels.items():
        ax = axes[r][c]
        cmap = plt.get_cmap("viridis", max(len(lines), 2))
        for i, (label, points) in enumerate(lines.items()):
            pts = sorted(points)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3.5, lw=1.4, color=cmap(i), label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        xs = sorted({p[0] for points in lines.values() for p in points})
        if xs:
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.axhline(1.0, color="black", lw=0.9, ls="--")
        ax.set_title(f"{row_titles[r]} — {col_titles[c]}", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.25)
        if lines:
            ax.legend(fontsize=7, ncol=2, frameon=False)
    return _save(fig, path, suptitle)


def grouped_bars(
    groups: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    ylabel: str,
    path: str | Path,
    suptitle: str = "",
) -> Path:
    """One panel per group (e.g. an architecture); in each, categories (layers) on x and one bar per series
    (e.g. a checkpoint): ``groups[group][series][category] = value``."""
    n = max(len(groups), 1)
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.6 * n), squeeze=False)
    for ax, (group, series) in zip(axes[:, 0], groups.items(), strict=False):
        categories: list[str] = []
        for values in series.values():
            categories += [c for c in values if c not in categories]
        width = 0.8 / max(len(series), 1)
        for i, (label, values) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(categories))]
            ax.bar(xs, [values.get(c, 0.0) for c in categories], width=width, label=label)
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels(categories, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(group, fontsize=10)
        ax.grid(True, axis="y", alpha=0.25)
        ax.legend(fontsize=8, frameon=False)
    return _save(fig, path, suptitle)


def _save(fig, path: str | Path, suptitle: str = "") -> Path:
    """Title, lay out, write ``path`` (PNG, parents created) and close ``fig``."""
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
