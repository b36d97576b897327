"""SASSNet (spec/baselines-more.md section 3): the discriminator's size, pooling and cost at
three patches, each term on hand-made tensors, the adversarial weight rule, and one full
step under 2 + 2 with the discriminator's own Adam step and its state."""

from __future__ import annotations

import math

import pytest
import torch
from step_harness import BatchRecorder, FakeContext, config_for, sgd_step, toy_batch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from semiseg3d.errors import InputError
from semiseg3d.methods.common import ramp
from semiseg3d.methods.sassnet import (
    DEFAULT_LCC,
    SASSNetMethod,
    SASSNetSettings,
    adversarial_loss,
    adversarial_weight,
    discriminator_loss,
    discriminator_targets,
    generator_targets,
    sdf_mse,
)
from semiseg3d.models.complexity import count_params
from semiseg3d.models.sassnet import SASSNet, SDFDiscriminator, discriminator_input

# -- networks --------------------------------------------------------------------------------


def test_parameter_counts() -> None:
    with torch.device("meta"):
        d = SDFDiscriminator()
        both = SASSNet()
    # conv0, conv1: 1*64*4^3 + 64 = 4,160; conv2: 64*128*64 + 128 = 524,416;
    # conv3: 128*256*64 + 256 = 2,097,408; conv4: 256*512*64 + 512 = 8,389,120; fc 512*2 + 2
    layers = [d.conv0, d.conv1, d.conv2, d.conv3, d.conv4, d.classifier]
    assert [count_params(m) for m in layers] == [4_160, 4_160, 524_416, 2_097_408, 8_389_120, 1_026]
    assert count_params(d) == 11_020_290
    assert count_params(both.segmenter) == 9_448_866
    assert count_params(both) == 20_469_156


@pytest.mark.parametrize(
    ("patch", "conv4", "macs"),
    [
        # each stage floor(s / 2), four stages; MACs = sum out_voxels * C_in * C_out * 64
        # + 512 * 2 (the spec's counted values)
        ((112, 112, 80), (7, 7, 5), 15_414_068_224),
        ((96, 96, 96), (6, 6, 6), 13_589_545_984),
        ((64, 64, 32), (4, 4, 2), 2_013_266_944),
    ],
)
def test_discriminator_map_and_cost(patch, conv4, macs) -> None:
    with torch.device("meta"):
        d = SDFDiscriminator().eval()
        x = torch.empty(1, 2, *patch)
        assert tuple(d.features(x).shape) == (1, 512, *conv4)
        with FlopCounterMode(display=False) as counter:
            out = d(x)
    assert tuple(out.shape) == (1, 2)
    assert counter.get_total_flops() // 2 == macs


def test_global_pool_equals_the_original_pool_at_112_112_80() -> None:
    torch.manual_seed(0)
    d = SDFDiscriminator().eval()
    h = torch.randn(2, 512, 7, 7, 5)  # the conv4 map at 112 x 112 x 80
    original = d.classifier(nn.AvgPool3d((7, 7, 5))(h).flatten(1))
    assert torch.allclose(d.classifier(d.pool(h).flatten(1)), original, atol=1e-6)
    with pytest.raises(RuntimeError):  # the fixed kernel cannot run on the 4 x 4 x 2 map
        nn.AvgPool3d((7, 7, 5))(torch.randn(1, 512, 4, 4, 2))
    x = discriminator_input(torch.zeros(2, 1, 32, 32, 16), torch.ones(2, 1, 32, 32, 16))
    assert x.shape == (2, 2, 32, 32, 16) and float(x[:, 0].abs().sum()) == 0.0
    with torch.no_grad():
        assert d(x).shape == (2, 2)
    with pytest.raises(ValueError, match="expected"):
        d(torch.zeros(1, 1, 16, 16, 16))


# -- terms -----------------------------------------------------------------------------------


