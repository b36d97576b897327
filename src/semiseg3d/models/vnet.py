"""Subnet B: the V-Net of UA-MT/MCF with base width 16 (spec section 1.2).

The decoder defined here (:class:`VNetDecoder`) is shared with Subnet A
(:mod:`semiseg3d.models.resnet34`). Skips are additive, never concatenated.
"""

from __future__ import annotations

import torch
from torch import nn

from semiseg3d.models.blocks import (
    ConvBlock,
    Down,
    Up,
    channel_dropout,
    check_spatial_shape,
    init_weights,
    out_conv,
)

__all__ = ["VNetEncoder", "VNetDecoder", "EncoderDecoder", "VNet", "vnet_state"]

Features = list[torch.Tensor]


class VNetEncoder(nn.Module):
    """V-Net encoder: five stages at full, 1/2, 1/4, 1/8 and 1/16 resolution.

    Args:
        in_channels: input image channels.
        n_filters: base width (channels of the first stage); stage k has ``n_filters * 2**k``.
        has_dropout: apply ``Dropout3d(0.5)`` to the bottleneck ``x5`` (train mode only).
    """

    def __init__(self, in_channels: int = 1, n_filters: int = 16, has_dropout: bool = True) -> None:
        super().__init__()
        f = n_filters
        self.block_one = ConvBlock(1, in_channels, f)
        self.block_one_dw = Down(f, 2 * f)
        self.block_two = ConvBlock(2, 2 * f, 2 * f)
        self.block_two_dw = Down(2 * f, 4 * f)
        self.block_three = ConvBlock(3, 4 * f, 4 * f)
        self.block_three_dw = Down(4 * f, 8 * f)
        self.block_four = ConvBlock(3, 8 * f, 8 * f)
        self.block_four_dw = Down(8 * f, 16 * f)
        self.block_five = ConvBlock(3, 16 * f, 16 * f)
        self.has_dropout = has_dropout
        self.dropout = channel_dropout()

    def forward(self, x: torch.Tensor) -> Features:
        """Encode ``x``: (B, C_in, X, Y, Z) -> [x1, x2, x3, x4, x5].

        Shapes with f = n_filters: x1 (B, f, X, Y, Z), x2 (B, 2f, X/2, ...), x3 (B, 4f, X/4, ...),
        x4 (B, 8f, X/8, ...), x5 (B, 16f, X/16, ...) (after dropout when enabled).
        """
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        if self.has_dropout:
            x5 = self.dropout(x5)
        return [x1, x2, x3, x4, x5]


class VNetDecoder(nn.Module):
    """V-Net decoder with additive skips, shared by both subnets.

    Args:
        n_classes: output classes (logit channels).
        n_filters: base width; must match the encoder's.
        has_dropout: apply ``Dropout3d(0.5)`` to ``x9`` before the output conv (train mode).
    """

    def __init__(self, n_classes: int = 2, n_filters: int = 16, has_dropout: bool = True) -> None:
        super().__init__()
        f = n_filters
        self.block_five_up = Up(16 * f, 8 * f)
        self.block_six = ConvBlock(3, 8 * f, 8 * f)
        self.block_six_up = Up(8 * f, 4 * f)
        self.block_seven = ConvBlock(3, 4 * f, 4 * f)
        self.block_seven_up = Up(4 * f, 2 * f)
        self.block_eight = ConvBlock(2, 2 * f, 2 * f)
        self.block_eight_up = Up(2 * f, f)
        self.block_nine = ConvBlock(1, f, f)
        self.out_conv = out_conv(f, n_classes)
        self.has_dropout = has_dropout
        self.dropout = channel_dropout()

    def forward(self, features: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``[x1, ..., x5]`` into ``(logits, x9)``.

        Returns:
            logits (B, n_classes, X, Y, Z) and the representation x9 (B, n_filters, X, Y, Z),
            post-ReLU and after the dropout (in train mode about half its channels are zero
            per sample).
        """
        logits, x9, _ = self.decode_levels(features)
        return logits, x9

    def decode_levels(
        self, features: Features
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Decode ``[x1, ..., x5]`` and also hand back the deeper decoder features.

        Returns:
            ``(logits, x9, [x6, x7, x8])``: logits and x9 as :meth:`forward`; x6, x7, x8 are
            the outputs of ``block_six`` / ``block_seven`` / ``block_eight`` before their
            up-convolutions: (B, 8 n_filters, X/8, Y/8, Z/8), (B, 4 n_filters, X/4, Y/4, Z/4),
            (B, 2 n_filters, X/2, Y/2, Z/2) (URPC's pyramid heads, CPCL / AC-MT prototypes).
        """
        x1, x2, x3, x4, x5 = features
        x6 = self.block_six(self.block_five_up(x5) + x4)
        x7 = self.block_seven(self.block_six_up(x6) + x3)
        x8 = self.block_eight(self.block_seven_up(x7) + x2)
        x9 = self.block_nine(self.block_eight_up(x8) + x1)
        if self.has_dropout:
            x9 = self.dropout(x9)
        return self.out_conv(x9), x9, [x6, x7, x8]


class EncoderDecoder(nn.Module):
    """An encoder returning [x1..x5] and the shared V-Net decoder; subclasses set both."""

    encoder: nn.Module
    decoder: VNetDecoder

    def encode(self, x: torch.Tensor) -> Features:
        """Encoder features [x1..x5]; the bottleneck x5 is (B, 16 n_filters, X/16, Y/16, Z/16)."""
        check_spatial_shape(x.shape)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment ``x``.

        Args:
            x: (B, in_channels, X, Y, Z) with X, Y, Z multiples of 16.

        Returns:
            (logits (B, n_classes, X, Y, Z), features (B, n_filters, X, Y, Z)).

        Raises:
            InputError: when ``x`` is not 5-D or a spatial axis is not a multiple of 16.
        """
        return self.decoder(self.encode(x))


class VNet(EncoderDecoder):
    """Subnet B: V-Net, 9,448,866 parameters with the defaults.

    Args:
        in_channels: input image channels.
        n_classes: output classes.
        n_filters: base width.
        has_dropout: ``Dropout3d(0.5)`` on the bottleneck and on x9 (train mode only).
        init: weight initialisation, ``kaiming`` (spec 1.4) or ``torch`` (PyTorch's
            defaults, as in BCP's released V-Net); see
            :func:`~semiseg3d.models.blocks.init_weights`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        n_filters: int = 16,
        has_dropout: bool = True,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        self.n_filters, self.n_classes = n_filters, n_classes
        self.encoder = VNetEncoder(in_channels, n_filters, has_dropout)
        self.decoder = VNetDecoder(n_classes, n_filters, has_dropout)
        init_weights(self, init)


def vnet_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``encoder.*`` and ``decoder.*`` entries of the state dict of a V-Net with extra
    heads (URPC's pyramid heads, SS-Net's voxel MLPs): the state of a plain :class:`VNet`
    (its main head only)."""
    return {k: v for k, v in state.items() if k.startswith(("encoder.", "decoder."))}
