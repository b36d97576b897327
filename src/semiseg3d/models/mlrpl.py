"""ML-RPL's network (baselines-more spec, section 8): one V-Net encoder shared by K V-Net
decoders that differ only in their up-sampling blocks, each handing back its logits and
its own x9 (the representation its prototypes are built from).

The released network (``mine3d_v1``) has K = 2: decoder 1 up-samples by transposed
convolution (the plain V-Net decoder), decoder 2 by nearest x2 + Conv3d 3x3x3 + BN + ReLU
(MC-Net+'s decoder 3, not MC-Net's trilinear decoder 2). 12,347,716 parameters, the same
count as MC-Net. ``mlrpl_decoders: 3`` adds MC-Net's trilinear decoder (15,246,566, the
count the target paper lists). The decoders are MC-Net's (:class:`MCNetDecoder`), so the
encoder plus decoder 1 loads into a plain V-Net with
:func:`~semiseg3d.models.baselines.mcnet_vnet_state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from semiseg3d.models.baselines import MultiDecoderVNet

__all__ = ["MLRPL_UPS", "MLRPLNet", "split_outputs"]

#: up-sampling kind of each decoder: K = 2 (released) and K = 3 (the paper's count)
MLRPL_UPS: dict[int, tuple[str, ...]] = {
    2: ("transpose", "nearest"),
    3: ("transpose", "nearest", "trilinear"),
}


class MLRPLNet(MultiDecoderVNet):
    """A V-Net encoder (bottleneck dropout applied once) and one decoder per entry of ``ups``.

    Decoder 1 (``decoders.0``) must be ``transpose`` so that the encoder and decoder 1 form a
    plain V-Net (ML-RPL's inference network).

    Args:
        ups: up-sampling kind per decoder, each ``transpose``, ``trilinear`` or ``nearest``;
            at least two, the first ``transpose``.
        vnet: ``in_channels``, ``n_classes``, ``n_filters``, ``has_dropout`` as for the V-Net
            (dropout 0.5 on the bottleneck and on each decoder's x9 in train mode).
    """

    def __init__(self, ups: Sequence[str] = MLRPL_UPS[2], **vnet: Any) -> None:
        ups = tuple(ups)
        if len(ups) < 2 or ups[0] != "transpose":
            raise ValueError(f"ups must have >= 2 entries, the first 'transpose'; got {ups}")
        super().__init__(ups, **vnet)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits and x9 of every decoder, as one flat tuple (see :func:`split_outputs`).

        Args:
            x: (B, in_channels, X, Y, Z), X, Y, Z multiples of 16.

        Returns:
            ``(z_1, ..., z_K, f_1, ..., f_K)``: logits (B, n_classes, X, Y, Z) of each
            decoder, then its x9 (B, n_filters, X, Y, Z) after its dropout. Decoder 1 first.
        """
        outs = self.decode_all(x)
        return tuple(z for z, _ in outs) + tuple(f for _, f in outs)


def split_outputs(
    out: Sequence[torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(z_1..z_K, f_1..f_K)`` -> ``([z_1..z_K], [f_1..f_K])``."""
    if len(out) % 2 or len(out) < 4:
        raise ValueError(f"expected 2K >= 4 tensors (logits then features), got {len(out)}")
    k = len(out) // 2
    return list(out[:k]), list(out[k:])
