"""Each loss term on tiny hand-made tensors.

Expected values are worked out by hand (in the comments) or recomputed independently with
plain NumPy in the test; nothing here is a value printed by the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semiseg3d.losses.cce import (
    IGNORE_INDEX,
    class_argmax,
    cps_loss,
    efs_code_faithful,
    efs_loss,
    efs_target,
    entropy,
    percentile,
)
from semiseg3d.losses.consistency import inter_consistency
from semiseg3d.losses.cr import confidence_mask, cr_loss, disagreement_mask
from semiseg3d.losses.pgl import (
    pgl_code_faithful,
    pgl_loss,
    reliable_sets,
    sample_indices,
    sample_subset,
)
from semiseg3d.losses.ramps import lr_at, poly_lr, rampup_weight, sigmoid_rampup, step_lr
from semiseg3d.losses.supervised import ce_loss, dice_loss
from semiseg3d.losses.ue import ue_loss

# --------------------------------------------------------------------------- helpers


def probs_from_fg(fg: list[float], shape: tuple[int, ...]) -> torch.Tensor:
    """(1, 2, *shape) probabilities with the given foreground values (no softmax)."""
    p1 = torch.tensor(fg, dtype=torch.float32).reshape(1, *shape)
    return torch.stack([1 - p1, p1], dim=1)


def logits_from_fg(fg: list[float], shape: tuple[int, ...]) -> torch.Tensor:
    """(1, 2, *shape) logits (0, logit(p)) whose softmax has the given fg probabilities."""
    p = torch.tensor(fg, dtype=torch.float64)
    z1 = torch.log(p / (1 - p)).float().reshape(1, *shape)
    return torch.stack([torch.zeros_like(z1), z1], dim=1)


def np_softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_ce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-voxel CE of logits z (B, K, ...) and labels y (B, ...)."""
    logp = np.log(np_softmax(z.astype(np.float64)))
    return -np.take_along_axis(logp, y[:, None].astype(np.int64), axis=1)[:, 0]


# --------------------------------------------------------------------------- supervised


def test_ce_hand_value() -> None:
    # logits (0, ln 3) -> p = (1/4, 3/4); label 1 -> -ln 0.75 = 0.2876821; label 0 -> ln 4
    z = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]]).T.reshape(1, 2, 2, 1, 1)
    y = torch.tensor([1, 0]).reshape(1, 2, 1, 1)
    expected = (0.2876821 + math.log(4.0)) / 2
    assert ce_loss(z, y).item() == pytest.approx(expected, rel=1e-6)


def test_ce_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 2, 3, 2, 2, generator=g)
    y = torch.randint(0, 2, (2, 3, 2, 2), generator=g)
    assert ce_loss(z, y).item() == pytest.approx(np_ce(z.numpy(), y.numpy()).mean(), rel=1e-5)


def test_dice_hand_value() -> None:
    # p = [0.8, 0.6, 0.1, 0.0], g = [1, 1, 0, 0]: sum pg = 1.4, sum p^2 = 1.01, sum g^2 = 2
    # 1 - (2.8 + 1e-5) / (3.01 + 1e-5) = 0.0697672
    p = torch.tensor([0.8, 0.6, 0.1, 0.0]).reshape(1, 2, 2, 1)
    g = torch.tensor([1, 1, 0, 0]).reshape(1, 2, 2, 1).bool()
    assert dice_loss(p, g).item() == pytest.approx(0.0697672, abs=1e-6)


def test_dice_is_one_batch_dice_not_mean_of_samples() -> None:
    # sample 1: perfect (p = g = 1); sample 2: empty g, p = 0.5 everywhere (2 voxels)
    # joint: sum pg = 2, sum p^2 = 2 + 0.5, sum g^2 = 2 -> 1 - 4/4.5 = 0.111111
    p = torch.tensor([1.0, 1.0, 0.5, 0.5]).reshape(2, 2, 1, 1)
    g = torch.tensor([1, 1, 0, 0]).reshape(2, 2, 1, 1)
    assert dice_loss(p, g).item() == pytest.approx(1 - (4 + 1e-5) / (4.5 + 1e-5), abs=1e-7)


# --------------------------------------------------------------------------- CR


