"""SASSNet (Li et al., MICCAI 2020; baselines-more spec, section 3): DTC's V-Net with a
signed-distance (SDF) head, trained adversarially against a discriminator D that tells the
SDF maps of labeled samples from those of unlabeled ones.

Per step ``t`` (labeled samples first):

1. ``(z_s, d) = f(x)`` on the whole batch; ``L_seg = D_sq(sigma(z_s,l), y)`` (the original's
   BCE is logged, never added); ``L_sdf = mean (d_l - g)^2`` with DTC's SDF target g;
2. generator term with D in eval mode and frozen: ``L_adv = CE(D(d_u, x_u), 1)``, gradient into
   the segmenter through d_u;
3. ``L = L_seg + 0.3 L_sdf + r(t; w_adv) L_adv``; the trainer's SGD step on the segmenter;
4. in :meth:`SASSNetMethod.after_step`: the updated segmenter in eval mode without gradient
   gives d' on the whole batch; D in train mode; ``L_D = CE(D(d', x), c)`` with c = 1 for the
   labeled and 0 for the unlabeled samples; one step of the method's own Adam (lr 1e-4,
   betas (0.9, 0.99)) on D.

D and its Adam state are method state (:meth:`~SASSNetMethod.state_dict`). Inference: the
segmentation head, ``sigma(z_s) > 0.5``; no largest-component post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg3d.methods.base import Method, StepContext, method_settings
from semiseg3d.methods.common import dice_sq, ramp
from semiseg3d.methods.dtc import sdf_target
from semiseg3d.models.modes import eval_mode
from semiseg3d.models.probs import ProbFn, sigmoid_head

__all__ = [
    "BETA",
    "W_ADV_LOW",
    "W_ADV_HIGH",
    "D_LR",
    "D_BETAS",
    "DEFAULT_LCC",
    "SASSNetSettings",
    "adversarial_weight",
    "sdf_mse",
    "generator_targets",
    "discriminator_targets",
    "adversarial_loss",
    "discriminator_loss",
    "SASSNetMethod",
]

#: weight of the SDF regression
BETA = 0.3
#: adversarial weight with 10 % labeled (README "best setting": 8 labeled LA cases)
W_ADV_LOW = 0.015
#: adversarial weight with 20 % labeled (16 LA cases; the script's default)
W_ADV_HIGH = 0.01
#: the discriminator's Adam
D_LR = 1e-4
D_BETAS = (0.9, 0.99)
#: the original's test keeps no largest connected component (``nms`` 0)
DEFAULT_LCC = False
#: labeled fractions up to this use W_ADV_LOW
LOW_RATIO_MAX = 0.15


@dataclass(frozen=True)
class SASSNetSettings:
    """SASSNet's option (``method_options.w_adv``).

    Attributes:
        w_adv: final adversarial weight; None (default) = by the labeled fraction: 0.015 up
            to 15 % labeled (the README's 8-of-80 setting), 0.01 above (16 of 80, the
            script default); see :func:`adversarial_weight`.
    """

    w_adv: float | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> SASSNetSettings:
        """The run's ``method_options`` (validated by the method registry, defaults filled)."""
        return method_settings(cls, cfg)


def adversarial_weight(settings: SASSNetSettings, cfg: Any) -> float:
    """The final adversarial weight w_adv of a run.

    ``method_options.w_adv`` when set; otherwise from the labeled fraction: ``labeled_ratio``, or
    the grid's ``extra["ratio"]`` (percent); 0.015 up to 15 %, 0.01 above; 0.01 (the
    script's default) when the fraction is unknown.
    """
    if settings.w_adv is not None:
        return float(settings.w_adv)
    ratio = getattr(cfg, "labeled_ratio", None)
    if ratio is None:
        pct = (getattr(cfg, "extra", None) or {}).get("ratio")
        ratio = None if pct is None else float(pct) / 100.0
    if ratio is None:
        return W_ADV_HIGH
    return W_ADV_LOW if ratio <= LOW_RATIO_MAX else W_ADV_HIGH


