"""The per-iteration objective of the dual-network method, in both modes (spec 2, 3).

``dual_objective`` takes both networks' outputs on one batch (labeled samples first) and
returns two scalars whose SUM the trainer backpropagates, plus every term for logging.

The switches and hyperparameters come as plain values in a :class:`DualSettings` (the
run config's keys of the same names; :meth:`DualSettings.of` takes them from any object
that has them, e.g. a :class:`~semiseg3d.config.run.TrainConfig`).

Paper mode (spec 3; ``mode == "paper"``)::

    loss_a = CE_A + Dice_A + lam CR_A + w_pl(t) (CPS_A + EFS_A + UE) + IC + [L = A] w_c(t) PGL
    loss_b = CE_B + Dice_B + lam CR_B + w_pl(t) (CPS_B + EFS_B)      + [L = B] w_c(t) PGL

with ``w_pl(t) = 1`` (``pl_rampup: none``, the paper's reading) or a sigmoid ramp-up to 1
(``pl_rampup: sigmoid``), and the CPS target chosen by ``cps_target`` (``threshold``: the
literal "p_fg >= tau_cps -> 1"; ``argmax``; ``confident``: argmax where the other network's
max probability >= tau_cps, others ignored).

Code-faithful mode (spec 2; ``mode == "code_faithful"``), the loser L collecting the
extra terms as in C (values identical to C's ``r_loss`` / ``v_loss``)::

    loss_L = CE_L + Dice_L + lam CR_L + EFS_L + w_c(t) PGL + UE + IC
    loss_W = CE_W + Dice_W + lam CR_W + EFS_W

where EFS are constants (no gradient), PGL is computed under ``no_grad`` (NaN with C's
inputs, never reaching a parameter; ``efs_entropy_input: probs`` takes the EFS / PGL
entropies of the probabilities instead of the raw logits, as LUSEG does: only the logged
EFS and PGL values change), UE has the temperature only before its argmax, and
there is no CPS term. IC (inter-network consistency) is one shared term, counted once.

The winner W is network B (V-Net) when ``Dice_B < Dice_A``, else A (ResNet); the loser L
is the other. It is decided on the device (no host round trip) and only routes terms.

Each ``use_*`` switch removes exactly its term; ``ic_distance = "none"`` removes IC.
Switches that describe the released code's fixed choices are ignored in code-faithful
mode: ``use_cps`` (C has no CPS), ``ue_temperature_in_kl`` (False), ``pgl_require_agreement``
(C's sets), ``pgl_third_term`` / ``pgl_proto_term_sign`` (always added).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from semiseg3d.losses.cce import (
    IGNORE_INDEX,
    class_argmax,
    cps_loss,
    cps_pseudo_label,
    efs_code_faithful,
    efs_loss,
    efs_target,
)
from semiseg3d.losses.consistency import inter_consistency
from semiseg3d.losses.cr import cr_loss, disagreement_mask
from semiseg3d.losses.pgl import pgl_code_faithful, pgl_loss, reliable_sets
from semiseg3d.losses.ramps import pseudo_label_weight, rampup_weight
from semiseg3d.losses.supervised import ce_loss, dice_loss
from semiseg3d.losses.ue import ue_loss

__all__ = [
    "DualSettings",
    "TERM_NAMES",
    "SUPONLY_TERM_NAMES",
    "DualTerms",
    "active_terms",
    "dual_terms",
    "dual_objective",
    "suponly_objective",
    "first_nonfinite",
]

#: Every key ``dual_objective`` can put in its ``terms`` dict, in logging order.
TERM_NAMES: tuple[str, ...] = (
    "sup_ce_a",
    "sup_dice_a",
    "cr_a",
    "sup_ce_b",
    "sup_dice_b",
    "cr_b",
    "ic",
    "cps_a",
    "cps_b",
    "efs_a",
    "efs_b",
    "ue",
    "pgl",
    "pgl_weight",
    "pl_weight",
    "winner",
    "loss_a",
    "loss_b",
)
#: Keys of ``suponly_objective``'s ``terms``.
SUPONLY_TERM_NAMES: tuple[str, ...] = ("sup_ce_b", "sup_dice_b", "loss")

Output = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class DualSettings:
    """The switches and hyperparameters of the dual objective, as plain values: the run
    config's keys of the same names (their meaning and defaults: the README's
    ``params.yaml`` reference; :meth:`of` takes them from a config).

    ``rampup_*`` set the PGL weight ``w_c(t)`` (:func:`~semiseg3d.losses.ramps.rampup_weight`)
    and, with ``pl_rampup: sigmoid``, the pseudo-label weight.
    """

    mode: str
    use_cr: bool
    use_cps: bool
    use_efs: bool
    use_ue: bool
    use_pgl: bool
    ic_distance: str
    efs_entropy_input: str
    cr_distance: str
    pgl_third_term: bool
    pgl_proto_term_sign: int
    pgl_require_agreement: bool
    ue_temperature_in_kl: bool
    tau: float
    lam: float
    T: float
    alpha: float
    tau_cps: float
    cps_target: str
    pl_rampup: str
    rampup_max: float
    rampup_length: int
    rampup_unit: int

    @classmethod
    def of(cls, source: Any) -> DualSettings:
        """The settings from any object with these attributes (a run config); a
        :class:`DualSettings` is returned as it is."""
        if isinstance(source, cls):
            return source
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})

    def pgl_weight(self, iteration: int) -> float:
        """``w_c(t)``: :func:`~semiseg3d.losses.ramps.rampup_weight` with ``rampup_*``."""
        return rampup_weight(iteration, self.rampup_max, self.rampup_length, self.rampup_unit)

    def pl_weight(self, iteration: int) -> float:
        """Weight of CPS, EFS and UE (:func:`~semiseg3d.losses.ramps.pseudo_label_weight`)."""
        return pseudo_label_weight(iteration, self.pl_rampup, self.rampup_length, self.rampup_unit)


@dataclass
class DualTerms:
    """Attached (graph-carrying) values of one iteration's objective.

    Attributes:
        terms: active loss terms by name (subset of :data:`TERM_NAMES` without
            ``pgl_weight``, ``winner``, ``loss_a``, ``loss_b``), unweighted.
        loss_a: scalar routed to network A (ResNet).
        loss_b: scalar routed to network B (V-Net).
        winner: 0-d float tensor, 1.0 when B (V-Net) won, 0.0 when A (ResNet) won.
        pgl_weight: ``w_c(t)`` when PGL is active, else None.
        pl_weight: weight of CPS, EFS and UE at this iteration (paper mode; 1 unless
            ``pl_rampup`` ramps them), None in code-faithful mode.
        diagnostics: detached 0-d values for the logs (paper mode), by name: true
            foreground fraction of the labeled patches (``diag_fg_true_l``), predicted
            (argmax) foreground fraction of each network on the unlabeled patches
            (``diag_fg_a_u``, ``diag_fg_b_u``), CPS target foreground / ignored fraction
            (of A's target, made from B), EFS ignored fraction and target foreground
            fraction.
    """

    terms: dict[str, Tensor]
    loss_a: Tensor
    loss_b: Tensor
    winner: Tensor
    pgl_weight: float | None
    pl_weight: float | None = None
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


def active_terms(settings: DualSettings | Any) -> tuple[str, ...]:
    """Names of the loss terms ``dual_objective`` produces under ``settings`` (for loggers;
    a run config is read with :meth:`DualSettings.of`)."""
    cfg = DualSettings.of(settings)
    paper = cfg.mode == "paper"
    on = {
        "cr_a": cfg.use_cr,
        "cr_b": cfg.use_cr,
        "ic": cfg.ic_distance != "none",
        "cps_a": paper and cfg.use_cps,
        "cps_b": paper and cfg.use_cps,
        "efs_a": cfg.use_efs,
        "efs_b": cfg.use_efs,
        "ue": cfg.use_ue,
        "pgl": cfg.use_pgl,
        "pgl_weight": cfg.use_pgl,
        "pl_weight": paper and cfg.pl_rampup != "none",
    }
    return tuple(name for name in TERM_NAMES if on.get(name, True))


@dataclass(frozen=True)
class _Step:
    """One call's inputs: float32 ``(z_a, f_a, z_b, f_b, y, B_l)``, settings, iteration
    ``t``, the PGL generator and the forced winner (tests)."""

    batch: tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]
    cfg: DualSettings
    t: int
    generator: torch.Generator | None
    force: int | None


def _check_batch(out_a: Output, out_b: Output, label_l: Tensor) -> int:
    za, fa = out_a
    zb, fb = out_b
    if za.shape != zb.shape or za.dim() != 5 or za.shape[1] != 2:
        raise ValueError(
            f"logits must both be (B, 2, X, Y, Z), got {tuple(za.shape)} and {tuple(zb.shape)}"
        )
    if fa.shape[0] != za.shape[0] or fb.shape[0] != za.shape[0] or fa.shape[2:] != za.shape[2:]:
        raise ValueError(
            f"features {tuple(fa.shape)} / {tuple(fb.shape)} do not match logits {tuple(za.shape)}"
        )
    n_l = label_l.shape[0]
    if label_l.shape[1:] != za.shape[2:] or not 1 <= n_l < za.shape[0]:
        raise ValueError(
            f"label_l {tuple(label_l.shape)} must be (B_l, X, Y, Z) with 1 <= B_l < B = {za.shape[0]}"
        )
    return n_l


def _loser_is_a(
    dice_a: Tensor, dice_b: Tensor, force_winner: int | None, device: torch.device
) -> Tensor:
    if force_winner is None:
        return (dice_b < dice_a).detach()
    if force_winner not in (0, 1):
        raise ValueError(f"force_winner must be 0 (A), 1 (B) or None, got {force_winner!r}")
    return torch.tensor(force_winner == 1, device=device)


def dual_terms(
    out_a: Output,
    out_b: Output,
    label_l: Tensor,
    settings: DualSettings | Any,
    iteration: int,
    generator: torch.Generator | None = None,
    *,
    force_winner: int | None = None,
) -> DualTerms:
    """Every active term with its graph, and the two routed scalars (see module doc).

    Args:
        out_a: ``(logits (B, 2, X, Y, Z), features (B, 16, X, Y, Z))`` of network A (ResNet).
        out_b: the same for network B (V-Net).
        label_l: (B_l, X, Y, Z) integer labels of the first B_l samples (1 <= B_l < B).
        settings: a :class:`DualSettings` (or a run config, read with
            :meth:`DualSettings.of`): ``mode``, ``use_*``, ``tau``, ``lam``, ``T``,
            ``alpha``, ``tau_cps``, ``cr_distance``, ``ic_distance``, PGL options, ramps.
        iteration: 0-based iteration index ``t`` (for ``w_c(t)``).
        generator: dedicated generator for PGL candidate sampling.
        force_winner: override the winner rule (0 = A, 1 = B); for tests.

    Returns:
        A :class:`DualTerms`. Losses are computed in float32 with autocast disabled.
    """
    cfg = DualSettings.of(settings)
    n_l = _check_batch(out_a, out_b, label_l)
    device = out_a[0].device
    with torch.autocast(device_type=device.type, enabled=False):
        za, fa = out_a[0].float(), out_a[1].float()
        zb, fb = out_b[0].float(), out_b[1].float()
        y = label_l.long()
        step = _Step((za, fa, zb, fb, y, n_l), cfg, iteration, generator, force_winner)
        if cfg.mode == "paper":
            return _paper(step)
        if cfg.mode == "code_faithful":
            return _code(step)
    raise ValueError(f"unknown mode {cfg.mode!r}")


def _shared(
    za: Tensor, zb: Tensor, y: Tensor, n_l: int, cfg: DualSettings
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Supervised terms, CR and IC (identical in both modes)."""
    pa = torch.softmax(za, dim=1)
    pb = torch.softmax(zb, dim=1)
    t: dict[str, Tensor] = {
        "sup_ce_a": ce_loss(za[:n_l], y),
        "sup_dice_a": dice_loss(pa[:n_l, 1], y == 1),
        "sup_ce_b": ce_loss(zb[:n_l], y),
        "sup_dice_b": dice_loss(pb[:n_l, 1], y == 1),
    }
    if cfg.use_cr:
        mask = disagreement_mask(pa[:n_l], pb[:n_l], cfg.tau)
        t["cr_a"] = cr_loss(pa[:n_l], y, mask, cfg.cr_distance)
        t["cr_b"] = cr_loss(pb[:n_l], y, mask, cfg.cr_distance)
    if cfg.ic_distance != "none":
        t["ic"] = inter_consistency(pa, pb, cfg.ic_distance)
    return pa, pb, t


def _sup(t: dict[str, Tensor], k: str, lam: float) -> Tensor:
    sup = t[f"sup_ce_{k}"] + t[f"sup_dice_{k}"]
    if f"cr_{k}" in t:
        sup = sup + lam * t[f"cr_{k}"]
    return sup


def _paper(step: _Step) -> DualTerms:
    za, fa, zb, fb, y, n_l = step.batch
    cfg, iteration, generator, force_winner = step.cfg, step.t, step.generator, step.force
    pa, pb, t = _shared(za, zb, y, n_l, cfg)
    loser_is_a = _loser_is_a(t["sup_dice_a"], t["sup_dice_b"], force_winner, za.device)
    pa_u, pb_u = pa[n_l:], pb[n_l:]
    if cfg.use_cps:
        t["cps_a"] = cps_loss(za[n_l:], pb_u, cfg.tau_cps, cfg.cps_target)
        t["cps_b"] = cps_loss(zb[n_l:], pa_u, cfg.tau_cps, cfg.cps_target)
    if cfg.use_efs or cfg.use_pgl:
        target, uncertain = efs_target(pa_u, pb_u, cfg.alpha)
        if cfg.use_efs:
            t["efs_a"] = efs_loss(za[n_l:], target)
            t["efs_b"] = efs_loss(zb[n_l:], target)
    if cfg.use_ue:
        t["ue"] = ue_loss(za, zb, cfg.T, cfg.ue_temperature_in_kl)
    w: float | None = None
    if cfg.use_pgl:
        with torch.no_grad():
            reliable, rel_label = reliable_sets(pa_u, pb_u, uncertain, cfg.pgl_require_agreement)
            loser_pred = torch.where(loser_is_a, class_argmax(pa_u), class_argmax(pb_u))
        f_loser = torch.where(loser_is_a, fa[n_l:], fb[n_l:])
        t["pgl"] = pgl_loss(
            f_loser,
            reliable,
            rel_label,
            loser_pred,
            generator,
            third_term=cfg.pgl_third_term,
            proto_sign=cfg.pgl_proto_term_sign,
        )
        w = cfg.pgl_weight(iteration)

    with torch.no_grad():
        diag = {
            "diag_fg_true_l": (y == 1).float().mean(),
            "diag_fg_a_u": class_argmax(pa_u).float().mean(),
            "diag_fg_b_u": class_argmax(pb_u).float().mean(),
        }
        if cfg.use_cps:
            cps_t = cps_pseudo_label(pb_u, cfg.tau_cps, cfg.cps_target)
            diag["diag_cps_fg"] = (cps_t == 1).float().mean()
            diag["diag_cps_ignored"] = (cps_t == IGNORE_INDEX).float().mean()
        if cfg.use_efs or cfg.use_pgl:
            diag["diag_efs_ignored"] = uncertain.float().mean()
            diag["diag_efs_fg"] = (target == 1).float().mean()
    pl_w = cfg.pl_weight(iteration)
    loss_a = _sup(t, "a", cfg.lam)
    loss_b = _sup(t, "b", cfg.lam)
    for name in ("cps", "efs"):
        if f"{name}_a" in t:
            loss_a = loss_a + pl_w * t[f"{name}_a"]
            loss_b = loss_b + pl_w * t[f"{name}_b"]
    if "ue" in t:
        loss_a = loss_a + pl_w * t["ue"]
    if "ic" in t:
        loss_a = loss_a + t["ic"]
    if w is not None:
        weighted = w * t["pgl"]
        zero = torch.zeros_like(weighted)
        loss_a = loss_a + torch.where(loser_is_a, weighted, zero)
        loss_b = loss_b + torch.where(loser_is_a, zero, weighted)
    return DualTerms(t, loss_a, loss_b, loser_is_a.float(), w, pl_w, diag)


def _code(step: _Step) -> DualTerms:
    za, fa, zb, fb, y, n_l = step.batch
    cfg, iteration, generator, force_winner = step.cfg, step.t, step.generator, step.force
    pa, pb, t = _shared(za, zb, y, n_l, cfg)
    if cfg.use_ue:
        t["ue"] = ue_loss(za, zb, cfg.T, temperature_in_kl=False)
    loser_is_a = _loser_is_a(t["sup_dice_a"], t["sup_dice_b"], force_winner, za.device)
    w: float | None = None
    if cfg.use_efs or cfg.use_pgl:
        pa_u = pa[n_l:].clone().detach()
        pb_u = pb[n_l:].clone().detach()
        # the released script takes the entropies of the raw logits; LUSEG of the probabilities
        if cfg.efs_entropy_input == "probs":
            ent_a, ent_b = pa_u, pb_u
        else:
            ent_a, ent_b = za[n_l:], zb[n_l:]
        efs_a, efs_b, target = efs_code_faithful(pa_u, pb_u, ent_a, ent_b, cfg.alpha)
        if cfg.use_efs:
            t["efs_a"], t["efs_b"] = efs_a, efs_b
        if cfg.use_pgl:
            with torch.no_grad():
                f_loser = torch.where(loser_is_a, fa[n_l:], fb[n_l:])
                loser_pred = torch.where(loser_is_a, class_argmax(pa_u), class_argmax(pb_u))
            t["pgl"] = pgl_code_faithful(f_loser, target, loser_pred, generator)
            w = cfg.pgl_weight(iteration)

    def routed(k: str, loser: bool) -> Tensor:
        total = _sup(t, k, cfg.lam)
        if f"efs_{k}" in t:
            total = total + t[f"efs_{k}"]
        if loser:
            if w is not None:
                total = total + w * t["pgl"]
            for name in ("ue", "ic"):
                if name in t:
                    total = total + t[name]
        return total

    loss_a = torch.where(loser_is_a, routed("a", True), routed("a", False))
    loss_b = torch.where(loser_is_a, routed("b", False), routed("b", True))
    return DualTerms(t, loss_a, loss_b, loser_is_a.float(), w)


def dual_objective(
    out_a: Output,
    out_b: Output,
    label_l: Tensor,
    settings: DualSettings | Any,
    iteration: int,
    generator: torch.Generator | None = None,
    *,
    force_winner: int | None = None,
    diagnostics: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One iteration's objective for the dual-network method.

    Args:
        out_a: ``(logits (B, 2, X, Y, Z), features (B, 16, X, Y, Z))`` of network A
            (ResNet34 encoder-decoder) on the whole batch, labeled samples first.
        out_b: the same for network B (V-Net).
        label_l: (B_l, X, Y, Z) integer labels (int64, or uint8) of the first B_l samples.
        settings: a :class:`DualSettings` (or a run config; see module doc).
        iteration: 0-based iteration index (ramp-up of the PGL weight).
        generator: dedicated :class:`torch.Generator` for PGL candidate sampling (any
            device; it is always consumed by the same number of draws in paper mode).
        force_winner: override the winner rule (0 = A/ResNet, 1 = B/V-Net); for tests.
        diagnostics: also put the paper-mode diagnostics (``diag_*``, see
            :class:`DualTerms`) into ``terms`` (the trainer logs them).

    Returns:
        ``(loss_a, loss_b, terms)``: the trainer backpropagates ``loss_a + loss_b``;
        ``terms`` maps each active name of :data:`TERM_NAMES` to a detached 0-d float32
        tensor (``winner``: 0 = ResNet/A won, 1 = V-Net/B won; ``pgl_weight`` = ``w_c(t)``).
        In code-faithful mode ``pgl`` and the loser's scalar are usually NaN, as in C;
        the parameter gradients are finite.
    """
    cfg = DualSettings.of(settings)
    res = dual_terms(out_a, out_b, label_l, cfg, iteration, generator, force_winner=force_winner)
    terms: dict[str, Tensor] = {}
    for name in TERM_NAMES:
        if name in res.terms:
            terms[name] = res.terms[name].detach()
    if res.pgl_weight is not None:
        terms["pgl_weight"] = torch.tensor(
            res.pgl_weight, dtype=torch.float32, device=res.loss_a.device
        )
    if res.pl_weight is not None and cfg.pl_rampup != "none":
        terms["pl_weight"] = torch.tensor(
            res.pl_weight, dtype=torch.float32, device=res.loss_a.device
        )
    if diagnostics:
        terms.update(res.diagnostics)
    terms["winner"] = res.winner.detach()
    terms["loss_a"] = res.loss_a.detach()
    terms["loss_b"] = res.loss_b.detach()
    return res.loss_a, res.loss_b, terms


def suponly_objective(out_b: Output, label: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """SupOnly baseline: ``CE + Dice`` of the V-Net on an all-labeled batch (spec 9).

    Args:
        out_b: ``(logits (B, 2, X, Y, Z), features)`` of the V-Net.
        label: (B, X, Y, Z) integer labels of every sample.

    Returns:
        ``(loss, terms)`` with ``terms`` = ``sup_ce_b``, ``sup_dice_b``, ``loss`` (detached).
    """
    z = out_b[0]
    if z.dim() != 5 or z.shape[0] != label.shape[0] or z.shape[2:] != label.shape[1:]:
        raise ValueError(f"label {tuple(label.shape)} does not match logits {tuple(z.shape)}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.float()
        y = label.long()
        ce = ce_loss(z, y)
        dice = dice_loss(torch.softmax(z, dim=1)[:, 1], y == 1)
        loss = ce + dice
    return loss, {"sup_ce_b": ce.detach(), "sup_dice_b": dice.detach(), "loss": loss.detach()}


def first_nonfinite(terms: Mapping[str, Tensor | float]) -> str | None:
    """Name of the first term (in the mapping's order) whose value is NaN or infinite.

    One host synchronisation for the whole mapping. Use it in paper mode: in
    code-faithful mode ``pgl`` (and the loser's scalar) are expected to be NaN.

    Args:
        terms: name -> scalar (0-d tensor or number), e.g. the dict of ``dual_objective``.

    Returns:
        The name, or None when every value is finite.
    """
    if not terms:
        return None
    names = list(terms)
    values = [torch.as_tensor(terms[n]).detach().reshape(-1).float() for n in names]
    device = values[0].device
    flags = torch.stack([torch.isfinite(v.to(device)).all() for v in values])
    finite = flags.tolist()
    for name, ok in zip(names, finite, strict=True):
        if not ok:
            return name
    return None
