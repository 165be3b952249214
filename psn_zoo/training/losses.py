"""Losses of the paper's recipes and batch-level mixing (Mixup / CutMix).

Shapes: per-step logits ``[T, B, classes]``; targets are class indices ``[B]`` or soft targets ``[B, classes]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rate_ce(steps: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the time-averaged logits (the CIFAR and sequential-CIFAR readout)."""
    return F.cross_entropy(steps.mean(0), target, label_smoothing=label_smoothing)


def tet_loss(
    steps: torch.Tensor, target: torch.Tensor, lamb: float = 1e-3, means: float = 1.0, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Temporal efficient training (Deng et al., 2022), as in the paper's CIFAR10-DVS code:
    ``(1 − λ)·mean_t CE(y_t, label) + λ·MSE(y, means)``."""
    T = steps.shape[0]
    ce = F.cross_entropy(
        steps.flatten(0, 1), target.repeat(T, *([1] * (target.dim() - 1))), label_smoothing=label_smoothing
    )
    if lamb == 0:
        return ce
    return (1 - lamb) * ce + lamb * F.mse_loss(steps, torch.full_like(steps, means))


def mix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    sequence: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (one of the enabled ones, chosen per batch, as the paper's collate does) with soft targets.

    CutMix pastes a box of another sample's image: over ``H x W`` of an image ``[B, C, H, W]``, and over all time
    steps of event frames ``[B, T, C, H, W]``. ``sequence=True`` says ``x`` is a sequence ``[B, T, C, L]`` of an
    image read column by column (sequential digits and CIFAR: T its columns, L its rows), and the box is cut from
    that image, ``T x L`` over all channels, as the paper's sequential-CIFAR code does on the image before reading
    it (read as an image, ``C x L`` would be the plane: a box across channels, or always empty with one channel). A
    batch without two spatial sizes ≥ 2 is refused rather than silently left unmixed.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}: both must be >= 0 (0 disables)")
    if cutmix_alpha > 0:
        plane = (x.shape[-1], x.shape[1]) if sequence and x.dim() == 4 else tuple(x.shape[-2:])
        if x.dim() not in (4, 5) or (sequence and x.dim() != 4) or min(plane) < 2:
            layout = "sequences [B, T, C, L]" if sequence else "images [B, C, H, W] or frames [B, T, C, H, W]"
            raise ValueError(
                f"cutmix_alpha={cutmix_alpha}: CutMix cuts a box of at least 2 x 2 out of {layout}, got a batch of "
                f"shape {tuple(x.shape)} (a box over {' x '.join(map(str, plane))}); set cutmix_alpha to 0 or use "
                "mixup_alpha"
            )
    soft = F.one_hot(y, num_classes).float()
    choices = [m for m, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not choices:
        return x, soft
    mode = choices[int(torch.randint(len(choices), ()))]
    perm = torch.randperm(x.shape[0], device=x.device)
    alpha = mixup_alpha if mode == "mixup" else cutmix_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    if mode == "mixup":
        return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]
    H, W = (x.shape[-1], x.shape[1]) if sequence else x.shape[-2:]  # a sequence: rows L, columns T
    cut_h, cut_w = int(H * (1 - lam) ** 0.5), int(W * (1 - lam) ** 0.5)
    cy, cx = int(torch.randint(H, ())), int(torch.randint(W, ()))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, H)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, W)
    mixed = x.clone()
    if sequence:
        mixed[:, x0:x1, :, y0:y1] = x[perm][:, x0:x1, :, y0:y1]
    else:
        mixed[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    return mixed, lam * soft + (1 - lam) * soft[perm]
