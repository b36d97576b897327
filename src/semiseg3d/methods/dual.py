"""The paper's dual network (spec 2-4), in both modes: ``paper`` (the paper's formulation)
and ``code_faithful`` (the released script term by term).

Subnet A (``resnet``, the ResNet-34 encoder-decoder) and Subnet B (``vnet``) each take one
SGD optimizer; both step on the gradient of ``loss_a + loss_b`` of
:func:`~semiseg3d.losses.objective.dual_objective`, whose terms are the paper's components,
one module each under :mod:`semiseg3d.losses`. Inference: the mean softmax of both subnets
(``eval_subnet`` picks one). Paper-mode runs also log diagnostics against the true labels
of the unlabeled patches where the files have them (:func:`unlabeled_truth`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semiseg3d.config.run import TrainConfig
from semiseg3d.errors import InputError
from semiseg3d.losses.objective import DualSettings, dual_objective
from semiseg3d.methods.base import Method, StepContext
from semiseg3d.models import DualNet

__all__ = ["DualMethod", "unlabeled_truth"]


def unlabeled_truth(logits_a: Tensor, logits_b: Tensor, label_u: Tensor) -> dict[str, Tensor]:
    """Diagnostics against the true labels of the unlabeled patches, when the files have them.

    Benchmarks on fully labeled data (LA-lite) keep the labels of the "unlabeled" cases on
    disk; they never enter a loss, but they tell how good the pseudo-labels are. Returns
    ``diag_fg_true_u`` (true foreground fraction of the unlabeled patches) and
    ``diag_dice_a_u`` / ``diag_dice_b_u`` (Dice of each network's argmax against it), all
    NaN when any unlabeled voxel has no label (``label < 0``). No host synchronisation.

    Args:
        logits_a, logits_b: (B, 2, X, Y, Z) logits of the whole batch (labeled first).
        label_u: (B_u, X, Y, Z) labels of the unlabeled samples (-1 where absent).
    """
    with torch.no_grad():
        b_u = label_u.shape[0]
        known = (label_u >= 0).all()
        truth = label_u == 1
        out = {"diag_fg_true_u": truth.float().mean()}
        for name, logits in (("a", logits_a), ("b", logits_b)):
            pred = logits[-b_u:, 1] > logits[-b_u:, 0]
            inter = (pred & truth).sum().float()
            total = (pred.sum() + truth.sum()).float()
            out[f"diag_dice_{name}_u"] = 2 * inter / total.clamp(min=1)
        nan = torch.tensor(float("nan"), device=label_u.device)
        return {k: torch.where(known, v, nan) for k, v in out.items()}


class DualMethod(Method):
    """The paper's dual network (spec 2-4): ``dual_objective``; both subnets step on the
    gradient of ``loss_a + loss_b``.

    Args:
        cfg: the run config; its dual-objective keys become :attr:`settings`.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        #: the objective's switches and hyperparameters, as plain values
        self.settings = DualSettings.of(cfg)

    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        model = DualNet()
        return model, {"resnet": model.resnet, "vnet": model.vnet}

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        out_a = ctx.forward(self.nets["resnet"], image, perturb=True)
        out_b = ctx.forward(self.nets["vnet"], image, perturb=True)
        loss_a, loss_b, terms = dual_objective(
            out_a, out_b, label_l, self.settings, t, ctx.pgl_gen, diagnostics=True
        )
        if self.cfg.mode == "paper":
            terms.update(unlabeled_truth(out_a[0], out_b[0], ctx.label_u))
        return loss_a + loss_b, terms

    def inference_nets(self, nets: dict[str, nn.Module], subnet: str | None) -> list[nn.Module]:
        choice = subnet or self.cfg.eval_subnet
        if choice not in ("both", "a", "b"):
            raise InputError(f"--subnet must be one of both, a, b; got {choice!r}")
        return {
            "both": [nets["resnet"], nets["vnet"]],
            "a": [nets["resnet"]],
            "b": [nets["vnet"]],
        }[choice]
