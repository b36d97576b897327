"""The V-Net that also hands back one inner feature map (baselines-more spec, sections 6-7):
CPCL's student and teacher (``vnet_MTPD``: x8; the script's default ``vnet``: x5) and AC-MT
P-Err's teacher (x8).

:class:`FeatureVNet` is a :class:`~semiseg3d.models.vnet.VNet` (same layers, same state-dict
keys, 9,448,866 parameters) whose forward adds the chosen feature map to the logits and x9.
The original stores the map detached; here it keeps its graph and the method detaches it
(CPCL's ``cpcl_proto_grad`` switch needs the graph).
"""

from __future__ import annotations

import torch

from semiseg3d.models.vnet import VNet

__all__ = ["FEATURES", "FeatureVNet"]

#: feature name -> (channels as a multiple of n_filters, down-sampling factor)
FEATURES: dict[str, tuple[int, int]] = {"x8": (2, 2), "x5": (16, 16)}


class FeatureVNet(VNet):
    """V-Net returning ``(logits, x9, feature)``.

    Args:
        feature: ``x8`` (block_eight output before its up-convolution, 2 n_filters channels
            at 1/2 resolution) or ``x5`` (the bottleneck after its dropout, 16 n_filters
            channels at 1/16).
        in_channels, n_classes, n_filters, has_dropout: as for :class:`VNet`.
    """

    def __init__(
        self,
        feature: str = "x8",
        in_channels: int = 1,
        n_classes: int = 2,
        n_filters: int = 16,
        has_dropout: bool = True,
    ) -> None:
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {list(FEATURES)}, got {feature!r}")
        super().__init__(in_channels, n_classes, n_filters, has_dropout)
        self.feature = feature

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Segment ``x`` and hand back the chosen feature map.

        Args:
            x: (B, in_channels, X, Y, Z), X, Y, Z multiples of 16.

        Returns:
            logits (B, n_classes, X, Y, Z), x9 (B, n_filters, X, Y, Z) and the feature:
            x8 (B, 2 n_filters, X/2, Y/2, Z/2) or x5 (B, 16 n_filters, X/16, Y/16, Z/16).
        """
        features = self.encode(x)
        logits, x9, (_, _, x8) = self.decoder.decode_levels(features)
        return logits, x9, x8 if self.feature == "x8" else features[4]
