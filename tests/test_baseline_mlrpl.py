"""ML-RPL (baselines-more spec, section 8): every loss piece on hand-made tensors (expected
values by hand or by plain-numpy loops written here), the network's parameter counts, and
one training step under 2 + 2 with no forward on a single sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from step_harness import config_for, run_step, toy_batch

from semiseg3d.errors import InputError
from semiseg3d.methods.mlrpl import (
    DEFAULT_LCC,
    MLRPL,
    MLRPLSettings,
    class_prototypes,
    entropy,
    mlrpl_losses,
    mutual_term,
    pair_weight,
    prototype_cosines,
    weighted_ce,
)
from semiseg3d.models import VNet
from semiseg3d.models.baselines import mcnet_vnet_state
from semiseg3d.models.complexity import count_params
from semiseg3d.models.mlrpl import MLRPLNet, split_outputs


def _field(p_fg: list[float]) -> torch.Tensor:
    """(1, 2, V, 1, 1) probabilities with foreground ``p_fg`` per voxel."""
    p = torch.tensor(p_fg, dtype=torch.float64).view(1, 1, -1, 1, 1)
    return torch.cat([1 - p, p], dim=1)


# -- the spec's one-voxel example --------------------------------------------------------------


def test_one_voxel_example_of_the_spec() -> None:
    p_i, p_j = _field([0.4]), _field([0.2])  # (0.6, 0.4) and (0.8, 0.2)
    # entropies by hand: -(0.6 ln 0.6 + 0.4 ln 0.4) = 0.673012 (+eps shifts to 0.673010)
    assert float(entropy(p_i)) == pytest.approx(0.673010, abs=1e-6)
    assert float(entropy(p_j)) == pytest.approx(0.500400, abs=1e-6)
    s_j = torch.tensor([0.6, 0.9], dtype=torch.float64).view(1, 2, 1, 1, 1)
    m, w = pair_weight(p_i, p_j, s_j)
    # w = 1 - ((0.6 - 0.8)^2 + (0.9 - 0.2)^2) / 2 = 1 - 0.53 / 2 = 0.735
    assert float(m) == 1.0 and float(w) == pytest.approx(0.735)
    z_i = torch.log(p_i).requires_grad_(True)  # logits whose softmax is p_i
    target = p_j.argmax(1)  # class 0
    l_ij = weighted_ce(z_i, target, w, m)
    # CE = -ln 0.6 = 0.510826; L = 0.735 * 0.510826 / (1 + 1e-6) = 0.375457
    assert l_ij.item() == pytest.approx(0.375457, abs=1e-6)
    m_ji, w_ji = pair_weight(p_j, p_i, s_j)  # the reverse pair: j is not less certain
    assert float(m_ji) == 0.0 and float(weighted_ce(torch.log(p_j), p_i.argmax(1), w_ji, m_ji)) == 0


def test_equal_entropies_give_no_mask() -> None:
    p = _field([0.3, 0.7])  # the two voxels have equal entropies
    m, w = pair_weight(p, p.flip(1), torch.zeros_like(p))
    assert m.sum() == 0 and w.sum() == 0


# -- prototypes and cosines against plain loops ------------------------------------------------


def _numpy_prototypes(f: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    b, c_f = f.shape[:2]
    out = np.zeros((b, n_classes, c_f))
    for n in range(b):
        for c in range(n_classes):
            sel = y[n] == c
            mean = np.array([f[n, k][sel].sum() for k in range(c_f)]) / (sel.sum() + 1e-6)
            norm = math.sqrt(float((mean**2).sum()))
            out[n, c] = mean / max(norm, 1e-12)
    return out


def _numpy_cos(f: np.ndarray, protos: np.ndarray) -> np.ndarray:
    b, _, *sp = f.shape
    out = np.zeros((b, protos.shape[1], *sp))
    for n in range(b):
        for c in range(protos.shape[1]):
            for idx in np.ndindex(*sp):
                v = f[(n, slice(None), *idx)]
                pr = protos[n, c]
                denom = max(np.linalg.norm(v), 1e-8) * max(np.linalg.norm(pr), 1e-8)
                out[(n, c, *idx)] = float(v @ pr) / denom
    return out


def test_prototypes_and_cosines_match_loops() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 3, 3, 3, 2))
    y = (rng.random((2, 3, 3, 2)) > 0.5).astype(np.int64)
    y[1] = 0  # class 1 absent from sample 1: zero prototype, cosine 0
    protos = class_prototypes(torch.from_numpy(f), torch.from_numpy(y))
    expected = _numpy_prototypes(f, y, 2)
    assert np.allclose(protos.numpy(), expected, atol=1e-9)
    assert np.all(protos[1, 1].numpy() == 0)
    cos = prototype_cosines(torch.from_numpy(f), protos)
    assert np.allclose(cos.numpy(), _numpy_cos(f, expected), atol=1e-9)
    assert np.all(cos[1, 1].numpy() == 0)


def _numpy_mutual(
    z_i: np.ndarray, z_j: np.ndarray, f_j: np.ndarray, ce_logits: np.ndarray | None = None
) -> float:
    """L_ij with plain loops over samples and voxels (spec 8); the cross-entropy reads
    ``z_i``, the mask and weight decoder i's softmax of ``ce_logits`` (default ``z_i``)."""

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_i, p_j = softmax(z_i if ce_logits is None else ce_logits), softmax(z_j)
    q_i = softmax(z_i)  # what the cross-entropy sees
    y_j = p_j.argmax(axis=1)
    protos = _numpy_prototypes(f_j, y_j, 2)
    cos = _numpy_cos(f_j, protos)
    num, msum = 0.0, 0.0
    for n in range(z_i.shape[0]):
        for idx in np.ndindex(*z_i.shape[2:]):
            at = (n, slice(None), *idx)
            u_i = -sum(p * math.log(p + 1e-6) for p in p_i[at])
            u_j = -sum(p * math.log(p + 1e-6) for p in p_j[at])
            m = 1.0 if u_i > u_j else 0.0
            w = (1 - 0.5 * sum((cos[at][c] - p_j[at][c]) ** 2 for c in range(2))) * m
            ce = -math.log(q_i[at][y_j[(n, *idx)]])
            num += ce * w
            msum += m
    return num / (msum + 1e-6)


