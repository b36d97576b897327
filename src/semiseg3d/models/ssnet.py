"""SS-Net's network (baselines-more spec, section 4): the V-Net plus per-voxel MLP heads.

The V-Net part is Subnet B unchanged (same state-dict keys ``encoder.*`` / ``decoder.*``,
9,448,866 parameters): :func:`~semiseg3d.models.vnet.vnet_state` hands it to a plain
:class:`~semiseg3d.models.vnet.VNet` for inference. The heads act on voxels as rows
(``(M, C)`` tensors, one row per voxel) and keep PyTorch's default initialisation, as in
the original (:func:`~semiseg3d.models.blocks.init_weights` touches only the 3-D layers):

- ``projection_head`` P: Linear 16->32, BatchNorm1d(32), ReLU, Linear 32->32 (1,664);
- ``prediction_head`` Q: Linear 32->32, BatchNorm1d(32), ReLU, Linear 32->32 (2,176);
- ``selectors[c]`` S_c and ``memory_selectors[c]`` S^mem_c, c in {0, 1}: Linear 32->32,
  BatchNorm1d(32), LeakyReLU(0.2), Linear 32->1 (1,153 each).

Heads 8,452 parameters, total 9,457,318.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from semiseg3d.models.vnet import VNet

__all__ = [
    "FEAT_DIM",
    "projection_head",
    "prediction_head",
    "selector_head",
    "SSNet",
]

#: width of the projected / predicted voxel features and of the prototype memory rows
FEAT_DIM = 32


def projection_head(c_in: int, dim: int = FEAT_DIM) -> nn.Sequential:
    """P: ``(M, c_in) -> (M, dim)``: Linear, BatchNorm1d, ReLU, Linear."""
    return nn.Sequential(
        nn.Linear(c_in, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim)
    )


def prediction_head(dim: int = FEAT_DIM) -> nn.Sequential:
    """Q: ``(M, dim) -> (M, dim)``: Linear, BatchNorm1d, ReLU, Linear."""
    return projection_head(dim, dim)


def selector_head(dim: int = FEAT_DIM) -> nn.Sequential:
    """S: ``(M, dim) -> (M, 1)`` raw scores: Linear, BatchNorm1d, LeakyReLU(0.2), Linear."""
    return nn.Sequential(
        nn.Linear(dim, dim),
        nn.BatchNorm1d(dim),
        nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Linear(dim, 1),
    )


class SSNet(VNet):
    """V-Net (forward unchanged: ``(logits, x9)``) with SS-Net's voxel heads as attributes.

    Args:
        feat_dim: width of P, Q and the selectors (32).
        vnet: the V-Net's keyword arguments (``in_channels``, ``n_classes``, ``n_filters``,
            ``has_dropout``).
    """

    def __init__(self, feat_dim: int = FEAT_DIM, **vnet: Any) -> None:
        super().__init__(**vnet)
        classes = range(self.n_classes)
        self.projection_head = projection_head(self.n_filters, feat_dim)
        self.prediction_head = prediction_head(feat_dim)
        self.selectors = nn.ModuleList(selector_head(feat_dim) for _ in classes)
        self.memory_selectors = nn.ModuleList(selector_head(feat_dim) for _ in classes)
