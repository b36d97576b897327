"""CPCL (baselines-more spec, section 6): every term on hand-made tensors (expected values by
hand or by plain-numpy loops written here), the inert prototype terms of the released code
and their switch, parameter counts, and one training step under 2 + 2 with no forward on a
single sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from step_harness import config_for, run_step

from semiseg3d.errors import InputError
from semiseg3d.methods.common import dice_mc
from semiseg3d.methods.cpcl import (
    CPCL,
    DEFAULT_LCC,
    CPCLSettings,
    cpcl_terms,
    masked_prototype,
    prototype_probs,
    resize_to,
    stability_loss,
    u2l_loss,
)
from semiseg3d.models import VNet
from semiseg3d.models.complexity import count_params
from semiseg3d.models.cpcl import FeatureVNet

# -- single terms ------------------------------------------------------------------------------


def test_dice_mc_by_hand() -> None:
    p_fg = torch.tensor([0.8, 0.2]).view(1, 1, 2, 1, 1)
    probs = torch.cat([1 - p_fg, p_fg], dim=1)
    label = torch.tensor([1, 0]).view(1, 2, 1, 1)
    # foreground: 1 - (2 * 0.8 + 1e-5) / (0.8^2 + 0.2^2 + 1 + 1e-5); background the same by
    # symmetry (p_0 = (0.2, 0.8) against (0, 1)); their mean
    fg = 1 - (1.6 + 1e-5) / (0.64 + 0.04 + 1 + 1e-5)
    assert float(dice_mc(probs, label)) == pytest.approx(fg, rel=1e-6)


def test_prototype_of_constant_features() -> None:
    feat = torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1, 1, 1).expand(1, 3, 2, 2, 2)
    mask = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    mask[0, 0] = True  # 4 voxels
    weight = torch.full((1, 2, 2, 2), 0.25)  # S = sum M w = 1
    proto = masked_prototype(feat, mask, weight)
    assert proto[0].tolist() == pytest.approx([a / (1 + 1e-5) for a in (2.0, -1.0, 0.5)])
    empty = masked_prototype(feat, torch.zeros_like(mask), weight)
    assert torch.equal(empty, torch.zeros(1, 3))


def test_prototype_matches_loops() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 3, 2, 3, 2))
    m = rng.random((2, 2, 3, 2)) > 0.4
    w = rng.random((2, 2, 3, 2))
    got = masked_prototype(torch.from_numpy(f), torch.from_numpy(m), torch.from_numpy(w))
    for n in range(2):
        den = sum(w[n][idx] for idx in np.ndindex(2, 3, 2) if m[n][idx])
        for k in range(3):
            num = sum(f[n, k][idx] * w[n][idx] for idx in np.ndindex(2, 3, 2) if m[n][idx])
            assert float(got[n, k]) == pytest.approx(num / (den + 1e-5), rel=1e-12)


def test_prototype_prediction_of_a_parallel_feature() -> None:
    protos = torch.tensor([[[0.0, 3.0], [2.0, 0.0]]], dtype=torch.float64)  # pi_0, pi_1
    feat = torch.tensor([5.0, 0.0], dtype=torch.float64).view(
        1, 2, 1, 1, 1
    )  # parallel to pi_1, orthogonal to pi_0
    p = prototype_probs(feat, protos).flatten()
    # s = (0, 20): P = (1 / (1 + e^20), e^20 / (1 + e^20))
    assert float(p[0]) == pytest.approx(2.0612e-9, rel=1e-4)
    assert float(p[1]) == pytest.approx(1 - 2.0612e-9, abs=1e-12)


def test_u2l_bounds_and_stability_by_hand() -> None:
    p = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1, 1)
    # CE of the probabilities taken as logits: ln(1 + e^-1) = 0.313262, ln(1 + e) = 1.313262
    assert float(u2l_loss(p, torch.zeros(1, 1, 1, 1))) == pytest.approx(0.313262, abs=1e-6)
    assert float(u2l_loss(p, torch.ones(1, 1, 1, 1))) == pytest.approx(1.313262, abs=1e-6)
    z = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1)
    assert float(stability_loss(z, 0.5 * z)) == pytest.approx(0.25)


def test_resize_of_x8_to_the_label_size() -> None:
    feat = torch.full((1, 4, 8, 8, 4), 3.0)
    up = resize_to(feat, (16, 16, 8))
    assert up.shape == (1, 4, 16, 16, 8) and torch.allclose(up, torch.full_like(up, 3.0))
    assert resize_to(up, (16, 16, 8)) is up


# -- all terms together ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(112, 112, 80), (64, 64, 32)])
def test_terms_of_per_voxel_constant_inputs(shape: tuple[int, int, int]) -> None:
    """One labelled and one unlabelled sample, every voxel alike; x8 at half size.

    Student logits (1, -1), label 0 everywhere, student features a = (1, 2); teacher noisy
    logits (0.5, -0.5), clean unlabelled logits (0.5, -0.5), features b = 2a (parallel).
    """
    n = math.prod(shape)
    half = tuple(s // 2 for s in shape)
    z = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1).expand(2, 2, *shape)
    a = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1, 1)
    feat = a.expand(2, 2, *half)
    z_t = 0.5 * z
    terms = cpcl_terms(z, feat, z_t, z_t[1:], 2 * a.expand(1, 2, *half), torch.zeros(1, *shape))
    p0 = 1 / (1 + math.exp(-2))  # softmax(1, -1)_0 = 0.880797
    q0 = 1 / (1 + math.exp(-1))  # softmax(0.5, -0.5)_0 = 0.731059
    assert float(terms["stab"]) == pytest.approx(0.25)
    assert float(terms["sup_ce"]) == pytest.approx(-math.log(p0), rel=1e-6)
    # D_mc: class 0 against all ones, class 1 (0.119203) against all zeros
    d0 = 1 - (2 * p0 * n + 1e-5) / (p0 * p0 * n + n + 1e-5)
    d1 = 1 - 1e-5 / ((1 - p0) ** 2 * n + 1e-5)
    assert float(terms["sup_dice"]) == pytest.approx((d0 + d1) / 2, rel=1e-5)
    # prototypes: class 0 = a S/(S + 1e-5) (all voxels), class 1 = 0 (empty): cos (1, 0),
    # P_L2U = (1 - e^-20 / (1 + e^-20), ...) against p' = (0.731059, 0.268941)
    e = 1 / (1 + math.exp(20))
    l2u = ((1 - e - q0) ** 2 + (e - (1 - q0)) ** 2) / 2
    assert float(terms["l2u"]) == pytest.approx(l2u, rel=1e-5)
    # U2L: teacher argmax 0 everywhere, P_U2L = (1 - e, e) on f_l, CE against 0
    u2l = -math.log(math.exp(1 - e) / (math.exp(1 - e) + math.exp(e)))
    assert float(terms["u2l"]) == pytest.approx(u2l, rel=1e-5)


def _numpy_cyclic(
    f: np.ndarray, p: np.ndarray, y: np.ndarray, f_t: np.ndarray, p_t: np.ndarray
) -> tuple[float, float]:
    """L_L2U and L_U2L with loops: sample n's prototypes act on sample n of the other slice."""
    b, _, *sp = f.shape
    vox = list(np.ndindex(*sp))

    def proto(feat: np.ndarray, mask: np.ndarray, w: np.ndarray) -> np.ndarray:
        den = sum(w[v] for v in vox if mask[v])
        return np.array(
            [sum(feat[k][v] * w[v] for v in vox if mask[v]) for k in range(len(feat))]
        ) / (den + 1e-5)

    def predict(feat: np.ndarray, protos: list[np.ndarray], v: tuple[int, ...]) -> np.ndarray:
        x = feat[(slice(None), *v)]
        s = [
            20 * float(x @ pr) / max(np.linalg.norm(x) * np.linalg.norm(pr), 1e-8) for pr in protos
        ]
        e = np.exp(np.array(s) - max(s))
        return e / e.sum()

    l2u, u2l = 0.0, 0.0
    for n in range(b):
        pl = [proto(f[n], y[n] == c, p[n, c]) for c in range(2)]
        yt = p_t[n].argmax(0)
        pu = [proto(f_t[n], yt == c, p_t[n, c]) for c in range(2)]
        for v in vox:
            pr = predict(f_t[n], pl, v)
            l2u += sum((pr[c] - p_t[(n, c, *v)]) ** 2 for c in range(2))
            q = predict(f[n], pu, v)
            u2l += -math.log(math.exp(q[y[(n, *v)]]) / sum(math.exp(qc) for qc in q))
    return l2u / (b * 2 * len(vox)), u2l / (b * len(vox))


