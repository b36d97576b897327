"""SASSNet's networks (baselines-more spec, section 3): DTC's segmenter
(:class:`~semiseg3d.models.baselines.VNetSDF`) and a discriminator on signed-distance maps.

:class:`SDFDiscriminator` (the original's ``FC3DDiscriminator``, ndf 64, no normalisation):
conv0 on the SDF map and conv1 on the image (each Conv3d 1->64, kernel 4, stride 2,
padding 1, bias), summed, LeakyReLU(0.2), Dropout3d(0.5); conv2 64->128 and conv3 128->256
(same kernel), each followed by LeakyReLU and Dropout3d(0.5); conv4 256->512, LeakyReLU;
global average pooling; Linear 512->2 (logit 1 = "labeled"). Each convolution maps a side s
to floor(s / 2); at 112 x 112 x 80 the conv4 map is 7 x 7 x 5 and the global average equals
the original's AvgPool3d(7, 7, 5), which fails at smaller crops. 11,020,290 parameters,
independent of the crop; PyTorch's default initialisation (the original's).

The discriminator takes ONE tensor, the SDF map and the image stacked on the channel axis,
so that the trainer's ``ctx.forward(net, x)`` can run it under the run's precision.
"""

from __future__ import annotations

import torch
from torch import nn

from semiseg3d.models.baselines import VNetSDF
from semiseg3d.models.blocks import ImageConv3d

__all__ = ["NDF", "SDFDiscriminator", "SASSNet", "discriminator_input"]

#: base width of the discriminator
NDF = 64


def discriminator_input(sdf: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The discriminator's input: ``(B, 2, X, Y, Z)``, channel 0 the SDF map (B, 1, ...),
    channel 1 the image (B, 1, ...)."""
    return torch.cat([sdf, image.to(sdf.dtype)], dim=1)


class SDFDiscriminator(nn.Module):
    """SASSNet's discriminator D (module docstring).

    Args:
        ndf: base width (64).
    """

    def __init__(self, ndf: int = NDF) -> None:
        super().__init__()
        conv = {"kernel_size": 4, "stride": 2, "padding": 1}
        self.conv0 = ImageConv3d(1, ndf, **conv)  # on the SDF map
        self.conv1 = ImageConv3d(1, ndf, **conv)  # on the image
        self.conv2 = nn.Conv3d(ndf, 2 * ndf, **conv)
        self.conv3 = nn.Conv3d(2 * ndf, 4 * ndf, **conv)
        self.conv4 = nn.Conv3d(4 * ndf, 8 * ndf, **conv)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.classifier = nn.Linear(8 * ndf, 2)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.2)
        self.dropout = nn.Dropout3d(0.5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv4 map before pooling: (B, 8 ndf, X/16, Y/16, Z/16) (floored per stage)."""
        if x.dim() != 5 or x.shape[1] != 2:
            raise ValueError(
                f"SDFDiscriminator: expected (B, 2, X, Y, Z) (SDF map, image), got {tuple(x.shape)}"
            )
        h = self.conv0(x[:, :1]) + self.conv1(x[:, 1:])
        h = self.dropout(self.leaky_relu(h))
        h = self.dropout(self.leaky_relu(self.conv2(h)))
        h = self.dropout(self.leaky_relu(self.conv3(h)))
        return self.leaky_relu(self.conv4(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify each sample as labeled (class 1) or unlabeled (class 0).

        Args:
            x: (B, 2, X, Y, Z): :func:`discriminator_input` of the SDF map and the image.

        Returns:
            (B, 2) logits.
        """
        return self.classifier(self.pool(self.features(x)).flatten(1))


class SASSNet(nn.Module):
    """Both SASSNet networks in one container (20,469,156 parameters): ``segmenter`` (trained
    by the run's SGD, the only network used at inference) and ``discriminator`` (trained by
    the method's own Adam). ``forward`` runs the segmenter and D on its SDF map (the cost of
    one training forward of both; for counting)."""

    def __init__(self) -> None:
        super().__init__()
        self.segmenter = VNetSDF()
        self.discriminator = SDFDiscriminator()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_s, d, D logits)`` for ``x`` (B, 1, X, Y, Z)."""
        z_s, sdf = self.segmenter(x)
        return z_s, sdf, self.discriminator(discriminator_input(sdf, x))
