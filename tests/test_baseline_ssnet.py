"""SS-Net (spec/baselines-more.md section 4): each term on hand-made tensors against values
worked out by hand or by plain loops here, the parameter counts, the VAT's patch scaling
and BatchNorm modes, and one full step under 2 + 2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from step_harness import BatchRecorder, FakeContext, config_for, sgd_step, toy_batch
from torch import nn

from semiseg3d.errors import InputError
from semiseg3d.methods.ssnet import (
    DEFAULT_LCC,
    SSNetMethod,
    SSNetSettings,
    class_separation,
    correct_mask,
    frozen_bn_stats,
    normalize_per_sample,
    select_memory,
    ssnet_weight,
    vat_direction,
    vat_distance,
    vat_magnitude,
)
from semiseg3d.models import VNet
from semiseg3d.models.complexity import count_params
from semiseg3d.models.ssnet import SSNet
from semiseg3d.models.vnet import vnet_state

# -- network ---------------------------------------------------------------------------------


def test_parameter_counts() -> None:
    with torch.device("meta"):
        net = SSNet()
    # P 16*32+32 + 2*32 + 32*32+32 = 1,664; Q 32*32+32 + 64 + 1,056 = 2,176;
    # each selector 1,056 + 64 + 32+1 = 1,153 (spec 4)
    assert count_params(net.projection_head) == 1_664
    assert count_params(net.prediction_head) == 2_176
    assert [count_params(s) for s in (*net.selectors, *net.memory_selectors)] == [1_153] * 4
    assert count_params(net) == 9_457_318 == 9_448_866 + 8_452


def test_inference_net_is_the_plain_vnet_part() -> None:
    torch.manual_seed(0)
    net = SSNet().eval()
    method = SSNetMethod(config_for("ssnet"))
    (member,) = method.inference_nets({"vnet": net}, None)
    assert isinstance(member, VNet) and count_params(member) == 9_448_866
    assert set(vnet_state(net.state_dict())) == set(VNet().state_dict())
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(member(x)[0], net(x)[0])
    with pytest.raises(InputError, match="one network"):
        method.inference_nets({"vnet": net}, "a")
    assert DEFAULT_LCC and method.default_lcc


# -- VAT -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "expected"),
    # 10 sqrt(N / 1,003,520): N = 1,003,520 -> 10; 884,736 -> 10 sqrt(0.881633) = 9.3895;
    # 131,072 -> 10 sqrt(0.130612) = 3.6140
    [((112, 112, 80), 10.0), ((96, 96, 96), 9.3895), ((64, 64, 32), 3.6140)],
)
def test_vat_magnitude_per_voxel_rule(patch: tuple[int, int, int], expected: float) -> None:
    assert vat_magnitude(10.0, patch) == pytest.approx(expected, abs=1e-4)
    assert vat_magnitude(10.0, patch, "fixed") == 10.0
    # per-voxel RMS of eps r with ||r|| = 1 is eps / sqrt(N): 10 / sqrt(1,003,520) = 0.0099824
    n = math.prod(patch)
    assert vat_magnitude(10.0, patch) / math.sqrt(n) == pytest.approx(0.0099824, abs=1e-7)


def test_normalize_per_sample_gives_unit_norm() -> None:
    gen = torch.Generator().manual_seed(0)
    d = torch.rand((3, 1, 4, 4, 2), generator=gen) - 0.5
    d[1] *= 100.0
    u = normalize_per_sample(d)
    norms = [float(np.sqrt((u[n].numpy().astype(np.float64) ** 2).sum())) for n in range(3)]
    assert norms == pytest.approx([1.0] * 3, abs=1e-6)
    # per-voxel RMS 1 / sqrt(N), N = 32 voxels per sample
    assert float(u[0].pow(2).mean().sqrt()) == pytest.approx(1 / math.sqrt(32), rel=1e-5)
    assert torch.allclose(u[0], d[0] / float(np.sqrt((d[0].numpy() ** 2).sum())), atol=1e-6)


def test_vat_distance_values() -> None:
    half = torch.full((2, 2, 3, 3, 3), 0.5)
    # 1 - (2 * 0.25 * 2N) / (2N * 0.5 * 2) = 1 - N / 2N
    assert float(vat_distance(half, half)) == pytest.approx(0.5)
    onehot = torch.zeros(1, 2, 2, 2, 2)
    onehot[0, 0, 0] = 1
    onehot[0, 1, 1] = 1
    assert float(vat_distance(onehot, onehot)) == pytest.approx(0.0, abs=1e-7)
    # plain loops on random maps
    gen = torch.Generator().manual_seed(1)
    q = torch.softmax(torch.randn((2, 2, 3, 2, 2), generator=gen), 1)
    p = torch.softmax(torch.randn((2, 2, 3, 2, 2), generator=gen), 1)
    qa, pa = q.double().numpy().ravel(), p.double().numpy().ravel()
    inter = sum(a * b for a, b in zip(qa, pa, strict=True))
    expected = 1 - (2 * inter + 1e-8) / (sum(qa) + sum(pa) + 1e-8)
    assert float(vat_distance(q, p)) == pytest.approx(expected, abs=1e-6)


def _bn_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv3d(1, 4, 1), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 2, 1))


def test_vat_direction_pass_leaves_gradients_and_running_statistics() -> None:
    net = _bn_net().train()
    bn = net[1]
    x = torch.randn(2, 1, 4, 4, 2)
    with torch.no_grad():
        target = torch.softmax(net(x), 1)  # updates the statistics, as the target pass
    assert int(bn.num_batches_tracked) == 1
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    probe = normalize_per_sample(torch.rand(x.shape) - 0.5)
    with frozen_bn_stats(net):
        r = vat_direction(net, x, target, probe, 10.0)
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert int(bn.num_batches_tracked) == 1 and bn.track_running_stats
    assert torch.linalg.vector_norm(r.flatten(1), dim=1).tolist() == pytest.approx([1, 1], abs=1e-6)
    net(x)  # outside the block the statistics move again
    assert int(bn.num_batches_tracked) == 2 and not torch.equal(bn.running_mean, mean)


def test_vat_direction_matches_finite_differences() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 3, 1), nn.Tanh(), nn.Conv3d(3, 2, 1)).double()
    x = torch.randn(2, 1, 2, 2, 1, dtype=torch.float64)
    target = torch.softmax(torch.randn(2, 2, 2, 2, 1, dtype=torch.float64), 1)
    probe = normalize_per_sample(torch.rand(x.shape, dtype=torch.float64) - 0.5)
    xi = 0.7

    def dist(u: torch.Tensor) -> float:
        with torch.no_grad():
            return float(vat_distance(torch.softmax(net(x + xi * u), 1), target))

    grad = torch.zeros_like(probe)
    h = 1e-6
    flat = grad.view(-1)
    for i in range(probe.numel()):
        e = torch.zeros_like(probe).view(-1)
        e[i] = h
        e = e.view_as(probe)
        flat[i] = (dist(probe + e) - dist(probe - e)) / (2 * h)
    expected = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
    assert torch.allclose(vat_direction(net, x, target, probe, xi), expected, atol=1e-6)


# -- class separation ------------------------------------------------------------------------


def test_memory_keeps_the_32_lowest_scores() -> None:
    scores = torch.arange(1, 41, dtype=torch.float32) / 100  # 0.01 ... 0.40
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    feats = scores[perm].view(-1, 1).repeat(1, 4)  # each row carries its score
    kept = select_memory(feats, scores[perm])
    assert kept is not None and kept.shape == (32, 4)
    assert sorted(kept[:, 0].tolist()) == pytest.approx([k / 100 for k in range(1, 33)])
    high = select_memory(feats, scores[perm], pick="highest")
    assert sorted(high[:, 0].tolist()) == pytest.approx([k / 100 for k in range(9, 41)])
    assert select_memory(feats[:5], None).shape == (5, 4)  # <= 32: all kept
    assert select_memory(feats[:0], None) is None  # none: the caller keeps the old memory


def test_correct_mask_is_foreground_only() -> None:
    y = torch.tensor([[1, 1, 0, 0]])
    pred = torch.tensor([[1, 0, 0, 1]])
    assert correct_mask(pred, y, 1).tolist() == [[True, False, False, False]]
    assert correct_mask(pred, y, 0).tolist() == [[False, False, True, False]]
    assert correct_mask(y, y, 1).tolist() == (y == 1).tolist()  # y = y^: C = the foreground


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_class_separation_by_loops() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn((5, 3), generator=gen, requires_grad=True)
    labels = torch.tensor([1, 0, 1, 0, 0])
    mem1 = torch.randn((3, 3), generator=gen)
    sigma = [0.2, 0.6]  # selector outputs of the two class-1 rows -> a^ = (0.5, 1.5)
    weight_fns = [
        lambda r: torch.zeros(r.shape[0], 1),
        lambda r: torch.tensor([[_logit(sigma[0])], [_logit(sigma[1])]]),
    ]
    # m_0 unset: only class 1 counts, and the sum is still halved
    loss = class_separation(q, labels, [None, mem1], weight_fns)
    qa, ma = q.detach().double().numpy(), mem1.double().numpy()
    rows = [i for i in range(5) if labels[i] == 1]
    a_hat = [s * 2 / sum(sigma) for s in sigma]
    assert a_hat == pytest.approx([0.5, 1.5])
    total = 0.0
    for k, i in enumerate(rows):
        for j in range(3):
            cos = qa[i] @ ma[j] / (np.linalg.norm(qa[i]) * np.linalg.norm(ma[j]))
            total += (1 - cos) * a_hat[k]
    assert float(loss.detach()) == pytest.approx(0.5 * total / (2 * 3), abs=1e-6)
    # gradient reaches the features of class-1 rows only, never the memory
    (g,) = torch.autograd.grad(loss, q)
    assert g[[1, 3, 4]].abs().sum() == 0 and g[[0, 2]].abs().sum() > 0
    # inactive classes: memory of one row, or one row of the class
    assert float(class_separation(q, labels, [None, mem1[:1]], weight_fns)) == 0.0
    one = torch.tensor([1, 0, 0, 0, 0])
    assert float(class_separation(q, one, [None, mem1], weight_fns)) == 0.0


def test_class_separation_trains_the_selector_not_the_memory_side() -> None:
    torch.manual_seed(0)
    selector = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    q = torch.randn(6, 3, requires_grad=True)
    labels = torch.ones(6, dtype=torch.long)
    mem = torch.randn(4, 3, requires_grad=True)
    loss = class_separation(q, labels, [None, mem], [selector, selector])
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in selector.parameters())
    assert mem.grad is None  # the memory is a constant


# -- schedule, settings, batch rule ----------------------------------------------------------


def test_ramp_index_shared_vs_own() -> None:
    assert ssnet_weight(149, "shared") == pytest.approx(math.exp(-5.0))  # floor(149/150) = 0
    # own: floor(150/150) = 1 -> exp(-5 (39/40)^2)
    assert ssnet_weight(149, "own") == pytest.approx(math.exp(-5 * (39 / 40) ** 2))
    assert ssnet_weight(6000, "shared") == 1.0


def test_settings_and_batch_rule() -> None:
    s = SSNetSettings.from_config(config_for("ssnet"))
    assert (s.eps_rule, s.bg_memory, s.memory_pick) == ("per_voxel", False, "lowest")
    with pytest.raises(InputError, match="config key 'method_options.eps_rule'"):
        config_for("ssnet", {"eps_rule": "kl"})
    with pytest.raises(InputError, match="config key 'method_options.memory_pick'"):
        config_for("ssnet", {"memory_pick": "random"})
    with pytest.raises(InputError, match="config key 'method_options.bg_memory'"):
        config_for("ssnet", {"bg_memory": "yes"})
    config_for("ssnet", batch_labeled=1, batch_unlabeled=1)
    with pytest.raises(InputError, match="'batch_unlabeled' must be >= 1 for method 'ssnet'"):
        config_for("ssnet", batch_unlabeled=0)


# -- one full step ---------------------------------------------------------------------------


@pytest.mark.parametrize(("bg_memory", "shape"), [(False, (32, 32, 16)), (True, (16, 16, 16))])
def test_one_step_under_two_plus_two(bg_memory: bool, shape: tuple[int, int, int]) -> None:
    cfg = config_for("ssnet", {"bg_memory": bg_memory}, patch=shape, rampup_length=0)
    method = SSNetMethod(cfg)
    torch.manual_seed(0)
    _, nets = method.build()
    method.attach(nets, {})
    net = nets["vnet"].train()
    with torch.no_grad():  # near-even logits: both classes predicted, many voxels correct
        net.decoder.out_conv.weight.mul_(0.01)
        net.decoder.out_conv.bias.zero_()
    image, label = toy_batch(2, 2, shape)
    bn3d = net.encoder.block_one[1]
    tracked = int(bn3d.num_batches_tracked)
    recorder = BatchRecorder({"vnet": net})
    try:
        total, terms = method.loss(FakeContext(2, shape), 0, image, label)
    finally:
        recorder.close()
    assert math.isfinite(total.item()) and all(math.isfinite(float(v)) for v in terms.values())
    # four V-Net forwards of the whole batch; BatchNorm never sees a single sample or row
    assert recorder.sizes("vnet") == [4, 4, 4, 4]
    assert min(b for _, b in recorder.calls) >= 2
    # main pass and VAT target pass move the running statistics, the perturbed ones do not
    assert int(bn3d.num_batches_tracked) == tracked + 2
    # memory: 32 of the correct foreground voxels (more than 32 of the 2 * 16*16*8)
    assert float(terms["memory_rows"]) == 32.0 and method.memory[1].shape == (32, 32)
    assert (method.memory[0] is not None) == bg_memory
    assert float(terms["cl_l"]) > 0 and float(terms["cl_u"]) > 0
    assert float(terms["cons_weight"]) == 1.0
    missing = sgd_step(nets, total)
    # S^mem_c are inert (b^ = 1), S_0 is called only with a background memory
    inert = {"vnet.memory_selectors.0", "vnet.memory_selectors.1"}
    if not bg_memory:
        inert.add("vnet.selectors.0")
    assert {m.rsplit(".", 2)[0] for m in missing} == inert
    # the memory survives a resume through the method's state
    other = SSNetMethod(cfg)
    other.attach(nets, {})
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.memory[1], method.memory[1])
    assert (other.memory[0] is None) == (method.memory[0] is None)
