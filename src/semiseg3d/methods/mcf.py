"""MCF (Wang et al., CVPR 2023; baselines spec, section 5): the dual network (V-Net and the
ResNet-34 net) with a mistake term and one-directional pseudo-labels from the winner.

Per step, for each net k: ``L_sup,k = CE + D_sq``; ``L_mis,k`` on the voxels where the two
nets' argmax disagree; the winner g (lower D_sq; ties -> R) gives sharpened pseudo-labels
(T = 0.1) on the unlabeled samples to the loser, ``L_l += r(t; 0.1) mean (p_l,u - PL)^2``.
Routing happens on the device (no host round trip). Inference: mean softmax of both nets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from semiseg3d.losses.supervised import ce_loss
from semiseg3d.methods.base import StepContext
from semiseg3d.methods.common import dice_sq, ramp, sharpen
from semiseg3d.methods.dual import DualMethod

__all__ = [
    "W_MIS",
    "W_MAX",
    "T_SHARP",
    "mcf_winner_is_v",
    "mistake_mask",
    "mistake_loss",
    "mcf_losses",
    "MCF",
]

W_MIS = 0.5
W_MAX = 0.1
T_SHARP = 0.1


def mcf_winner_is_v(dice_v: Tensor, dice_r: Tensor) -> Tensor:
    """Bool 0-d tensor: the V-Net wins (strictly lower Dice loss); ties go to the ResNet."""
    return dice_v < dice_r


def mistake_mask(probs_v: Tensor, probs_r: Tensor) -> Tensor:
    """``[argmax p_V = 1] XOR [argmax p_R = 1]``: (B, 2, ...) -> (B, ...) bool, no grad."""
    return (probs_v.detach().argmax(1) == 1) ^ (probs_r.detach().argmax(1) == 1)


def mistake_loss(probs_fg: Tensor, label: Tensor, mask: Tensor) -> Tensor:
    """``sum m (p_1 - y)^2 / (sum m + 1e-16)``; 0 when the nets agree everywhere.

    Args:
        probs_fg: (B_l, X, Y, Z) foreground probability of one net.
        label: (B_l, X, Y, Z) labels.
        mask: (B_l, X, Y, Z) :func:`mistake_mask`.
    """
    m = mask.to(probs_fg.dtype)
    return torch.sum(m * (probs_fg - label.to(probs_fg.dtype)) ** 2) / (torch.sum(m) + 1e-16)


def mcf_losses(
    z_v: Tensor, z_r: Tensor, label_l: Tensor, w: float
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """MCF's two losses from both nets' logits on one batch (labeled samples first).

    Args:
        z_v: (B, 2, X, Y, Z) V-Net logits.
        z_r: (B, 2, X, Y, Z) ResNet logits.
        label_l: (B_l, X, Y, Z) labels of the first B_l samples.
        w: consistency weight r(t; 0.1).

    Returns:
        ``(loss_v, loss_r, terms)``; the winner's loss has no unlabeled term (its graph
        reaches only the labeled samples), the loser's has ``w * L_cons``.
    """
    bl = label_l.shape[0]
    p_v, p_r = torch.softmax(z_v, 1), torch.softmax(z_r, 1)
    y = label_l
    ce_v, ce_r = ce_loss(z_v[:bl], y), ce_loss(z_r[:bl], y)
    d_v, d_r = dice_sq(p_v[:bl, 1], y == 1), dice_sq(p_r[:bl, 1], y == 1)
    m = mistake_mask(p_v[:bl], p_r[:bl])
    mis_v, mis_r = mistake_loss(p_v[:bl, 1], y, m), mistake_loss(p_r[:bl, 1], y, m)
    v_wins = mcf_winner_is_v(d_v.detach(), d_r.detach())
    # the loser learns from the winner's sharpened (constant) pseudo-label
    cons_v = torch.mean((p_v[bl:] - sharpen(p_r[bl:].detach(), T_SHARP)) ** 2)
    cons_r = torch.mean((p_r[bl:] - sharpen(p_v[bl:].detach(), T_SHARP)) ** 2)
    v_loses = (~v_wins).to(cons_v.dtype)
    loss_v = ce_v + d_v + W_MIS * mis_v + w * v_loses * cons_v
    loss_r = ce_r + d_r + W_MIS * mis_r + w * (1.0 - v_loses) * cons_r
    terms = {
        "sup_ce_v": ce_v,
        "sup_dice_v": d_v,
        "mis_v": mis_v,
        "sup_ce_r": ce_r,
        "sup_dice_r": d_r,
        "mis_r": mis_r,
        "cons": torch.where(v_wins, cons_r, cons_v),
        "winner_v": v_wins.float(),
        "loss_v": loss_v,
        "loss_r": loss_r,
    }
    return loss_v, loss_r, terms


class MCF(DualMethod):
    """MCF on the project's dual network (``resnet`` = R, ``vnet`` = V), no teacher."""

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        z_r = ctx.forward(self.nets["resnet"], image)[0]
        z_v = ctx.forward(self.nets["vnet"], image)[0]
        w = ramp(t, W_MAX, cfg.rampup_length, cfg.rampup_unit)
        loss_v, loss_r, terms = mcf_losses(z_v, z_r, label_l, w)
        terms["cons_weight"] = torch.tensor(w)
        # disjoint graphs: one backward of the sum = the original's two backward passes
        return loss_v + loss_r, {k: v.detach() for k, v in terms.items()}
