"""CPCL (Xu et al., JBHI 2022; baselines-more spec, section 6): a mean teacher with cyclic
prototype consistency between labelled and unlabelled samples.

Per step (student f_theta and EMA teacher f_theta', both V-Nets returning x8 as well):

1. ``z = f_theta(x)`` on the whole batch, ``p = softmax(z)``, f = the student's x8.
2. Stability: ``L_stab = mean (f_theta'(x + nu) - z)^2`` on LOGITS, every sample.
3. Teacher on the clean unlabelled slice: ``p'``, f'_u.
4. Labelled-to-unlabelled: prototypes of the labelled sample n from its label and the
   student's confidence, ``P_L2U`` = softmax of 20 cos(f'_u, prototypes) on unlabelled sample
   n; ``L_L2U = mean (P_L2U - p')^2``.
5. Unlabelled-to-labelled: prototypes of unlabelled sample n from ``argmax p'`` and p',
   ``P_U2L`` on f_l; ``L_U2L = CE(P_U2L, y)`` with the probabilities taken as logits.
6. ``L = 0.5 (CE + D_mc) + r(t; 0.1) (L_L2U + L_stab) + 10 r(t; 0.1) L_U2L``; SGD, then EMA.

As released (``method_options.proto_grad: false``) the features and prototypes are detached, so
L_L2U and L_U2L carry no gradient: the method trains as a mean teacher with a logit MSE.
``method_options.proto_grad: true`` keeps the student's features and labelled prototypes in the graph.
Inference: the student, softmax, argmax, no LCC.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg3d.losses.supervised import ce_loss
from semiseg3d.methods.base import Method, StepContext, method_settings
from semiseg3d.methods.common import dice_mc, ema_update, freeze, ramp
from semiseg3d.methods.uamt import clipped_noise, uamt_ema_alpha

__all__ = [
    "W_MAX",
    "PA_WEIGHT",
    "COS_SCALE",
    "EMA_DECAY",
    "DEFAULT_LCC",
    "CPCLSettings",
    "resize_to",
    "masked_prototype",
    "prototype_probs",
    "stability_loss",
    "l2u_loss",
    "u2l_loss",
    "cpcl_terms",
    "CPCL",
]

W_MAX = 0.1  #: final weight of L_L2U + L_stab (``consistency``)
PA_WEIGHT = 10.0  #: L_U2L's weight relative to W_MAX (``PAweight``)
COS_SCALE = 20.0
PROTO_EPS = 1e-5
COS_EPS = 1e-8
EMA_DECAY = 0.99
DEFAULT_LCC = False


@dataclasses.dataclass(frozen=True)
class CPCLSettings:
    """CPCL's options (``method_options``: ``proto_grad``, ``feature``).

    Attributes:
        proto_grad: ``False`` (released code: features and prototypes detached, L_L2U and
            L_U2L inert) or ``True`` (the student's features and the labelled prototypes keep
            their graph: the paper's intent, unconfirmed).
        feature: ``x8`` (``vnet_MTPD``, the README's model) or ``x5`` (the script's default
            ``vnet``: the bottleneck after dropout).
    """

    proto_grad: bool = False
    feature: str = "x8"

    @classmethod
    def from_config(cls, cfg: Any) -> CPCLSettings:
        """The run's ``method_options`` (validated by the method registry, defaults filled)."""
        return method_settings(cls, cfg)


def resize_to(feat: Tensor, size: tuple[int, ...]) -> Tensor:
    """Trilinear resize (align_corners false) of (B, F, x, y, z) features to ``size``."""
    if tuple(feat.shape[2:]) == tuple(size):
        return feat
    return F.interpolate(feat, size=tuple(size), mode="trilinear", align_corners=False)


def masked_prototype(feat: Tensor, mask: Tensor, weight: Tensor, eps: float = PROTO_EPS) -> Tensor:
    """Confidence-weighted masked average of features, per sample.

    ``pi_n = sum_v f_n(v) M_n(v) w_n(v) / (sum_v M_n(v) w_n(v) + 1e-5)``.

    Args:
        feat: (B, F, X, Y, Z) features at the mask's size.
        mask: (B, X, Y, Z) class indicator (bool or {0, 1}).
        weight: (B, X, Y, Z) voxel weights (the class probability).

    Returns:
        (B, F) prototypes (constant features a on a non-empty mask give a S / (S + 1e-5),
        S = sum M w).
    """
    mw = (mask.to(feat.dtype) * weight)[:, None]
    return torch.sum(feat * mw, dim=(2, 3, 4)) / (torch.sum(mw, dim=(2, 3, 4)) + eps)


def prototype_probs(feat: Tensor, protos: Tensor, scale: float = COS_SCALE) -> Tensor:
    """Prediction from prototypes: ``softmax_c(scale cos(f_n(v), pi_n,c))``.

    Args:
        feat: (B, F, X, Y, Z) features (the target samples).
        protos: (B, C, F) prototypes; row n acts on sample n.
        scale: cosine scale (20).

    Returns:
        (B, C, X, Y, Z) probabilities.
    """
    sims = [
        F.cosine_similarity(feat, protos[:, c, :, None, None, None], dim=1, eps=COS_EPS)
        for c in range(protos.shape[1])
    ]
    return torch.softmax(scale * torch.stack(sims, dim=1), dim=1)


def stability_loss(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``mean (z'_s - z)^2`` over every sample, class and voxel (on logits).

    Student (1, -1) and teacher (0.5, -0.5) give 0.25.
    """
    return torch.mean((teacher_logits - logits) ** 2)


def l2u_loss(probs_l2u: Tensor, teacher_probs: Tensor) -> Tensor:
    """``mean (P_L2U - p')^2`` over B_u x C x voxels."""
    return torch.mean((probs_l2u - teacher_probs) ** 2)


def u2l_loss(probs_u2l: Tensor, label: Tensor) -> Tensor:
    """``CE(P_U2L, y)`` with the probabilities taken as logits (the released double softmax):
    bounded in [0.313262, 1.313262] for two classes."""
    return F.cross_entropy(probs_u2l, label.long())


def cpcl_terms(
    logits: Tensor,
    feat: Tensor,
    teacher_logits_noisy: Tensor,
    teacher_logits_u: Tensor,
    teacher_feat_u: Tensor,
    label_l: Tensor,
    proto_grad: bool = False,
) -> dict[str, Tensor]:
    """Every CPCL term of one step.

    Args:
        logits: (B, 2, X, Y, Z) student logits, labelled samples first (B = B_l + B_u).
        feat: (B, F, x, y, z) the student's feature map (x8 or x5; any size, resized).
        teacher_logits_noisy: (B, 2, X, Y, Z) teacher logits on the noisy whole batch.
        teacher_logits_u: (B_u, 2, X, Y, Z) teacher logits on the clean unlabelled slice.
        teacher_feat_u: (B_u, F, x, y, z) the teacher's feature map there.
        label_l: (B_l, X, Y, Z) labels; B_l must equal B_u.
        proto_grad: keep the student's features and labelled prototypes in the graph.

    Returns:
        ``sup_ce``, ``sup_dice``, ``sup`` (= 0.5 (CE + D_mc)), ``stab``, ``l2u``, ``u2l``.
    """
    bl = label_l.shape[0]
    size = tuple(logits.shape[2:])
    if teacher_logits_u.shape[0] != bl:
        raise ValueError(
            f"CPCL pairs labelled and unlabelled samples: B_l = {bl}, "
            f"B_u = {teacher_logits_u.shape[0]}"
        )
    probs = torch.softmax(logits, dim=1)
    ce = ce_loss(logits[:bl], label_l)
    dice = dice_mc(probs[:bl], label_l)
    stab = stability_loss(logits, teacher_logits_noisy.detach())
    with torch.no_grad():
        p_t = torch.softmax(teacher_logits_u, dim=1)
        f_t = resize_to(teacher_feat_u.detach(), size)
        y_t = p_t.argmax(dim=1)
        protos_u = torch.stack(
            [masked_prototype(f_t, y_t == c, p_t[:, c]) for c in range(p_t.shape[1])], dim=1
        )
    f_l = resize_to(feat[:bl] if proto_grad else feat[:bl].detach(), size)
    p_l = probs[:bl] if proto_grad else probs[:bl].detach()
    protos_l = torch.stack(
        [masked_prototype(f_l, label_l == c, p_l[:, c]) for c in range(probs.shape[1])], dim=1
    )
    if not proto_grad:
        protos_l = protos_l.detach()
    l2u = l2u_loss(prototype_probs(f_t, protos_l), p_t)
    u2l = u2l_loss(prototype_probs(f_l, protos_u), label_l)
    return {
        "sup_ce": ce,
        "sup_dice": dice,
        "sup": 0.5 * (ce + dice),
        "stab": stab,
        "l2u": l2u,
        "u2l": u2l,
    }


class CPCL(Method):
    """CPCL: student ``vnet`` (trained) and teacher ``teacher`` (EMA only, train mode), both
    :class:`~semiseg3d.models.cpcl.FeatureVNet`."""

    reinit = "torch"  # the original keeps PyTorch's default initialisation

    default_lcc = DEFAULT_LCC

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.settings = CPCLSettings.from_config(cfg)

    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        from semiseg3d.models.cpcl import FeatureVNet

        model = FeatureVNet(self.settings.feature)
        return model, {"vnet": model}

    def build_teachers(self) -> dict[str, nn.Module]:
        from semiseg3d.models.cpcl import FeatureVNet

        return {"teacher": freeze(FeatureVNet(self.settings.feature))}

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg, teacher = self.cfg, self.teachers["teacher"]
        bl = label_l.shape[0]
        z, _, feat = ctx.forward(self.nets["vnet"], image)
        x_u = image[bl:]
        with torch.no_grad():
            # two separate teacher forwards, as in the original: noisy whole batch, clean x_u
            z_noisy = ctx.forward(teacher, image + clipped_noise(image, ctx.noise_gen))[0]
            z_t, _, f_t = ctx.forward(teacher, x_u)
        terms = cpcl_terms(z, feat, z_noisy, z_t, f_t, label_l, self.settings.proto_grad)
        w = ramp(t, W_MAX, cfg.rampup_length, cfg.rampup_unit)
        loss = terms["sup"] + w * (terms["l2u"] + terms["stab"]) + PA_WEIGHT * w * terms["u2l"]
        terms.update({"cons_weight": torch.tensor(w), "loss": loss})
        return loss, {k: v.detach() for k, v in terms.items()}

    def after_step(self, t: int) -> None:
        ema_update(self.teachers["teacher"], self.nets["vnet"], uamt_ema_alpha(t, EMA_DECAY))