def test_mutual_term_matches_loops_and_routes_gradient() -> None:
    rng = np.random.default_rng(1)
    z_i, z_j = rng.normal(size=(2, 2, 3, 3, 2)), rng.normal(size=(2, 2, 3, 3, 2))
    f_j = np.abs(rng.normal(size=(2, 4, 3, 3, 2)))  # post-ReLU features
    ti = torch.from_numpy(z_i).requires_grad_(True)
    tj = torch.from_numpy(z_j).requires_grad_(True)
    tf = torch.from_numpy(f_j).requires_grad_(True)
    l_ij = mutual_term(ti, torch.softmax(ti, 1), torch.softmax(tj, 1), tf)
    assert l_ij.item() == pytest.approx(_numpy_mutual(z_i, z_j, f_j), rel=1e-9)
    g_i, g_j, g_f = torch.autograd.grad(l_ij, [ti, tj, tf], allow_unused=True)
    assert g_i.abs().sum() > 0
    assert g_j is None and g_f is None  # targets, weights and prototypes are constants


@pytest.mark.parametrize("shape", [(112, 112, 80), (64, 64, 32)])
def test_mutual_term_does_not_depend_on_the_patch(shape: tuple[int, int, int]) -> None:
    # every voxel: p_i = (0.6, 0.4), p_j = (0.8, 0.2), features all equal to (1, 2):
    # class 0's prototype is the feature's direction (cos 1), class 1 is absent (cos 0):
    # w = 1 - ((1 - 0.8)^2 + (0 - 0.2)^2) / 2 = 0.96; L = 0.96 (-ln 0.6) N / (N + 1e-6)
    z_i = torch.log(torch.tensor([0.6, 0.4])).view(1, 2, 1, 1, 1).expand(1, 2, *shape)
    p_j = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1, 1).expand(1, 2, *shape)
    f_j = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1, 1).expand(1, 2, *shape)
    l_ij = mutual_term(z_i, torch.softmax(z_i, 1), p_j, f_j)
    assert float(l_ij) == pytest.approx(0.96 * -math.log(0.6), rel=1e-5)


def test_losses_sum_both_pairs_and_dice_of_each_decoder() -> None:
    torch.manual_seed(0)
    z = [torch.randn(3, 2, 4, 4, 2, dtype=torch.float64) for _ in range(2)]
    f = [torch.rand(3, 5, 4, 4, 2, dtype=torch.float64) for _ in range(2)]
    y = (torch.rand(1, 4, 4, 2) > 0.5).long()
    sup, cons, terms = mlrpl_losses(z, f, y)
    p = [torch.softmax(v, 1) for v in z]
    # D_lin by hand: 1 - (2 sum q y + 1e-8) / (sum q + sum y + 1e-8) on the labelled sample
    dice = [
        1
        - (2 * float((q[:1, 1] * y).sum()) + 1e-8) / (float(q[:1, 1].sum()) + float(y.sum()) + 1e-8)
        for q in p
    ]
    assert float(sup) == pytest.approx(sum(dice), rel=1e-9)
    l12 = _numpy_mutual(z[0].numpy(), z[1].numpy(), f[1].numpy())
    l21 = _numpy_mutual(z[1].numpy(), z[0].numpy(), f[0].numpy())
    assert float(terms["mutual_12"]) == pytest.approx(l12, rel=1e-9)
    assert float(cons) == pytest.approx(l12 + l21, rel=1e-9)  # labelled samples included
    # the first upload's double softmax: decoder i's probabilities used as its logits
    _, cons_p, _ = mlrpl_losses(z, f, y, ce_input="probs")
    l12p = _numpy_mutual(p[0].numpy(), z[1].numpy(), f[1].numpy(), ce_logits=z[0].numpy())
    l21p = _numpy_mutual(p[1].numpy(), z[0].numpy(), f[0].numpy(), ce_logits=z[1].numpy())
    assert float(cons_p) == pytest.approx(l12p + l21p, rel=1e-9)


