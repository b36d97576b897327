"""Inter-network consistency L_IC between the two subnets (spec 2.3 and 3.5).

Applied to every sample of the batch (labeled and unlabeled); nothing is detached, so the
term sends gradient to both networks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["COSINE_EPS", "IC_KINDS", "inter_consistency"]

#: ``eps`` of ``F.cosine_similarity`` as called by C (default 1e-8).
COSINE_EPS = 1e-8
#: Accepted values of ``ic_distance``.
IC_KINDS = ("cosine", "mse", "none")


def inter_consistency(probs_a: Tensor, probs_b: Tensor, kind: str = "cosine") -> Tensor:
    """Disagreement between the two networks' probability maps.

    - ``cosine``: mean over all B*X*Y*Z voxels of ``1 - cos(p_A(v), p_B(v))``, the cosine
      taken over the class axis (C ``consist_loss``).
    - ``mse``: mean over all B*K*X*Y*Z elements of ``(p_A - p_B)^2`` (for two classes this
      equals the voxel mean of ``(p_A1 - p_B1)^2``).
    - ``none``: a zero (the objective leaves the term out altogether).

    Args:
        probs_a: (B, K, X, Y, Z) softmax probabilities of network A.
        probs_b: (B, K, X, Y, Z) softmax probabilities of network B.
        kind: one of :data:`IC_KINDS`.

    Returns:
        0-d tensor.
    """
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(probs_a, probs_b, dim=1, eps=COSINE_EPS)).mean()
    if kind == "mse":
        return F.mse_loss(probs_a, probs_b)
    if kind == "none":
        return torch.zeros((), dtype=probs_a.dtype, device=probs_a.device)
    raise ValueError(f"inter_consistency: kind must be one of {list(IC_KINDS)}, got {kind!r}")
