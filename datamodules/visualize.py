"""Look at a sample: a grid of its T frames (PNG) or an animation (GIF), ON events red, OFF events blue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """``[P, H, W]`` event counts -> ``[H, W, 3]`` image in [0, 1], scaled to the frame's largest count (a frame of
    0/1 spikes or of counts in [0, 1] shows at full brightness too): channel 1 (ON) red, channel 0 (OFF) blue, a
    pixel with both magenta; one channel is grey."""
    frame = frame.astype(np.float32)
    peak = float(frame.max())
    scale = peak if peak > 0 else 1.0
    rgb = np.zeros((*frame.shape[-2:], 3), dtype=np.float32)
    if frame.shape[0] >= 2:
        rgb[..., 0] = frame[1] / scale
        rgb[..., 2] = frame[0] / scale
    else:
        rgb[...] = (frame[0] / scale)[..., None]
    return np.clip(rgb, 0.0, 1.0)


#: The colour of the one-pixel column between two frames (neither ON red nor OFF blue).
SEPARATOR = (0.5, 0.5, 0.5)


def frames_to_image(frames: torch.Tensor | np.ndarray, pixel: int = 1) -> np.ndarray:
    """``[T, P, H, W]`` frames side by side as one uint8 ``[pixel·H, pixel·(T·(W+1) − 1), 3]`` RGB image (what W&B
    and PIL store as is: a float image would be cast to uint8 unscaled, i.e. black), each frame scaled to its own
    largest count, ON red, OFF blue, frames separated by a grey column, every pixel drawn ``pixel`` × ``pixel``.
    A sequence ``[T, C, L]`` is one image with time along x and the channels' ``L`` values along y."""
    frames = np.asarray(frames.detach().cpu() if isinstance(frames, torch.Tensor) else frames, dtype=np.float32)
    if frames.ndim == 3:  # a sequence [T, C, L]: time along x, channels stacked along y
        image = _to_rgb(frames.transpose(1, 2, 0)[:1] if frames.shape[1] == 1 else frames.transpose(1, 2, 0))
    elif frames.ndim == 4:
        tiles = []
        for frame in frames:
            tiles += [_to_rgb(frame), np.broadcast_to(np.float32(SEPARATOR), (frame.shape[-2], 1, 3))]
        image = np.concatenate(tiles[:-1], axis=1)
    else:
        raise ValueError(f"expected frames [T, P, H, W] or a sequence [T, C, L], got shape {frames.shape}")
    image = np.round(image * 255).astype(np.uint8)
    return image.repeat(pixel, axis=0).repeat(pixel, axis=1) if pixel > 1 else image


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