def test_targets_and_cross_entropies() -> None:
    assert generator_targets(3).tolist() == [1, 1, 1]
    assert discriminator_targets(2, 2).tolist() == [1, 1, 0, 0]
    assert discriminator_targets(3, 1).tolist() == [1, 1, 1, 0]
    zeros = torch.zeros(4, 2)  # logits (0, 0): CE = ln 2 for either target
    assert float(adversarial_loss(zeros[:2])) == pytest.approx(math.log(2))
    assert float(discriminator_loss(zeros, 2)) == pytest.approx(math.log(2))
    # logits (0, 2) for every sample: CE(target 1) = ln(1 + e^-2), CE(target 0) = ln(1 + e^2)
    logits = torch.tensor([[0.0, 2.0]] * 3)
    ce1, ce0 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))
    assert float(adversarial_loss(logits)) == pytest.approx(ce1)
    assert float(discriminator_loss(logits, 1)) == pytest.approx((ce1 + 2 * ce0) / 3)


def test_sdf_mse_by_hand_and_with_an_undefined_sample() -> None:
    pred = torch.tensor([[0.5, -0.5], [0.0, 0.2]]).view(2, 2, 1, 1)
    gt = torch.tensor([[1.0, -1.0], [0.0, 0.0]]).view(2, 2, 1, 1)
    # (0.25 + 0.25 + 0 + 0.04) / 4
    assert float(sdf_mse(pred, gt)) == pytest.approx(0.135)
    gt[1] = float("nan")  # an all-foreground sample: left out
    assert float(sdf_mse(pred, gt)) == pytest.approx(0.25)
    gt[0] = float("nan")
    assert float(sdf_mse(pred, gt)) == 0.0


def test_ramp_values() -> None:
    assert ramp(0, 0.015) == pytest.approx(1.01069e-4, rel=1e-5)  # 0.015 e^-5
    assert ramp(0, 0.01) == pytest.approx(6.7379e-5, rel=1e-5)
    assert ramp(6000, 0.015) == 0.015 and ramp(9000, 0.01) == 0.01


def test_adversarial_weight_rule_and_settings() -> None:
    s = SASSNetSettings()
    assert adversarial_weight(s, config_for("sassnet", labeled_ratio=0.1)) == 0.015
    assert adversarial_weight(s, config_for("sassnet", labeled_ratio=0.2)) == 0.01
    assert adversarial_weight(s, config_for("sassnet", extra={"ratio": 10})) == 0.015
    assert adversarial_weight(s, config_for("sassnet", extra={"ratio": 20})) == 0.01
    assert adversarial_weight(s, config_for("sassnet", labeled=8)) == 0.01  # unknown: default
    explicit = SASSNetSettings.from_config(config_for("sassnet", {"w_adv": 0.02}))
    assert adversarial_weight(explicit, config_for("sassnet", labeled_ratio=0.1)) == 0.02
    with pytest.raises(InputError, match="config key 'method_options.w_adv'"):
        config_for("sassnet", {"w_adv": -1.0})
    config_for("sassnet", batch_labeled=1, batch_unlabeled=1)
    with pytest.raises(InputError, match="'batch_unlabeled' must be >= 1 for method 'sassnet'"):
        config_for("sassnet", batch_unlabeled=0)
    with pytest.raises(InputError, match="'batch_labeled'"):
        config_for("sassnet", batch_labeled=0)


def test_generator_term_reaches_the_sdf_map_not_the_discriminator() -> None:
    from semiseg3d.models.modes import eval_mode

    torch.manual_seed(0)
    d = SDFDiscriminator().train()
    sdf = torch.tanh(torch.randn(2, 1, 16, 16, 16)).requires_grad_(True)
    image = torch.randn(2, 1, 16, 16, 16)
    with eval_mode(d, frozen=True):
        assert not d.training
        logits = d(discriminator_input(sdf, image))
    assert d.training and all(p.requires_grad for p in d.parameters())
    adversarial_loss(logits).backward()
    assert sdf.grad is not None and sdf.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.parameters())


# -- one full step ---------------------------------------------------------------------------


def _built(shape: tuple[int, int, int]) -> tuple[SASSNetMethod, dict[str, nn.Module]]:
    method = SASSNetMethod(config_for("sassnet", patch=shape, rampup_length=0, labeled=8))
    torch.manual_seed(0)
    _, nets = method.build()
    method.attach(nets, {})
    nets["vnet"].train()
    return method, nets


