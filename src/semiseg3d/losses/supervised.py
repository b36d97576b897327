"""Supervised segmentation terms on the labeled samples (spec 2.1).

Both terms are the ones of the released code (C:train_LA.py L473-479 and MCF's
``dice_loss``): voxel-mean cross-entropy on the logits, and a batch Dice loss with squared
denominators on the foreground probability only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DICE_SMOOTH", "ce_loss", "dice_loss", "supervised_terms"]

#: Smoothing constant of the Dice loss (MCF ``dice_loss``).
DICE_SMOOTH = 1e-5


def ce_loss(logits: Tensor, label: Tensor) -> Tensor:
    """Cross-entropy averaged over every voxel of every sample.

    Args:
        logits: (B, K, X, Y, Z) raw network outputs.
        label: (B, X, Y, Z) integer class indices in [0, K).

    Returns:
        0-d tensor, mean over B*X*Y*Z voxels of ``-log softmax(logits)[label]`` (nats).
    """
    return F.cross_entropy(logits, label.long())


def dice_loss(probs_fg: Tensor, target: Tensor) -> Tensor:
    """Batch Dice loss with squared denominators on one channel.

    ``1 - (2 sum(p g) + 1e-5) / (sum(p^2) + sum(g^2) + 1e-5)``, sums running jointly over
    all samples and voxels (one Dice for the whole batch, not a mean of per-sample Dice).

    Args:
        probs_fg: (B, X, Y, Z) foreground probabilities in [0, 1].
        target: (B, X, Y, Z) foreground indicator (bool, int or float in {0, 1}).

    Returns:
        0-d tensor in [0, 1].
    """
    g = target.to(probs_fg.dtype)
    intersect = torch.sum(probs_fg * g)
    y_sum = torch.sum(g * g)
    z_sum = torch.sum(probs_fg * probs_fg)
    return 1 - (2 * intersect + DICE_SMOOTH) / (z_sum + y_sum + DICE_SMOOTH)


def supervised_terms(logits: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """CE and foreground Dice of one network on labeled samples.

    Args:
        logits: (B_l, 2, X, Y, Z) logits of the labeled samples.
        label: (B_l, X, Y, Z) integer labels in {0, 1}.

    Returns:
        ``(ce, dice)``, two 0-d tensors.
    """
    probs = torch.softmax(logits, dim=1)
    return ce_loss(logits, label), dice_loss(probs[:, 1], label == 1)