def sdf_mse(sdf_pred: Tensor, sdf_gt: Tensor) -> Tensor:
    """``L_sdf = mean (d - g)^2`` over the labeled samples and voxels.

    Args:
        sdf_pred: (B_l, X, Y, Z) predicted SDF ``tanh(z_d)``.
        sdf_gt: (B_l, X, Y, Z) targets (:func:`~semiseg3d.methods.dtc.sdf_target`); a sample
            that is NaN (all foreground: undefined) is left out.

    Returns:
        0-d tensor (0 with a graph when no sample is usable).
    """
    valid = ~torch.isnan(sdf_gt.flatten(1)).any(dim=1)
    if bool(valid.all()):
        return torch.mean((sdf_pred - sdf_gt) ** 2)
    if not bool(valid.any()):
        return sdf_pred.sum() * 0.0
    return torch.mean((sdf_pred[valid] - sdf_gt[valid]) ** 2)


def generator_targets(batch_unlabeled: int, device: torch.device | str = "cpu") -> Tensor:
    """The generator's targets: class 1 ("labeled") for each of the B_u unlabeled samples."""
    return torch.ones(batch_unlabeled, dtype=torch.long, device=device)


def discriminator_targets(
    batch_labeled: int, batch_unlabeled: int, device: torch.device | str = "cpu"
) -> Tensor:
    """D's targets: B_l ones (labeled) then B_u zeros (unlabeled)."""
    return torch.cat(
        [
            torch.ones(batch_labeled, dtype=torch.long, device=device),
            torch.zeros(batch_unlabeled, dtype=torch.long, device=device),
        ]
    )


def adversarial_loss(logits_u: Tensor) -> Tensor:
    """``L_adv = mean_n CE(D(d_n, x_n), 1)`` over the unlabeled samples.

    Args:
        logits_u: (B_u, 2) D's logits on the unlabeled samples.
    """
    return F.cross_entropy(logits_u, generator_targets(logits_u.shape[0], logits_u.device))


def discriminator_loss(logits: Tensor, batch_labeled: int) -> Tensor:
    """``L_D = mean_n CE(D(d'_n, x_n), c_n)``, c = 1 for the first ``batch_labeled`` samples, 0
    for the rest.

    Args:
        logits: (B, 2) D's logits on the whole batch, labeled samples first.
        batch_labeled: B_l.
    """
    b = logits.shape[0]
    return F.cross_entropy(
        logits, discriminator_targets(batch_labeled, b - batch_labeled, logits.device)
    )


