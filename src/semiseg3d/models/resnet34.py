"""Subnet A: 3D ResNet-34 encoder (base width 16) + the V-Net decoder (spec section 1.3).

The encoder returns five feature maps with exactly the V-Net encoder's shapes, so the
decoder is :class:`~semiseg3d.models.vnet.VNetDecoder` unchanged. Unlike the V-Net, there
is no dropout on the bottleneck; ``Dropout3d(0.5)`` is applied to x9 only.
"""

from __future__ import annotations

import torch
from torch import nn

from semiseg3d.models.blocks import ImageConv3d, init_weights
from semiseg3d.models.vnet import EncoderDecoder, Features, VNetDecoder

__all__ = ["BasicBlock", "ResNet34Encoder", "ResNet34EncDec"]

#: blocks per ResNet-34 stage
_LAYERS = (3, 4, 6, 3)


class BasicBlock(nn.Module):
    """Residual block: conv3 (stride s) -> BN -> ReLU -> conv3 -> BN, + shortcut, ReLU.

    Convolutions have no bias. The shortcut is the identity, or Conv3d 1x1x1 (stride s,
    no bias) -> BN when the channel count or the resolution changes.
    Shape: ``(B, c_in, X, Y, Z) -> (B, c_out, X/s, Y/s, Z/s)``.
    """

    #: (conv, BatchNorm) attribute pairs that inference may fold (semiseg3d.inference.fold)
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (B, c_in, X, Y, Z)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _layer(c_in: int, c_out: int, n_blocks: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(c_in, c_out, stride)]
    blocks += [BasicBlock(c_out, c_out) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


class ResNet34Encoder(nn.Module):
    """3D ResNet-34 encoder with the V-Net's five output shapes.

    Stem: Conv3d 7x7x7 (stride 1, padding 3, no bias) -> BN -> ReLU gives x1 at full
    resolution; layers 1-4 (3, 4, 6, 3 blocks; each starting with stride 2) give x2..x5 with
    2f, 4f, 8f, 16f channels (f = ``n_filters``).

    Args:
        in_channels: input image channels.
        n_filters: base width f.
    """

    #: (conv, BatchNorm) attribute pairs that inference may fold (semiseg3d.inference.fold)
    conv_bn_pairs = (("conv1", "bn1"),)

    def __init__(self, in_channels: int = 1, n_filters: int = 16) -> None:
        super().__init__()
        f = n_filters
        self.conv1 = ImageConv3d(in_channels, f, 7, stride=1, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(f)
        self.relu = nn.ReLU(inplace=True)
        widths = (2 * f, 4 * f, 8 * f, 16 * f)
        self.layer1 = _layer(f, widths[0], _LAYERS[0], 2)
        self.layer2 = _layer(widths[0], widths[1], _LAYERS[1], 2)
        self.layer3 = _layer(widths[1], widths[2], _LAYERS[2], 2)
        self.layer4 = _layer(widths[2], widths[3], _LAYERS[3], 2)

    def forward(self, x: torch.Tensor) -> Features:
        """Encode ``x`` (B, C_in, X, Y, Z) -> [x1 (B, f, X, ...), ..., x5 (B, 16f, X/16, ...)]."""
        x1 = self.relu(self.bn1(self.conv1(x)))
        x2 = self.layer1(x1)
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        x5 = self.layer4(x4)
        return [x1, x2, x3, x4, x5]


class ResNet34EncDec(EncoderDecoder):
    """Subnet A: ResNet-34 encoder + V-Net decoder, 17,930,354 parameters with the defaults.

    Args:
        in_channels: input image channels.
        n_classes: output classes.
        n_filters: base width.
        has_dropout: ``Dropout3d(0.5)`` on x9 (train mode only); never on the bottleneck.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        n_filters: int = 16,
        has_dropout: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = ResNet34Encoder(in_channels, n_filters)
        self.decoder = VNetDecoder(n_classes, n_filters, has_dropout)
        init_weights(self)
