"""Networks of the comparison methods (baselines spec, sections 2-6).

Every baseline is built from Subnet B, the V-Net (9,448,866 parameters):

- :class:`VNetSDF` (DTC, spec 3): V-Net with two 1-channel heads on x9, a segmentation
  logit and a level-set (signed distance) head ``tanh(z_d)``; same parameter count.
- :class:`MCNet` (MC-Net K = 2, MC-Net+ K = 3, spec 4): one V-Net encoder and K decoders
  that differ only in their up-sampling blocks (transposed conv, trilinear + conv,
  nearest + conv); 12,347,716 / 15,246,566 parameters.

MCF is the project's :class:`~semiseg3d.models.dual.DualNet`; UA-MT and BCP train a
:class:`~semiseg3d.models.vnet.VNet` with an EMA teacher V-Net.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from semiseg3d.models.blocks import check_spatial_shape, init_weights, out_conv
from semiseg3d.models.vnet import VNetDecoder, VNetEncoder

__all__ = [
    "UpInterp",
    "VNetSDF",
    "MCNetDecoder",
    "MultiDecoderVNet",
    "MCNet",
    "mcnet_vnet_state",
]


class UpInterp(nn.Sequential):
    """Upsample x2 (``trilinear`` with align_corners, or ``nearest``) -> Conv3d 3x3x3
    (padding 1, bias) -> BatchNorm3d -> ReLU (MC-Net decoders 2 and 3).

    Shape: ``(B, c_in, X, Y, Z) -> (B, c_out, 2X, 2Y, 2Z)``.
    """

    def __init__(self, c_in: int, c_out: int, mode: str) -> None:
        up = (
            nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
            if mode == "trilinear"
            else nn.Upsample(scale_factor=2, mode="nearest")
        )
        super().__init__(
            up,
            nn.Conv3d(c_in, c_out, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
        )


class MCNetDecoder(VNetDecoder):
    """A V-Net decoder whose four up-sampling blocks are of one kind.

    Args:
        up: ``transpose`` (the plain V-Net decoder), ``trilinear`` or ``nearest``.
        n_classes: output classes.
        n_filters: base width.
        has_dropout: dropout 0.5 on its own x9 (train mode).
    """

    def __init__(
        self, up: str, n_classes: int = 2, n_filters: int = 16, has_dropout: bool = True
    ) -> None:
        super().__init__(n_classes, n_filters, has_dropout)
        if up not in ("transpose", "trilinear", "nearest"):
            raise ValueError(f"up must be transpose, trilinear or nearest, got {up!r}")
        if up != "transpose":
            f = n_filters
            self.block_five_up = UpInterp(16 * f, 8 * f, up)
            self.block_six_up = UpInterp(8 * f, 4 * f, up)
            self.block_seven_up = UpInterp(4 * f, 2 * f, up)
            self.block_eight_up = UpInterp(2 * f, f, up)


#: MC-Net decoder k (1-based) -> its up-sampling kind
MCNET_UPS = ("transpose", "trilinear", "nearest")


class MultiDecoderVNet(nn.Module):
    """A V-Net encoder shared by one :class:`MCNetDecoder` per entry of ``ups`` (MC-Net,
    MC-Net+, ML-RPL). The encoder's bottleneck dropout is applied once, so every decoder
    sees the same x5. With ``ups[0] == "transpose"`` the encoder plus decoder 1
    (``decoders.0``) is a :class:`~semiseg3d.models.vnet.VNet` (:func:`mcnet_vnet_state`).

    Args:
        ups: up-sampling kind of each decoder (``transpose``, ``trilinear``, ``nearest``).
        in_channels, n_classes, n_filters, has_dropout: as for the V-Net.
        init: weight initialisation (:func:`~semiseg3d.models.blocks.init_weights`);
            MC-Net's own networks keep PyTorch's defaults (``torch``, what
            :class:`~semiseg3d.baselines.mcnet.MCNetMethod` builds).
    """

    def __init__(
        self,
        ups: Sequence[str],
        in_channels: int = 1,
        n_classes: int = 2,
        n_filters: int = 16,
        has_dropout: bool = True,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        self.ups = tuple(ups)
        self.encoder = VNetEncoder(in_channels, n_filters, has_dropout)
        self.decoders = nn.ModuleList(
            MCNetDecoder(up, n_classes, n_filters, has_dropout) for up in self.ups
        )
        init_weights(self, init)

    def decode_all(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(logits (B, n_classes, X, Y, Z), x9 (B, n_filters, X, Y, Z))`` of every decoder,
        decoder 1 first, for ``x`` (B, in_channels, X, Y, Z), X, Y, Z multiples of 16."""
        check_spatial_shape(x.shape)
        features = self.encoder(x)
        return [dec(features) for dec in self.decoders]


class MCNet(MultiDecoderVNet):
    """MC-Net (K = 2) / MC-Net+ (K = 3): decoders 1..K of :data:`MCNET_UPS`.

    Args:
        n_decoders: K, 2 or 3.
        vnet: ``in_channels``, ``n_classes``, ``n_filters``, ``has_dropout`` as for the V-Net.
    """

    def __init__(self, n_decoders: int = 3, **vnet: Any) -> None:
        if n_decoders not in (2, 3):
            raise ValueError(f"n_decoders must be 2 or 3, got {n_decoders}")
        super().__init__(MCNET_UPS[:n_decoders], **vnet)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """K logits tensors (B, n_classes, X, Y, Z), decoder 1 first."""
        return [z for z, _ in self.decode_all(x)]


def mcnet_vnet_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder + decoder 1 entries of an :class:`MCNet` state dict, renamed for a plain
    :class:`~semiseg3d.models.vnet.VNet` (``decoders.0.`` -> ``decoder.``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("encoder."):
            out[key] = value
        elif key.startswith("decoders.0."):
            out["decoder." + key.removeprefix("decoders.0.")] = value
    return out


class VNetSDF(nn.Module):
    """DTC's network: V-Net with a 1-channel segmentation head and a level-set head on x9.

    Same parameter count as the plain V-Net (9,448,866): two 16 -> 1 heads (34 parameters)
    instead of one 16 -> 2 head.
    """

    def __init__(self, in_channels: int = 1, n_filters: int = 16, has_dropout: bool = True):
        super().__init__()
        self.encoder = VNetEncoder(in_channels, n_filters, has_dropout)
        self.decoder = VNetDecoder(1, n_filters, has_dropout)
        self.sdf_head = out_conv(n_filters, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment ``x`` and regress its level set.

        Args:
            x: (B, in_channels, X, Y, Z), X, Y, Z multiples of 16.

        Returns:
            ``(z_s, d)``: segmentation logit (B, 1, X, Y, Z) (probability ``sigmoid(z_s)``)
            and level-set estimate ``tanh(z_d)`` (B, 1, X, Y, Z) in (-1, 1).
        """
        check_spatial_shape(x.shape)
        z_s, x9 = self.decoder(self.encoder(x))
        return z_s, torch.tanh(self.sdf_head(x9))
