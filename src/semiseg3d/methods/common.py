"""Pieces several baselines share (baselines spec, section 0): Dice variants, the sigmoid
ramp-up, EMA teachers, sharpening and the largest connected component of a batch.

Every function is pure (tensors in, tensors out) except :func:`ema_update`, which writes
the teacher's parameters in place.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from semiseg3d.data.postprocess import largest_connected_component
from semiseg3d.losses.ramps import rampup_weight
from semiseg3d.losses.supervised import dice_loss

__all__ = [
    "dice_sq",
    "dice_lin",
    "dice_mc",
    "ramp",
    "recipe_ramp",
    "ema_update",
    "freeze",
    "sharpen",
    "batch_lcc",
    "consistency_total",
]

#: D_sq(q, y) = 1 - (2 sum q y + 1e-5) / (sum q^2 + sum y^2 + 1e-5) (UA-MT, DTC, MCF)
dice_sq = dice_loss


def dice_lin(probs_fg: Tensor, target: Tensor, smooth: float = 1e-8) -> Tensor:
    """MC-Net's Dice loss with linear denominators, one value for the whole batch.

    ``1 - (2 sum q y + 1e-8) / (sum q + sum y + 1e-8)``.

    Args:
        probs_fg: (B, X, Y, Z) foreground probabilities.
        target: (B, X, Y, Z) foreground indicator.

    Returns:
        0-d tensor.
    """
    g = target.to(probs_fg.dtype)
    return 1 - (2 * torch.sum(probs_fg * g) + smooth) / (
        torch.sum(probs_fg) + torch.sum(g) + smooth
    )


def dice_mc(probs: Tensor, label: Tensor) -> Tensor:
    """The SSL4MIS ``DiceLoss(C)`` on probabilities: ``1/C sum_c D_sq(p_c, [y = c])``,
    background included, each Dice over the whole batch (squared denominators, smooth 1e-5)
    (URPC, CPCL, AC-MT).

    Args:
        probs: (B, C, X, Y, Z) softmax.
        label: (B, X, Y, Z) integer labels.

    Returns:
        0-d tensor.
    """
    n_classes = probs.shape[1]
    total = probs.new_zeros(())
    for c in range(n_classes):
        total = total + dice_sq(probs[:, c], label == c)
    return total / n_classes


def ramp(t: int, w_max: float, length: int = 40, unit: int = 150) -> float:
    """Sigmoid ramp-up ``r(t; w) = w exp(-5 (1 - min(floor(t / unit), length) / length)^2)``.

    r(0; 0.1) = 6.7379e-4, r(3000; 0.1) = 0.0286505, r(t >= 6000; w) = w (defaults).
    """
    return rampup_weight(t, w_max, length, unit)


def recipe_ramp(t: int, recipe: str, w_max: float, length: int = 40, unit: int = 150) -> float:
    """:func:`ramp` on step ``t`` (``shared``) or ``t + 1`` (``own``: MC-Net's, SS-Net's and
    ML-RPL's originals increment their counter before computing the weight)."""
    return ramp(t + 1 if recipe == "own" else t, w_max, length, unit)


def freeze(net: nn.Module) -> nn.Module:
    """Mark every parameter of ``net`` as not requiring gradients (an EMA teacher)."""
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """``theta' <- alpha theta' + (1 - alpha) theta`` for every parameter (not the BN
    buffers, which the teachers here never use at test time).

    Args:
        teacher: the EMA network (updated in place).
        student: the trained network of the same architecture.
        alpha: decay in [0, 1]; 0 copies the student.
    """
    for p_t, p_s in zip(teacher.parameters(), student.parameters(), strict=True):
        p_t.mul_(alpha).add_(p_s.detach(), alpha=1.0 - alpha)


def sharpen(probs: Tensor, tau: float = 0.1) -> Tensor:
    """Elementwise sharpening ``s(p) = p^(1/tau) / (p^(1/tau) + (1 - p)^(1/tau))``.

    s(0.6) = 0.982954, s(0.5) = 0.5, s(0.4) = 0.017046 with tau = 0.1; s(p) + s(1 - p) = 1.
    For two classes equal to the class-normalised ``q_c^(1/T) / sum_c' q_c'^(1/T)`` (MCF).

    Args:
        probs: probabilities, any shape.
        tau: temperature.

    Returns:
        Tensor of the same shape (keeps the graph; detach the input for a constant target).
    """
    a = probs.pow(1.0 / tau)
    b = (1.0 - probs).pow(1.0 / tau)
    return a / (a + b)


def batch_lcc(mask: Tensor, connectivity: int = 26) -> Tensor:
    """Largest connected component of each sample of a binary batch (on the host).

    Args:
        mask: (B, X, Y, Z) binary (bool or {0, 1}).
        connectivity: 6, 18 or 26.

    Returns:
        (B, X, Y, Z) int64 tensor on ``mask``'s device; an empty sample stays empty.
    """
    arr = mask.detach().to("cpu").numpy().astype(np.uint8)
    out = np.stack([largest_connected_component(m, connectivity) for m in arr])
    return torch.from_numpy(out.astype(np.int64)).to(mask.device)


def consistency_total(
    ce: Tensor, dice: Tensor, sup: Tensor, cons: Tensor, w: float, **extra: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """``L = sup + w cons`` (UA-MT, URPC, AC-MT) and the terms to log, detached:
    ``sup_ce``, ``sup_dice``, ``sup``, ``cons``, the method's ``extra`` terms,
    ``cons_weight`` and ``loss``.

    Args:
        ce, dice: the supervised terms as logged; sup: their combination in the loss.
        cons: the consistency term; w: its weight at this step.
    """
    loss = sup + w * cons
    terms = {"sup_ce": ce, "sup_dice": dice, "sup": sup, "cons": cons, **extra}
    terms.update(cons_weight=torch.tensor(w), loss=loss)
    return loss, {k: v.detach() for k, v in terms.items()}
