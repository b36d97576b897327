"""URPC (Luo et al., MedIA 2022; baselines-more spec, section 5): uncertainty-rectified
pyramid consistency between four heads of one network (here the V-Net with heads on x6, x7,
x8, :class:`~semiseg3d.models.urpc.URPCNet`).

Per step: ``L = (1/8) sum_k [CE(z_k,l, y) + D_mc(p_k,l, y)] + r_R(t; 0.1) L_cons``, where on
the unlabeled slice ``L_cons = (1/4) sum_k L_cons,k`` pulls each head towards the heads' mean
``p_bar`` with a per-voxel weight ``exp(-v_k)``, ``v_k = KL(p_bar || p_k)``, plus the mean
``v_k`` itself; nothing is detached. R = ``rampup_length`` (40 under ``shared``, 400 in the
original). Inference: the main head (``method_options.infer: main``) or the mean of the four heads'
softmax (``mean``); no largest-component post-processing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from semiseg3d.losses.supervised import ce_loss
from semiseg3d.methods.base import StepContext, VNetPartMethod, method_settings
from semiseg3d.methods.common import consistency_total, dice_mc, ramp

__all__ = [
    "W_MAX",
    "DEFAULT_LCC",
    "URPCSettings",
    "urpc_supervised",
    "urpc_uncertainty",
    "urpc_consistency",
    "URPC",
]

#: final weight of the consistency term
W_MAX = 0.1
#: the original's test keeps no largest connected component
DEFAULT_LCC = False
#: stabiliser of the rectified mean (the original's 1e-8)
WEIGHT_EPS = 1e-8


@dataclass(frozen=True)
class URPCSettings:
    """URPC's option (``method_options.infer``).

    Attributes:
        infer: ``main`` (the original's test: the full-size head on x9) or ``mean`` (the
            four heads' softmax averaged; secondary).
    """

    infer: str = "main"

    @classmethod
    def from_config(cls, cfg: Any) -> URPCSettings:
        """The run's ``method_options`` (validated by the method registry, defaults filled)."""
        return method_settings(cls, cfg)


def urpc_supervised(logits: Sequence[Tensor], label: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``L_sup = (1 / (2K)) sum_k [CE(z_k, y) + D_mc(p_k, y)]`` over the K heads (1/8 for K = 4).

    Args:
        logits: K tensors (B_l, 2, X, Y, Z) of the labeled samples.
        label: (B_l, X, Y, Z).

    Returns:
        ``(L_sup, sum_k CE_k, sum_k D_mc,k)``.
    """
    ce = sum((ce_loss(z, label) for z in logits), logits[0].new_zeros(()))
    dice = sum((dice_mc(torch.softmax(z, dim=1), label) for z in logits), logits[0].new_zeros(()))
    return (ce + dice) / (2 * len(logits)), ce, dice


def urpc_uncertainty(mean_probs: Tensor, log_probs: Tensor) -> Tensor:
    """``v = sum_c p_bar_c (ln p_bar_c - ln p_c)`` = KL(p_bar || p), terms with p_bar_c = 0
    counted as 0.

    Args:
        mean_probs: (B, C, X, Y, Z) p_bar.
        log_probs: (B, C, X, Y, Z) ln p of one head (from ``log_softmax``).

    Returns:
        (B, 1, X, Y, Z), with gradient through both inputs.
    """
    return torch.sum(
        torch.xlogy(mean_probs, mean_probs) - mean_probs * log_probs, dim=1, keepdim=True
    )


def urpc_consistency(logits_u: Sequence[Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Uncertainty-rectified pyramid consistency on the unlabeled samples.

    ``p_bar = (1/K) sum_k p_k`` (not detached); for each head
    ``L_k = mean_{B x C x N}((p_bar - p_k)^2 e^{-v_k}) / (mean_{B x N} e^{-v_k} + 1e-8)
    + mean_{B x N} v_k``; ``L_cons = (1/K) sum_k L_k``.

    Args:
        logits_u: K tensors (B_u, C, X, Y, Z) of the unlabeled samples.

    Returns:
        ``(L_cons, [L_k], [mean v_k])``.
    """
    log_probs = [torch.log_softmax(z, dim=1) for z in logits_u]
    probs = [lp.exp() for lp in log_probs]
    mean = sum(probs[1:], probs[0]) / len(probs)
    per_head, v_means = [], []
    for p, lp in zip(probs, log_probs, strict=True):
        v = urpc_uncertainty(mean, lp)
        weight = torch.exp(-v)
        dist = (mean - p) ** 2
        term = torch.mean(dist * weight) / (torch.mean(weight) + WEIGHT_EPS) + torch.mean(v)
        per_head.append(term)
        v_means.append(torch.mean(v))
    return sum(per_head[1:], per_head[0]) / len(per_head), per_head, v_means


class URPC(VNetPartMethod):
    """URPC: one :class:`~semiseg3d.models.urpc.URPCNet` named ``vnet``; no teacher."""

    network = "semiseg3d.models.urpc:URPCNet"

    default_lcc = DEFAULT_LCC
    inference_keys = ("method_options.infer",)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.settings = URPCSettings.from_config(cfg)

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        bl = label_l.shape[0]
        logits = list(ctx.forward(self.nets["vnet"], image))
        sup, ce, dice = urpc_supervised([z[:bl] for z in logits], label_l)
        cons, _, v_means = urpc_consistency([z[bl:] for z in logits])
        w = ramp(t, W_MAX, cfg.rampup_length, cfg.rampup_unit)
        uncertainty = sum(v_means[1:], v_means[0]) / len(v_means)
        return consistency_total(ce, dice, sup, cons, w, uncertainty=uncertainty)

    def mean_heads(self) -> bool:
        """``method_options.infer: mean``; ``main`` (default): the V-Net part, whose output
        is the main head."""
        return self.settings.infer == "mean"
