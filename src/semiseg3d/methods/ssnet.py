"""SS-Net (Wu et al., MICCAI 2022; baselines-more spec, section 4): a V-Net trained with
virtual adversarial training (VAT) on every sample and a foreground class-separation term
against a small prototype memory.

Per step ``t`` on the batch x (labeled first):

- ``L_sup = D_lin(p_l,1, y)`` (the cross-entropy is logged, never added);
- ``L_lds``: one VAT power iteration with the Dice distance ``D_lin^2`` between two-class
  probability maps, probe and direction normalised per sample (xi = eps = 10 at 112x112x80,
  rescaled with the crop, :func:`vat_magnitude`); the target pass updates BatchNorm running
  statistics, the two perturbed passes do not (:func:`frozen_bn_stats`);
- ``L_cl^l``, ``L_cl^u``: per-voxel features ``Q(P(x9))`` pulled towards the class memory
  (:func:`class_separation`), weighted by a learned selector; the memory holds at most 32
  projected features of correctly predicted FOREGROUND labeled voxels, rebuilt every step
  (:func:`select_memory`);
- ``L = L_sup + w(t) (L_lds + 0.1 (L_cl^l + L_cl^u))``, ``w`` the sigmoid ramp to 1 on
  ``floor(t / 150)`` (``shared``) or ``floor((t + 1) / 150)`` (``own``).

Inference: the V-Net alone (heads dropped), softmax, argmax; the own test keeps the largest
connected component (``DEFAULT_LCC``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semiseg3d.losses.supervised import ce_loss
from semiseg3d.methods.base import StepContext, VNetPartMethod, method_settings
from semiseg3d.methods.common import dice_lin, recipe_ramp
from semiseg3d.models.modes import eval_mode

__all__ = [
    "XI",
    "EPS",
    "REF_VOXELS",
    "MEMORY_ROWS",
    "W_CL",
    "W_MAX",
    "DEFAULT_LCC",
    "SSNetSettings",
    "vat_magnitude",
    "normalize_per_sample",
    "vat_distance",
    "frozen_bn_stats",
    "vat_direction",
    "lds_loss",
    "correct_mask",
    "select_memory",
    "class_separation",
    "ssnet_weight",
    "SSNetMethod",
]

#: VAT probe size and perturbation size at the original's 112 x 112 x 80 crop
XI = 10.0
EPS = 10.0
#: voxels of the original's crop (112 x 112 x 80): the reference of the per-voxel rule
REF_VOXELS = 112 * 112 * 80
#: rows kept per class in the prototype memory
MEMORY_ROWS = 32
#: weight of the two class-separation terms inside the ramped bracket
W_CL = 0.1
#: the ramp's final weight
W_MAX = 1.0
#: epsilon of the per-sample L2 normalisation
NORM_EPS = 1e-8
#: the original's test keeps the largest connected component (test_LA ``nms`` = 1)
DEFAULT_LCC = True

LogitsFn = Callable[[Tensor], Tensor]
RowFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SSNetSettings:
    """SS-Net's options (``method_options``: ``eps_rule``, ``bg_memory``, ``memory_pick``);
    defaults = the released code.

    Attributes:
        eps_rule: ``per_voxel`` (xi and eps scaled by sqrt(N / 1,003,520), the same
            per-voxel perturbation as the original's crop) or ``fixed`` (10 at any crop).
        bg_memory: also fill the background memory m_0 from correctly predicted background
            voxels (the paper's reading); false = the code (foreground only).
        memory_pick: which 32 features the memory keeps when more qualify: ``lowest``
            selector scores (the code) or ``highest`` (what its comment says).
    """

    eps_rule: str = "per_voxel"
    bg_memory: bool = False
    memory_pick: str = "lowest"

    @classmethod
    def from_config(cls, cfg: Any) -> SSNetSettings:
        """The run's ``method_options`` (validated by the method registry, defaults filled)."""
        return method_settings(cls, cfg)


def vat_magnitude(value: float, patch: Sequence[int], rule: str = "per_voxel") -> float:
    """The VAT size (xi or eps) used at crop ``patch``.

    The probe and the direction have unit L2 norm per sample over the whole crop, so their
    per-voxel RMS is ``1 / sqrt(N)``. ``per_voxel`` keeps the original's per-voxel size:
    ``value sqrt(N / 1,003,520)`` (10 -> 10 at 112x112x80, 9.3895 at 96^3, 3.6140 at
    64x64x32); ``fixed`` returns ``value``.

    Args:
        value: the size at 112 x 112 x 80.
        patch: crop (X, Y, Z) in voxels.
        rule: ``per_voxel`` or ``fixed``.
    """
    if rule == "fixed":
        return float(value)
    if rule != "per_voxel":
        raise ValueError(f"vat_magnitude: unknown rule {rule!r}")
    n = math.prod(int(s) for s in patch)
    return float(value) * math.sqrt(n / REF_VOXELS)


def normalize_per_sample(d: Tensor, eps: float = NORM_EPS) -> Tensor:
    """``d_n / (||d_n||_2 + eps)`` for every sample n (norm over all non-batch axes).

    Args:
        d: (B, ...) any float tensor.

    Returns:
        Tensor of the same shape; each sample has norm 1 up to ``eps``.
    """
    norm = torch.linalg.vector_norm(d.flatten(1), dim=1)
    return d / (norm + eps).view(-1, *([1] * (d.dim() - 1)))


def vat_distance(q: Tensor, p: Tensor) -> Tensor:
    """SS-Net's VAT distance ``D_lin^2(q, p) = 1 - (2 sum q p + 1e-8) / (sum q + sum p + 1e-8)``
    with the sums over every sample, BOTH class channels and every voxel.

    Args:
        q, p: (B, 2, X, Y, Z) probability maps.

    Returns:
        0-d tensor; 0.5 for two maps that are (0.5, 0.5) everywhere, 0 for equal one-hot maps.
    """
    return dice_lin(q, p)


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Inside the block every BatchNorm of ``module`` that tracks running statistics stops
    doing so: in train mode it normalises with the batch statistics and leaves its running
    mean, variance and batch counter untouched (SS-Net's perturbed VAT passes)."""
    switched = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    for m in switched:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in switched:
            m.track_running_stats = True


def vat_direction(
    logits_fn: LogitsFn, x: Tensor, p_target: Tensor, probe: Tensor, xi: float
) -> Tensor:
    """One power iteration: the adversarial direction ``r`` at ``x``.

    ``g = d D_lin^2(softmax(f(x + xi u)), p~) / d u``, ``r_n = g_n / (||g_n|| + 1e-8)``. Only
    the gradient with respect to the probe is taken (:func:`torch.autograd.grad`), so no
    parameter's ``.grad`` is touched.

    Args:
        logits_fn: ``x -> logits`` (B, 2, X, Y, Z) of the network (in the caller's BN mode).
        x: (B, 1, X, Y, Z) input.
        p_target: (B, 2, X, Y, Z) constant target probabilities p~.
        probe: (B, 1, X, Y, Z) unit-norm probe u (per sample).
        xi: probe size.

    Returns:
        (B, 1, X, Y, Z) direction, unit norm per sample, no graph.
    """
    u = probe.detach().requires_grad_(True)
    dist = vat_distance(torch.softmax(logits_fn(x + xi * u), dim=1), p_target.detach())
    (g,) = torch.autograd.grad(dist, u)
    return normalize_per_sample(g.detach())


def lds_loss(
    logits_fn: LogitsFn, x: Tensor, p_target: Tensor, direction: Tensor, eps: float
) -> Tensor:
    """``L_lds = D_lin^2(softmax(f(x + eps r)), p~)``; gradient to the network only.

    Args:
        logits_fn, x, p_target: as :func:`vat_direction`.
        direction: (B, 1, X, Y, Z) adversarial direction r (a constant).
        eps: perturbation size.
    """
    z = logits_fn(x + eps * direction.detach())
    return vat_distance(torch.softmax(z, dim=1), p_target.detach())


def correct_mask(pred: Tensor, label: Tensor, cls: int) -> Tensor:
    """Voxels predicted correctly as class ``cls``: ``(pred = y) and (pred = cls)``.

    Args:
        pred: (B, X, Y, Z) argmax prediction.
        label: (B, X, Y, Z) labels.
        cls: the class (1: the code's foreground-only memory).

    Returns:
        (B, X, Y, Z) bool.
    """
    return (pred == label) & (pred == cls)


def select_memory(
    features: Tensor,
    scores: Tensor | None,
    rows: int = MEMORY_ROWS,
    pick: str = "lowest",
) -> Tensor | None:
    """The memory rows of one class from this step's candidate features.

    More than ``rows`` candidates: sort by score (stable) and keep the ``rows`` lowest
    (``pick`` = ``lowest``, the code) or highest; otherwise keep all; none: ``None`` (the
    caller then keeps the previous memory).

    Args:
        features: (M, D) projected features.
        scores: (M,) selector scores (needed only when M > ``rows``).
        rows: memory size.
        pick: ``lowest`` or ``highest``.

    Returns:
        (min(M, rows), D) detached, or None when M = 0.
    """
    m = features.shape[0]
    if m == 0:
        return None
    if m <= rows:
        return features.detach()
    if scores is None:
        raise ValueError("select_memory: scores are needed for more than `rows` candidates")
    order = torch.sort(scores.detach(), stable=True, descending=pick == "highest").indices
    return features.detach()[order[:rows]]


def class_separation(
    q: Tensor,
    labels: Tensor,
    memory: Sequence[Tensor | None],
    weight_fns: Sequence[RowFn],
) -> Tensor:
    """SS-Net's class-to-memory term ``L_cl = (1/K) sum_c l_c`` over K = len(memory) classes.

    Class c is active iff its memory exists with more than one row and more than one row of
    ``q`` has label c. Then, for its rows q_i and memory rows m_j:
    ``delta_ij = 1 - cos(q_i, m_j)``, ``a_i = sigmoid(S_c(sg(q_i)))``,
    ``a^_i = a_i M / sum_i a_i`` (mean 1 over the M rows) and
    ``l_c = mean_{i, j} delta_ij a^_i``; the memory-side weights are 1 (the code divides each
    by itself). An inactive class adds 0; the sum is divided by K even then.

    Args:
        q: (R, D) predicted voxel features.
        labels: (R,) class of each row (ground truth or pseudo-label).
        memory: per class, (J, D) memory rows (constants) or None.
        weight_fns: per class, the selector ``(M, D) -> (M, 1)`` raw scores.

    Returns:
        0-d tensor (gradient into q, hence Q, P and the network, and into the selectors).
    """
    n_classes = len(memory)
    total = q.new_zeros(())
    for c, mem in enumerate(memory):
        if mem is None or mem.shape[0] <= 1:
            continue
        rows = q[labels == c]
        if rows.shape[0] <= 1:
            continue
        a = torch.sigmoid(weight_fns[c](rows.detach()))[:, 0]
        a_hat = a * (a.shape[0] / torch.sum(a))
        cos = F.normalize(rows, dim=1) @ F.normalize(mem.detach().to(rows.dtype), dim=1).T
        total = total + torch.mean((1.0 - cos) * a_hat[:, None])
    return total / n_classes


def ssnet_weight(t: int, recipe: str, length: int = 40, unit: int = 150) -> float:
    """``w(t)``: the sigmoid ramp to 1 on ``floor(t / unit)`` (``shared``) or on
    ``floor((t + 1) / unit)`` (``own``: the original increments its counter first)."""
    return recipe_ramp(t, recipe, W_MAX, length, unit)


def _rows(x: Tensor) -> Tensor:
    """(B, C, X, Y, Z) -> (B X Y Z, C): one row per voxel."""
    return x.movedim(1, -1).reshape(-1, x.shape[1])


class SSNetMethod(VNetPartMethod):
    """SS-Net: one :class:`~semiseg3d.models.ssnet.SSNet` named ``vnet`` (V-Net + heads).

    The prototype memory lives in the method and must survive a resume: the trainer saves
    :meth:`state_dict` and restores it with :meth:`load_state_dict`.
    """

    reinit = "torch"  # the original keeps PyTorch's default initialisation

    network = "semiseg3d.models.ssnet:SSNet"

    default_lcc = DEFAULT_LCC

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.settings = SSNetSettings.from_config(cfg)
        self.memory: list[Tensor | None] = [None, None]

    # -- method state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The prototype memory: ``{"memory": [m_0, m_1]}``, an absent class as (0, 32)."""
        from semiseg3d.models.ssnet import FEAT_DIM

        return {
            "memory": [
                torch.zeros(0, FEAT_DIM) if m is None else m.detach().clone() for m in self.memory
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave (onto the network's device)."""
        device = next(self.nets["vnet"].parameters()).device if self.nets else None
        self.memory = [
            None if m.shape[0] == 0 else m.detach().clone().to(device) for m in state["memory"]
        ]

    # -- one step ------------------------------------------------------------------------------
    def _update_memory(self, ctx: StepContext, feats_l: Tensor, pred_l: Tensor, y: Tensor) -> None:
        """Rebuild the memory of each remembered class from this step's labeled voxels."""
        net = self.nets["vnet"]
        classes = (0, 1) if self.settings.bg_memory else (1,)
        with torch.no_grad():
            for c in classes:
                cand = feats_l.movedim(1, -1)[correct_mask(pred_l, y, c)]
                if cand.shape[0] == 0:
                    continue  # keep the previous memory
                with eval_mode(net.projection_head):
                    f = ctx.forward(net.projection_head, cand)
                scores = None
                if f.shape[0] > MEMORY_ROWS:  # selector in train mode, as the original
                    scores = torch.sigmoid(ctx.forward(net.selectors[c], f))[:, 0]
                self.memory[c] = select_memory(f, scores, MEMORY_ROWS, self.settings.memory_pick)

    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cfg, s = self.cfg, self.settings
        net = self.nets["vnet"]
        bl = label_l.shape[0]
        z, e = ctx.forward(net, image)
        p = torch.softmax(z, dim=1)
        ce = ce_loss(z[:bl], label_l)  # logged only, as the original
        sup = dice_lin(p[:bl, 1], label_l == 1)
        pred = p.detach().argmax(dim=1)

        # class separation: memory first (this step's), then both slices
        self._update_memory(ctx, e[:bl].detach(), pred[:bl], label_l)

        def head(rows: Tensor) -> Tensor:
            return ctx.forward(net.prediction_head, ctx.forward(net.projection_head, rows))

        weight_fns = [
            (lambda r, k=k: ctx.forward(net.selectors[k], r)) for k in range(len(self.memory))
        ]
        cl_l = class_separation(head(_rows(e[:bl])), label_l.reshape(-1), self.memory, weight_fns)
        cl_u = class_separation(head(_rows(e[bl:])), pred[bl:].reshape(-1), self.memory, weight_fns)

        # VAT on the whole batch
        patch = tuple(image.shape[2:])
        xi = vat_magnitude(XI, patch, s.eps_rule)
        eps = vat_magnitude(EPS, patch, s.eps_rule)

        def logits_fn(x: Tensor) -> Tensor:
            return ctx.forward(net, x)[0]

        with torch.no_grad():  # updates the BN running statistics, as the original
            p_target = torch.softmax(logits_fn(image), dim=1)
        noise = torch.rand(
            image.shape, generator=ctx.noise_gen, device=image.device, dtype=torch.float32
        )
        probe = normalize_per_sample(noise - 0.5).to(image.dtype)
        with frozen_bn_stats(net):
            direction = vat_direction(logits_fn, image, p_target, probe, xi)
            lds = lds_loss(logits_fn, image, p_target, direction, eps)

        w = ssnet_weight(t, cfg.recipe, cfg.rampup_length, cfg.rampup_unit)
        loss = sup + w * (lds + W_CL * (cl_l + cl_u))
        mem = self.memory[1]
        terms = {
            "sup_dice": sup,
            "sup_ce": ce,
            "lds": lds,
            "cl_l": cl_l,
            "cl_u": cl_u,
            "memory_rows": torch.tensor(0.0 if mem is None else float(mem.shape[0])),
            "cons_weight": torch.tensor(w),
            "loss": loss,
        }
        return loss, {k: v.detach() for k, v in terms.items()}
