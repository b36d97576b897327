"""UA-MT (Yu et al., MICCAI 2019; baselines spec, section 2): a V-Net student and an EMA
teacher; the teacher's uncertainty (entropy of 8 noisy passes) masks the consistency.

Per step: ``L = 0.5 (CE + D_sq) + r(t; 0.1) L_cons``, then the EMA update with
``alpha_t = min(1 - 1/(t+1), 0.99)``. Inference: the student alone, softmax, argmax.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from semiseg3d.losses.supervised import ce_loss
from semiseg3d.methods.base import Method, StepContext
from semiseg3d.methods.common import consistency_total, dice_sq, ema_update, freeze, ramp

__all__ = [
    "EMA_DECAY",
    "W_MAX",
    "N_PASSES",
    "uamt_threshold",
    "uamt_ema_alpha",
    "clipped_noise",
    "uncertainty",
    "masked_mse",
    "UAMT",
]

EMA_DECAY = 0.99
W_MAX = 0.1
N_PASSES = 8
NOISE_STD = 0.1
NOISE_CLIP = 0.2
ENTROPY_EPS = 1e-6


def uamt_threshold(t: int, t_max: int) -> float:
    """Uncertainty threshold ``H(t) = (0.75 + 0.25 exp(-5 (1 - min(t, t_max)/t_max)^2)) ln 2``
    (nats), with ``t`` itself, not ``floor(t / 150)``.

    H(0) = 0.521028, H(3000) = 0.569508 for t_max = 6000, H(t >= t_max) = ln 2.
    """
    phase = 1.0 - min(t, t_max) / t_max
    return (0.75 + 0.25 * math.exp(-5.0 * phase * phase)) * math.log(2.0)


def uamt_ema_alpha(t: int, decay: float = EMA_DECAY) -> float:
    """EMA decay after step ``t``: ``min(1 - 1/(t+1), decay)`` (0 at t = 0: a copy)."""
    return min(1.0 - 1.0 / (t + 1), decay)


def clipped_noise(
    like: Tensor,
    generator: torch.Generator | None,
    std: float = NOISE_STD,
    clip: float = NOISE_CLIP,
) -> Tensor:
    """``clip(N(0, std^2), -clip, clip)`` per voxel, shaped like ``like``."""
    noise = torch.randn(
        like.shape, generator=generator, device=like.device, dtype=torch.float32
    ).to(like.dtype)
    return torch.clamp(noise * std, -clip, clip)


def uncertainty(mean_probs: Tensor, eps: float = ENTROPY_EPS) -> Tensor:
    """Entropy of the mean teacher prediction, ``u = -sum_c p_c ln(p_c + 1e-6)``.

    Args:
        mean_probs: (B_u, C, X, Y, Z) mean of the stochastic passes' softmaxes.

    Returns:
        (B_u, 1, X, Y, Z) in nats (0.693145 for (0.5, 0.5); 0.325081 for (0.9, 0.1)).
    """
    return -torch.sum(mean_probs * torch.log(mean_probs + eps), dim=1, keepdim=True)


def masked_mse(probs_s: Tensor, probs_t: Tensor, u: Tensor, threshold: float) -> Tensor:
    """Consistency on the certain voxels: ``sum(m d) / (2 sum_voxels m + 1e-16)``,
    ``d = (p_s - p_t)^2``, ``m = [u < H]`` broadcast over both channels.

    Args:
        probs_s: (B_u, 2, X, Y, Z) student softmax.
        probs_t: (B_u, 2, X, Y, Z) teacher softmax (a constant).
        u: (B_u, 1, X, Y, Z) uncertainty.
        threshold: H(t).

    Returns:
        0-d tensor: the mean squared difference over kept voxels and both channels.
    """
    d = (probs_s - probs_t) ** 2
    m = (u < threshold).to(d.dtype)
    return torch.sum(m * d) / (probs_s.shape[1] * torch.sum(m) + 1e-16)


class UAMT(Method):
    """UA-MT: student ``vnet`` (trained), teacher ``teacher`` (EMA only, train mode)."""

    reinit = "torch"  # the original keeps PyTorch's default initialisation

    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        from semiseg3d.models import VNet

        model = VNet()
        return model, {"vnet": model}

    def build_teachers(self) -> dict[str, nn.Module]:
        from semiseg3d.models import VNet

        return {"teacher": freeze(VNet())}

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        bl = label_l.shape[0]
        student, teacher = self.nets["vnet"], self.teachers["teacher"]
        z = ctx.forward(student, image)[0]
        x_u = image[bl:]
        with torch.no_grad():
            z_t = ctx.forward(teacher, x_u + clipped_noise(x_u, ctx.noise_gen))[0]
            reps = x_u.repeat(2, 1, 1, 1, 1)
            total = None
            for _ in range(N_PASSES // 2):
                p = torch.softmax(
                    ctx.forward(teacher, reps + clipped_noise(reps, ctx.noise_gen))[0], 1
                )
                total = p if total is None else total + p
            assert total is not None
            b_u = x_u.shape[0]
            mean = (total[:b_u] + total[b_u:]) / N_PASSES
            u = uncertainty(mean)
        probs = torch.softmax(z, dim=1)
        ce = ce_loss(z[:bl], label_l)
        dice = dice_sq(probs[:bl, 1], label_l == 1)
        sup = 0.5 * (ce + dice)
        h = uamt_threshold(t, cfg.iterations)
        cons = masked_mse(probs[bl:], torch.softmax(z_t, dim=1), u, h)
        w = ramp(t, W_MAX, cfg.rampup_length, cfg.rampup_unit)
        certain = (u < h).float().mean()
        return consistency_total(ce, dice, sup, cons, w, certain_fraction=certain)

    def after_step(self, t: int) -> None:
        ema_update(self.teachers["teacher"], self.nets["vnet"], uamt_ema_alpha(t))
