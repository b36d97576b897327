"""BCP (Bai et al., CVPR 2023; baselines spec, section 6): bidirectional copy-paste with a
mean teacher, after a labeled-only copy-paste pre-training stage.

Steps ``t < P`` (``bcp_pretrain_steps``, constant lr): labeled halves a, b mixed with one
cuboid mask, ``L = 0.5 (CE + D_bcp)`` on the mixed label. At ``t = P`` the teacher becomes
a copy of the student. Steps ``t >= P`` (the run's schedule on ``t - P``): labeled and
unlabeled halves swapped through the cuboid both ways, pseudo-labels from the teacher
(thresholded at 0.5, largest connected component), ground-truth voxels weighted 1 and
pseudo-labelled ones 0.5; EMA 0.99 after every step. Inference: the student, softmax,
argmax; the own test keeps the largest connected component.

Batch geometry: every training forward sees at least two samples, so BatchNorm (train mode,
teacher included) never normalises one crop by its own statistics. The teacher labels both
unlabeled halves in one forward and the student sees both mixed images in one forward (the
original runs each half alone: with its 4 + 4 batch, halves of 2). Under 2 + 2 pre-training
mixes a over b and b over a with the same mask (one forward of two); with larger halves it
mixes a over b only, as the original.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg3d.methods.base import Method, StepContext, config_lr
from semiseg3d.methods.common import batch_lcc, ema_update, freeze

__all__ = [
    "MASK_RATIO",
    "U_WEIGHT",
    "EMA_DECAY",
    "INIT",
    "cuboid_mask",
    "mix",
    "dice_bcp",
    "ce_masked",
    "mix_loss",
    "pseudo_label",
    "BCP",
]

MASK_RATIO = 2.0 / 3.0
U_WEIGHT = 0.5
EMA_DECAY = 0.99
#: weight initialisation of student and teacher (models.blocks.init_weights): the
#: original's PyTorch defaults (DeepMed-Lab-ECNU/BCP sets none), not spec 1.4's Kaiming
INIT = "torch"


def cuboid_size(shape: Sequence[int]) -> tuple[int, int, int]:
    """``floor(S_i 2/3)`` per axis: 74 x 74 x 53 for 112 x 112 x 80, 64^3 for 96^3."""
    return tuple(int(s * 2 // 3) for s in shape)  # type: ignore[return-value]


def cuboid_mask(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> Tensor:
    """BCP's copy-paste mask: ones with one zero cuboid of :func:`cuboid_size`.

    Args:
        shape: patch (X, Y, Z).
        generator: draws the offsets, each uniform in ``{0, ..., S_i - c_i - 1}``.
        device: where the mask lives (and the generator's device).

    Returns:
        (X, Y, Z) float32 mask M: 1 outside the cuboid, 0 inside.
    """
    size = cuboid_size(shape)
    mask = torch.ones(tuple(shape), dtype=torch.float32, device=device)
    offsets = [
        int(torch.randint(0, max(1, s - c), (1,), generator=generator, device=device).item())
        for s, c in zip(shape, size, strict=True)
    ]
    ox, oy, oz = offsets
    cx, cy, cz = size
    mask[ox : ox + cx, oy : oy + cy, oz : oz + cz] = 0.0
    return mask


def mix(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """``a M + b (1 - M)``: ``a`` outside the cuboid, ``b`` inside (mask broadcast from the
    trailing (X, Y, Z) axes)."""
    m = mask.to(a.dtype) if a.is_floating_point() else mask.long()
    return a * m + b * (1 - m)


def dice_bcp(logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """BCP's masked Dice loss, per sample and per class (background included).

    ``1 - mean_{n, c} (2 sum_v m p_c [y = c] + 1e-5) / (sum_v m (p_c + [y = c]) + 1e-5)``.

    Args:
        logits: (B, 2, X, Y, Z).
        target: (B, X, Y, Z) integer labels.
        mask: (X, Y, Z) or (B, X, Y, Z) voxel weights (None: all ones).

    Returns:
        0-d tensor.
    """
    p = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target.long(), p.shape[1]).movedim(-1, 1).to(p.dtype)
    m = torch.ones_like(p[:, :1]) if mask is None else mask.to(p.dtype).expand_as(p[:, 0])[:, None]
    dims = tuple(range(2, p.dim()))
    inter = torch.sum(m * p * onehot, dim=dims)
    denom = torch.sum(m * (p + onehot), dim=dims)
    return 1 - torch.mean((2 * inter + 1e-5) / (denom + 1e-5))


def ce_masked(logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``sum m ce / (sum m + 1e-16)`` with the voxel cross-entropy ``ce`` (plain mean when
    ``mask`` is None). Shapes as :func:`dice_bcp`."""
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    if mask is None:
        return ce.mean()
    m = mask.to(ce.dtype).expand_as(ce)
    return torch.sum(m * ce) / (torch.sum(m) + 1e-16)


def mix_loss(
    logits: Tensor, target_a: Tensor, target_b: Tensor, mask: Tensor, w_a: float, w_b: float
) -> Tensor:
    """``0.5 [a D(z, A, M) + b D(z, B, 1 - M) + a CE_M(z, A) + b CE_{1-M}(z, B)]``.

    Args:
        logits: (B, 2, X, Y, Z) output on the mixed input.
        target_a: (B, X, Y, Z) labels scored where M = 1 (outside the cuboid).
        target_b: (B, X, Y, Z) labels scored where M = 0 (inside).
        mask: (X, Y, Z) cuboid mask M.
        w_a, w_b: weights (1 for ground truth, 0.5 for pseudo-labels).
    """
    inv = 1 - mask
    return 0.5 * (
        w_a * dice_bcp(logits, target_a, mask)
        + w_b * dice_bcp(logits, target_b, inv)
        + w_a * ce_masked(logits, target_a, mask)
        + w_b * ce_masked(logits, target_b, inv)
    )


def pseudo_label(probs_fg: Tensor, connectivity: int = 26) -> Tensor:
    """``LCC([p_1 >= 0.5])`` per sample (inclusive threshold): (B, X, Y, Z) -> int64."""
    return batch_lcc(probs_fg >= 0.5, connectivity)


class BCP(Method):
    """BCP: student ``vnet`` (trained), teacher ``teacher`` (EMA only, train mode)."""

    default_lcc = True

    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        from semiseg3d.models import VNet

        model = VNet(init=INIT)
        return model, {"vnet": model}

    def build_teachers(self) -> dict[str, nn.Module]:
        from semiseg3d.models import VNet

        return {"teacher": freeze(VNet(init=INIT))}

    @property
    def pretrain(self) -> int:
        """Steps of the pre-training stage."""
        return self.cfg.bcp_pretrain_steps

    def total_steps(self) -> int:
        return self.pretrain + self.cfg.iterations

    def lr(self, t: int) -> float:
        if t < self.pretrain:
            return self.cfg.lr
        return config_lr(self.cfg, t - self.pretrain)

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        bl = label_l.shape[0]
        h = bl // 2
        student, teacher = self.nets["vnet"], self.teachers["teacher"]
        mask = cuboid_mask(image.shape[2:], ctx.pgl_gen, image.device)
        x_a, x_b = image[:h], image[h:bl]
        y_a, y_b = label_l[:h], label_l[h:]
        if t < self.pretrain:
            x_mix, y_mix = mix(x_a, x_b, mask), mix(y_a, y_b, mask)
            if h == 1:  # halves of one crop (2 + 2): b over a as well, one forward of two
                x_mix = torch.cat([x_mix, mix(x_b, x_a, mask)])
                y_mix = torch.cat([y_mix, mix(y_b, y_a, mask)])
            z = ctx.forward(student, x_mix)[0]
            ce, dice = ce_masked(z, y_mix), dice_bcp(z, y_mix)
            loss = 0.5 * (ce + dice)
            terms = {"pre_ce": ce, "pre_dice": dice, "loss": loss}
            return loss, {k: v.detach() for k, v in terms.items()}
        if t == self.pretrain:  # self-training starts from the pre-trained weights
            teacher.load_state_dict(student.state_dict())
        u_a, u_b = image[bl : bl + h], image[bl + h :]
        with torch.no_grad():
            # the teacher on u_a and u_b in one forward (BN statistics over both)
            pl = pseudo_label(torch.softmax(ctx.forward(teacher, image[bl:])[0], dim=1)[:, 1])
        pl_a, pl_b = pl[:h], pl[h:]
        # the student on both mixed images in one forward, split back into the halves
        z = ctx.forward(student, torch.cat([mix(x_a, u_a, mask), mix(u_b, x_b, mask)]))[0]
        z1, z2 = z[:h], z[h:]
        l1 = mix_loss(z1, y_a, pl_a, mask, 1.0, U_WEIGHT)
        l2 = mix_loss(z2, pl_b, y_b, mask, U_WEIGHT, 1.0)
        loss = l1 + l2
        pl_fg = 0.5 * (pl_a.float().mean() + pl_b.float().mean())
        terms = {"mix_1": l1, "mix_2": l2, "pl_fg": pl_fg, "loss": loss}
        return loss, {k: v.detach() for k, v in terms.items()}

    def after_step(self, t: int) -> None:
        if t >= self.pretrain:
            ema_update(self.teachers["teacher"], self.nets["vnet"], EMA_DECAY)
