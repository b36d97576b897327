"""Networks: Subnet A (3D ResNet34 encoder-decoder), Subnet B (V-Net), the dual model.

Each subnet maps ``x`` (B, 1, X, Y, Z), X, Y, Z multiples of 16, to ``(logits (B, 2, X, Y, Z),
features (B, 16, X, Y, Z))``; :class:`DualNet` returns ``((z_a, f_a), (z_b, f_b))``.
"""

from __future__ import annotations

from semiseg3d.models.blocks import DIVISOR, check_spatial_shape
from semiseg3d.models.dual import MODEL_NAMES, DualNet, build_model
from semiseg3d.models.resnet34 import ResNet34EncDec
from semiseg3d.models.vnet import VNet

__all__ = [
    "DIVISOR",
    "MODEL_NAMES",
    "DualNet",
    "ResNet34EncDec",
    "VNet",
    "build_model",
    "check_spatial_shape",
]
