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
    x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (one of the enabled ones, chosen per batch, as the paper's collate does) with
    soft targets. The spatial box of CutMix covers all time steps of event frames ``[B, T, C, H, W]``."""
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
    H, W = x.shape[-2:]
    cut_h, cut_w = int(H * (1 - lam) ** 0.5), int(W * (1 - lam) ** 0.5)
    cy, cx = int(torch.randint(H, ())), int(torch.randint(W, ()))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, H)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, W)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    return mixed, lam * soft + (1 - lam) * soft[perm]
