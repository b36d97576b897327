"""SupOnly (spec 9): the V-Net on the labeled cases only, ``CE + Dice``
(:func:`~semiseg3d.losses.objective.suponly_objective`); the lower bound of Tables 1-3."""

from __future__ import annotations

from torch import Tensor, nn

from semiseg3d.errors import InputError
from semiseg3d.losses.objective import suponly_objective
from semiseg3d.methods.base import Method, StepContext

__all__ = ["SupOnlyMethod"]


class SupOnlyMethod(Method):
    """SupOnly: the V-Net on labeled data only, ``CE + Dice`` (spec 9)."""

    network = "semiseg3d.models.vnet:VNet"

    uses_unlabeled = False

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        out_b = ctx.forward(self.nets["vnet"], image, perturb=True)
        return suponly_objective(out_b, label_l)

    def inference_nets(self, nets: dict[str, nn.Module], subnet: str | None) -> list[nn.Module]:
        if subnet == "a":
            raise InputError("--subnet a: a SupOnly run has only the V-Net (subnet b)")
        return [nets["vnet"]]
