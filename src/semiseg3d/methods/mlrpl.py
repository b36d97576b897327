"""ML-RPL (Su et al., MedIA 2024; baselines-more spec, section 8): mutual learning between
the decoders of one V-Net encoder with reliability-weighted pseudo-labels.

One forward of the whole batch gives each decoder k its logits z_k, softmax p_k and x9
features f_k. For every ordered pair (i, j), i != j, over ALL samples (labelled included):

- the more certain decoder teaches: ``m_ij = [u_i > u_j]`` (strict), ``u = H_1e-6(p)``;
- pseudo-label ``y_j = argmax p_j``; class prototypes of decoder j per sample
  (``normalise(mean of f_j over the voxels with y_j = c)``) and their cosines
  ``s_j,c(v) = cos(f_j(v), pi_j,c)``;
- reliability ``w_ij = sg[(1 - 1/2 sum_c (s_j,c - p_j,c)^2) m_ij]``;
- ``L_ij = sum CE(z_i, y_j) w_ij / (sum m_ij + 1e-6)``.

``L = 0.5 sum_k D_lin(p_k,l,1, y) + w(t) sum_{i != j} L_ij``, w ramping to 1.0 (``shared``:
ramp index t; ``own``: t + 1, as the original increments its counter first). Gradient only
through the cross-entropy into decoder i and the encoder. No teacher. Inference: decoder 1
loaded into a plain V-Net, softmax, argmax (= foreground > 0.5), no LCC.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg3d.methods.base import StepContext, VNetPartMethod, method_settings
from semiseg3d.methods.common import dice_lin, recipe_ramp

__all__ = [
    "LAMBDA",
    "W_MAX",
    "DEFAULT_LCC",
    "MLRPLSettings",
    "entropy",
    "class_prototypes",
    "prototype_cosines",
    "pair_weight",
    "weighted_ce",
    "mutual_term",
    "mlrpl_losses",
    "MLRPL",
]

LAMBDA = 0.5  #: weight of the supervised Dice sum
W_MAX = 1.0  #: final weight of the mutual term
ENTROPY_EPS = 1e-6
PROTO_EPS = 1e-6  #: added to the voxel count of a class in the prototype mean
COS_EPS = 1e-8
NORM_SUM_EPS = 1e-6  #: added to sum m_ij in L_ij
DEFAULT_LCC = False  #: the original test's ``nms`` defaults to 0


@dataclasses.dataclass(frozen=True)
class MLRPLSettings:
    """ML-RPL's options (``method_options``: ``decoders``, ``ce_input``).

    Attributes:
        decoders: K, 2 (released code: transposed + nearest) or 3 (adds MC-Net's trilinear
            decoder: the target paper's 15.25 M count).
        ce_input: what the mutual cross-entropy reads: ``logits`` (the current script,
            5ca2d87) or ``probs`` (the first upload, 4489dac: the softmax probabilities
            passed as logits, a double softmax).
    """

    decoders: int = 2
    ce_input: str = "logits"

    @classmethod
    def from_config(cls, cfg: Any) -> MLRPLSettings:
        """The run's ``method_options`` (validated by the method registry, defaults filled)."""
        return method_settings(cls, cfg)


def entropy(probs: Tensor, eps: float = ENTROPY_EPS) -> Tensor:
    """Voxel entropy ``-sum_c p_c ln(p_c + eps)`` in nats.

    Args:
        probs: (B, C, X, Y, Z) class probabilities.

    Returns:
        (B, X, Y, Z); 0.673010 for (0.6, 0.4), 0.500400 for (0.8, 0.2).
    """
    return -torch.sum(probs * torch.log(probs + eps), dim=1)


def class_prototypes(
    feats: Tensor, labels: Tensor, n_classes: int = 2, eps: float = PROTO_EPS
) -> Tensor:
    """Per-sample class prototypes: the L2-normalised mean feature of each class.

    ``pi_n,c = normalise(sum_v f_n(v) [y_n(v) = c] / (sum_v [y_n(v) = c] + eps))``; a class
    absent from sample n gives the zero vector (normalising keeps it zero).

    Args:
        feats: (B, F, X, Y, Z) features.
        labels: (B, X, Y, Z) integer labels in [0, n_classes).
        n_classes: C.
        eps: added to each class's voxel count.

    Returns:
        (B, C, F) prototypes, each of unit length or zero.
    """
    onehot = F.one_hot(labels.long(), n_classes).movedim(-1, 1).to(feats.dtype)  # (B,C,X,Y,Z)
    sums = torch.einsum("bfxyz,bcxyz->bcf", feats, onehot)
    counts = onehot.sum(dim=(2, 3, 4))  # (B, C)
    return F.normalize(sums / (counts[..., None] + eps), dim=-1)


def prototype_cosines(feats: Tensor, protos: Tensor, eps: float = COS_EPS) -> Tensor:
    """``s_c(v) = cos(f_n(v), pi_n,c)`` for every class and voxel of each sample.

    Args:
        feats: (B, F, X, Y, Z) features.
        protos: (B, C, F) prototypes of the same samples.
        eps: cosine epsilon (as ``torch.nn.functional.cosine_similarity``).

    Returns:
        (B, C, X, Y, Z) cosines in [-1, 1] (0 against a zero prototype).
    """
    return torch.stack(
        [
            F.cosine_similarity(feats, protos[:, c, :, None, None, None], dim=1, eps=eps)
            for c in range(protos.shape[1])
        ],
        dim=1,
    )


def pair_weight(probs_i: Tensor, probs_j: Tensor, cos_j: Tensor) -> tuple[Tensor, Tensor]:
    """The mask and reliability weight of the ordered pair (i taught by j), no gradient.

    ``m = [u_i > u_j]`` (strict: equal entropies give 0) and
    ``w = (1 - 1/2 sum_c (s_j,c - p_j,c)^2) m``.

    Args:
        probs_i, probs_j: (B, C, X, Y, Z) softmax of decoders i and j.
        cos_j: (B, C, X, Y, Z) cosines of j's features to j's prototypes.

    Returns:
        ``(m, w)``, each (B, X, Y, Z), detached.
    """
    with torch.no_grad():
        m = (entropy(probs_i) > entropy(probs_j)).to(probs_i.dtype)
        w = (1 - 0.5 * torch.sum((cos_j - probs_j) ** 2, dim=1)) * m
    return m, w


def weighted_ce(logits_i: Tensor, target: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """``sum_{n,v} CE(z_i(v), y(v)) w(v) / (sum_{n,v} m(v) + 1e-6)``.

    Args:
        logits_i: (B, C, X, Y, Z) logits of the taught decoder (keeps its graph).
        target: (B, X, Y, Z) integer pseudo-labels (constants).
        weight: (B, X, Y, Z) reliability weights (constants).
        mask: (B, X, Y, Z) the pair's mask m (constants).

    Returns:
        0-d tensor.
    """
    ce = F.cross_entropy(logits_i, target.long(), reduction="none")
    return torch.sum(ce * weight) / (torch.sum(mask) + NORM_SUM_EPS)


def mutual_term(logits_i: Tensor, probs_i: Tensor, probs_j: Tensor, feats_j: Tensor) -> Tensor:
    """``L_ij``: decoder i learns decoder j's pseudo-labels where j is more certain,
    weighted by how well j's prototypes agree with j's prediction.

    Args:
        logits_i: (B, C, X, Y, Z) logits of decoder i.
        probs_i, probs_j: (B, C, X, Y, Z) softmax of decoders i and j.
        feats_j: (B, F, X, Y, Z) x9 of decoder j (after its dropout).

    Returns:
        0-d tensor; gradient only through ``logits_i``.
    """
    with torch.no_grad():
        target = probs_j.argmax(dim=1)
        protos = class_prototypes(feats_j.detach(), target, probs_j.shape[1])
        cos_j = prototype_cosines(feats_j.detach(), protos)
    m, w = pair_weight(probs_i.detach(), probs_j.detach(), cos_j)
    return weighted_ce(logits_i, target, w, m)


def mlrpl_losses(
    logits: list[Tensor], feats: list[Tensor], label_l: Tensor, ce_input: str = "logits"
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """ML-RPL's two terms for one forward of the whole batch.

    Args:
        logits: K >= 2 tensors (B, 2, X, Y, Z), decoder 1 first, labelled samples first.
        feats: K tensors (B, F, X, Y, Z), each decoder's x9.
        label_l: (B_l, X, Y, Z) labels of the first B_l samples.
        ce_input: ``logits`` (current code) or ``probs`` (first upload: the cross-entropy
            of decoder i's probabilities taken as logits).

    Returns:
        ``(sup, cons, terms)``: ``sup = sum_k D_lin(p_k,l,1, y)``, ``cons = sum_{i != j}
        L_ij`` and per-pair values (detached) for logging.
    """
    bl = label_l.shape[0]
    probs = [torch.softmax(z, dim=1) for z in logits]
    sup = probs[0].new_zeros(())
    for p in probs:
        sup = sup + dice_lin(p[:bl, 1], label_l == 1)
    cons = probs[0].new_zeros(())
    terms: dict[str, Tensor] = {}
    for i in range(len(probs)):
        for j in range(len(probs)):
            if i != j:
                ce_in = logits[i] if ce_input == "logits" else probs[i]
                l_ij = mutual_term(ce_in, probs[i], probs[j], feats[j])
                terms[f"mutual_{i + 1}{j + 1}"] = l_ij.detach()
                cons = cons + l_ij
    return sup, cons, terms


class MLRPL(VNetPartMethod):
    """ML-RPL: one :class:`~semiseg3d.models.mlrpl.MLRPLNet` named ``mlrpl``."""

    reinit = "torch"  # the original keeps PyTorch's default initialisation

    default_lcc = DEFAULT_LCC

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.settings = MLRPLSettings.from_config(cfg)

    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        from semiseg3d.models.mlrpl import MLRPL_UPS, MLRPLNet

        model = MLRPLNet(MLRPL_UPS[self.settings.decoders])
        return model, {"mlrpl": model}

    def cons_weight(self, t: int) -> float:
        """``w(t)``: the ramp to 1.0 on ``floor(t / unit)`` (``shared``) or on
        ``floor((t + 1) / unit)`` (``own``: the original increments its counter first)."""
        cfg = self.cfg
        return recipe_ramp(t, cfg.recipe, W_MAX, cfg.rampup_length, cfg.rampup_unit)

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        from semiseg3d.models.mlrpl import split_outputs

        logits, feats = split_outputs(ctx.forward(self.nets["mlrpl"], image))
        sup, cons, pair_terms = mlrpl_losses(logits, feats, label_l, self.settings.ce_input)
        w = self.cons_weight(t)
        loss = LAMBDA * sup + w * cons
        terms = {
            "sup_dice": sup,
            "mutual": cons,
            **pair_terms,
            "cons_weight": torch.tensor(w),
            "loss": loss,
        }
        return loss, {k: v.detach() for k, v in terms.items()}

    def vnet_part(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Encoder + decoder 1 (the original's test network)."""
        from semiseg3d.models.baselines import mcnet_vnet_state

        return mcnet_vnet_state(state)
