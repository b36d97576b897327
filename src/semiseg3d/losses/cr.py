"""Consistency regularisation CR on labeled voxels (paper Eq. 4-6; spec 2.2 and 3.1).

Each network is penalised, on the voxels where exactly one of the two networks is
confidently foreground (XOR of the confidence masks), by a per-voxel distance between its
prediction and the label, normalised by the size of that disagreement set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from semiseg3d.losses.cce import class_argmax

__all__ = [
    "CR_EPS",
    "KL_EPS",
    "confidence_mask",
    "disagreement_mask",
    "cr_distance",
    "cr_loss",
]

#: Added to the mask size in the denominator (C L496).
CR_EPS = 1e-16
#: Added inside the log of the ``kl`` distance.
KL_EPS = 1e-10


def confidence_mask(probs: Tensor, tau: float) -> Tensor:
    """Voxels confidently predicted as foreground.

    ``m = [argmax_c p_c = 1] and [max_c p_c >= tau]`` (C L489-491); for two classes and
    ``tau >= 0.5`` this equals ``p_1 >= tau``.

    Args:
        probs: (B, 2, X, Y, Z) softmax probabilities.
        tau: confidence threshold in [0.5, 1].

    Returns:
        (B, X, Y, Z) bool mask.
    """
    # where argmax is class 1 the max probability is p_1
    return (class_argmax(probs) == 1) & (probs[:, 1] >= tau)


def disagreement_mask(probs_a: Tensor, probs_b: Tensor, tau: float) -> Tensor:
    """``M = m_A XOR m_B``: exactly one network is confident foreground.

    Args:
        probs_a: (B, 2, X, Y, Z) probabilities of network A.
        probs_b: (B, 2, X, Y, Z) probabilities of network B.
        tau: confidence threshold.

    Returns:
        (B, X, Y, Z) bool mask (carries no gradient).
    """
    return confidence_mask(probs_a, tau) ^ confidence_mask(probs_b, tau)


def cr_distance(probs: Tensor, label: Tensor, kind: str = "mse") -> Tensor:
    """Per-voxel distance between a prediction and the label.

    - ``mse``: ``(p_1 - y)^2`` (MCF ``softmax_mse_loss`` as called by C: no softmax, the
      element-wise squared difference of the foreground probability and the label).
    - ``kl``: KL divergence from the one-hot label to the prediction,
      ``-ln(p_y + 1e-10)`` (spec 3.1; Table 5's KL variant).

    Args:
        probs: (B, 2, X, Y, Z) softmax probabilities.
        label: (B, X, Y, Z) integer labels in {0, 1}.
        kind: ``mse`` or ``kl``.

    Returns:
        (B, X, Y, Z) non-negative distances.
    """
    label = label.long()
    if kind == "mse":
        return (probs[:, 1] - label.to(probs.dtype)) ** 2
    if kind == "kl":
        p_y = torch.gather(probs, 1, label.unsqueeze(1)).squeeze(1)
        return -torch.log(p_y + KL_EPS)
    raise ValueError(f"cr_distance: kind must be 'mse' or 'kl', got {kind!r}")


def cr_loss(probs: Tensor, label: Tensor, mask: Tensor, kind: str = "mse") -> Tensor:
    """``CR = sum(M d) / (sum(M) + 1e-16)``; 0 when the mask is empty.

    Args:
        probs: (B, 2, X, Y, Z) probabilities of the penalised network.
        label: (B, X, Y, Z) integer labels.
        mask: (B, X, Y, Z) disagreement mask (bool or {0, 1}).
        kind: distance, ``mse`` or ``kl`` (see :func:`cr_distance`).

    Returns:
        0-d tensor; gradient reaches ``probs`` only.
    """
    d = cr_distance(probs, label, kind)
    m = mask.to(d.dtype)
    return torch.sum(m * d) / (torch.sum(m) + CR_EPS)
