"""URPC (spec/baselines-more.md section 5): each term on hand-made tensors against values
worked out by hand or by plain loops here, the network's heads and parameter count, the
ramp of both recipes, and one full step under 2 + 2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from step_harness import BatchRecorder, FakeContext, config_for, sgd_step, toy_batch

from semiseg3d.errors import InputError
from semiseg3d.methods.common import dice_mc, ramp
from semiseg3d.methods.urpc import (
    DEFAULT_LCC,
    URPC,
    URPCSettings,
    urpc_consistency,
    urpc_supervised,
    urpc_uncertainty,
)
from semiseg3d.models import VNet
from semiseg3d.models.complexity import count_params
from semiseg3d.models.urpc import URPCNet

# -- network ---------------------------------------------------------------------------------


def test_parameter_count_and_heads() -> None:
    with torch.device("meta"):
        net = URPCNet()
    # heads: 32*2+2 = 66 (x8), 64*2+2 = 130 (x7), 128*2+2 = 258 (x6)
    assert [count_params(h) for h in net.aux_heads] == [66, 130, 258]
    assert count_params(net) == 9_449_320 == 9_448_866 + 66 + 130 + 258


def test_heads_are_full_size_and_main_head_is_a_vnet() -> None:
    torch.manual_seed(0)
    net = URPCNet().eval()
    x = torch.randn(2, 1, 16, 16, 32)
    with torch.no_grad():
        outs = net(x)
    assert len(outs) == 4 and all(z.shape == (2, 2, 16, 16, 32) for z in outs)
    # the 1/8 head is up-sampled from a 2 x 2 x 4 map: nearest would repeat source voxel 0
    # at x = 0..7; trilinear (align_corners false) moves between x = 4 (source 0.0625) and 5
    assert not torch.equal(outs[3][..., 4, 0, 0], outs[3][..., 5, 0, 0])
    method = URPC(config_for("urpc"))
    (member,) = method.inference_nets({"vnet": net}, None)
    assert isinstance(member, VNet) and count_params(member) == 9_448_866
    with torch.no_grad():
        assert torch.equal(member(x)[0], outs[0])
        mean = URPC(config_for("urpc", {"infer": "mean"}))
        probs = mean.prob_fn(mean.inference_nets({"vnet": net}, None))(x)
    expected = sum(torch.softmax(z, 1) for z in outs) / 4
    assert torch.allclose(probs, expected, atol=1e-6)
    assert not DEFAULT_LCC and not method.default_lcc
    with pytest.raises(InputError, match="one network"):
        method.inference_nets({"vnet": net}, "a")


# -- supervised terms ------------------------------------------------------------------------


def test_dice_mc_by_hand() -> None:
    fg = torch.tensor([0.8, 0.3]).view(1, 2, 1, 1)
    probs = torch.cat([1 - fg, fg]).unsqueeze(0)  # (1, 2, 2, 1, 1)
    label = torch.tensor([1, 0]).view(1, 2, 1, 1)
    # foreground: q = (0.8, 0.3), y = (1, 0); background: q = (0.2, 0.7), y = (0, 1)
    d_fg = 1 - (2 * 0.8 + 1e-5) / (0.8**2 + 0.3**2 + 1 + 1e-5)
    d_bg = 1 - (2 * 0.7 + 1e-5) / (0.2**2 + 0.7**2 + 1 + 1e-5)
    assert float(dice_mc(probs, label)) == pytest.approx((d_fg + d_bg) / 2, abs=1e-6)


def test_supervised_is_the_mean_over_eight_terms() -> None:
    gen = torch.Generator().manual_seed(0)
    label = (torch.rand((2, 3, 2, 2), generator=gen) > 0.5).long()
    logits = [torch.randn((2, 2, 3, 2, 2), generator=gen) for _ in range(4)]
    sup, ce, dice = urpc_supervised(logits, label)
    # CE by loops: -log softmax at the label, averaged over 24 voxels, summed over heads
    ce_loops = 0.0
    for z in logits:
        za, ya = z.double().numpy(), label.numpy()
        vals = []
        for idx in np.ndindex(ya.shape):
            n, v = idx[0], idx[1:]
            col = za[(n, slice(None), *v)]
            vals.append(-(col[ya[idx]] - np.log(np.exp(col).sum())))
        ce_loops += float(np.mean(vals))
    assert float(ce) == pytest.approx(ce_loops, abs=1e-5)
    dice_ref = sum(float(dice_mc(torch.softmax(z, 1), label)) for z in logits)
    assert float(sup) == pytest.approx((ce_loops + dice_ref) / 8, abs=1e-5)


# -- consistency -----------------------------------------------------------------------------


def _heads_of(fg: list[float]) -> list[torch.Tensor]:
    """One voxel, B = 1: logits ln(p) of each head's (p_0, p_1) = (1 - f, f)."""
    return [
        torch.log(torch.tensor([1 - f, f], dtype=torch.float64)).view(1, 2, 1, 1, 1) for f in fg
    ]