class SASSNetMethod(Method):
    """SASSNet: the segmenter ``vnet`` (:class:`~semiseg3d.models.baselines.VNetSDF`, the
    run's SGD) and the discriminator D (the method's own Adam, stepped in :meth:`after_step`).

    D lives in the container that :meth:`build` returns (so the trainer moves it to the
    device with the segmenter) but not among the trained networks: the trainer gives it no
    SGD optimizer and does not save it; :meth:`state_dict` carries D's weights and its Adam
    state through checkpoints.
    """

    reinit = "torch"  # the original keeps PyTorch's default initialisation

    default_lcc = DEFAULT_LCC

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.settings = SASSNetSettings.from_config(cfg)
        self.w_adv = adversarial_weight(self.settings, cfg)
        self.disc: nn.Module | None = None
        self.d_opt: torch.optim.Optimizer | None = None
        self._pending: tuple[StepContext, Tensor, int] | None = None
        self._last_d_loss: Tensor | None = None

    # -- networks ----------------------------------------------------------------------------
    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        from semiseg3d.models.sassnet import SASSNet

        model = SASSNet()
        self.disc = model.discriminator
        return model, {"vnet": model.segmenter}

    def attach(self, nets: dict[str, nn.Module], teachers: dict[str, nn.Module]) -> None:
        """Remember the networks; put D beside the segmenter and give it its Adam."""
        super().attach(nets, teachers)
        if self.disc is None:
            raise RuntimeError("SASSNetMethod.attach: build() must come first (it makes D)")
        self.disc.to(next(nets["vnet"].parameters()).device)
        self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=D_LR, betas=D_BETAS)

    # -- method state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"discriminator": D's state, "optimizer": its Adam state}`` and, after a D
        step, ``"last_d_loss"`` (logged by the next step as ``disc_prev``)."""
        if self.disc is None or self.d_opt is None:
            raise RuntimeError("SASSNetMethod.state_dict: build() and attach() first")
        state: dict[str, Any] = {
            "discriminator": self.disc.state_dict(),
            "optimizer": self.d_opt.state_dict(),
        }
        if self._last_d_loss is not None:
            state["last_d_loss"] = self._last_d_loss.detach().cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore D and its Adam from :meth:`state_dict` (after :meth:`attach`)."""
        if self.disc is None or self.d_opt is None:
            raise RuntimeError("SASSNetMethod.load_state_dict: build() and attach() first")
        self.disc.load_state_dict(state["discriminator"])
        self.d_opt.load_state_dict(state["optimizer"])
        last = state.get("last_d_loss")
        self._last_d_loss = None if last is None else last.to(next(self.disc.parameters()).device)

    # -- one step ----------------------------------------------------------------------------
    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        from semiseg3d.models.sassnet import discriminator_input

        assert self.disc is not None
        cfg = self.cfg
        bl = label_l.shape[0]
        seg, sdf = ctx.forward(self.nets["vnet"], image)
        gt = torch.from_numpy(sdf_target(label_l, skip_full=True)).to(sdf.device)
        prob = torch.sigmoid(seg[:, 0])
        l_seg = dice_sq(prob[:bl], label_l == 1)
        bce = F.binary_cross_entropy_with_logits(seg[:bl, 0], label_l.float())  # logged only
        l_sdf = sdf_mse(sdf[:bl, 0], gt)
        with eval_mode(self.disc, frozen=True):
            logits_u = ctx.forward(self.disc, discriminator_input(sdf[bl:], image[bl:]))
        l_adv = adversarial_loss(logits_u)
        w = ramp(t, self.w_adv, cfg.rampup_length, cfg.rampup_unit)
        loss = l_seg + BETA * l_sdf + w * l_adv
        self._pending = (ctx, image.detach(), bl)
        terms = {
            "sup_dice": l_seg,
            "sup_bce": bce,
            "sdf": l_sdf,
            "adv": l_adv,
            "cons_weight": torch.tensor(w),
            "loss": loss,
        }
        if self._last_d_loss is not None:
            terms["disc_prev"] = self._last_d_loss  # L_D of the previous step's D update
        return loss, {k: v.detach() for k, v in terms.items()}

    def after_step(self, t: int) -> None:
        """D's step on the batch of step ``t``, with the segmenter as updated by it."""
        from semiseg3d.models.sassnet import discriminator_input

        if self._pending is None:
            return
        assert self.disc is not None and self.d_opt is not None
        ctx, image, bl = self._pending
        self._pending = None
        with eval_mode(self.nets["vnet"]), torch.no_grad():
            _, sdf = ctx.forward(self.nets["vnet"], image)
        self.disc.train()
        logits = ctx.forward(self.disc, discriminator_input(sdf, image))
        l_d = discriminator_loss(logits, bl)
        self.d_opt.zero_grad(set_to_none=True)
        l_d.backward()
        self.d_opt.step()
        self._last_d_loss = l_d.detach()

    # -- inference -----------------------------------------------------------------------------
    def prob_fn(self, members: list[nn.Module]) -> ProbFn:
        """The segmentation head: ``(1 - sigma(z_s), sigma(z_s))``."""
        (net,) = members
        return sigmoid_head(net)
