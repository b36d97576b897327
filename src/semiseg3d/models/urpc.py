"""URPC's network in the project (baselines-more spec, section 5): the V-Net with three
deep-supervision heads on the decoder features x6, x7, x8.

Each head is a 1x1x1 convolution (bias) followed by trilinear up-sampling
(``align_corners=False``) to the input size: on x8 (2 n_filters channels at 1/2), x7 (4 n_filters
at 1/4) and x6 (8 n_filters at 1/8). The V-Net keeps its bottleneck and x9 dropout; its main
head is the V-Net's ``out_conv`` on x9. With the defaults: 9,448,866 + 66 + 130 + 258 =
9,449,320 parameters. The original (SSL4MIS ``unet_3D_dv_semi``) is a 3-D U-Net with the
same four heads; the V-Net version is the project's choice.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from semiseg3d.models.blocks import check_spatial_shape, init_weights, out_conv
from semiseg3d.models.vnet import VNet

__all__ = ["URPCNet"]


class URPCNet(VNet):
    """V-Net + pyramid heads. ``forward`` returns the four logit maps, main head first.

    The heads get the project's initialisation (:func:`~semiseg3d.models.blocks.init_weights`)
    like every convolution of the V-Net.

    Args:
        vnet: the V-Net's keyword arguments (``in_channels``, ``n_classes``, ``n_filters``,
            ``has_dropout``).
    """

    def __init__(self, **vnet: Any) -> None:
        super().__init__(**vnet)
        f, c = self.n_filters, self.n_classes
        #: heads on x8 (1/2), x7 (1/4), x6 (1/8): SSL4MIS's dsv2, dsv3, dsv4
        self.aux_heads = nn.ModuleList([out_conv(2 * f, c), out_conv(4 * f, c), out_conv(8 * f, c)])
        init_weights(self.aux_heads)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of the four heads at full size.

        Args:
            x: (B, in_channels, X, Y, Z), X, Y, Z multiples of 16.

        Returns:
            ``(z_1, z_2, z_3, z_4)``, each (B, n_classes, X, Y, Z): the main head on x9, then
            the heads on x8 (1/2), x7 (1/4) and x6 (1/8), up-sampled trilinearly.
        """
        check_spatial_shape(x.shape)
        z_main, _, (x6, x7, x8) = self.decoder.decode_levels(self.encoder(x))
        size = tuple(x.shape[2:])
        aux = [
            F.interpolate(head(feat), size=size, mode="trilinear", align_corners=False)
            for head, feat in zip(self.aux_heads, (x8, x7, x6), strict=True)
        ]
        return z_main, aux[0], aux[1], aux[2]