def test_cyclic_terms_match_loops_and_pair_samples() -> None:
    rng = np.random.default_rng(3)
    shape = (3, 2, 2)
    z = torch.from_numpy(rng.normal(size=(4, 2, *shape)))
    feat = torch.from_numpy(np.abs(rng.normal(size=(4, 3, *shape))))
    z_t = torch.from_numpy(rng.normal(size=(2, 2, *shape)))
    f_t = torch.from_numpy(np.abs(rng.normal(size=(2, 3, *shape))))
    y = torch.from_numpy((rng.random((2, *shape)) > 0.5).astype(np.int64))
    terms = cpcl_terms(z, feat, z, z_t, f_t, y)
    p = torch.softmax(z, 1).numpy()
    l2u, u2l = _numpy_cyclic(
        feat[:2].numpy(), p[:2], y.numpy(), f_t.numpy(), torch.softmax(z_t, 1).numpy()
    )
    assert float(terms["l2u"]) == pytest.approx(l2u, rel=1e-9)
    assert float(terms["u2l"]) == pytest.approx(u2l, rel=1e-9)
    assert float(terms["stab"]) == 0.0
    with pytest.raises(ValueError, match="B_l = 2"):
        cpcl_terms(z, feat, z, z_t[:1], f_t[:1], y)


