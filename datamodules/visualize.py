"""Look at a sample: a grid of its T frames (PNG) or an animation (GIF), ON events red, OFF events blue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """``[P, H, W]`` event counts -> ``[H, W, 3]`` image in [0, 1]: channel 1 (ON) red, channel 0 (OFF) blue."""
    frame = frame.astype(np.float32)
    scale = max(float(frame.max()), 1.0)
    rgb = np.zeros((*frame.shape[-2:], 3), dtype=np.float32)
    if frame.shape[0] >= 2:
        rgb[..., 0] = frame[1] / scale
        rgb[..., 2] = frame[0] / scale
    else:
        rgb[...] = (frame[0] / scale)[..., None]
    return rgb


def save_frames(frames: torch.Tensor | np.ndarray, path: str | Path, title: str | None = None) -> Path:
    """Save ``[T, P, H, W]`` frames as a one-row grid (``.png``) or an animation (``.gif``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import animation

    frames = np.asarray(frames.detach().cpu() if isinstance(frames, torch.Tensor) else frames)
    if frames.ndim != 4:
        raise ValueError(f"expected frames [T, P, H, W], got shape {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [_to_rgb(f) for f in frames]
    if path.suffix.lower() == ".gif":
        fig, ax = plt.subplots(figsize=(2.5, 2.5))
        ax.axis("off")
        shown = ax.imshow(images[0], interpolation="nearest")
        if title:
            ax.set_title(title, fontsize=8)
        anim = animation.FuncAnimation(fig, lambda i: [shown.set_data(images[i])], frames=len(images), interval=200)
        anim.save(path, writer=animation.PillowWriter(fps=5))
    else:
        fig, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images), 1.9), squeeze=False)
        for t, (ax, image) in enumerate(zip(axes[0], images, strict=True)):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(f"t={t}", fontsize=8)
            ax.axis("off")
        if title:
            fig.suptitle(title, fontsize=9)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
