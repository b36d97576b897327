"""DTC (Luo et al., AAAI 2021; baselines spec, section 3): dual-task consistency between a
segmentation head and a level-set (signed distance) head of one V-Net.

``L = D_sq(sigma(z_s,l), y) + 0.3 mean (d_l - g)^2 + r(t; 1) mean (sigma(-1500 d) - sigma(z_s))^2``.
Inference: the segmentation head, ``sigma(z_s) > 0.5``; the own test keeps the largest
connected component.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from semiseg3d.methods.base import Method, StepContext
from semiseg3d.methods.common import dice_sq, ramp
from semiseg3d.models.probs import ProbFn, sigmoid_head

__all__ = ["K", "BETA", "W_MAX", "sdf_target", "dtc_transform", "dtc_losses", "DTC"]

K = 1500.0
BETA = 0.3
W_MAX = 1.0


def _sdf_one(mask: np.ndarray, skip_full: bool) -> np.ndarray:
    pos = mask.astype(bool)
    if not pos.any():
        return np.zeros(mask.shape, dtype=np.float32)
    neg = ~pos
    if not neg.any():
        if skip_full:
            return np.full(mask.shape, np.nan, dtype=np.float32)
        raise ValueError(
            "sdf_target: a patch is all foreground; its signed distance is undefined (0/0)"
        )
    posdis = ndimage.distance_transform_edt(pos)
    negdis = ndimage.distance_transform_edt(neg)
    # inner boundary: foreground voxels with a 6-connected background neighbour (outside
    # the array does not count, as in skimage's find_boundaries with mode "inner")
    eroded = ndimage.binary_erosion(
        pos, structure=ndimage.generate_binary_structure(3, 1), border_value=1
    )
    boundary = pos & ~eroded
    sdf = (negdis - negdis.min()) / (negdis.max() - negdis.min()) - (posdis - posdis.min()) / (
        posdis.max() - posdis.min()
    )
    sdf[boundary] = 0.0
    return sdf.astype(np.float32)


def sdf_target(label: np.ndarray | Tensor, skip_full: bool = False) -> np.ndarray:
    """DTC's normalised signed distance map of each sample, computed on the host.

    Negative inside (-1 at the deepest voxel), 0 on the inner boundary, positive outside
    (+1 at the farthest voxel): ``N / max N - P / max P`` with P, N the Euclidean distance
    transforms of the foreground and of the background (in voxels).

    Args:
        label: (B, X, Y, Z) binary labels.
        skip_full: give NaN for a sample without background instead of raising (the
            trainer then leaves that sample out of L_sdf).

    Returns:
        (B, X, Y, Z) float32; a sample without foreground gives zeros.

    Raises:
        ValueError: a sample without background (undefined in the original), unless
            ``skip_full``.
    """
    arr = label.detach().cpu().numpy() if isinstance(label, Tensor) else np.asarray(label)
    return np.stack([_sdf_one(m, skip_full) for m in arr])


def dtc_transform(sdf: Tensor, k: float = K) -> Tensor:
    """Level set to a soft segmentation: ``sigmoid(-k d)`` (0.5 at d = 0)."""
    return torch.sigmoid(-k * sdf)


def dtc_losses(
    seg_logit: Tensor, sdf_pred: Tensor, label_l: Tensor, sdf_gt: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """DTC's three terms.

    Args:
        seg_logit: (B, 1, X, Y, Z) segmentation logits (all samples, labeled first).
        sdf_pred: (B, 1, X, Y, Z) level set ``tanh(z_d)``.
        label_l: (B_l, X, Y, Z) labels of the first B_l samples.
        sdf_gt: (B_l, X, Y, Z) target level sets (:func:`sdf_target`); a sample that is NaN
            (all foreground) is left out of L_sdf.

    Returns:
        ``(L_seg, L_sdf, L_dtc)``: D_sq of sigma(z_s) on the labeled samples; the MSE of the
        level set on the labeled samples; the MSE between sigma(-1500 d) and sigma(z_s) over
        every sample (gradient into both heads).
    """
    bl = label_l.shape[0]
    prob = torch.sigmoid(seg_logit[:, 0])
    l_seg = dice_sq(prob[:bl], label_l == 1)
    valid = ~torch.isnan(sdf_gt.flatten(1)).any(dim=1)
    if bool(valid.all()):
        l_sdf = torch.mean((sdf_pred[:bl, 0] - sdf_gt) ** 2)
    else:
        l_sdf = (
            torch.mean((sdf_pred[:bl, 0][valid] - sdf_gt[valid]) ** 2)
            if valid.any()
            else (sdf_pred.sum() * 0.0)
        )
    l_dtc = torch.mean((dtc_transform(sdf_pred[:, 0]) - prob) ** 2)
    return l_seg, l_sdf, l_dtc


class DTC(Method):
    """DTC: one :class:`~semiseg3d.models.baselines.VNetSDF` named ``vnet``."""

    reinit = "torch"  # the original keeps PyTorch's default initialisation

    network = "semiseg3d.models.baselines:VNetSDF"

    default_lcc = True

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        seg, sdf = ctx.forward(self.nets["vnet"], image)
        gt = torch.from_numpy(sdf_target(label_l, skip_full=True)).to(seg.device)
        l_seg, l_sdf, l_dtc = dtc_losses(seg, sdf, label_l, gt)
        w = ramp(t, W_MAX, cfg.rampup_length, cfg.rampup_unit)
        loss = l_seg + BETA * l_sdf + w * l_dtc
        terms = {
            "sup_dice": l_seg,
            "sdf": l_sdf,
            "dtc": l_dtc,
            "cons_weight": torch.tensor(w),
            "loss": loss,
        }
        return loss, {k: v.detach() for k, v in terms.items()}

    def prob_fn(self, members: list[nn.Module]) -> ProbFn:
        (net,) = members
        return sigmoid_head(net)
