"""The switches of the pseudo-label terms (issue 9): the CPS target and the ramp-up of CPS,
EFS and UE. Expected values are worked out by hand in the comments; each switch must change
exactly its own term(s) of the objective."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from test_losses_objective import _batch, _nets

from semiseg3d.config.run import TrainConfig
from semiseg3d.losses.cce import IGNORE_INDEX, cps_loss, cps_pseudo_label
from semiseg3d.losses.objective import dual_objective
from semiseg3d.losses.ramps import pseudo_label_weight


def _probs(fg: list[float]) -> torch.Tensor:
    p1 = torch.tensor(fg, dtype=torch.float32).reshape(1, len(fg), 1, 1)
    return torch.stack([1 - p1, p1], dim=1)  # (1, 2, N, 1, 1)


# other net fg probabilities; tau_cps = 0.6
_FG = [0.9, 0.55, 0.45, 0.3, 0.6]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # literal: fg >= 0.6 -> 1, the uncertain 0.55 becomes background
        ("threshold", [1, 0, 0, 0, 1]),
        # plain argmax (ties to class 0 do not occur here)
        ("argmax", [1, 1, 0, 0, 1]),
        # argmax where max(p) >= 0.6: 0.55 (max 0.55) and 0.45 (max 0.55) are ignored
        ("confident", [1, IGNORE_INDEX, IGNORE_INDEX, 0, 1]),
    ],
)
def test_cps_targets_by_hand(target: str, expected: list[int]) -> None:
    label = cps_pseudo_label(_probs(_FG), 0.6, target)
    assert label.reshape(-1).tolist() == expected


def test_cps_confident_loss_is_the_mean_over_kept_voxels() -> None:
    # logits z1 - z0 = d per voxel; CE for label 1 = ln(1 + e^-d), for label 0 = ln(1 + e^d)
    d = [2.0, -1.0, 0.5, -3.0, 0.0]
    z = torch.zeros(1, 2, 5, 1, 1)
    z[0, 1, :, 0, 0] = torch.tensor(d)
    z.requires_grad_(True)
    loss = cps_loss(z, _probs(_FG), 0.6, "confident")
    kept = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(-3.0)), math.log1p(1.0)]
    assert loss.item() == pytest.approx(sum(kept) / 3, rel=1e-6)
    loss.backward()
    # the ignored voxels 1 and 2 get no gradient, the kept ones do
    g = z.grad[0, 1, :, 0, 0]
    assert g[1].item() == 0.0 and g[2].item() == 0.0 and g[0].item() != 0.0


def test_cps_confident_all_ignored_is_zero() -> None:
    z = torch.randn(1, 2, 3, 1, 1, requires_grad=True)
    loss = cps_loss(z, _probs([0.5, 0.45, 0.52]), 0.6, "confident")
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad.abs().sum().item() == 0.0


def test_cps_unknown_target_is_an_error() -> None:
    with pytest.raises(ValueError, match="cps target"):
        cps_pseudo_label(_probs(_FG), 0.6, "soft")


def test_pseudo_label_weight_by_hand() -> None:
    def none(t: int) -> float:
        return pseudo_label_weight(t, "none", 40, 15)

    def ramp(t: int) -> float:
        return pseudo_label_weight(t, "sigmoid", 40, 15)

    assert none(0) == 1.0 and none(599) == 1.0
    assert ramp(0) == pytest.approx(math.exp(-5.0))
    # t = 300: floor(300 / 15) = 20 -> exp(-5 (1 - 20/40)^2) = exp(-1.25)
    assert ramp(300) == pytest.approx(math.exp(-1.25))
    assert ramp(600) == 1.0 and ramp(5000) == 1.0


def _objective(cfg: TrainConfig, t: int = 300):
    net_a, net_b = _nets()
    x, y = _batch()
    la, lb, terms = dual_objective(
        net_a(x), net_b(x), y, cfg, t, torch.Generator().manual_seed(0), force_winner=1
    )
    return (la + lb).detach(), terms


# the paper read literally, so that each switch below is a change from it
BASE = TrainConfig(alpha=20.0, cps_target="threshold", pl_rampup="none")


def test_ramp_scales_exactly_cps_efs_and_ue() -> None:
    total, t = _objective(BASE)
    ramped_total, r = _objective(dataclasses.replace(BASE, pl_rampup="sigmoid"))
    w = math.exp(-5.0 * (1 - min(300 // BASE.rampup_unit, 40) / 40) ** 2)
    assert r["pl_weight"].item() == pytest.approx(w)
    assert "pl_weight" not in t
    for name in t:
        if name not in ("loss_a", "loss_b"):
            torch.testing.assert_close(r[name], t[name])  # every unweighted term unchanged
    scaled = t["cps_a"] + t["cps_b"] + t["efs_a"] + t["efs_b"] + t["ue"]
    assert scaled.item() > 0
    assert (total - ramped_total).item() == pytest.approx((1 - w) * scaled.item(), rel=1e-5)


@pytest.mark.parametrize("target", ["argmax", "confident"])
def test_cps_target_changes_only_the_cps_terms(target: str) -> None:
    total, t = _objective(BASE)
    other_total, o = _objective(dataclasses.replace(BASE, cps_target=target))
    assert set(o) == set(t)
    for name in t:
        if name in ("cps_a", "cps_b", "loss_a", "loss_b"):
            continue
        torch.testing.assert_close(o[name], t[name])
    delta = (o["cps_a"] + o["cps_b"]) - (t["cps_a"] + t["cps_b"])
    assert (other_total - total).item() == pytest.approx(delta.item(), rel=1e-5, abs=1e-6)
    assert not torch.equal(o["cps_a"], t["cps_a"])


def test_diagnostics_are_logged_only_when_asked() -> None:
    net_a, net_b = _nets()
    x, y = _batch()
    _, _, plain = dual_objective(net_a(x), net_b(x), y, BASE, 0)
    _, _, diag = dual_objective(net_a(x), net_b(x), y, BASE, 0, diagnostics=True)
    assert not any(k.startswith("diag_") for k in plain)
    assert diag["diag_fg_true_l"].item() == pytest.approx((y == 1).float().mean().item())
    for name in ("diag_fg_a_u", "diag_fg_b_u", "diag_cps_fg", "diag_efs_ignored", "diag_efs_fg"):
        assert 0.0 <= diag[name].item() <= 1.0


def test_unlabeled_truth_by_hand() -> None:
    from semiseg3d.methods.dual import unlabeled_truth

    # 1 labeled + 1 unlabeled sample of 4 voxels; truth of the unlabeled one: [1, 1, 0, 0]
    label_u = torch.tensor([[1, 1, 0, 0]]).reshape(1, 4, 1, 1)
    za = torch.zeros(2, 2, 4, 1, 1)
    za[1, 1, :, 0, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # A predicts [1, 0, 1, 0]
    zb = torch.zeros(2, 2, 4, 1, 1)
    zb[1, 1, :, 0, 0] = torch.tensor([1.0, 1.0, -1.0, -1.0])  # B predicts the truth
    got = unlabeled_truth(za, zb, label_u)
    assert got["diag_fg_true_u"].item() == 0.5
    assert got["diag_dice_a_u"].item() == pytest.approx(2 * 1 / (2 + 2))
    assert got["diag_dice_b_u"].item() == 1.0
    missing = unlabeled_truth(za, zb, torch.full_like(label_u, -1))
    assert all(math.isnan(v.item()) for v in missing.values())