# fg probabilities of two nets on 4 labeled voxels, tau = 0.6
# m_A = [1, 0, 1, 0] (0.7, 0.9 >= 0.6); m_B = [0, 1, 1, 1] (0.65, 0.95, 0.6 >= 0.6)
# M = m_A XOR m_B = [1, 1, 0, 1]
_FG_A = [0.7, 0.55, 0.9, 0.2]
_FG_B = [0.3, 0.65, 0.95, 0.6]
_Y_CR = [1, 0, 1, 0]


def test_confidence_and_xor_masks() -> None:
    pa, pb = probs_from_fg(_FG_A, (4, 1, 1)), probs_from_fg(_FG_B, (4, 1, 1))
    assert confidence_mask(pa, 0.6).flatten().tolist() == [True, False, True, False]
    assert confidence_mask(pb, 0.6).flatten().tolist() == [False, True, True, True]
    assert disagreement_mask(pa, pb, 0.6).flatten().tolist() == [True, True, False, True]


def test_cr_mse_and_kl_hand_values() -> None:
    pa, pb = probs_from_fg(_FG_A, (4, 1, 1)), probs_from_fg(_FG_B, (4, 1, 1))
    y = torch.tensor(_Y_CR).reshape(1, 4, 1, 1)
    m = disagreement_mask(pa, pb, 0.6)
    # mse, net A: d = [0.09, 0.3025, 0.01, 0.04]; M d sums to 0.4325; / 3 = 0.1441667
    assert cr_loss(pa, y, m, "mse").item() == pytest.approx(0.4325 / 3, rel=1e-5)
    # kl, net A: -ln p_y on M: -ln 0.7, -ln 0.45, -ln 0.8 = 0.356675 + 0.798508 + 0.223144
    assert cr_loss(pa, y, m, "kl").item() == pytest.approx(1.378327 / 3, rel=1e-5)
    # mse, net B: d = [0.49, 0.4225, 0.0025, 0.36] -> (0.49 + 0.4225 + 0.36) / 3
    assert cr_loss(pb, y, m, "mse").item() == pytest.approx(1.2725 / 3, rel=1e-5)


def test_cr_empty_mask_is_zero_and_gradient_only_to_its_net() -> None:
    pa = probs_from_fg(_FG_A, (4, 1, 1)).requires_grad_(True)
    y = torch.tensor(_Y_CR).reshape(1, 4, 1, 1)
    empty = torch.zeros(1, 4, 1, 1, dtype=torch.bool)
    assert cr_loss(pa, y, empty).item() == 0.0
    m = torch.tensor([1, 0, 0, 0]).reshape(1, 4, 1, 1).bool()
    cr_loss(pa, y, m).backward()
    # d/dp1 of (p1 - 1)^2 at p1 = 0.7 is -0.6, on voxel 0 only
    assert pa.grad[0, 1].flatten().tolist() == pytest.approx([-0.6, 0, 0, 0], abs=1e-6)


def test_cr_rejects_unknown_distance() -> None:
    p = probs_from_fg(_FG_A, (4, 1, 1))
    with pytest.raises(ValueError, match="kind"):
        cr_loss(p, torch.zeros(1, 4, 1, 1, dtype=torch.long), torch.ones(1, 4, 1, 1), "l1")


# --------------------------------------------------------------------------- inter-network


def test_inter_consistency_hand_values() -> None:
    # voxel 1: pA = (0, 1), pB = (0.5, 0.5): cos = 0.5 / 0.7071068 = 0.7071068
    # voxel 2: identical -> 0.  mean(1 - cos) = 0.2928932 / 2
    pa = probs_from_fg([1.0, 0.3], (2, 1, 1)).requires_grad_(True)
    pb = probs_from_fg([0.5, 0.3], (2, 1, 1)).requires_grad_(True)
    cos = inter_consistency(pa, pb, "cosine")
    assert cos.item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2, rel=1e-6)
    # mse over all 4 elements: (0.5^2 + 0.5^2 + 0 + 0) / 4 = 0.125
    assert inter_consistency(pa, pb, "mse").item() == pytest.approx(0.125, rel=1e-6)
    assert inter_consistency(pa, pb, "none").item() == 0.0
    cos.backward()
    assert pa.grad.abs().sum() > 0 and pb.grad.abs().sum() > 0