def test_one_step_under_two_plus_two() -> None:
    shape = (32, 32, 16)
    method, nets = _built(shape)
    seg, disc = nets["vnet"], method.disc
    assert disc is not None and all(p is not q for p in disc.parameters() for q in seg.parameters())
    disc_calls: list[tuple[bool, int]] = []
    handle = disc.register_forward_pre_hook(
        lambda m, a: disc_calls.append((m.training, int(a[0].shape[0])))
    )
    image, label = toy_batch(2, 2, shape)
    recorder = BatchRecorder({"vnet": seg, "disc": disc})
    try:
        total, terms = method.loss(FakeContext(2, shape), 0, image, label)
        assert math.isfinite(total.item()) and all(math.isfinite(float(v)) for v in terms.values())
        assert float(terms["cons_weight"]) == pytest.approx(
            0.01
        )  # labeled = 8 without a ratio: default
        d_before = {n: p.detach().clone() for n, p in disc.named_parameters()}
        assert sgd_step(nets, total) == []  # every segmenter parameter gets a gradient
        assert all(p.grad is None for p in disc.parameters())  # the generator term left D alone
        for n, p in disc.named_parameters():
            assert torch.equal(p, d_before[n])
        # D's step, replayed independently: eval segmenter, same dropout draws, same Adam
        ref = SDFDiscriminator()  # a copy without the hooks
        ref.load_state_dict(disc.state_dict())
        ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-4, betas=(0.9, 0.99))
        rng = torch.get_rng_state()
        seg.eval()
        with torch.no_grad():
            sdf_eval = seg(image)[1]
        seg.train()
        torch.set_rng_state(rng)
        method.after_step(0)
        torch.set_rng_state(rng)
        ref.train()
        ce = torch.nn.functional.cross_entropy(
            ref(torch.cat([sdf_eval, image], 1)), torch.tensor([1, 1, 0, 0])
        )
        ref_opt.zero_grad()
        ce.backward()
        ref_opt.step()
    finally:
        recorder.close()
        handle.remove()
    for (n, p), q in zip(disc.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-7), n
        assert not torch.equal(p, d_before[n]), n  # Adam moved every D parameter
    assert seg.training  # the segmenter is back in train mode
    # batches: segmenter once in train mode on 4 (its eval pass is not a train forward);
    # D in eval mode on the 2 unlabeled maps, then in train mode on all 4
    assert recorder.sizes("vnet") == [4]
    assert disc_calls == [(False, 2), (True, 4)]
    assert min(b for _, b in recorder.calls) >= 2


def test_discriminator_state_round_trip() -> None:
    shape = (16, 16, 16)
    method, nets = _built(shape)
    image, label = toy_batch(2, 2, shape)
    total, _ = method.loss(FakeContext(2, shape), 0, image, label)
    sgd_step(nets, total)
    method.after_step(0)
    state = method.state_dict()
    assert set(state) == {"discriminator", "optimizer", "last_d_loss"}
    other = SASSNetMethod(method.cfg)
    torch.manual_seed(1)  # a different D
    _, other_nets = other.build()
    other.attach(other_nets, {})
    assert other.disc is not None and method.disc is not None
    other.load_state_dict(state)
    for p, q in zip(other.disc.parameters(), method.disc.parameters(), strict=True):
        assert torch.equal(p, q)
    a, b = other.d_opt.state_dict()["state"], method.d_opt.state_dict()["state"]  # type: ignore[union-attr]
    assert set(a) == set(b) and len(a) == 12  # 6 layers x (weight, bias)
    for k in a:
        assert torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) and float(a[k]["step"]) == 1.0
    # the D loss of the last step, logged by the next step as disc_prev, comes along
    assert other._last_d_loss is not None and method._last_d_loss is not None
    assert torch.equal(other._last_d_loss, method._last_d_loss)


def test_inference_rule_is_the_segmentation_head() -> None:
    method = SASSNetMethod(config_for("sassnet"))
    torch.manual_seed(0)
    _, nets = method.build()
    (member,) = method.inference_nets(nets, None)
    assert member is nets["vnet"] and count_params(member) == 9_448_866
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        p = method.prob_fn([member.eval()])(x)
        assert torch.allclose(p[:, 1], torch.sigmoid(member(x)[0][:, 0]))
        assert torch.allclose(p.sum(1), torch.ones(1, 16, 16, 16))
    assert not DEFAULT_LCC and not method.default_lcc
