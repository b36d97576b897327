"""Uncertainty-rectified pseudo supervision L_UE / L_URL (paper Eq. 13-15; spec 2.5, 3.3).

Student = network A (ResNet), teacher = network B (V-Net), on the whole batch. The teacher
gives a hard pseudo-label and a soft target ``q``; the per-voxel cross-entropy to the
pseudo-label is down-weighted by ``exp(-KL(q || p_A))`` and the KL itself is added.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from semiseg3d.losses.cce import class_argmax

__all__ = ["ue_loss"]


def ue_loss(
    logits_student: Tensor,
    logits_teacher: Tensor,
    T: float = 0.5,
    temperature_in_kl: bool = True,
) -> Tensor:
    """``mean_v[exp(-kl_v) ce_v] + mean_v[kl_v]``.

    - ``q^T = softmax(z_t / T)`` (detached); pseudo-label ``y^ = argmax q^T = argmax z_t``.
    - ``ce_v = -ln softmax(z_s)(v)[y^(v)]``.
    - ``kl_v = sum_c q_c (ln q_c - ln softmax(z_s)_c)`` with ``q = q^T`` when
      ``temperature_in_kl`` (paper mode, spec 3.3) or ``q = softmax(z_t)`` at temperature 1
      (released code, spec 2.5: ``T`` then only precedes the argmax and has no effect).
    - ``exp(-kl)`` stays attached to the graph, as in C; the teacher is detached.

    Args:
        logits_student: (B, K, X, Y, Z) logits of the student (network A).
        logits_teacher: (B, K, X, Y, Z) logits of the teacher (network B).
        T: temperature > 0.
        temperature_in_kl: apply ``T`` to the KL target (paper) or not (code).

    Returns:
        0-d tensor (nats); gradient reaches the student only.
    """
    teacher = logits_teacher.detach()
    q_t = F.softmax(teacher / T, dim=1)
    pseudo = class_argmax(q_t)
    ce = F.cross_entropy(logits_student, pseudo, reduction="none")
    q = q_t if temperature_in_kl else F.softmax(teacher, dim=1)
    log_p = F.log_softmax(logits_student, dim=1)
    kl = torch.sum(F.kl_div(log_p, q, reduction="none"), dim=1)
    return (torch.exp(-kl) * ce).mean() + kl.mean()