# --------------------------------------------------------------------------- entropy, percentile


def test_class_argmax_equals_torch_argmax_with_ties_and_nan() -> None:
    nan = float("nan")
    pairs = [(0.2, 0.8), (0.8, 0.2), (0.5, 0.5), (nan, 1.0), (1.0, nan), (nan, nan), (-3.0, -3.0)]
    x = torch.tensor(pairs).T.reshape(1, 2, len(pairs), 1, 1)
    assert torch.equal(class_argmax(x), torch.argmax(x, dim=1))
    x3 = torch.randn(2, 3, 4, 4, 2)
    assert torch.equal(class_argmax(x3), torch.argmax(x3, dim=1))


def test_entropy_hand_values() -> None:
    p = probs_from_fg([0.5, 1.0, 0.2], (3, 1, 1))
    # ln 2; ~0; -(0.2 ln 0.2 + 0.8 ln 0.8) = 0.5004024
    assert entropy(p).flatten().tolist() == pytest.approx([math.log(2), 0.0, 0.5004024], abs=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 10.0, 20.0, 33.3, 50.0, 70.0, 80.0, 99.9, 100.0])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 40_961])
def test_percentile_equals_numpy(alpha: float, n: int) -> None:
    rng = np.random.default_rng(n)
    x = (rng.random(n) * 3.0).astype(np.float32)
    x[: n // 5] = x[0]  # ties
    got = percentile(torch.from_numpy(x), alpha)
    assert got.dtype == torch.float32
    assert got.item() == np.percentile(x, alpha)  # exactly, not approximately


def test_percentile_nan_propagates_like_numpy() -> None:
    x = np.array([1.0, np.nan, 3.0, 0.5], dtype=np.float32)
    assert np.isnan(np.percentile(x, 20))
    assert torch.isnan(percentile(torch.from_numpy(x), 20))


# --------------------------------------------------------------------------- CPS


def test_cps_hand_and_gradient_routing() -> None:
    # other net fg = [0.7, 0.5, 0.6, 0.59] with tau_cps = 0.6 -> pseudo [1, 0, 1, 0]
    other = probs_from_fg([0.7, 0.5, 0.6, 0.59], (4, 1, 1)).requires_grad_(True)
    z = torch.tensor([[0.0, 1.0], [0.0, -2.0], [1.0, 0.0], [0.0, 0.5]]).T.reshape(1, 2, 4, 1, 1)
    z.requires_grad_(True)
    loss = cps_loss(z, other, 0.6)
    # CE per voxel: ln(1 + e^-1), ln(1 + e^-2), ln(1 + e^1), ln(1 + e^0.5)
    per = [
        math.log1p(math.exp(-1)),
        math.log1p(math.exp(-2)),
        math.log1p(math.e),
        math.log1p(math.exp(0.5)),
    ]
    assert loss.item() == pytest.approx(sum(per) / 4, rel=1e-6)
    loss.backward()
    assert z.grad.abs().sum() > 0
    assert other.grad is None


# --------------------------------------------------------------------------- EFS

# Worked example, 4 unlabeled voxels, alpha = 50:
#   A fg = [0.9, 0.6, 0.48, 0.2] -> H_A = [0.325083, 0.673012, 0.692347, 0.500402]
#       P50(H_A) = (0.500402 + 0.673012) / 2 = 0.586707 -> H_A >= : [F, T, T, F]
#   B fg = [0.3, 0.95, 0.45, 0.55] -> H_B = [0.610864, 0.198515, 0.688139, 0.688139]
#       P50(H_B) = (0.610864 + 0.688139) / 2 = 0.649502 -> H_B >= : [F, F, T, T]
#   I = [F, F, T, F]; argmax A = [1, 1, 0, 0], argmax B = [0, 1, 0, 1] -> union [1, 1, 0, 1]
#   target = [1, 1, 2, 1]; w = 4 / 3
_EFS_A = [0.9, 0.6, 0.48, 0.2]
_EFS_B = [0.3, 0.95, 0.45, 0.55]


def test_efs_target_hand_example() -> None:
    pa, pb = probs_from_fg(_EFS_A, (2, 2, 1)), probs_from_fg(_EFS_B, (2, 2, 1))
    target, uncertain = efs_target(pa, pb, 50.0)
    assert uncertain.flatten().tolist() == [False, False, True, False]
    assert target.flatten().tolist() == [1, 1, IGNORE_INDEX, 1]


def test_efs_loss_hand_example() -> None:
    target = torch.tensor([1, 1, IGNORE_INDEX, 1]).reshape(1, 2, 2, 1)
    z = torch.tensor([[0.0, 2.0], [0.0, -1.0], [0.0, 9.0], [1.0, 0.0]]).T.reshape(1, 2, 2, 2, 1)
    z.requires_grad_(True)
    loss = efs_loss(z, target)
    # CE on voxels 0, 1, 3: ln(1 + e^-2), ln(1 + e^1), ln(1 + e^1); mean x 4/3
    ce = [math.log1p(math.exp(-2)), math.log1p(math.e), math.log1p(math.e)]
    assert loss.item() == pytest.approx(4 / 3 * sum(ce) / 3, rel=1e-6)
    loss.backward()
    assert z.grad[0, :, 1, 0, 0].abs().sum() == 0  # the ignored voxel sends no gradient
    assert z.grad[0, :, 0, 0, 0].abs().sum() > 0


def _np_efs(
    pa: np.ndarray, pb: np.ndarray, za: np.ndarray, alpha: float
) -> tuple[np.ndarray, float]:
    """Independent NumPy EFS: target and loss for net A (float64 math)."""
    ha = -(pa * np.log(pa + 1e-10)).sum(1)
    hb = -(pb * np.log(pb + 1e-10)).sum(1)
    unc = (ha >= np.percentile(ha, alpha)) & (hb >= np.percentile(hb, alpha))
    target = (pa.argmax(1) | pb.argmax(1)).astype(np.int64)
    target[unc] = 2
    valid = target != 2
    ce = np_ce(za, np.where(valid, target, 0))
    w = target.size / valid.sum()
    return target, w * ce[valid].mean()


@pytest.mark.parametrize("alpha", [20.0, 70.0, 80.0])
def test_efs_matches_numpy_on_random_inputs(alpha: float) -> None:
    g = torch.Generator().manual_seed(int(alpha))
    za = torch.randn(2, 2, 4, 4, 3, generator=g) * 2
    zb = torch.randn(2, 2, 4, 4, 3, generator=g) * 2
    pa, pb = torch.softmax(za, 1), torch.softmax(zb, 1)
    target, _ = efs_target(pa, pb, alpha)
    np_target, np_loss = _np_efs(pa.numpy(), pb.numpy(), za.numpy(), alpha)
    assert np.array_equal(target.numpy(), np_target)
    assert (target == IGNORE_INDEX).any()
    assert efs_loss(za, target).item() == pytest.approx(np_loss, rel=1e-5)


def test_efs_all_ignored_is_zero_without_nan() -> None:
    z = torch.randn(1, 2, 2, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2, 2), IGNORE_INDEX)
    loss = efs_loss(z, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() == 0


def test_efs_code_faithful_with_logits_ignores_nothing_and_is_constant() -> None:
    g = torch.Generator().manual_seed(3)
    za = torch.randn(2, 2, 3, 3, 2, generator=g, requires_grad=True)
    zb = torch.randn(2, 2, 3, 3, 2, generator=g, requires_grad=True)
    pa = torch.softmax(za, 1).clone().detach()
    pb = torch.softmax(zb, 1).clone().detach()
    efs_a, efs_b, target = efs_code_faithful(pa, pb, za, zb, 20.0)
    # entropy of raw logits is NaN where a logit is negative -> NaN percentile -> I empty
    assert not (target == IGNORE_INDEX).any()
    assert not efs_a.requires_grad and not efs_b.requires_grad
    # w = 1 exactly; probabilities are fed to CE as if they were logits
    union = (za.detach().argmax(1) | zb.detach().argmax(1)).numpy()
    assert efs_a.item() == pytest.approx(np_ce(pa.numpy(), union).mean(), rel=1e-5)
    assert efs_b.item() == pytest.approx(np_ce(pb.numpy(), union).mean(), rel=1e-5)


def test_efs_code_faithful_with_positive_logits_filters_like_c() -> None:
    # all logits positive -> finite "entropies" -> C's percentile filter does act
    g = torch.Generator().manual_seed(4)
    za = torch.rand(2, 2, 3, 3, 2, generator=g) * 0.9 + 0.05
    zb = torch.rand(2, 2, 3, 3, 2, generator=g) * 0.9 + 0.05
    pa, pb = torch.softmax(za, 1), torch.softmax(zb, 1)
    efs_a, _, target = efs_code_faithful(pa, pb, za, zb, 20.0)
    zn, zbn = za.numpy(), zb.numpy()
    ha = -(zn * np.log(zn + 1e-10)).sum(1)
    hb = -(zbn * np.log(zbn + 1e-10)).sum(1)
    unc = (ha >= np.percentile(ha, 20)) & (hb >= np.percentile(hb, 20))
    expected = (zn.argmax(1) | zbn.argmax(1)).astype(np.int64)
    expected[unc] = 2
    assert np.array_equal(target.numpy(), expected)
    valid = expected != 2
    ce = np_ce(pa.numpy(), np.where(valid, expected, 0))
    assert efs_a.item() == pytest.approx(expected.size / valid.sum() * ce[valid].mean(), rel=1e-5)


# --------------------------------------------------------------------------- UE


def test_ue_hand_values() -> None:
    # student logits (0, 0) -> p = (.5, .5); teacher logits (0, ln 3) -> q = (.25, .75), y^ = 1
    # code (T before argmax only): kl = .25 ln .5 + .75 ln 1.5 = 0.130812, ce = ln 2
    #   loss = e^-0.130812 ln 2 + 0.130812 = 0.7389673
    # paper, T = 0.5: q^T = softmax(0, 2 ln 3) = (.1, .9): kl = .1 ln .2 + .9 ln 1.8 = 0.3680642
    #   loss = e^-0.3680642 ln 2 + 0.3680642 = 0.8477725
    zs = torch.zeros(1, 2, 1, 1, 1)
    zt = torch.tensor([0.0, math.log(3.0)]).reshape(1, 2, 1, 1, 1)
    assert ue_loss(zs, zt, 0.5, temperature_in_kl=False).item() == pytest.approx(
        0.7389673, rel=1e-6
    )
    assert ue_loss(zs, zt, 0.5, temperature_in_kl=True).item() == pytest.approx(0.8477725, rel=1e-6)


def _np_ue(zs: np.ndarray, zt: np.ndarray, T: float, in_kl: bool) -> float:
    p = np_softmax(zs.astype(np.float64))
    q = np_softmax(zt.astype(np.float64) / T) if in_kl else np_softmax(zt.astype(np.float64))
    y = zt.argmax(1)
    ce = -np.log(np.take_along_axis(p, y[:, None], 1)[:, 0])
    kl = (q * (np.log(q) - np.log(p))).sum(1)
    return float((np.exp(-kl) * ce).mean() + kl.mean())


@pytest.mark.parametrize("in_kl", [False, True])
def test_ue_matches_numpy(in_kl: bool) -> None:
    g = torch.Generator().manual_seed(5)
    zs = torch.randn(3, 2, 3, 2, 2, generator=g)
    zt = torch.randn(3, 2, 3, 2, 2, generator=g)
    got = ue_loss(zs, zt, 0.5, temperature_in_kl=in_kl).item()
    assert got == pytest.approx(_np_ue(zs.numpy(), zt.numpy(), 0.5, in_kl), rel=1e-5)


def test_ue_temperature_inert_in_code_variant_and_active_in_paper_variant() -> None:
    g = torch.Generator().manual_seed(6)
    zs, zt = torch.randn(2, 2, 3, 3, 3, generator=g), torch.randn(2, 2, 3, 3, 3, generator=g)
    code = [ue_loss(zs, zt, T, temperature_in_kl=False).item() for T in (0.1, 0.5, 1.0)]
    assert code[0] == code[1] == code[2]
    paper = [ue_loss(zs, zt, T, temperature_in_kl=True).item() for T in (0.1, 0.5, 1.0)]
    assert len({round(v, 6) for v in paper}) == 3
    assert paper[2] == pytest.approx(code[2], rel=1e-6)  # T = 1: both variants agree


def test_ue_gradient_to_student_only_with_attached_weight() -> None:
    g = torch.Generator().manual_seed(7)
    zs = torch.randn(1, 2, 2, 2, 2, generator=g, requires_grad=True)
    zt = torch.randn(1, 2, 2, 2, 2, generator=g, requires_grad=True)
    ue_loss(zs, zt, 0.5).backward()
    assert zt.grad is None
    # recompute with exp(-kl) detached: the gradient must differ (the weight is attached)
    zs2 = zs.detach().clone().requires_grad_(True)
    q = torch.softmax(zt.detach() / 0.5, 1)
    logp = torch.log_softmax(zs2, 1)
    ce = -logp.gather(1, q.argmax(1, keepdim=True)).squeeze(1)
    kl = (q * (torch.log(q) - logp)).sum(1)
    ((torch.exp(-kl).detach() * ce).mean() + kl.mean()).backward()
    assert not torch.allclose(zs.grad, zs2.grad)


# --------------------------------------------------------------------------- PGL


def test_reliable_sets_paper_and_code_variants() -> None:
    pa = probs_from_fg([0.9, 0.8, 0.2, 0.1], (4, 1, 1))
    pb = probs_from_fg([0.7, 0.3, 0.4, 0.6], (4, 1, 1))
    unc = torch.tensor([False, False, True, False]).reshape(1, 4, 1, 1)
    rel, lab = reliable_sets(pa, pb, unc, require_agreement=True)
    # agreement [T, F, T, F] and not I [T, T, F, T] -> [T, F, F, F]
    assert rel.flatten().tolist() == [True, False, False, False]
    assert lab.flatten()[0].item() == 1
    rel, lab = reliable_sets(pa, pb, unc, require_agreement=False)
    assert rel.flatten().tolist() == [True, True, False, True]
    assert lab.flatten().tolist() == [1, 1, 0, 1]  # union label


def test_sample_subset_size_membership_and_determinism() -> None:
    cand = torch.zeros(1000, dtype=torch.bool)
    cand[::3] = True  # 334 candidates
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    s1 = sample_subset(cand, torch.tensor(7), g1)
    s2 = sample_subset(cand, torch.tensor(7), g2)
    assert s1.sum().item() == 7 and torch.equal(s1, s2)
    assert not (s1 & ~cand).any()
    assert sample_subset(cand, 500, g1).sum().item() == 334  # min(n, |candidates|)
    assert sample_subset(cand, 0, g1).sum().item() == 0


def test_sample_indices_static_bound() -> None:
    cand = torch.zeros(1000, dtype=torch.bool)
    cand[500:] = True
    idx, valid = sample_indices(cand, torch.tensor(4), 10, torch.Generator().manual_seed(3))
    assert idx.shape == (10,) and valid.tolist() == [True] * 4 + [False] * 6
    assert bool((idx[:4] >= 500).all()) and len(set(idx.tolist())) == 10


def test_sample_subset_is_uniform() -> None:
    cand = torch.zeros(20, dtype=torch.bool)
    cand[:10] = True
    g = torch.Generator().manual_seed(10)
    counts = torch.zeros(20)
    for _ in range(2000):
        counts += sample_subset(cand, 3, g).float()
    # each candidate expected 2000 * 3/10 = 600 times (binomial sd ~ 20.5)
    assert counts[10:].sum() == 0
    assert ((counts[:10] - 600).abs() < 100).all()


def _pgl_case(
    channels: list[list[float]], reliable: list[bool], label: list[int], pred: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n = len(reliable)
    f = torch.tensor(channels, dtype=torch.float32).T.reshape(1, -1, n, 1, 1).contiguous()
    rel = torch.tensor(reliable).reshape(1, n, 1, 1)
    lab = torch.tensor(label).reshape(1, n, 1, 1)
    prd = torch.tensor(pred).reshape(1, n, 1, 1)
    return f.requires_grad_(True), rel, lab, prd


# 2-channel hand case (the loss does not depend on C = 16):
#   reliable fg (1, 0), (3, 0) -> pi_f = (2, 0) -> unit (1, 0); reliable bg (0, 2) -> (0, 1)
#   uncertain, loser says fg: (1, 1) -> unit (.7071, .7071): dist to (1, 0) = 0.7653669
#   uncertain, loser says bg: (0, 5) -> (0, 1): dist to (0, 1) = 0
#   third term: |(1, 0) - (0, 1)| = sqrt 2
#   a non-involved voxel (reliable? no; loser bg; but sample n = 1 only draws one bg) -> none
_HAND = dict(
    channels=[[1, 0], [3, 0], [0, 2], [1, 1], [0, 5]],
    reliable=[True, True, True, False, False],
    label=[1, 1, 0, 0, 0],
    pred=[1, 1, 0, 1, 0],
)


@pytest.mark.parametrize(
    ("third", "sign", "expected"),
    [
        (True, 1, 0.7653669 + math.sqrt(2)),
        (True, -1, 0.7653669 - math.sqrt(2)),
        (False, 1, 0.7653669),
    ],
)
def test_pgl_hand_values(third: bool, sign: int, expected: float) -> None:
    f, rel, lab, prd = _pgl_case(**_HAND)
    g = torch.Generator().manual_seed(0)
    loss = pgl_loss(f, rel, lab, prd, g, third_term=third, proto_sign=sign, sample_ratio=1)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_pgl_gradient_reaches_candidates_and_prototypes() -> None:
    f, rel, lab, prd = _pgl_case(**_HAND)
    loss = pgl_loss(f, rel, lab, prd, torch.Generator().manual_seed(0), sample_ratio=1)
    loss.backward()
    per_voxel = f.grad.abs().sum(dim=1).flatten()
    assert per_voxel[3] > 0  # the fg candidate
    assert per_voxel[0] > 0 and per_voxel[1] > 0  # fg prototype members
    assert per_voxel[2] > 0  # bg prototype member (third term)
    assert torch.isfinite(f.grad).all()  # incl. the zero-distance bg candidate


@pytest.mark.parametrize(
    ("reliable", "label", "pred", "expected"),
    [
        # no reliable fg: first and third terms dropped; bg term = 0 (same direction)
        ([False, False, True, False, False], [0, 0, 0, 0, 0], [1, 1, 0, 1, 0], 0.0),
        # no fg candidate -> n = 0 -> no bg sample either: only the third term, sqrt 2
        ([True, True, True, False, False], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0], math.sqrt(2)),
        # nothing reliable: every term dropped
        ([False] * 5, [0] * 5, [1, 1, 0, 1, 0], 0.0),
        # no bg candidates: bg term dropped, fg term and third term stay
        (
            [True, True, True, False, True],
            [1, 1, 0, 0, 0],
            [1, 1, 0, 1, 0],
            0.7653669 + math.sqrt(2),
        ),
    ],
)
def test_pgl_empty_set_guards(
    reliable: list[bool], label: list[int], pred: list[int], expected: float
) -> None:
    f, rel, lab, prd = _pgl_case(_HAND["channels"], reliable, label, pred)
    loss = pgl_loss(f, rel, lab, prd, torch.Generator().manual_seed(0), sample_ratio=1)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert torch.isfinite(f.grad).all()


def test_pgl_default_ratio_matches_numpy() -> None:
    # 250 fg candidates, all the same vector -> n = 2 drawn, value independent of the draw
    n_vox = 400
    rng = np.random.default_rng(11)
    feats = rng.random((16, n_vox)).astype(np.float32)
    rel = np.zeros(n_vox, bool)
    rel[:100] = True
    lab = np.zeros(n_vox, np.int64)
    lab[:60] = 1
    pred = np.zeros(n_vox, np.int64)
    pred[100:350] = 1  # 250 uncertain voxels predicted fg, 50 predicted bg
    feats[:, 100:350] = feats[:, [100]]
    feats[:, 350:] = feats[:, [350]]
    f = torch.from_numpy(feats).reshape(1, 16, n_vox, 1, 1)
    shape = (1, n_vox, 1, 1)
    loss = pgl_loss(
        f,
        torch.from_numpy(rel).reshape(shape),
        torch.from_numpy(lab).reshape(shape),
        torch.from_numpy(pred).reshape(shape),
        torch.Generator().manual_seed(1),
    )

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    pi_f = unit(feats[:, :60].astype(np.float64).mean(1))
    pi_b = unit(feats[:, 60:100].astype(np.float64).mean(1))
    expected = (
        np.linalg.norm(unit(feats[:, 100].astype(np.float64)) - pi_f)
        + np.linalg.norm(unit(feats[:, 350].astype(np.float64)) - pi_b)
        + np.linalg.norm(pi_f - pi_b)
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_pgl_code_faithful_nan_with_logits_as_teachers() -> None:
    g = torch.Generator().manual_seed(12)
    za = torch.randn(2, 2, 4, 4, 4, generator=g)
    zb = torch.randn(2, 2, 4, 4, 4, generator=g)
    f = torch.rand(2, 16, 4, 4, 4, generator=g, requires_grad=True)
    pa, pb = torch.softmax(za, 1).detach(), torch.softmax(zb, 1).detach()
    _, _, target = efs_code_faithful(pa, pb, za, zb, 20.0)
    loss = pgl_code_faithful(f, target, pa.argmax(1), torch.Generator().manual_seed(0))
    assert torch.isnan(loss)
    assert not loss.requires_grad


def test_pgl_code_faithful_finite_case_matches_numpy() -> None:
    # 300 voxels; target: 0..59 fg, 60..99 bg, 100..299 ignored; loser pred fg on 100..249
    n_vox = 300
    rng = np.random.default_rng(13)
    feats = rng.random((16, n_vox)).astype(np.float32)
    feats[:, 100:250] = feats[:, [100]]
    feats[:, 250:] = feats[:, [250]]
    target = np.full(n_vox, 2, np.int64)
    target[:60] = 1
    target[60:100] = 0
    pred = np.zeros(n_vox, np.int64)
    pred[100:250] = 1
    shape = (1, n_vox, 1, 1)
    loss = pgl_code_faithful(
        torch.from_numpy(feats).reshape(1, 16, n_vox, 1, 1),
        torch.from_numpy(target).reshape(shape),
        torch.from_numpy(pred).reshape(shape),
        torch.Generator().manual_seed(0),
    )

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    pi_f = unit(feats[:, :60].astype(np.float64).mean(1))
    pi_b = unit(feats[:, 60:100].astype(np.float64).mean(1))
    # n = 150 // 100 = 1 sample from each candidate set
    expected = (
        np.linalg.norm(unit(feats[:, 100].astype(np.float64)) - pi_f)
        + np.linalg.norm(unit(feats[:, 250].astype(np.float64)) - pi_b)
        + np.linalg.norm(pi_f - pi_b)
    )
    assert loss.item() == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------- ramps, lr


def test_rampup_facts_of_spec_10() -> None:
    assert rampup_weight(0) == pytest.approx(0.1 * math.exp(-5), rel=1e-12)  # 6.7379e-4
    # floor(3000/150) = 20 -> phase 0.5 -> 0.1 e^-1.25
    assert rampup_weight(3000) == pytest.approx(0.0286505, abs=1e-7)
    # floor(5999/150) = 39 -> 0.1 e^(-5/1600) = 0.0996880
    assert rampup_weight(5999) == pytest.approx(0.0996880, abs=1e-7)
    assert rampup_weight(6000) == 0.1 and rampup_weight(20000) == 0.1
    assert rampup_weight(149) == rampup_weight(0)  # constant within a unit
    assert sigmoid_rampup(5, 0) == 1.0


def test_step_lr_counts() -> None:
    lrs = [lr_at(t, 0.01, "step", (2500, 5000), 0.1) for t in range(6000)]
    assert sum(1 for v in lrs if v == pytest.approx(1e-2)) == 2501
    assert sum(1 for v in lrs if v == pytest.approx(1e-3)) == 2500
    assert sum(1 for v in lrs if v == pytest.approx(1e-4)) == 999
    assert lrs[2500] == pytest.approx(1e-2) and lrs[2501] == pytest.approx(1e-3)
    assert step_lr(5001, 0.01, (2500, 5000), 0.1) == pytest.approx(1e-4)


def test_poly_lr() -> None:
    def lr(t: int) -> float:
        return lr_at(t, 0.01, "poly", total=20000, power=0.9)

    assert lr(0) == 0.01
    # 0.01 * 0.5^0.9 = 0.005358867
    assert lr(10000) == pytest.approx(0.005358867, rel=1e-6)
    assert lr(20000) == 0.0
    assert poly_lr(19999, 0.01, 20000, 0.9) == pytest.approx(0.01 * (1 / 20000) ** 0.9)