def test_consistency_of_the_spec_voxel() -> None:
    # heads (0.9, 0.1), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7): p_bar = (0.6, 0.4);
    # v_1 = 0.6 ln(0.6/0.9) + 0.4 ln(0.4/0.1) = 0.311239 ...; one voxel: the weight cancels
    # and L_k = mean_c (p_bar - p_k)^2 + v_k
    heads = _heads_of([0.1, 0.3, 0.5, 0.7])
    total, per_head, v = urpc_consistency(heads)
    assert [float(x) for x in v] == pytest.approx(
        [0.311239, 0.022582, 0.020136, 0.192042], abs=1e-6
    )
    assert [float(x) for x in per_head] == pytest.approx(
        [0.401239, 0.032582, 0.030136, 0.282042], abs=1e-6
    )
    assert float(total) == pytest.approx(0.186500, abs=1e-6)
    equal, _, _ = urpc_consistency(_heads_of([0.3] * 4))
    assert float(equal) == pytest.approx(0.0, abs=1e-12)


def test_consistency_by_loops_on_many_voxels() -> None:
    gen = torch.Generator().manual_seed(2)
    heads = [torch.randn((2, 2, 3, 2, 1), generator=gen, dtype=torch.float64) for _ in range(4)]
    total, _, _ = urpc_consistency(heads)
    p = [np.exp(z.numpy()) / np.exp(z.numpy()).sum(1, keepdims=True) for z in heads]
    mean = sum(p) / 4
    expected = 0.0
    for pk in p:
        v = np.zeros((2, 3, 2, 1))
        for idx in np.ndindex(v.shape):
            n, rest = idx[0], idx[1:]
            for c in range(2):
                pb, pc = mean[(n, c, *rest)], pk[(n, c, *rest)]
                v[idx] += pb * (math.log(pb) - math.log(pc))
        w = np.exp(-v)
        num = np.mean([(mean[n, c] - pk[n, c]) ** 2 * w[n] for n in range(2) for c in range(2)])
        expected += num / (w.mean() + 1e-8) + v.mean()
    assert float(total) == pytest.approx(expected / 4, abs=1e-10)


def test_consistency_gradient_flows_through_everything() -> None:
    gen = torch.Generator().manual_seed(3)
    heads = [
        torch.randn((1, 2, 2, 1, 1), generator=gen, dtype=torch.float64, requires_grad=True)
        for _ in range(4)
    ]
    # autograd (mean, weight and v all differentiated) against finite differences
    assert torch.autograd.gradcheck(lambda *z: urpc_consistency(list(z))[0], heads)


def test_uncertainty_ignores_zero_mean_classes() -> None:
    mean = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1, 1)
    logp = torch.log(torch.tensor([0.5, 0.5])).view(1, 2, 1, 1, 1)
    # 1 * (ln 1 - ln 0.5) + 0 = ln 2, not NaN
    assert float(urpc_uncertainty(mean, logp)) == pytest.approx(math.log(2))


def test_ramp_of_both_recipes() -> None:
    # r_400(t; 0.1) = 0.1 exp(-5 (1 - floor(t/150)/400)^2): floor(29999/150) = 199,
    # 0.1 exp(-5 (201/400)^2) = 0.0282937; floor(19999/150) = 133 -> 0.0107767
    assert ramp(29999, 0.1, 400) == pytest.approx(0.0282937, abs=1e-7)
    assert ramp(19999, 0.1, 400) == pytest.approx(0.0107767, abs=1e-7)
    assert ramp(6000, 0.1, 40) == pytest.approx(0.1)


def test_settings_and_batch_rule() -> None:
    assert URPCSettings.from_config(config_for("urpc")).infer == "main"
    with pytest.raises(InputError, match="config key 'method_options.infer'"):
        config_for("urpc", {"infer": "max"})
    config_for("urpc", batch_labeled=1, batch_unlabeled=1)
    with pytest.raises(InputError, match="'batch_unlabeled' must be >= 1 for method 'urpc'"):
        config_for("urpc", batch_unlabeled=0)


# -- one full step ---------------------------------------------------------------------------


def test_one_step_under_two_plus_two() -> None:
    shape = (32, 32, 16)
    method = URPC(config_for("urpc", patch=shape))
    torch.manual_seed(0)
    _, nets = method.build()
    method.attach(nets, {})
    nets["vnet"].train()
    image, label = toy_batch(2, 2, shape)
    recorder = BatchRecorder(nets)
    try:
        total, terms = method.loss(FakeContext(2, shape), 3000, image, label)
    finally:
        recorder.close()
    assert math.isfinite(total.item()) and all(math.isfinite(float(v)) for v in terms.values())
    assert recorder.sizes("vnet") == [4]  # one forward of the whole batch
    assert min(b for _, b in recorder.calls) >= 2
    # shared: r_40(3000; 0.1) = 0.1 exp(-5 (1/2)^2) = 0.0286505
    assert float(terms["cons_weight"]) == pytest.approx(0.0286505, abs=1e-7)
    assert float(terms["loss"]) == pytest.approx(
        float(terms["sup"]) + 0.0286505 * float(terms["cons"]), rel=1e-5
    )
    assert sgd_step(nets, total) == []  # every parameter, heads included, gets a gradient
    method.after_step(3000)
