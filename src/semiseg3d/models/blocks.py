"""Building blocks shared by both subnets (spec section 1.1) and their initialisation (1.4).

Every block works on 5-D tensors ``(B, C, X, Y, Z)`` and keeps working when the input is in
``torch.channels_last_3d`` memory format (nothing here depends on the layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from semiseg3d.errors import InputError

__all__ = [
    "DIVISOR",
    "IMAGE_CHANNELS_MAX",
    "ImageConv3d",
    "ConvBlock",
    "Down",
    "Up",
    "out_conv",
    "channel_dropout",
    "INIT_SCHEMES",
    "init_weights",
    "check_spatial_shape",
]

#: every spatial axis of a network input must be a multiple of this (4 stride-2 stages)
DIVISOR = 16
#: a convolution with at most this many input channels reads the image: see ImageConv3d
IMAGE_CHANNELS_MAX = 4
#: weight initialisations :func:`init_weights` knows
INIT_SCHEMES = ("kaiming", "torch")


class ImageConv3d(nn.Conv3d):
    """The ``nn.Conv3d`` that reads the image (at most :data:`IMAGE_CHANNELS_MAX` channels).

    Under CPU autocast it computes in float32 (input, weight and bias cast to float32,
    autocast off for this one layer) and returns its output in the autocast dtype, as an
    autocast convolution would: oneDNN's bf16 kernels for so few input channels are slower
    than its float32 ones (the 7x7x7 ResNet stem, batch 4 at 64 x 64 x 32: about 0.28 s
    forward + weight gradient in bf16 against 0.09 s in float32; ``bench/conv_layers.py``).
    On CUDA, and without autocast, it is a plain ``nn.Conv3d``. Parameters and state-dict
    keys are those of ``nn.Conv3d``; zero padding only.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"ImageConv3d supports zero padding only, got {self.padding_mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` (B, c_in, X, Y, Z)."""
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        dtype = torch.get_autocast_dtype("cpu")
        bias = None if self.bias is None else self.bias.float()
        with torch.autocast("cpu", enabled=False):
            out = F.conv3d(
                x.float(),
                self.weight.float(),
                bias,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )
        return out.to(dtype)


class ConvBlock(nn.Sequential):
    """``n_convs`` x [Conv3d 3x3x3 (padding 1, bias) -> BatchNorm3d -> ReLU], not residual.

    The first convolution maps ``c_in -> c_out``, the others ``c_out -> c_out``.
    Shape: ``(B, c_in, X, Y, Z) -> (B, c_out, X, Y, Z)``.

    Args:
        n_convs: number of conv-BN-ReLU stages (>= 1).
        c_in: input channels.
        c_out: output channels.
    """

    def __init__(self, n_convs: int, c_in: int, c_out: int) -> None:
        if n_convs < 1:
            raise ValueError(f"n_convs must be >= 1, got {n_convs}")
        layers: list[nn.Module] = []
        for i in range(n_convs):
            reads_image = i == 0 and c_in <= IMAGE_CHANNELS_MAX
            conv = ImageConv3d if reads_image else nn.Conv3d
            layers += [
                conv(c_in if i == 0 else c_out, c_out, kernel_size=3, padding=1, bias=True),
                nn.BatchNorm3d(c_out),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class Down(nn.Sequential):
    """Conv3d kernel 2, stride 2 (bias) -> BatchNorm3d -> ReLU.

    Shape: ``(B, c_in, X, Y, Z) -> (B, c_out, X/2, Y/2, Z/2)``.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv3d(c_in, c_out, kernel_size=2, stride=2, padding=0, bias=True),
            nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
        )


class Up(nn.Sequential):
    """ConvTranspose3d kernel 2, stride 2 (bias) -> BatchNorm3d -> ReLU.

    Shape: ``(B, c_in, X, Y, Z) -> (B, c_out, 2X, 2Y, 2Z)``.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.ConvTranspose3d(c_in, c_out, kernel_size=2, stride=2, padding=0, bias=True),
            nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
        )


def out_conv(c_in: int, n_classes: int) -> nn.Conv3d:
    """The 1x1x1 output convolution (bias): ``(B, c_in, ...) -> (B, n_classes, ...)`` logits."""
    return nn.Conv3d(c_in, n_classes, kernel_size=1, bias=True)


def channel_dropout() -> nn.Dropout3d:
    """``Dropout3d(p=0.5)``: in train mode zeroes whole channels per sample, survivors x2."""
    return nn.Dropout3d(p=0.5, inplace=False)


def init_weights(module: nn.Module, scheme: str = "kaiming") -> None:
    """Initialise every Conv3d, ConvTranspose3d and BatchNorm3d of ``module`` in place.

    Args:
        module: the network.
        scheme: ``kaiming`` (spec 1.4, the dual network's and MCF's): conv and transposed-conv
            weights Kaiming-normal (fan_in, gain sqrt(2), std ``sqrt(2 / fan_in)``), their
            biases PyTorch's default uniform; BatchNorm3d weight 1, bias 0 (no zero-gamma
            trick). ``torch``: PyTorch's own defaults (each layer's ``reset_parameters``),
            which MC-Net(+) and BCP keep: weights and biases uniform in
            ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (std ``1/sqrt(3 fan_in)``, 2.45 times
            smaller than Kaiming-normal), BatchNorm3d weight 1, bias 0. PyTorch's fan_in is
            ``weight.shape[1] * prod(kernel)``, i.e. ``c_out k^3`` for a transposed conv.

    Raises:
        ValueError: ``scheme`` not in :data:`INIT_SCHEMES`.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    for m in module.modules():
        if isinstance(m, nn.Conv3d | nn.ConvTranspose3d):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                m.reset_parameters()
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_spatial_shape(shape: Sequence[int] | torch.Size, what: str = "input") -> None:
    """Raise :class:`InputError` unless ``shape`` is ``(B, C, X, Y, Z)`` with X, Y, Z
    positive multiples of :data:`DIVISOR` (16).

    Args:
        shape: a full 5-D tensor shape.
        what: how to name the offending tensor in the message.
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) != 5:
        raise InputError(f"{what}: shape {dims} is not 5-D (B, C, X, Y, Z)")
    spatial = dims[2:]
    if any(s <= 0 or s % DIVISOR for s in spatial):
        raise InputError(
            f"{what}: spatial shape {spatial} (of {dims}) must be positive multiples of "
            f"{DIVISOR} in every axis"
        )
