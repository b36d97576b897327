"""AC-MT (Xu et al., MedIA 2023; baselines-more spec, section 7): a mean teacher whose
consistency is restricted to the AMBIGUOUS voxels, chosen by one of four selectors.

Common to all variants: student V-Net and EMA(0.99) teacher (train mode); one input-noise
draw nu per step for the unlabelled slice; the teacher on ``x_u + nu`` (no grad) gives the
target, ``d = (softmax(z_u) - softmax(z'_n))^2`` (B_u x 2 x voxels);
``L = 0.5 (CE + D_mc) + r(t; 0.1) L_cons``; SGD step, then the EMA update.

- ``ent`` (default): voxels whose normalised student entropy is at least
  ``0.75 + 0.2 rho(t; T)`` (0.751348 -> 0.95), ``L_cons = sum(M d) / (sum M + 1e-16)`` with the
  mask on both channels.
- ``mu``: 8 noisy passes of the STUDENT (as released; ``method_options.mu_net: teacher`` for UA-MT's
  choice), entropy of their mean at least ``(0.75 + 0.15 rho(t; T)) ln 2``; the mask is
  counted once in the denominator (twice Ent's normalisation).
- ``perr``: 10 more clean teacher passes; certain voxels (std of ``sigmoid(z / 2)`` < 0.1) give
  a rectified label, its prototypes on the mean teacher x8 label every voxel by the nearer
  prototype; voxels where that label disagrees with the student's argmax are "noisy" and get
  the consistency; the "clean" ones get an entropy penalty (released: with a sample/class
  broadcasting quirk, ``method_options.perr_entropy: code | fixed``).
- ``serr``: cleanlab's ``find_label_issues`` (optional dependency) over the unlabelled
  voxels flags the ambiguous ones; plain MSE if it fails.

Inference: the student, softmax, argmax, no LCC.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg3d.errors import InputError
from semiseg3d.losses.ramps import sigmoid_rampup
from semiseg3d.losses.supervised import ce_loss
from semiseg3d.methods.base import Method, StepContext, method_settings
from semiseg3d.methods.common import consistency_total, dice_mc, ema_update, freeze, ramp
from semiseg3d.methods.cpcl import masked_prototype, resize_to
from semiseg3d.methods.uamt import clipped_noise, uamt_ema_alpha, uncertainty

__all__ = [
    "VARIANTS",
    "W_MAX",
    "EMA_DECAY",
    "DEFAULT_LCC",
    "ACMTSettings",
    "ent_threshold",
    "mu_threshold",
    "normalized_entropy",
    "ent_consistency",
    "mu_consistency",
    "perr_uncertainty",
    "perr_rectified_label",
    "perr_prototype_label",
    "perr_clean_mask",
    "perr_entropy",
    "perr_consistency",
    "serr_consistency",
    "cleanlab_finder",
    "ACMT",
]

VARIANTS = ("ent", "mu", "perr", "serr")
W_MAX = 0.1
EMA_DECAY = 0.99
ENTROPY_EPS = 1e-6
N_MU_PASSES = 8
N_PERR_PASSES = 10
PERR_STD_THRESHOLD = 0.1
DEFAULT_LCC = False

#: ``(labels (V,) uint8, pred_probs (V, 2) float) -> issue flags (V,) bool`` (S-Err)
IssueFinder = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ACMTSettings:
    """AC-MT's options (``method_options``: ``variant``, ``mu_net``, ``perr_entropy``).

    Attributes:
        variant: the ambiguity selector, ``ent`` (default), ``mu``, ``perr`` or ``serr``.
        mu_net: MU's stochastic passes run the ``student`` (released code) or the
            ``teacher`` (UA-MT's choice).
        perr_entropy: P-Err's entropy term as released (``code``: sample n's clean mask
            times the entropy of sample c, B_u <= 2) or ``fixed`` (each sample's own).
    """

    variant: str = "ent"
    mu_net: str = "student"
    perr_entropy: str = "code"

    @classmethod
    def from_config(cls, cfg: Any) -> ACMTSettings:
        """The run's ``method_options`` (validated by the method registry, defaults filled)."""
        return method_settings(cls, cfg)


# -- thresholds and entropies ------------------------------------------------------------------


def ent_threshold(t: int, total: int) -> float:
    """Ent: ``0.75 + 0.2 rho(t; T)``, ``rho(t; T) = exp(-5 (1 - min(t, T)/T)^2)`` on raw steps.

    th(0) = 0.751348, th(T/2) = 0.807301, th(T) = 0.95.
    """
    return 0.75 + 0.2 * sigmoid_rampup(t, total)


def mu_threshold(t: int, total: int) -> float:
    """MU: ``(0.75 + 0.15 rho(t; T)) ln 2`` nats: 0.520561 at t = 0, 0.623832 at T."""
    return (0.75 + 0.15 * sigmoid_rampup(t, total)) * math.log(2.0)


def normalized_entropy(probs: Tensor, eps: float = ENTROPY_EPS) -> Tensor:
    """``-sum_c p_c ln(p_c + 1e-6) / ln 2`` (B, X, Y, Z), in [0, 1] for two classes.

    (0.5, 0.5) -> 0.999997; (0.9, 0.1) -> 0.468993; (0.7, 0.3) -> 0.881288.
    """
    return -torch.sum(probs * torch.log(probs + eps), dim=1) / math.log(2.0)


# -- the consistency of each variant -----------------------------------------------------------


def ent_consistency(d: Tensor, ent: Tensor, threshold: float) -> Tensor:
    """Ent: ``sum(M d) / (sum M + 1e-16)``, ``M = [E >= th]`` copied to both channels (the
    denominator counts both).

    Args:
        d: (B_u, 2, X, Y, Z) squared probability differences.
        ent: (B_u, X, Y, Z) normalised student entropy (a constant here).
        threshold: th(t).
    """
    m = (ent.detach() >= threshold).to(d.dtype)[:, None].expand_as(d)
    return torch.sum(m * d) / (torch.sum(m) + 1e-16)


def mu_consistency(d: Tensor, u: Tensor, threshold: float) -> Tensor:
    """MU: ``sum(M d) / (sum M + 1e-16)`` with ``M = [U >= th]`` of shape (B_u, 1, X, Y, Z)
    broadcast over both channels in the numerator only.

    Args:
        d: (B_u, 2, X, Y, Z).
        u: (B_u, 1, X, Y, Z) entropy of the mean of the stochastic passes (nats).
        threshold: th(t) in nats.
    """
    m = (u.detach() >= threshold).to(d.dtype)
    return torch.sum(m * d) / (torch.sum(m) + 1e-16)


def perr_uncertainty(pass_logits: Tensor) -> Tensor:
    """P-Err: per-channel unbiased standard deviation over the passes of ``sigmoid(z / 2)``.

    Args:
        pass_logits: (P, B_u, 2, X, Y, Z) logits of P clean teacher passes.

    Returns:
        (B_u, 2, X, Y, Z).
    """
    return torch.std(torch.sigmoid(pass_logits / 2.0), dim=0, unbiased=True)


def perr_rectified_label(
    teacher_probs: Tensor, std: Tensor, threshold: float = PERR_STD_THRESHOLD
) -> Tensor:
    """``argmax_c ([U_c < 0.1] p'_c)``; both channels masked -> class 0.

    Args:
        teacher_probs: (B_u, 2, X, Y, Z) clean teacher softmax.
        std: (B_u, 2, X, Y, Z) from :func:`perr_uncertainty`.

    Returns:
        (B_u, X, Y, Z) int64.
    """
    return torch.argmax((std < threshold).to(teacher_probs.dtype) * teacher_probs, dim=1)


def perr_prototype_label(feat: Tensor, label: Tensor, teacher_probs: Tensor) -> Tensor:
    """Which prototype each voxel's feature is nearer to, as a two-channel indicator.

    ``pi_1 = pi(F, [y = 1], p'_1)``, ``pi_0 = pi(F, [y = 0], p'_0)`` per sample (CPCL's
    masked prototype), ``delta_c = ||up(F)(v) - pi_c||^2``; ``S = (1, 0)`` where
    ``delta_1 > delta_0``, ``(0, 1)`` where ``delta_1 < delta_0``, ``(0, 0)`` on ties.

    Args:
        feat: (B_u, F, x, y, z) mean teacher feature map (resized to the label size).
        label: (B_u, X, Y, Z) rectified label.
        teacher_probs: (B_u, 2, X, Y, Z) clean teacher softmax.

    Returns:
        (B_u, 2, X, Y, Z) float {0, 1}.
    """
    up = resize_to(feat, tuple(label.shape[1:]))
    dist = []
    for c in (0, 1):
        proto = masked_prototype(up, label == c, teacher_probs[:, c])
        dist.append(torch.sum((up - proto[:, :, None, None, None]) ** 2, dim=1))
    d0, d1 = dist
    return torch.stack([(d1 > d0), (d1 < d0)], dim=1).to(teacher_probs.dtype)


def perr_clean_mask(proto_label: Tensor, student_argmax: Tensor) -> Tensor:
    """``C_c = [S_c = O_c]`` per channel, O = one-hot of the student's argmax.

    Args:
        proto_label: (B_u, 2, X, Y, Z) from :func:`perr_prototype_label`.
        student_argmax: (B_u, X, Y, Z).

    Returns:
        (B_u, 2, X, Y, Z) float {0, 1}; the noisy mask is ``1 - C``.
    """
    onehot = F.one_hot(student_argmax.long(), 2).movedim(-1, 1).to(proto_label.dtype)
    return (proto_label == onehot).to(proto_label.dtype)


def perr_entropy(probs_u: Tensor, clean: Tensor, mode: str = "code") -> Tensor:
    """P-Err's entropy penalty on clean voxels (keeps the student's graph).

    ``code``: ``mean(C * H)`` with H (B_u, X, Y, Z) broadcast against C (B_u, 2, X, Y, Z)
    from the trailing axes, so H's SAMPLE axis meets C's CLASS axis: for B_u = 2, sample n's
    mask times the entropy of sample c; defined for B_u <= 2 only. ``fixed``:
    ``mean_{n,c,v} C[n, c, v] H[n, v]``.

    Args:
        probs_u: (B_u, 2, X, Y, Z) student softmax on the unlabelled slice.
        clean: (B_u, 2, X, Y, Z) clean mask.
        mode: ``code`` or ``fixed``.

    Raises:
        ValueError: ``code`` with B_u > 2.
    """
    h = normalized_entropy(probs_u)
    if mode == "fixed":
        return torch.mean(clean * h[:, None])
    if probs_u.shape[0] > 2:
        raise ValueError(
            f"perr_entropy 'code' broadcasts the sample axis against 2 classes: B_u = "
            f"{probs_u.shape[0]} > 2"
        )
    return torch.mean(clean * h)


def perr_consistency(d: Tensor, clean: Tensor, probs_u: Tensor, mode: str = "code") -> Tensor:
    """``sum(N d) / (sum N + 1e-16) + E``, ``N = 1 - C`` (the voxels whose prototype label
    disagrees with the student), E = :func:`perr_entropy`."""
    noisy = 1 - clean
    return torch.sum(noisy * d) / (torch.sum(noisy) + 1e-16) + perr_entropy(probs_u, clean, mode)


def serr_consistency(
    d: Tensor, probs_u: Tensor, teacher_probs: Tensor, finder: IssueFinder
) -> tuple[Tensor, Tensor]:
    """S-Err: the consistency on the voxels a label-issue finder flags.

    labels = the student's argmax, pred_probs = the clean teacher softmax, both flattened
    over the B_u x X x Y x Z voxels (classes last); the flags are reshaped to the crop.
    ``sum(M d) / (sum M + 1e-16)`` with M on both channels; if the finder raises,
    ``mean(d)`` (the original's fallback).

    Args:
        d: (B_u, 2, X, Y, Z).
        probs_u: (B_u, 2, X, Y, Z) student softmax.
        teacher_probs: (B_u, 2, X, Y, Z) clean teacher softmax.
        finder: e.g. :func:`cleanlab_finder`.

    Returns:
        ``(L_cons, flagged)``: the loss and the flagged fraction (NaN after a fallback).
    """
    labels = probs_u.detach().argmax(1).cpu().numpy().reshape(-1).astype(np.uint8)
    pred = teacher_probs.detach().movedim(1, -1).reshape(-1, teacher_probs.shape[1])
    pred_np = np.ascontiguousarray(pred.float().cpu().numpy())
    try:
        flags = np.asarray(finder(labels, pred_np)).reshape(probs_u.shape[0], *probs_u.shape[2:])
    except Exception:  # noqa: BLE001 - the released code falls back on any failure
        return torch.mean(d), d.new_tensor(float("nan"))
    m = torch.from_numpy(flags.astype(np.float32)).to(d.device, d.dtype)[:, None].expand_as(d)
    return torch.sum(m * d) / (torch.sum(m) + 1e-16), m.mean()


def cleanlab_finder() -> IssueFinder:
    """cleanlab 2.x ``filter.find_label_issues(filter_by='both', n_jobs=1)``.

    Raises:
        InputError: cleanlab is not installed.
    """
    if importlib.util.find_spec("cleanlab") is None:
        raise InputError(
            "config key 'method_options.variant' = serr needs the optional package cleanlab "
            "(pip install 'cleanlab>=2'), which is not installed"
        )
    from cleanlab.filter import find_label_issues

    def finder(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
        return find_label_issues(labels, pred_probs, filter_by="both", n_jobs=1)

    return finder


class ACMT(Method):
    """AC-MT: student ``vnet`` (trained) and teacher ``teacher`` (EMA only, train mode), both
    :class:`~semiseg3d.models.cpcl.FeatureVNet` (x8; used by P-Err's prototypes)."""

    reinit = "torch"  # the original keeps PyTorch's default initialisation

    default_lcc = DEFAULT_LCC

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.settings = ACMTSettings.from_config(cfg)
        self.finder = cleanlab_finder() if self.settings.variant == "serr" else None

    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        from semiseg3d.models.cpcl import FeatureVNet

        model = FeatureVNet("x8")
        return model, {"vnet": model}

    def build_teachers(self) -> dict[str, nn.Module]:
        from semiseg3d.models.cpcl import FeatureVNet

        return {"teacher": freeze(FeatureVNet("x8"))}

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        variant = self.settings.variant
        bl = label_l.shape[0]
        student, teacher = self.nets["vnet"], self.teachers["teacher"]
        x_u = image[bl:]
        noise = clipped_noise(x_u, ctx.noise_gen)  # one draw per step, before the forwards
        z = ctx.forward(student, image)[0]
        probs = torch.softmax(z, dim=1)
        p_u = probs[bl:]
        extra: dict[str, Tensor] = {}
        with torch.no_grad():
            if variant in ("perr", "serr"):  # Ent's clean pass is unused: not run
                z_c, _, f_c = ctx.forward(teacher, x_u)
                p_c = torch.softmax(z_c, dim=1)
            p_n = torch.softmax(ctx.forward(teacher, x_u + noise)[0], dim=1)
        d = (p_u - p_n) ** 2
        total_steps = self.total_steps()
        if variant == "ent":
            th = ent_threshold(t, total_steps)
            ent = normalized_entropy(p_u.detach())
            cons = ent_consistency(d, ent, th)
            extra = {"threshold": torch.tensor(th), "selected": (ent >= th).float().mean()}
        elif variant == "mu":
            u = self._mu_uncertainty(ctx, x_u)
            th = mu_threshold(t, total_steps)
            cons = mu_consistency(d, u, th)
            extra = {"threshold": torch.tensor(th), "selected": (u >= th).float().mean()}
        elif variant == "perr":
            with torch.no_grad():
                logits, feat_sum = [], torch.zeros_like(f_c)
                for _ in range(N_PERR_PASSES):
                    z_i, _, f_i = ctx.forward(teacher, x_u)
                    logits.append(z_i)
                    feat_sum += f_i
                std = perr_uncertainty(torch.stack(logits))
                label = perr_rectified_label(p_c, std)
                proto = perr_prototype_label(feat_sum / N_PERR_PASSES, label, p_c)
                clean = perr_clean_mask(proto, p_u.argmax(dim=1))
            cons = perr_consistency(d, clean, p_u, self.settings.perr_entropy)
            extra = {"noisy": 1 - clean.mean()}
        else:
            assert self.finder is not None
            cons, flagged = serr_consistency(d, p_u, p_c, self.finder)
            extra = {"selected": flagged}
        ce = ce_loss(z[:bl], label_l)
        dice = dice_mc(probs[:bl], label_l)
        sup = 0.5 * (ce + dice)
        w = ramp(t, W_MAX, cfg.rampup_length, cfg.rampup_unit)
        return consistency_total(ce, dice, sup, cons, w, **extra)

    def _mu_uncertainty(self, ctx: StepContext, x_u: Tensor) -> Tensor:
        """MU: entropy (nats) of the mean softmax of 8 noisy train-mode passes, no grad: 4
        calls on ``x_u`` repeated twice, fresh noise each. (B_u, 1, X, Y, Z)."""
        net = self.nets["vnet"] if self.settings.mu_net == "student" else self.teachers["teacher"]
        b_u = x_u.shape[0]
        reps = x_u.repeat(2, 1, 1, 1, 1)
        total = torch.zeros((b_u, 2, *x_u.shape[2:]), device=x_u.device)
        with torch.no_grad():
            for _ in range(N_MU_PASSES // 2):
                p = torch.softmax(ctx.forward(net, reps + clipped_noise(reps, ctx.noise_gen))[0], 1)
                total += p[:b_u] + p[b_u:]
        return uncertainty(total / N_MU_PASSES, ENTROPY_EPS)

    def after_step(self, t: int) -> None:
        ema_update(self.teachers["teacher"], self.nets["vnet"], uamt_ema_alpha(t, EMA_DECAY))
