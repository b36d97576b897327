"""Networks (spec section 1) and their complexity counts (spec 1.5 and 10).

Expected numbers come from the spec's verified tables or are worked out by hand in the
test; the forward passes use tiny inputs so the whole file runs in seconds on a CPU.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from semiseg3d.cli import main as cli_main
from semiseg3d.errors import InputError
from semiseg3d.models import DualNet, ResNet34EncDec, VNet, build_model
from semiseg3d.models.complexity import count_params, legacy_macs, true_macs
from semiseg3d.models.resnet34 import BasicBlock

LA = (112, 112, 80)
CUBE = (96, 96, 96)
SMALL = (32, 32, 16)


def meta_model(name: str) -> nn.Module:
    """The network built on the meta device: shapes only, instant."""
    with torch.device("meta"):
        return build_model(name)


@pytest.fixture(scope="module")
def vnet() -> VNet:
    torch.manual_seed(0)
    return VNet()


@pytest.fixture(scope="module")
def resnet() -> ResNet34EncDec:
    torch.manual_seed(0)
    return ResNet34EncDec()


@pytest.fixture(scope="module")
def small_input() -> torch.Tensor:
    return torch.randn(2, 1, *SMALL, generator=torch.Generator().manual_seed(1))


# -- parameter counts (spec 1.5) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "total"),
    [("vnet", 9_448_866), ("resnet34", 17_930_354), ("dual", 27_379_220)],
)
def test_param_counts(name: str, total: int) -> None:
    model = meta_model(name)
    assert count_params(model) == total
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "encoder", "decoder"),
    [("vnet", 7_376_896, 2_071_970), ("resnet34", 15_858_384, 2_071_970)],
)
def test_encoder_decoder_split(name: str, encoder: int, decoder: int) -> None:
    model = meta_model(name)
    assert count_params(model.encoder) == encoder
    assert count_params(model.decoder) == decoder


@pytest.mark.parametrize(
    ("name", "bn_affine", "conv_bias"),
    [("vnet", 5_600, 2_802), ("resnet34", 10_336, 898)],
)
def test_bn_affine_and_conv_bias_counts(name: str, bn_affine: int, conv_bias: int) -> None:
    model = meta_model(name)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]
    assert sum(m.weight.numel() + m.bias.numel() for m in bns) == bn_affine
    assert sum(m.bias.numel() for m in convs if m.bias is not None) == conv_bias


def test_dual_holds_both_subnets() -> None:
    model = meta_model("dual")
    assert isinstance(model, DualNet)
    assert isinstance(model.resnet, ResNet34EncDec)
    assert isinstance(model.vnet, VNet)
    assert count_params(model.resnet) + count_params(model.vnet) == count_params(model)


def test_build_model_unknown_name() -> None:
    with pytest.raises(InputError, match="unet"):
        build_model("unet")


# -- MAC counts (spec 1.5, 10) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "patch", "macs"),
    [
        ("vnet", LA, 40_108_687_360),
        ("vnet", CUBE, 35_361_128_448),
        ("resnet34", LA, 72_735_129_600),
        ("resnet34", CUBE, 64_125_665_280),
        ("dual", LA, 40_108_687_360 + 72_735_129_600),
        ("dual", CUBE, 35_361_128_448 + 64_125_665_280),
    ],
)
def test_true_macs_match_flop_counter_totals(name: str, patch: tuple[int, ...], macs: int) -> None:
    assert true_macs(meta_model(name), patch) == macs


@pytest.mark.parametrize(
    ("name", "patch", "giga"),
    [
        ("vnet", LA, 47.102),
        ("vnet", CUBE, 41.527),
        ("resnet34", LA, 79.742),
        ("resnet34", CUBE, 70.303),
        ("dual", LA, 126.844),
        ("dual", CUBE, 111.830),
    ],
)
def test_legacy_macs_match_spec_table(name: str, patch: tuple[int, ...], giga: float) -> None:
    assert round(legacy_macs(meta_model(name), patch) / 1e9, 3) == pytest.approx(giga, abs=1e-9)


def test_mac_rules_on_a_hand_counted_toy_network() -> None:
    # Conv 1->4 (k3, bias), BN(4), ReLU, ConvTranspose 4->2 (k2, s2, bias) on a 16^3 patch.
    toy = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1),
        nn.BatchNorm3d(4),
        nn.ReLU(),
        nn.ConvTranspose3d(4, 2, 2, stride=2),
    )
    n_in = 16**3
    n_up = 32**3
    # true: conv 4 outputs x 27 taps per voxel; transposed conv: each input voxel x 4 x 2 x 8
    assert true_macs(toy, (16, 16, 16)) == n_in * 4 * 27 + n_in * 4 * 2 * 8
    # legacy: conv (27 + 1 bias) per output element; BN 2 per element; ReLU 0;
    # transposed conv (C_in 4 x 8 taps + 1 bias) per output element (2 channels at 32^3)
    expected = 4 * n_in * 28 + 2 * 4 * n_in + 2 * n_up * (4 * 8 + 1)
    assert legacy_macs(toy, (16, 16, 16)) == expected


def test_counting_leaves_the_model_untouched(vnet: VNet) -> None:
    before = {k: v.clone() for k, v in vnet.state_dict().items()}
    vnet.train()
    legacy_macs(vnet, SMALL)
    true_macs(vnet, SMALL)
    assert vnet.training and all(m.training for m in vnet.modules())
    assert all(p.device.type == "cpu" for p in vnet.parameters())
    after = vnet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not vnet._forward_hooks and not any(m._forward_hooks for m in vnet.modules())


@pytest.mark.parametrize("patch", [(112, 112, 81), (8, 16, 16), (0, 16, 16)])
def test_counts_reject_patch_not_multiple_of_16(patch: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match="multiple of 16"):
        true_macs(meta_model("vnet"), patch)
    with pytest.raises(InputError, match="multiple of 16"):
        legacy_macs(meta_model("vnet"), patch)


# -- shapes and forward behaviour ------------------------------------------------------------


@pytest.mark.parametrize("subnet", ["vnet", "resnet"])
def test_output_feature_and_bottleneck_shapes(
    subnet: str, vnet: VNet, resnet: ResNet34EncDec, small_input: torch.Tensor
) -> None:
    model = vnet if subnet == "vnet" else resnet
    model.eval()
    with torch.no_grad():
        logits, features = model(small_input)
        skips = model.encode(small_input)
    assert logits.shape == (2, 2, *SMALL)
    assert features.shape == (2, 16, *SMALL)
    x, y, z = SMALL
    assert [tuple(t.shape) for t in skips] == [
        (2, 16, x, y, z),
        (2, 32, x // 2, y // 2, z // 2),
        (2, 64, x // 4, y // 4, z // 4),
        (2, 128, x // 8, y // 8, z // 8),
        (2, 256, x // 16, y // 16, z // 16),
    ]
    assert features.min() >= 0  # post-ReLU representation


def test_dual_forward_is_both_subnets(small_input: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = DualNet().eval()
    with torch.no_grad():
        (z_a, f_a), (z_b, f_b) = model(small_input)
        ref_a = model.resnet(small_input)
        ref_b = model.vnet(small_input)
    assert z_a.shape == z_b.shape == (2, 2, *SMALL)
    assert f_a.shape == f_b.shape == (2, 16, *SMALL)
    assert torch.equal(z_a, ref_a[0]) and torch.equal(f_a, ref_a[1])
    assert torch.equal(z_b, ref_b[0]) and torch.equal(f_b, ref_b[1])


@pytest.mark.parametrize("shape", [(1, 1, 32, 32, 24), (1, 1, 8, 16, 16), (1, 32, 32, 16)])
def test_forward_rejects_bad_shape(
    shape: tuple[int, ...], vnet: VNet, resnet: ResNet34EncDec
) -> None:
    x = torch.zeros(shape)
    for model in (vnet, resnet):
        with pytest.raises(InputError, match=re_shape(shape)):
            model(x)


def re_shape(shape: tuple[int, ...]) -> str:
    """A regex matching the spatial part of ``shape`` (or all of it when not 5-D) as printed."""
    part = shape[2:] if len(shape) == 5 else shape
    return r"\(" + r", ".join(str(s) for s in part) + r"\)"


@pytest.mark.parametrize("subnet", ["vnet", "resnet"])
def test_eval_mode_is_deterministic(
    subnet: str, vnet: VNet, resnet: ResNet34EncDec, small_input: torch.Tensor
) -> None:
    model = (vnet if subnet == "vnet" else resnet).eval()
    with torch.no_grad():
        first = model(small_input)
        second = model(small_input)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def _capture(module: nn.Module, store: list[torch.Tensor]) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda _m, _i, out: store.append(out.detach().clone()))


def _assert_channel_dropout(before: torch.Tensor, after: torch.Tensor) -> None:
    """``after`` is ``before`` with whole (sample, channel) maps zeroed and the rest x2."""
    b, c = after.shape[:2]
    dropped = kept = 0
    for i in range(b):
        for j in range(c):
            if torch.count_nonzero(after[i, j]) == 0 and torch.count_nonzero(before[i, j]) > 0:
                dropped += 1
            else:
                torch.testing.assert_close(after[i, j], 2 * before[i, j])
                kept += 1
    assert dropped > 0 and kept > 0


@pytest.mark.parametrize("subnet", ["vnet", "resnet"])
def test_train_mode_drops_whole_feature_channels(
    subnet: str, vnet: VNet, resnet: ResNet34EncDec, small_input: torch.Tensor
) -> None:
    model = (vnet if subnet == "vnet" else resnet).train()
    pre: list[torch.Tensor] = []
    handle = _capture(model.decoder.block_nine, pre)
    try:
        torch.manual_seed(3)
        with torch.no_grad():
            logits, features = model(small_input)
    finally:
        handle.remove()
        model.eval()
    _assert_channel_dropout(pre[0], features)
    # the logits are computed from the dropped-out representation
    torch.testing.assert_close(logits, model.decoder.out_conv(features))


def test_vnet_drops_bottleneck_channels_resnet_does_not(
    vnet: VNet, resnet: ResNet34EncDec, small_input: torch.Tensor
) -> None:
    vnet.train()
    pre: list[torch.Tensor] = []
    handle = _capture(vnet.encoder.block_five, pre)
    try:
        torch.manual_seed(4)
        with torch.no_grad():
            x5 = vnet.encode(small_input)[4]
    finally:
        handle.remove()
        vnet.eval()
    _assert_channel_dropout(pre[0], x5)
    assert not any(isinstance(m, nn.Dropout3d) for m in resnet.encoder.modules())
    resnet.train()
    try:
        with torch.no_grad():
            torch.manual_seed(5)
            first = resnet.encode(small_input)[4]
            torch.manual_seed(6)
            second = resnet.encode(small_input)[4]
    finally:
        resnet.eval()
    assert torch.equal(first, second)  # no randomness before the decoder


# -- initialisation (spec 1.4) ------------------------------------------------------------------


def test_batchnorm_init_no_zero_gamma(vnet: VNet, resnet: ResNet34EncDec) -> None:
    blocks = [m for m in resnet.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3 + 4 + 6 + 3
    assert all(torch.all(b.bn2.weight == 1) for b in blocks)
    for model in (vnet, resnet):
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_conv_weights_kaiming_normal_fan_in(vnet: VNet, resnet: ResNet34EncDec) -> None:
    # fan_in = weight.size(1) * kernel volume (for ConvTranspose3d size(1) is C_out)
    cases = [
        (vnet.encoder.block_five[0].weight, 256 * 27),
        (vnet.decoder.block_five_up[0].weight, 128 * 8),
        (resnet.encoder.layer4[1].conv1.weight, 256 * 27),
    ]
    for weight, fan_in in cases:
        assert weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
        assert abs(weight.mean().item()) < 0.05 * math.sqrt(2 / fan_in)


# -- channels_last_3d ------------------------------------------------------------------------------


def test_channels_last_3d_gives_the_same_outputs(small_input: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = DualNet().eval()
    with torch.no_grad():
        ref = model(small_input)
        model_cl = model.to(memory_format=torch.channels_last_3d)
        out = model_cl(small_input.to(memory_format=torch.channels_last_3d))
    for (z_ref, f_ref), (z, f) in zip(ref, out, strict=True):
        torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(f, f_ref, rtol=1e-4, atol=1e-4)


# -- CLI ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "patch", "params", "macs_g", "legacy_g"),
    [
        ("vnet", LA, 9_448_866, 40.109, 47.102),
        ("resnet34", CUBE, 17_930_354, 64.126, 70.303),
        ("dual", LA, 27_379_220, 112.844, 126.844),
    ],
)
def test_cli_complexity_prints_one_json_object(
    capsys: pytest.CaptureFixture[str],
    name: str,
    patch: tuple[int, ...],
    params: int,
    macs_g: float,
    legacy_g: float,
) -> None:
    code = cli_main(["complexity", "--model", name, "--patch", *map(str, patch)])
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    record = json.loads(out)
    assert record["model"] == name
    assert record["patch"] == list(patch)
    assert record["params"] == params
    assert record["params_m"] == pytest.approx(params / 1e6)
    assert round(record["macs_g"], 3) == pytest.approx(macs_g)
    assert round(record["macs_g_legacy"], 3) == pytest.approx(legacy_g)


def test_cli_complexity_rejects_patch_not_multiple_of_16(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli_main(["complexity", "--model", "vnet", "--patch", "112", "112", "81"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("semiseg3d complexity: error:")
    assert "112 112 81" in lines[0] and "16" in lines[0]


def test_image_conv_computes_in_float32_under_cpu_bf16_autocast() -> None:
    from semiseg3d.models.blocks import ImageConv3d

    torch.manual_seed(0)
    image_conv = ImageConv3d(1, 4, 3, padding=1)
    plain = nn.Conv3d(1, 4, 3, padding=1)
    plain.load_state_dict(image_conv.state_dict())  # same parameters, same keys
    x = torch.randn(2, 1, 8, 8, 8)
    reference = plain(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = image_conv(x)
        lowered = plain(x)
    assert lowered.dtype == torch.bfloat16  # what autocast does to a plain conv
    assert fast.dtype == torch.bfloat16  # the same output dtype ...
    assert torch.equal(fast, reference.to(torch.bfloat16))  # ... of the float32 result
    assert torch.equal(image_conv(x), reference)  # without autocast: a plain Conv3d
    with pytest.raises(ValueError, match="zero padding"):
        ImageConv3d(1, 4, 3, padding=1, padding_mode="reflect")


def test_the_image_reading_convolutions_are_image_convs() -> None:
    from semiseg3d.models.blocks import ImageConv3d

    model = DualNet()
    assert isinstance(model.resnet.encoder.conv1, ImageConv3d)
    assert isinstance(model.vnet.encoder.block_one[0], ImageConv3d)
    n_image_convs = sum(isinstance(m, ImageConv3d) for m in model.modules())
    assert n_image_convs == 2  # nothing deeper in the networks


def test_decode_levels_gives_forward_outputs_and_the_deeper_features() -> None:
    """``decode_levels`` returns what ``forward`` returns plus x6, x7, x8 at 1/8, 1/4, 1/2 size
    with 8, 4, 2 times the base width (the V-Net's block widths, spec section 1.2)."""
    from semiseg3d.models.vnet import VNet

    torch.manual_seed(0)
    net = VNet(n_filters=4).eval()
    x = torch.randn(2, 1, 32, 32, 16)
    with torch.no_grad():
        logits, x9 = net(x)
        logits2, x9b, (x6, x7, x8) = net.decoder.decode_levels(net.encode(x))
    assert torch.equal(logits, logits2) and torch.equal(x9, x9b)
    assert x6.shape == (2, 32, 4, 4, 2)
    assert x7.shape == (2, 16, 8, 8, 4)
    assert x8.shape == (2, 8, 16, 16, 8)
