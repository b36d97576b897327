"""Cross-consistency enhancement L_CCE = L_CPS + L_EFS on unlabeled samples (spec 3.2, 2.6).

- CPS (paper Eq. 7-8): each network is trained on the other's thresholded, detached
  foreground prediction.
- EFS (paper Eq. 9-11): a union pseudo-label from both networks in which voxels that are
  uncertain for BOTH networks (entropy at or above each network's alpha-th percentile) are
  ignored, with a U2PL-style reweighting.

The percentile is computed on the device (a sort plus NumPy's linear interpolation, see
:func:`percentile`); no value travels to the host.

:func:`efs_code_faithful` reproduces the released code's block (spec 2.6), which takes the
entropy of raw logits (NaN -> nothing is ignored) and feeds detached softmax copies to the
cross-entropy as if they were logits (constant terms, no gradient).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IGNORE_INDEX",
    "ENTROPY_EPS",
    "class_argmax",
    "entropy",
    "percentile",
    "CPS_TARGETS",
    "cps_pseudo_label",
    "cps_loss",
    "uncertain_mask",
    "union_label",
    "efs_target",
    "efs_loss",
    "efs_code_faithful",
]

#: Label value of ignored (doubly uncertain) voxels in the EFS pseudo-label (C L177).
IGNORE_INDEX = 2
#: Epsilon inside the log of the voxel entropy (C L161).
ENTROPY_EPS = 1e-10


def class_argmax(x: Tensor) -> Tensor:
    """``torch.argmax(x, dim=1)``, with a fast exact path for two classes.

    For K = 2 this is ``x_1 > x_0`` (ties go to class 0, a NaN counts as the maximum, as
    in ``torch.argmax``); a strided argmax over a size-2 axis is slow on CPU.

    Args:
        x: (B, K, X, Y, Z) logits or probabilities.

    Returns:
        (B, X, Y, Z) int64 class indices.
    """
    if x.shape[1] != 2:
        return torch.argmax(x, dim=1)
    x0, x1 = x[:, 0], x[:, 1]
    return ((x1 > x0) | (torch.isnan(x1) & ~torch.isnan(x0))).long()


def entropy(probs: Tensor, eps: float = ENTROPY_EPS) -> Tensor:
    """Voxel entropy ``H = -sum_c p_c ln(p_c + eps)`` in nats.

    Args:
        probs: (B, K, X, Y, Z) probabilities (the code-faithful path passes raw logits here,
            which gives NaN wherever a logit is below ``-eps``).
        eps: added inside the log.

    Returns:
        (B, X, Y, Z) entropies.
    """
    return -torch.sum(probs * torch.log(probs + eps), dim=1)


def percentile(values: Tensor, alpha: float) -> Tensor:
    """The alpha-th percentile of all elements, equal to ``numpy.percentile`` (linear).

    Runs on the tensor's device without a host round trip: the virtual index
    ``alpha/100 * (n - 1)`` depends only on the element count, the two order statistics
    come from ``torch.kthvalue`` on the device, and the interpolation uses NumPy's formula
    in the tensor's dtype (``a + (b - a) g`` for ``g < 0.5``, else ``b - (b - a)(1 - g)``).
    As in NumPy, any NaN makes the result NaN. (``torch.quantile`` computes the virtual
    index in float32 and is limited to 2**24 elements; it differs from NumPy by an ulp on
    many inputs, which can move a voxel across the threshold.)

    Args:
        values: tensor of any shape with at least one element (floating point).
        alpha: percentile in [0, 100].

    Returns:
        0-d tensor of ``values.dtype`` on ``values.device``.
    """
    flat = values.reshape(-1)
    n = flat.numel()
    if n == 0:
        raise ValueError("percentile: empty tensor")
    if not 0.0 <= alpha <= 100.0:
        raise ValueError(f"percentile: alpha must be in [0, 100], got {alpha}")
    pos = (alpha / 100.0) * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    g = pos - lo
    a = torch.kthvalue(flat, lo + 1).values
    b = a if hi == lo else torch.kthvalue(flat, hi + 1).values
    diff = b - a
    value = b - diff * (1.0 - g) if g >= 0.5 else a + diff * g
    return torch.where(torch.isnan(flat).any(), torch.full_like(value, math.nan), value)


#: How CPS turns the other network's probabilities into a target (``cps_target``).
CPS_TARGETS = ("threshold", "argmax", "confident")


def cps_pseudo_label(probs_other: Tensor, tau_cps: float, target: str = "threshold") -> Tensor:
    """The CPS target from the other network's (detached) probabilities.

    - ``threshold`` (the paper's sentence read literally, spec 3.2):
      ``Y~ = [p_1 >= tau_cps]``; every voxel whose foreground probability is below
      ``tau_cps`` - the uncertain ones included - becomes background.
    - ``argmax``: the plain argmax of standard cross pseudo supervision (Chen et al. 2021).
    - ``confident``: the argmax where the other network is confident
      (``max_c p_c >= tau_cps``); other voxels get :data:`IGNORE_INDEX`.

    Args:
        probs_other: (B, 2, X, Y, Z) probabilities of the OTHER network.
        tau_cps: threshold in [0.5, 1].
        target: one of :data:`CPS_TARGETS`.

    Returns:
        (B, X, Y, Z) int64 labels in {0, 1} (``confident``: {0, 1, 2}).
    """
    p = probs_other.detach()
    if target == "threshold":
        return (p[:, 1] >= tau_cps).long()
    if target == "argmax":
        return class_argmax(p)
    if target == "confident":
        confident = torch.amax(p, dim=1) >= tau_cps
        return class_argmax(p).masked_fill(~confident, IGNORE_INDEX)
    raise ValueError(f"cps target must be one of {list(CPS_TARGETS)}, got {target!r}")


def cps_loss(
    logits: Tensor, probs_other: Tensor, tau_cps: float, target: str = "threshold"
) -> Tensor:
    """Cross pseudo supervision ``CE(z_k, Y~(p_other))`` (spec 3.2).

    Args:
        logits: (B_u, 2, X, Y, Z) logits of the trained network on unlabeled samples.
        probs_other: (B_u, 2, X, Y, Z) probabilities of the other network (detached here).
        tau_cps: pseudo-label threshold.
        target: how the target is made (:func:`cps_pseudo_label`).

    Returns:
        0-d tensor, the mean over the B_u*X*Y*Z voxels (``confident``: over the voxels not
        ignored; 0 with no gradient when every voxel is ignored); gradient reaches
        ``logits`` only.
    """
    label = cps_pseudo_label(probs_other, tau_cps, target)
    if target != "confident":
        return F.cross_entropy(logits, label)
    ce_sum = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="sum")
    n_valid = (label != IGNORE_INDEX).sum().clamp(min=1).to(ce_sum.dtype)
    return ce_sum / n_valid


def uncertain_mask(entropy_a: Tensor, entropy_b: Tensor, alpha: float) -> Tensor:
    """``I = (H_A >= P_alpha(H_A)) and (H_B >= P_alpha(H_B))``.

    Each threshold is the alpha-th percentile over all voxels of its own map. Comparisons
    with a NaN threshold are False, so a NaN entropy map makes ``I`` empty.

    Args:
        entropy_a: (B, X, Y, Z) entropies of network A.
        entropy_b: (B, X, Y, Z) entropies of network B.
        alpha: percentile in [0, 100].

    Returns:
        (B, X, Y, Z) bool mask of the voxels uncertain for both networks.
    """
    return (entropy_a >= percentile(entropy_a, alpha)) & (entropy_b >= percentile(entropy_b, alpha))


def union_label(probs_a: Tensor, probs_b: Tensor) -> Tensor:
    """``Y^ = argmax p_A OR argmax p_B`` (foreground if either network says so).

    Args:
        probs_a: (B, 2, X, Y, Z) probabilities (or logits) of network A.
        probs_b: (B, 2, X, Y, Z) probabilities (or logits) of network B.

    Returns:
        (B, X, Y, Z) int64 labels in {0, 1}.
    """
    return class_argmax(probs_a) | class_argmax(probs_b)


def efs_target(probs_a: Tensor, probs_b: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """EFS pseudo-label with doubly uncertain voxels set to :data:`IGNORE_INDEX` (spec 3.2).

    Entropies are taken of the (detached) probabilities.

    Args:
        probs_a: (B_u, 2, X, Y, Z) probabilities of network A on unlabeled samples.
        probs_b: (B_u, 2, X, Y, Z) probabilities of network B.
        alpha: entropy percentile in [0, 100] (larger -> fewer voxels ignored).

    Returns:
        ``(target, uncertain)``: (B_u, X, Y, Z) int64 in {0, 1, 2} and the bool mask ``I``.
    """
    with torch.no_grad():
        pa, pb = probs_a.detach(), probs_b.detach()
        uncertain = uncertain_mask(entropy(pa), entropy(pb), alpha)
        target = union_label(pa, pb).masked_fill(uncertain, IGNORE_INDEX)
    return target, uncertain


def efs_loss(logits: Tensor, target: Tensor) -> Tensor:
    """``L_EFS = w * CE_ignore(logits, target)`` with ``w = N / #valid`` (spec 3.2).

    ``CE_ignore`` is the mean over the voxels whose label is not :data:`IGNORE_INDEX`;
    ``N = B_u*X*Y*Z``; ``w`` is a constant (no gradient). If every voxel is ignored the
    term is 0 (not NaN) and sends no gradient.

    Args:
        logits: (B_u, 2, X, Y, Z) logits of the trained network.
        target: (B_u, X, Y, Z) int64 labels in {0, 1, 2} from :func:`efs_target`.

    Returns:
        0-d tensor.
    """
    ce_sum = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    n_valid = (target != IGNORE_INDEX).sum().clamp(min=1).to(ce_sum.dtype)
    weight = target.numel() / n_valid
    return weight * (ce_sum / n_valid)


def efs_code_faithful(
    probs_a: Tensor, probs_b: Tensor, logits_a: Tensor, logits_b: Tensor, alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The EFS block exactly as the released code computes it (spec 2.6, C L138-215).

    The pseudo-label is ``argmax z_A | argmax z_B``; the "teacher" entropies are taken of
    the RAW LOGITS (``-sum z ln(z + 1e-10)``, NaN wherever a logit is negative, which makes
    the percentile NaN and the uncertain set empty); ``w = N / #valid`` (``inf``/NaN if all
    were ignored, as in C); the cross-entropy inputs are the detached softmax copies used as
    if they were logits. The result is symmetric in A and B, so the winner does not matter.

    Args:
        probs_a: (B_u, 2, X, Y, Z) detached softmax copy of network A ("student").
        probs_b: (B_u, 2, X, Y, Z) detached softmax copy of network B.
        logits_a: (B_u, 2, X, Y, Z) raw logits of A ("teacher"): the entropy input (LUSEG,
            ``efs_entropy_input: probs``: the probabilities instead, which makes the
            uncertain set non-empty).
        logits_b: (B_u, 2, X, Y, Z) the same of B.
        alpha: the ``percent`` argument (C: 20).

    Returns:
        ``(efs_a, efs_b, target)``: two 0-d tensors with ``requires_grad`` False when the
        probability inputs are detached, and the (B_u, X, Y, Z) int64 target in {0, 1, 2}.
    """
    with torch.no_grad():
        target = union_label(logits_a, logits_b)
        uncertain = uncertain_mask(entropy(logits_a), entropy(logits_b), alpha)
        target = target.masked_fill(uncertain, IGNORE_INDEX)
        weight = target.numel() / torch.sum(target != IGNORE_INDEX)
    efs_a = weight * F.cross_entropy(probs_a, target, ignore_index=IGNORE_INDEX)
    efs_b = weight * F.cross_entropy(probs_b, target, ignore_index=IGNORE_INDEX)
    return efs_a, efs_b, target