def test_released_prototype_terms_are_inert_and_the_switch_restores_them() -> None:
    torch.manual_seed(0)
    shape = (4, 4, 2)
    z = torch.randn(4, 2, *shape, requires_grad=True)
    feat = torch.rand(4, 3, 2, 2, 1, requires_grad=True)
    z_t, f_t = torch.randn(2, 2, *shape), torch.rand(2, 3, 2, 2, 1)
    y = (torch.rand(2, *shape) > 0.5).long()
    z_noisy = torch.randn(4, 2, *shape)
    released = cpcl_terms(z, feat, z_noisy, z_t, f_t, y)
    assert not released["l2u"].requires_grad and not released["u2l"].requires_grad
    assert released["stab"].requires_grad and released["sup"].requires_grad
    switched = cpcl_terms(z, feat, z_noisy, z_t, f_t, y, proto_grad=True)
    (g_l2u,) = torch.autograd.grad(switched["l2u"], feat, retain_graph=True)
    (g_u2l,) = torch.autograd.grad(switched["u2l"], feat)
    assert g_l2u[:2].abs().sum() > 0 and g_u2l[:2].abs().sum() > 0
    assert g_l2u[2:].abs().sum() == 0  # the unlabelled features are the teacher's
    # the switch changes no value, only the graph
    for key, value in released.items():
        assert switched[key].item() == pytest.approx(value.item(), rel=1e-6), key


# -- network, settings, batch rule -------------------------------------------------------------


def test_parameter_counts_and_vnet_state() -> None:
    method = CPCL(config_for("cpcl"))
    with torch.device("meta"):
        _, nets = method.build()
        teachers = method.build_teachers()
    assert count_params(nets["vnet"]) == 9_448_866
    assert count_params(nets["vnet"]) + count_params(teachers["teacher"]) == 18_897_732
    torch.manual_seed(0)
    net = FeatureVNet().eval()
    vnet = VNet().eval()
    vnet.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        z, x9, x8 = net(x)
        assert torch.equal(z, vnet(x)[0]) and x8.shape == (1, 32, 8, 8, 8)
        assert FeatureVNet("x5").eval()(x)[2].shape == (1, 256, 1, 1, 1)


def test_settings_and_batch_rule() -> None:
    s = CPCLSettings.from_config(config_for("cpcl"))
    assert (s.proto_grad, s.feature) == (False, "x8")
    with pytest.raises(InputError, match="config key 'method_options.feature'"):
        config_for("cpcl", {"feature": "x9"})
    with pytest.raises(InputError, match="config key 'method_options.proto_grad'"):
        config_for("cpcl", {"proto_grad": "yes"})
    config_for("cpcl", batch_labeled=4, batch_unlabeled=4)
    for bl, bu in ((2, 1), (1, 1), (2, 4)):
        with pytest.raises(InputError, match="method 'cpcl'"):
            config_for("cpcl", batch_labeled=bl, batch_unlabeled=bu)
    assert not DEFAULT_LCC and not CPCL.default_lcc


# -- one training step -------------------------------------------------------------------------


@pytest.mark.parametrize("proto_grad", [False, True])
def test_one_step_under_two_plus_two(proto_grad: bool) -> None:
    method = CPCL(config_for("cpcl", {"proto_grad": proto_grad}, iterations=100))
    res = run_step(method, t=0)
    assert res.no_grad == []
    assert res.recorder.sizes("vnet") == [4]
    assert res.recorder.sizes("teacher") == [4, 2]  # noisy batch, then clean x_u
    assert res.recorder.smallest() >= 2
    assert float(res.terms["cons_weight"]) == pytest.approx(0.1 * math.exp(-5))
    # EMA at t = 0 copies the student
    for p_t, p_s in zip(
        res.teachers["teacher"].parameters(), res.nets["vnet"].parameters(), strict=True
    ):
        assert torch.equal(p_t, p_s)