# -- network -----------------------------------------------------------------------------------


def test_parameter_counts() -> None:
    with torch.device("meta"):
        k2, k3 = MLRPLNet(), MLRPLNet(("transpose", "nearest", "trilinear"))
    assert count_params(k2) == 12_347_716
    assert count_params(k2.encoder) == 7_376_896
    assert [count_params(d) for d in k2.decoders] == [2_071_970, 2_898_850]
    assert count_params(k3) == 15_246_566
    with pytest.raises(ValueError, match="transpose"):
        MLRPLNet(("nearest", "transpose"))


def test_decoder1_loads_into_a_plain_vnet() -> None:
    torch.manual_seed(0)
    net = MLRPLNet().eval()
    vnet = VNet().eval()
    vnet.load_state_dict(mcnet_vnet_state(net.state_dict()), strict=True)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        logits, feats = split_outputs(net(x))
        assert torch.equal(vnet(x)[0], logits[0])
    assert len(logits) == 2 and feats[1].shape == (1, 16, 16, 16, 16)
    method = MLRPL(config_for("mlrpl"))
    (member,) = method.inference_nets({"mlrpl": net}, None)
    assert type(member) is VNet and not member.training
    with pytest.raises(InputError, match="one network"):
        method.inference_nets({"mlrpl": net}, "a")


# -- settings and batch rule -------------------------------------------------------------------


def test_settings_and_batch_rule() -> None:
    assert MLRPLSettings.from_config(config_for("mlrpl")).decoders == 2
    assert MLRPLSettings.from_config(config_for("mlrpl", {"decoders": 3})).decoders == 3
    with pytest.raises(InputError, match="config key 'method_options.decoders'"):
        config_for("mlrpl", {"decoders": 4})
    assert MLRPLSettings.from_config(config_for("mlrpl")).ce_input == "logits"
    with pytest.raises(InputError, match="config key 'method_options.ce_input'"):
        config_for("mlrpl", {"ce_input": "softmax"})
    config_for("mlrpl", batch_labeled=1, batch_unlabeled=1)
    with pytest.raises(InputError, match="'batch_unlabeled' must be >= 1 for method 'mlrpl'"):
        config_for("mlrpl", batch_unlabeled=0)
    assert not DEFAULT_LCC and not MLRPL.default_lcc


# -- one training step -------------------------------------------------------------------------


def test_one_step_under_two_plus_two() -> None:
    method = MLRPL(config_for("mlrpl", iterations=100))
    res = run_step(method, t=0)
    assert not res.teachers
    assert res.no_grad == []  # encoder and both decoders learn (Dice on each decoder)
    assert res.recorder.sizes("mlrpl") == [4]  # one forward of the whole batch
    assert res.recorder.smallest() >= 2
    # ramp index t = 0 under `shared`: r(0; 1) = e^-5
    assert float(res.terms["cons_weight"]) == pytest.approx(math.exp(-5))
    assert {"sup_dice", "mutual", "mutual_12", "mutual_21", "loss"} <= set(res.terms)


def test_own_recipe_ramps_on_t_plus_one() -> None:
    shared = MLRPL(config_for("mlrpl", recipe="shared"))
    own = MLRPL(config_for("mlrpl", recipe="own"))
    # shared: floor(149 / 150) = 0 -> e^-5; own: floor(150 / 150) = 1 -> exp(-5 (39/40)^2)
    assert shared.cons_weight(149) == pytest.approx(math.exp(-5))
    assert own.cons_weight(149) == pytest.approx(math.exp(-5 * (39 / 40) ** 2))
    assert shared.cons_weight(6000) == own.cons_weight(5999) == 1.0


def test_mutual_term_sends_no_gradient_to_the_teaching_decoder() -> None:
    torch.manual_seed(0)
    net = MLRPLNet().train()
    image, _ = toy_batch(2, 2, (16, 16, 16))
    logits, feats = split_outputs(net(image))
    probs = [torch.softmax(z, 1) for z in logits]
    l_12 = mutual_term(logits[0], probs[0], probs[1], feats[1])
    l_12.backward()
    dec2 = [p.grad for p in net.decoders[1].parameters()]
    assert all(g is None or g.abs().sum() == 0 for g in dec2)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoders[0].parameters())
