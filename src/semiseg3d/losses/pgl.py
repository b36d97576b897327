"""Prototype-guided learning L_PGL on the loser's unlabeled features (spec 3.4, 2.6).

Class prototypes are the mean 16-channel feature of reliable voxels; a random subset of
the uncertain voxels (the candidates) is pulled towards the prototype of the class the
loser predicts for them, with the distance between L2-normalised vectors, plus a third term
on the distance between the two prototypes.

Paper mode (:func:`pgl_loss`): everything on the device (no host round trip), gradients
reach both the candidate features and the prototypes, an empty set drops the terms that
need it (never NaN). Code mode (:func:`pgl_code_faithful`): the released code's
computation, under ``no_grad``, NaN when the candidate sets are empty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from semiseg3d.losses.cce import IGNORE_INDEX, class_argmax

__all__ = [
    "SAMPLE_RATIO",
    "reliable_sets",
    "prototype",
    "normalized_distance",
    "sample_indices",
    "sample_subset",
    "pgl_loss",
    "pgl_code_faithful",
]

#: One candidate is drawn per this many foreground candidates (C L192: ``size // 100``).
SAMPLE_RATIO = 100


def reliable_sets(
    probs_a: Tensor, probs_b: Tensor, uncertain: Tensor, require_agreement: bool = True
) -> tuple[Tensor, Tensor]:
    """Reliable voxels and their class (paper Eq. 16; spec 3.4).

    - ``require_agreement`` True (paper): ``R = [argmax p_A = argmax p_B] and not I``, class
      = the agreed prediction.
    - False (the released code's sets): ``R = not I``, class = the union label
      ``argmax p_A | argmax p_B``.

    Args:
        probs_a: (B_u, 2, X, Y, Z) probabilities of network A.
        probs_b: (B_u, 2, X, Y, Z) probabilities of network B.
        uncertain: (B_u, X, Y, Z) bool EFS uncertain set ``I``.
        require_agreement: see above.

    Returns:
        ``(reliable, label)``: (B_u, X, Y, Z) bool and int64 in {0, 1}.
    """
    pred_a = class_argmax(probs_a)
    pred_b = class_argmax(probs_b)
    if require_agreement:
        return (pred_a == pred_b) & ~uncertain, pred_a
    return ~uncertain, pred_a | pred_b


def prototype(features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean feature over the masked voxels (zeros when the mask is empty).

    Args:
        features: (B, C, X, Y, Z) features.
        mask: (B, X, Y, Z) bool.

    Returns:
        ``(pi, count)``: (C,) prototype, attached to ``features``; 0-d int64 mask size.
    """
    count = mask.sum()
    w = mask.to(features.dtype).flatten(1)
    total = torch.einsum("bcs,bs->c", features.flatten(2), w)
    return total / count.clamp(min=1).to(features.dtype), count


def normalized_distance(rows: Tensor, pi: Tensor) -> Tensor:
    """``|| x_i / ||x_i|| - pi / ||pi|| ||_2`` per row (``F.normalize``, eps 1e-12).

    Args:
        rows: (N, C) features, one voxel per row.
        pi: (C,) prototype.

    Returns:
        (N,) distances in [0, 2].
    """
    x_hat = F.normalize(rows, p=2.0, dim=1)
    pi_hat = F.normalize(pi, p=2.0, dim=0)
    return torch.linalg.vector_norm(x_hat - pi_hat.unsqueeze(0), ord=2, dim=1)


def sample_indices(
    candidates: Tensor,
    n: Tensor | int,
    k_max: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``min(n, |candidates|)`` candidates uniformly without replacement.

    Every voxel gets a uniform float64 key from ``generator``; non-candidates get key 2.
    The ``k_max`` smallest keys are the first ``k_max`` entries of a uniform random
    permutation of the candidates (followed by non-candidates when there are fewer);
    entry ``j`` is valid when ``j < n`` and it is a candidate. All shapes are static, so
    nothing leaves the device, and the number of random draws does not depend on the data.

    Args:
        candidates: (N,) bool.
        n: requested sample size (0-d int tensor or int), at most ``k_max``.
        k_max: static upper bound on ``n`` (e.g. ``N // 100``).
        generator: dedicated generator (any device; keys are moved to the candidates'
            device); None uses the global generator of that device.

    Returns:
        ``(idx, valid)``: (k,) int64 flat voxel indices and (k,) bool, ``k = min(k_max, N)``.
    """
    num = candidates.numel()
    k = min(max(k_max, 0), num)
    if generator is None:
        keys = torch.rand(num, dtype=torch.float64, device=candidates.device)
    else:
        keys = torch.rand(num, dtype=torch.float64, generator=generator, device=generator.device)
        keys = keys.to(candidates.device)
    keys = torch.where(candidates, keys, torch.full_like(keys, 2.0))
    idx = torch.topk(keys, k, largest=False, sorted=True).indices
    positions = torch.arange(k, device=candidates.device)
    return idx, (positions < n) & candidates[idx]


def sample_subset(
    candidates: Tensor, n: Tensor | int, generator: torch.Generator | None = None
) -> Tensor:
    """:func:`sample_indices` as a (N,) bool mask (with ``k_max = N``)."""
    idx, valid = sample_indices(candidates, n, candidates.numel(), generator)
    return torch.zeros_like(candidates).scatter_(0, idx, valid)


def _rows(features: Tensor, idx: Tensor) -> Tensor:
    """(B, C, X, Y, Z), flat voxel indices (k,) -> (k, C) feature rows (gradient flows)."""
    flat = features.flatten(2)  # (B, C, S)
    s = flat.shape[2]
    return flat[idx // s, :, idx % s]


def _mean_distance(features: Tensor, idx: Tensor, valid: Tensor, pi: Tensor) -> Tensor:
    d = normalized_distance(_rows(features, idx), pi)
    total = torch.where(valid, d, torch.zeros_like(d)).sum()
    return total / valid.sum().clamp(min=1).to(d.dtype)


def pgl_loss(
    features: Tensor,
    reliable: Tensor,
    label: Tensor,
    loser_pred: Tensor,
    generator: torch.Generator | None = None,
    *,
    third_term: bool = True,
    proto_sign: int = 1,
    sample_ratio: int = SAMPLE_RATIO,
) -> Tensor:
    """``L_PGL = l(F_Uf, pi_f) + l(F_Ub, pi_b) + sign * l(pi_f, pi_b)`` (spec 3.4).

    - ``pi_f``, ``pi_b``: mean features over ``R_f = R & (label = 1)``, ``R_b = R & (label = 0)``.
    - Uncertain ``U = not R``; candidates ``U_f = U & (loser_pred = 1)``,
      ``U_b = U & (loser_pred = 0)``; ``n = floor(|U_f| / sample_ratio)`` drawn from ``U_f``
      and ``min(n, |U_b|)`` from ``U_b``, uniformly without replacement.
    - ``l(X, pi) = mean_i || x_i/||x_i|| - pi/||pi|| ||_2``.
    - Guards: a term whose prototype set is empty or whose sample is empty contributes 0;
      the third term needs both prototypes. The result is never NaN for finite features.

    Args:
        features: (B_u, C, X, Y, Z) features of the loser on unlabeled samples.
        reliable: (B_u, X, Y, Z) bool reliable set ``R``.
        label: (B_u, X, Y, Z) int64 class of the reliable voxels (0/1).
        loser_pred: (B_u, X, Y, Z) int64 ``argmax p_L`` (candidate class).
        generator: dedicated generator for the candidate sampling (2 * B_u*X*Y*Z float64
            draws per call, whatever the data).
        third_term: include ``l(pi_f, pi_b)``.
        proto_sign: +1 pulls the prototypes together (C, P 4.4.4), -1 pushes them apart.
        sample_ratio: candidates per sampled foreground voxel (C: 100).

    Returns:
        0-d tensor; gradient reaches the sampled candidate features and, through the
        prototypes, the reliable features.
    """
    pi_f, n_rf = prototype(features, reliable & (label == 1))
    pi_b, n_rb = prototype(features, reliable & (label == 0))
    has_f, has_b = n_rf > 0, n_rb > 0
    unc = ~reliable
    u_f = (unc & (loser_pred == 1)).reshape(-1)
    u_b = (unc & (loser_pred == 0)).reshape(-1)
    n = torch.div(u_f.sum(), sample_ratio, rounding_mode="floor")
    k_max = u_f.numel() // sample_ratio  # static bound: n <= N / ratio
    idx_f, valid_f = sample_indices(u_f, n, k_max, generator)
    idx_b, valid_b = sample_indices(u_b, n, k_max, generator)
    zero = features.new_zeros(())
    term_f = _mean_distance(features, idx_f, valid_f, pi_f)
    term_b = _mean_distance(features, idx_b, valid_b, pi_b)
    loss = torch.where(has_f, term_f, zero) + torch.where(has_b, term_b, zero)
    if third_term:
        term_c = normalized_distance(pi_f.unsqueeze(0), pi_b).squeeze(0)
        loss = loss + proto_sign * torch.where(has_f & has_b, term_c, zero)
    return loss


def _nan_if(empty: Tensor, value: Tensor) -> Tensor:
    """``value``, or NaN where ``empty`` (C's mean over an empty set)."""
    return torch.where(empty, torch.full_like(value, float("nan")), value)


def pgl_code_faithful(
    features: Tensor,
    target: Tensor,
    loser_pred: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The prototype loss exactly as the released code computes it (spec 2.6, C L180-205).

    Under ``no_grad``: prototypes over ``target == 1`` / ``target == 0`` of the EFS
    target; candidates ``(target == 2) & (loser_pred == c)``; ``n = |U_f| // 100``;
    a uniform sample of ``n`` voxels from each candidate set (C: ``randperm`` truncated to
    ``n``; here the keys of :func:`sample_indices`, so the value is the same whenever the
    sample does not matter, and nothing leaves the device); sum of the three distances with
    the third one added. With C's inputs the candidate sets are empty and the result is
    NaN (mean of an empty distance matrix). The value never carries gradient.

    Args:
        features: (B_u, C, X, Y, Z) loser features.
        target: (B_u, X, Y, Z) int64 EFS target in {0, 1, 2} (from
            :func:`~semiseg3d.losses.cce.efs_code_faithful`).
        loser_pred: (B_u, X, Y, Z) int64 ``argmax`` of the loser's probabilities.
        generator: dedicated generator for the sample (C used the global one).

    Returns:
        0-d tensor, ``requires_grad`` False (often NaN).
    """
    with torch.no_grad():
        t = target.reshape(-1)
        pred = loser_pred.reshape(-1)
        pi_f, n_f = prototype(features, target == 1)
        pi_b, n_b = prototype(features, target == 0)
        proto_f, proto_b = _nan_if(n_f == 0, pi_f), _nan_if(n_b == 0, pi_b)
        cand_f = (t == IGNORE_INDEX) & (pred == 1)
        cand_b = (t == IGNORE_INDEX) & (pred == 0)
        n = cand_f.sum() // SAMPLE_RATIO
        k_max = t.numel() // SAMPLE_RATIO  # n <= k_max: a static sample size
        idx_f, valid_f = sample_indices(cand_f, n, k_max, generator)
        idx_b, valid_b = sample_indices(cand_b, n, k_max, generator)
        loss_f = _nan_if(~valid_f.any(), _mean_distance(features, idx_f, valid_f, proto_f))
        loss_b = _nan_if(~valid_b.any(), _mean_distance(features, idx_b, valid_b, proto_b))
        loss_c = normalized_distance(proto_f.unsqueeze(0), proto_b).squeeze(0)
        return loss_f + loss_b + loss_c
