"""MC-Net (K = 2) and MC-Net+ (K = 3) (Wu et al.; baselines spec, section 4): K decoders
on one V-Net encoder, each pushed towards the others' sharpened predictions.

``L = 0.5 sum_k D_lin(p_k,l,1, y) + w(t) sum_{i != j} mean (p_i - s(p_j))^2``, w ramping to
1 (``shared``: ramp index t; ``own``: t + 1, as the original increments first).
Inference: decoder 1 loaded into a plain V-Net (``mcnet_infer: decoder1``), or the mean of
the K decoders' softmaxes (``mean``). The network keeps PyTorch's default initialisation
(:data:`INIT`), as the original's does (ycwu1997/MC-Net sets none).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semiseg3d.config.run import TrainConfig
from semiseg3d.methods.base import StepContext, VNetPartMethod
from semiseg3d.methods.common import dice_lin, recipe_ramp, sharpen

__all__ = ["LAMBDA", "TAU", "W_MAX", "INIT", "mc_loss", "MCNetMethod"]

LAMBDA = 0.5
TAU = 0.1
W_MAX = 1.0
#: weight initialisation of the network (models.blocks.init_weights): the original's
#: PyTorch defaults, not spec 1.4's Kaiming-normal (docs/baselines.md, "how it was checked")
INIT = "torch"


def mc_loss(probs: list[Tensor], tau: float = TAU, detach_target: bool = False) -> Tensor:
    """Mutual consistency over ordered pairs: ``sum_{i != j} mean (p_i - s(p_j))^2``.

    Args:
        probs: K >= 2 softmax outputs, each (B, 2, X, Y, Z).
        tau: sharpening temperature.
        detach_target: stop the gradient through ``s(p_j)`` (the original does not).

    Returns:
        0-d tensor (K (K - 1) terms; 0.146654 each when every output is (0.4, 0.6)).
    """
    total = probs[0].new_zeros(())
    for j, p_j in enumerate(probs):
        target = sharpen(p_j.detach() if detach_target else p_j, tau)
        for i, p_i in enumerate(probs):
            if i != j:
                total = total + torch.mean((p_i - target) ** 2)
    return total


class MCNetMethod(VNetPartMethod):
    """MC-Net / MC-Net+: one :class:`~semiseg3d.models.baselines.MCNet` named ``mcnet``.

    Args:
        cfg: the run config (``method`` ``mcnet`` -> K = 2, ``mcnet_plus`` -> K = 3).
    """

    inference_keys = ("mcnet_infer",)

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.k = 3 if cfg.method == "mcnet_plus" else 2

    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        from semiseg3d.models.baselines import MCNet

        model = MCNet(self.k, init=INIT)
        return model, {"mcnet": model}

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        bl = label_l.shape[0]
        logits = ctx.forward(self.nets["mcnet"], image)
        probs = [torch.softmax(z, dim=1) for z in logits]
        seg = sum((dice_lin(p[:bl, 1], label_l == 1) for p in probs), probs[0].new_zeros(()))
        mc = mc_loss(probs, TAU, cfg.mcnet_detach_target)
        w = recipe_ramp(t, cfg.recipe, W_MAX, cfg.rampup_length, cfg.rampup_unit)
        loss = LAMBDA * seg + w * mc
        terms = {"sup_dice": seg, "mc": mc, "cons_weight": torch.tensor(w), "loss": loss}
        return loss, {k: v.detach() for k, v in terms.items()}

    def vnet_part(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Encoder + decoder 1 (``mcnet_infer: decoder1``, the published test)."""
        from semiseg3d.models.baselines import mcnet_vnet_state

        return mcnet_vnet_state(state)

    def mean_heads(self) -> bool:
        return self.cfg.mcnet_infer == "mean"
