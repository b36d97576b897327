"""The dual model (Subnet A + Subnet B) and a builder for the paper's networks by name
(a method's networks, teachers included, come from its own ``build``:
:func:`semiseg3d.methods.networks`)."""

from __future__ import annotations

import torch
from torch import nn

from semiseg3d.errors import InputError
from semiseg3d.models.resnet34 import ResNet34EncDec
from semiseg3d.models.vnet import VNet

__all__ = ["MODEL_NAMES", "DualNet", "build_model"]

#: names accepted by :func:`build_model`
MODEL_NAMES = ("vnet", "resnet34", "dual")

Output = tuple[torch.Tensor, torch.Tensor]


class DualNet(nn.Module):
    """Both subnets side by side: ``.resnet`` (Subnet A) and ``.vnet`` (Subnet B).

    The two subnets share no parameters; 27,379,220 parameters in all with the defaults.
    Subnet A is constructed first, then Subnet B (this fixes which random numbers each
    initialisation draws under a given seed).

    Args:
        **subnet_args: what both subnets are built with (``in_channels``, ``n_classes``,
            ``n_filters``, ``has_dropout``; see :class:`~semiseg3d.models.vnet.VNet`).
    """

    def __init__(self, **subnet_args: int | bool) -> None:
        super().__init__()
        self.resnet = ResNet34EncDec(**subnet_args)  # type: ignore[arg-type]
        self.vnet = VNet(**subnet_args)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> tuple[Output, Output]:
        """Run both subnets on the same input.

        Args:
            x: (B, in_channels, X, Y, Z) with X, Y, Z multiples of 16.

        Returns:
            ``((z_a, f_a), (z_b, f_b))``: logits (B, n_classes, X, Y, Z) and features
            (B, n_filters, X, Y, Z) of Subnet A (ResNet) then Subnet B (V-Net).

        Raises:
            InputError: when ``x`` is not 5-D or a spatial axis is not a multiple of 16.
        """
        return self.resnet(x), self.vnet(x)


def build_model(name: str, **kwargs: int | bool) -> nn.Module:
    """A freshly initialised network by name.

    Args:
        name: ``"vnet"`` (Subnet B), ``"resnet34"`` (Subnet A) or ``"dual"`` (both).
        **kwargs: passed to the constructor (``in_channels``, ``n_classes``, ``n_filters``,
            ``has_dropout``).

    Raises:
        InputError: for an unknown name.
    """
    classes: dict[str, type[nn.Module]] = {
        "vnet": VNet,
        "resnet34": ResNet34EncDec,
        "dual": DualNet,
    }
    if name not in classes:
        raise InputError(
            f"model: unknown network {name!r}, expected one of {', '.join(MODEL_NAMES)}"
        )
    return classes[name](**kwargs)
