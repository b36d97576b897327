"""Folding eval-mode BatchNorm into the convolution before it (the bf16 inference path)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from semiseg3d.inference.fold import count_batchnorm, fold_batchnorm
from semiseg3d.models import DualNet


def _randomise_batchnorm(net: nn.Module, seed: int) -> None:
    """Running statistics and affine parameters far from the identity (fresh ones are 0/1)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.4 * torch.rand(n, generator=g) - 0.2)


def test_one_pair_by_hand() -> None:
    # conv: y = 2 x + 1; BN (eps 0): (y - 3) / sqrt(4) * 0.5 + 0.25
    # folded by hand: weight 2 * 0.5 / 2 = 0.5, bias (1 - 3) * 0.5 / 2 + 0.25 = -0.25
    conv = nn.Conv3d(1, 1, kernel_size=1)
    bn = nn.BatchNorm3d(1, eps=0.0)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(4.0)
        bn.weight.fill_(0.5)
        bn.bias.fill_(0.25)
    folded = fold_batchnorm(nn.Sequential(conv, bn, nn.ReLU()))
    assert isinstance(folded[1], nn.Identity)
    assert folded[0].weight.item() == pytest.approx(0.5)
    assert folded[0].bias.item() == pytest.approx(-0.25)
    x = torch.full((1, 1, 1, 1, 1), 4.0)
    assert folded(x).item() == pytest.approx(1.75)  # relu((9 - 3) / 2 * 0.5 + 0.25)


@pytest.mark.parametrize("subnet", ["resnet", "vnet"])
def test_subnets_fold_completely_and_keep_their_output(subnet: str) -> None:
    torch.manual_seed(0)
    net = getattr(DualNet(), subnet)
    _randomise_batchnorm(net, seed=1)
    net.eval()
    before = count_batchnorm(net)
    folded = fold_batchnorm(net)
    assert before > 0
    assert count_batchnorm(folded) == 0  # every BatchNorm3d follows a conv it folds into
    assert count_batchnorm(net) == before  # the original is left as it was
    assert not folded.training
    x = torch.randn(2, 1, 32, 32, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_logits, ref_feat = net(x)
        logits, feat = folded(x)
    scale = ref_logits.abs().max().item()
    assert scale > 1.0
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(feat, ref_feat, rtol=0, atol=1e-5 * ref_feat.abs().max().item())


def test_pairs_without_batchnorm_stay() -> None:
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.BatchNorm3d(2))
    folded = fold_batchnorm(net)
    assert isinstance(folded[0], nn.Conv3d)
    assert isinstance(folded[2], nn.BatchNorm3d)  # follows a ReLU, not a conv
    assert count_batchnorm(folded) == 1


def test_prepared_rule_folds_only_on_the_reduced_precision_path() -> None:
    from semiseg3d.accel import Acceleration
    from semiseg3d.config.run import TrainConfig
    from semiseg3d.inference.rule import prepared_rule

    torch.manual_seed(0)
    model = DualNet().eval()
    nets = {"resnet": model.resnet, "vnet": model.vnet}
    cpu = torch.device("cpu")
    fp32 = Acceleration(device=cpu, dtype=None, channels_last=False)
    members, _, _ = prepared_rule(TrainConfig(), nets, fp32)
    assert members[0] is model.resnet and members[1] is model.vnet  # the reference, as trained
    assert count_batchnorm(members[0]) > 0
    bf16 = Acceleration(device=cpu, dtype=torch.bfloat16, channels_last=True)
    members, _, _ = prepared_rule(TrainConfig(), nets, bf16)
    assert [count_batchnorm(m) for m in members] == [0, 0]
    assert members[0] is not model.resnet
    assert count_batchnorm(model.resnet) > 0  # the trained networks are untouched
    weight = members[1].encoder.block_two[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert weight.dtype == torch.bfloat16  # cast once, not at every autocast call
    assert model.vnet.encoder.block_two[0].weight.dtype == torch.float32


@pytest.mark.parametrize("method", ["dual", "suponly", "mcnet", "mcf", "bcp"])
def test_every_method_runs_its_folded_bf16_inference(method: str) -> None:
    # MC-Net rebuilds a V-Net from its state dict: folding must come after that choice
    import dataclasses

    from semiseg3d.accel import Acceleration
    from semiseg3d.config.run import TrainConfig
    from semiseg3d.inference.rule import prepared_rule
    from semiseg3d.methods import get_method

    torch.manual_seed(0)
    cfg = dataclasses.replace(TrainConfig(), method=method)
    _, nets = get_method(cfg).build()
    for net in nets.values():
        net.eval()
    cpu = torch.device("cpu")
    _, ref_fn, _ = prepared_rule(
        cfg, nets, Acceleration(device=cpu, dtype=None, channels_last=False)
    )
    bf16 = Acceleration(device=cpu, dtype=torch.bfloat16, channels_last=True)
    members, fn, _ = prepared_rule(cfg, nets, bf16)
    assert all(count_batchnorm(m) == 0 for m in members)
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = ref_fn(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            probs = fn(bf16.prepare(x))
    assert probs.shape == ref.shape == (1, 2, 32, 32, 32)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 32, 32, 32))
    assert (probs - ref).abs().max().item() < 0.25  # bf16 rounding, not a different network
