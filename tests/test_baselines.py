"""The baselines (shared/spec/baselines.md): every assertable fact of the spec on tiny
hand-made tensors, each method's parameter count, a short CPU run of each method on the
synthetic demo data, resume equality with an EMA teacher, recipes and inference rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from semiseg3d.config.registry import METHODS, baseline_names, resolve_recipe
from semiseg3d.config.run import TrainConfig
from semiseg3d.errors import InputError
from semiseg3d.methods import get_method, networks
from semiseg3d.methods.bcp import (
    BCP,
    cuboid_mask,
    cuboid_size,
    mix,
    mix_loss,
    pseudo_label,
)
from semiseg3d.methods.common import batch_lcc, dice_lin, ema_update, ramp, sharpen
from semiseg3d.methods.dtc import dtc_losses, dtc_transform, sdf_target
from semiseg3d.methods.mcf import mcf_losses, mcf_winner_is_v, mistake_loss, mistake_mask
from semiseg3d.methods.mcnet import mc_loss
from semiseg3d.methods.uamt import (
    clipped_noise,
    masked_mse,
    uamt_ema_alpha,
    uamt_threshold,
    uncertainty,
)
from semiseg3d.models import VNet
from semiseg3d.models.baselines import MCNet, VNetSDF, mcnet_vnet_state
from semiseg3d.models.complexity import count_params

# -- section 0: shared pieces ----------------------------------------------------------------


def test_sigmoid_ramp_values() -> None:
    assert ramp(0, 0.1) == pytest.approx(6.7379e-4, rel=1e-4)
    assert ramp(3000, 0.1) == pytest.approx(0.0286505, rel=1e-5)
    assert ramp(6000, 0.1) == pytest.approx(0.1) and ramp(9000, 1.0) == 1.0


def test_dice_lin_by_hand() -> None:
    q = torch.tensor([[0.5, 1.0, 0.0]])
    y = torch.tensor([[1, 1, 0]])
    # 1 - (2 * 1.5) / (1.5 + 2)
    assert float(dice_lin(q, y)) == pytest.approx(1 - 3 / 3.5)


# -- section 2: UA-MT ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "expected"), [(0, 0.521028), (3000, 0.569508), (6000, 0.693147), (7000, 0.693147)]
)
def test_uamt_threshold(t: int, expected: float) -> None:
    assert uamt_threshold(t, 6000) == pytest.approx(expected, abs=1e-6)


def test_uamt_uncertainty_of_known_probabilities() -> None:
    p = torch.tensor([0.5, 0.9]).view(1, 1, 2, 1, 1)
    probs = torch.cat([p, 1 - p], dim=1)  # (1, 2, 2, 1, 1): (0.5, 0.5) and (0.9, 0.1)
    u = uncertainty(probs)
    assert u.shape == (1, 1, 2, 1, 1)
    assert u.flatten().tolist() == pytest.approx([0.693145, 0.325081], abs=1e-6)


def test_uamt_masked_mse_drops_uncertain_voxels() -> None:
    student = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1, 1).expand(1, 2, 2, 1, 1)
    teacher = torch.tensor([0.6, 0.4]).view(1, 2, 1, 1, 1).expand(1, 2, 2, 1, 1)
    u = torch.tensor([0.1, 0.7]).view(1, 1, 2, 1, 1)
    assert float(masked_mse(student, teacher, u, 0.6)) == pytest.approx(0.04)
    assert float(masked_mse(student, teacher, u, 0.05)) == 0.0  # nothing kept: no NaN


def test_uamt_noise_is_clipped() -> None:
    gen = torch.Generator().manual_seed(0)
    noise = clipped_noise(torch.zeros(20000), gen)
    bound = torch.tensor(0.2)  # float32, like the noise
    assert bool((noise.abs() <= bound).all()) and float(noise.abs().max()) == pytest.approx(0.2)
    assert float(noise.std()) == pytest.approx(0.1, rel=0.1)


def test_uamt_ema_schedule_and_update() -> None:
    assert uamt_ema_alpha(0) == 0.0 and uamt_ema_alpha(1) == 0.5
    assert uamt_ema_alpha(99) == pytest.approx(0.99) and uamt_ema_alpha(5000) == 0.99
    teacher, student = nn.Linear(2, 1), nn.Linear(2, 1)
    nn.init.constant_(student.weight, 3.0)
    ema_update(teacher, student, uamt_ema_alpha(0))  # t = 0: an exact copy
    assert torch.equal(teacher.weight, student.weight)
    nn.init.constant_(teacher.weight, 1.0)
    nn.init.constant_(student.weight, 0.0)
    ema_update(teacher, student, uamt_ema_alpha(1))
    assert teacher.weight.flatten().tolist() == [0.5, 0.5]


# -- section 3: DTC --------------------------------------------------------------------------


def test_dtc_sdf_of_a_known_cube() -> None:
    label = np.zeros((1, 7, 7, 7), dtype=np.uint8)
    label[0, 1:6, 1:6, 1:6] = 1
    g = sdf_target(label)[0]
    assert g[3, 3, 3] == pytest.approx(-1.0)
    assert g[2, 3, 3] == pytest.approx(-2 / 3) and g[2, 2, 2] == pytest.approx(-2 / 3)
    assert g[1, 3, 3] == 0.0  # inner boundary
    assert g[0, 3, 3] == pytest.approx(1 / math.sqrt(3), abs=1e-6)
    assert g[0, 0, 0] == pytest.approx(1.0)
    assert g.min() >= -1 and g.max() <= 1


def test_dtc_sdf_edge_cases() -> None:
    empty = sdf_target(np.zeros((2, 4, 4, 4)))
    assert not np.isnan(empty).any() and (empty == 0).all()
    with pytest.raises(ValueError, match="all foreground"):
        sdf_target(np.ones((1, 4, 4, 4)))
    assert np.isnan(sdf_target(np.ones((1, 4, 4, 4)), skip_full=True)).all()


def test_dtc_transform_values() -> None:
    d = torch.tensor([0.0, -0.001, 0.001])
    assert dtc_transform(d).tolist() == pytest.approx([0.5, 0.817574, 0.182426], abs=1e-6)


def test_dtc_gradient_routing() -> None:
    torch.manual_seed(0)
    seg = torch.randn(4, 1, 4, 4, 4, requires_grad=True)
    sdf = torch.tanh(torch.randn(4, 1, 4, 4, 4)).requires_grad_(True)
    label = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    label[:, 1:3, 1:3, 1:3] = 1
    gt = torch.from_numpy(sdf_target(label))
    l_seg, l_sdf, l_dtc = dtc_losses(seg, sdf, label, gt)
    (g_seg,) = torch.autograd.grad(l_seg, seg, retain_graph=True)
    (g_sdf,) = torch.autograd.grad(l_sdf, sdf)
    assert g_seg[2:].abs().sum() == 0 and g_seg[:2].abs().sum() > 0
    assert g_sdf[2:].abs().sum() == 0 and g_sdf[:2].abs().sum() > 0
    g_s, g_d = torch.autograd.grad(l_dtc, [seg, sdf])
    assert g_s[2:].abs().sum() > 0 and g_d[2:].abs().sum() > 0  # both heads, unlabeled too


def test_dtc_network_heads_and_parameters() -> None:
    net = VNetSDF()
    assert count_params(net) == 9_448_866
    z_s, d = net.eval()(torch.randn(1, 1, 16, 16, 16))
    assert z_s.shape == d.shape == (1, 1, 16, 16, 16)
    assert float(d.detach().abs().max()) < 1.0


# -- section 4: MC-Net / MC-Net+ -------------------------------------------------------------


def test_sharpening_of_known_probabilities() -> None:
    p = torch.tensor([0.6, 0.5, 0.4])
    assert sharpen(p, 0.1).tolist() == pytest.approx([0.982954, 0.5, 0.017046], abs=1e-6)
    q = torch.rand(100)
    assert torch.allclose(sharpen(q) + sharpen(1 - q), torch.ones(100))


@pytest.mark.parametrize(("k", "expected"), [(2, 0.293308), (3, 0.879923)])
def test_mc_loss_of_constant_outputs(k: int, expected: float) -> None:
    p = torch.tensor([0.4, 0.6]).view(1, 2, 1, 1, 1).expand(2, 2, 3, 3, 3)
    assert float(mc_loss([p] * k)) == pytest.approx(expected, abs=1e-5)
    assert float(mc_loss([p, p])) / 2 == pytest.approx(0.146654, abs=1e-6)


def test_mc_loss_detach_target_routes_gradient() -> None:
    a = torch.full((1, 2, 2, 2, 2), 0.3, requires_grad=True)
    b = torch.full((1, 2, 2, 2, 2), 0.6, requires_grad=True)
    # one ordered pair (i = a, j = b): a - s(b)
    term = lambda pa, pb, det: torch.mean((pa - sharpen(pb.detach() if det else pb)) ** 2)  # noqa: E731
    ga, gb = torch.autograd.grad(term(a, b, False), [a, b])
    assert ga.abs().sum() > 0 and gb.abs().sum() > 0
    ga, gb = torch.autograd.grad(term(a, b, True), [a, b], allow_unused=True)
    assert ga.abs().sum() > 0 and (gb is None or gb.abs().sum() == 0)
    with torch.no_grad():
        assert float(mc_loss([a, b], detach_target=True)) == pytest.approx(float(mc_loss([a, b])))


def test_mcnet_parameter_counts_and_decoder1_is_a_vnet() -> None:
    with torch.device("meta"):
        m2, m3 = MCNet(2), MCNet(3)
    assert count_params(m2) == 12_347_716 and count_params(m3) == 15_246_566
    assert count_params(m3.encoder) == 7_376_896
    dec = [count_params(d) for d in m3.decoders]
    assert dec == [2_071_970, 2_898_850, 2_898_850] and dec[1] - dec[0] == 826_880
    torch.manual_seed(0)
    net = MCNet(3).eval()
    vnet = VNet().eval()
    vnet.load_state_dict(mcnet_vnet_state(net.state_dict()), strict=True)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(vnet(x)[0], net(x)[0])


# -- section 5: MCF --------------------------------------------------------------------------


def test_mcf_winner_and_pseudo_label() -> None:
    assert bool(mcf_winner_is_v(torch.tensor(0.30), torch.tensor(0.40)))
    assert not bool(mcf_winner_is_v(torch.tensor(0.40), torch.tensor(0.40)))  # ties -> R
    q = torch.tensor([0.6, 0.4], requires_grad=True)
    pl = sharpen(q.detach(), 0.1)
    assert pl.tolist() == pytest.approx([0.982954, 0.017046], abs=1e-6)
    assert float(pl.sum()) == pytest.approx(1.0) and not pl.requires_grad


def test_mcf_mistake_term() -> None:
    def probs(fg: list[float]) -> torch.Tensor:
        p = torch.tensor(fg).view(1, 1, 4, 1, 1)
        return torch.cat([1 - p, p], dim=1)

    p_v = probs([0.9, 0.8, 0.3, 0.1])  # argmax [1, 1, 0, 0]
    p_r = probs([0.9, 0.2, 0.7, 0.2])  # argmax [1, 0, 1, 0]
    m = mistake_mask(p_v, p_r)
    assert m.flatten().tolist() == [False, True, True, False]
    y = torch.tensor([1, 1, 1, 0]).view(1, 4, 1, 1)
    assert float(mistake_loss(p_v[:, 1], y, m)) == pytest.approx(0.265)
    agree = mistake_mask(p_v, p_v)
    assert float(mistake_loss(p_v[:, 1], y, agree)) == 0.0


def test_mcf_winner_gets_no_unlabeled_gradient() -> None:
    torch.manual_seed(0)
    label = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    label[:, :2] = 1
    z_v = torch.randn(4, 2, 4, 4, 4)
    z_v[:2, 1] += 4.0 * (label.float() - 0.5)  # V fits the labels: V wins
    z_v.requires_grad_(True)
    z_r = torch.randn(4, 2, 4, 4, 4, requires_grad=True)
    loss_v, loss_r, terms = mcf_losses(z_v, z_r, label, 0.1)
    assert float(terms["winner_v"]) == 1.0
    (g_v,) = torch.autograd.grad(loss_v, z_v)
    (g_r,) = torch.autograd.grad(loss_r, z_r)
    assert g_v[2:].abs().sum() == 0 and g_r[2:].abs().sum() > 0


# -- section 6: BCP --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "cuboid", "fraction"),
    [((112, 112, 80), (74, 74, 53), 0.289210), ((96, 96, 96), (64, 64, 64), 0.296296)],
)
def test_bcp_cuboid_covers_two_thirds_of_each_side(shape, cuboid, fraction) -> None:
    assert cuboid_size(shape) == cuboid
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        m = cuboid_mask(shape, gen)
        zero = (m == 0).nonzero()
        lo, hi = zero.min(0).values, zero.max(0).values
        assert (hi - lo + 1).tolist() == list(cuboid)
        assert all(0 <= int(o) < s - c for o, s, c in zip(lo, shape, cuboid, strict=True))
        assert float((m == 0).float().mean()) == pytest.approx(fraction, abs=1e-6)


def test_bcp_mix_images_and_labels() -> None:
    m = cuboid_mask((6, 6, 6), torch.Generator().manual_seed(1))
    x = mix(torch.ones(1, 1, 6, 6, 6), torch.full((1, 1, 6, 6, 6), 2.0), m)
    assert torch.equal(x[0, 0] == 1, m == 1) and torch.equal(x[0, 0] == 2, m == 0)
    y = mix(torch.ones(1, 6, 6, 6, dtype=torch.long), torch.zeros(1, 6, 6, 6, dtype=torch.long), m)
    assert y.dtype == torch.long and torch.equal(y[0], m.long())


def test_bcp_mix_loss_is_linear_in_its_weights() -> None:
    torch.manual_seed(0)
    z = torch.randn(1, 2, 6, 6, 6)
    a = (torch.rand(1, 6, 6, 6) > 0.5).long()
    b = (torch.rand(1, 6, 6, 6) > 0.5).long()
    m = cuboid_mask((6, 6, 6), torch.Generator().manual_seed(2))
    full = mix_loss(z, a, b, m, 1.0, 0.5)
    parts = mix_loss(z, a, b, m, 1.0, 0.0) + 0.5 * mix_loss(z, a, b, m, 0.0, 1.0)
    assert float(full) == pytest.approx(float(parts), rel=1e-6)


def test_bcp_pseudo_label_threshold_and_lcc() -> None:
    p = torch.zeros(1, 3, 3, 3)
    p[0, 1, 1, 1] = 0.5
    assert int(pseudo_label(p).sum()) == 1  # inclusive threshold
    mask = torch.zeros(1, 10, 10, 10, dtype=torch.bool)
    mask[0, 0:3, 0:3, 0:3] = True  # 27 voxels
    mask[0, 6:8, 6:8, 6:8] = True  # 8 voxels
    kept = batch_lcc(mask)
    assert int(kept.sum()) == 27 and int(kept[0, 0:3, 0:3, 0:3].sum()) == 27
    corner = torch.zeros(1, 3, 3, 3, dtype=torch.bool)
    corner[0, 0, 0, 0] = corner[0, 1, 1, 1] = True
    assert int(batch_lcc(corner).sum()) == 2  # corner-touching: one component
    assert int(batch_lcc(torch.zeros(1, 3, 3, 3, dtype=torch.bool)).sum()) == 0


def test_bcp_ema_and_stage_schedule() -> None:
    teacher, student = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    nn.init.constant_(teacher.weight, 1.0)
    nn.init.constant_(student.weight, 0.0)
    ema_update(teacher, student, 0.99)
    assert teacher.weight.item() == pytest.approx(0.99)
    for _ in range(9):
        ema_update(teacher, student, 0.99)
    assert teacher.weight.item() == pytest.approx(0.904382, abs=1e-6)
    cfg = TrainConfig(method="bcp", bcp_pretrain_steps=2000, iterations=6000)
    bcp = BCP(cfg)
    assert bcp.total_steps() == 8000
    assert bcp.lr(0) == bcp.lr(1999) == 0.01  # pre-training: constant
    assert bcp.lr(2000 + 2500) == pytest.approx(0.01) and bcp.lr(2000 + 2501) == pytest.approx(
        0.001
    )


# -- parameters, config, recipes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("uamt", 18_897_732),  # student + teacher; trainable 9,448,866
        ("dtc", 9_448_866),
        ("mcnet", 12_347_716),
        ("mcnet_plus", 15_246_566),
        ("mcf", 27_379_220),
        ("bcp", 18_897_732),
    ],
)
def test_parameter_count_of_each_method(name: str, params: int) -> None:
    with torch.device("meta"):
        assert count_params(networks(name)) == params
        _, nets = get_method(TrainConfig(method=name)).build()
    trainable = {"uamt": 9_448_866, "bcp": 9_448_866}.get(name, params)
    assert sum(count_params(n) for n in nets.values()) == trainable


def test_every_method_is_registered_and_validated() -> None:
    assert set(baseline_names()) | {"dual", "suponly"} == set(METHODS)
    with pytest.raises(InputError, match="batch_labeled = batch_unlabeled"):
        TrainConfig(method="bcp", batch_labeled=2, batch_unlabeled=4)
    with pytest.raises(InputError, match="batch_unlabeled"):
        TrainConfig(method="uamt", batch_unlabeled=0)
    with pytest.raises(InputError, match="recipe"):
        TrainConfig(method="uamt", recipe="mine")


def test_recipes() -> None:
    shared = TrainConfig(method="mcnet", dataset="la", iterations=123)
    assert resolve_recipe(shared) is shared
    own = resolve_recipe(TrainConfig(method="mcnet", dataset="la", recipe="own"))
    assert (own.iterations, own.lr_steps, own.augment) == (15000, (), "rotflip")
    assert resolve_recipe(own) == own
    bcp = resolve_recipe(TrainConfig(method="bcp", dataset="la", recipe="own"))
    assert (bcp.batch_labeled, bcp.batch_unlabeled, bcp.bcp_pretrain_steps) == (4, 4, 2000)
    assert BCP(bcp).lr(2000 + 2500) == pytest.approx(0.001)  # 0.01 * 0.1^floor(t / 2500)
    with pytest.raises(InputError, match="no own recipe of 'dtc' for dataset 'brats'"):
        resolve_recipe(TrainConfig(method="dtc", dataset="brats", recipe="own"))
    with pytest.raises(InputError, match="baselines only"):
        resolve_recipe(TrainConfig(method="dual", recipe="own"))


def test_own_recipes_at_reduced_scale() -> None:
    # MC-Net's LA recipe: 15000 iterations at constant lr -> 1500 at a tenth; the ramp's
    # unit is the config's (15 here), not the recipe's
    cfg = TrainConfig(method="mcnet", dataset="la", recipe="own", recipe_scale=0.1, rampup_unit=15)
    own = resolve_recipe(cfg)
    assert (own.iterations, own.lr_steps, own.augment, own.rampup_unit) == (
        1500,
        (),
        "rotflip",
        15,
    )
    assert resolve_recipe(own) == own  # resolving twice does not scale twice
    # BCP: 2000 + 15000 with lr steps 2499, 4999, ... -> 200 + 1500, steps at
    # round(249.9) = 250, 500, 750, 1000, 1250, scaled as the shared recipe's 2500 -> 250
    bcp = resolve_recipe(TrainConfig(method="bcp", dataset="la", recipe="own", recipe_scale=0.1))
    assert (bcp.iterations, bcp.bcp_pretrain_steps) == (1500, 200)
    assert bcp.lr_steps == (250, 500, 750, 1000, 1250)
    assert (bcp.batch_labeled, bcp.batch_unlabeled) == (4, 4)
    # lr x 0.1 from the first iteration above a step (ramps.step_lr), after the pre-training
    assert BCP(bcp).lr(200 + 250) == pytest.approx(0.01)
    assert BCP(bcp).lr(200 + 251) == pytest.approx(0.001)
    # a scale without an own recipe, and scales outside (0, 1], are refused by name
    with pytest.raises(InputError, match="'recipe_scale' = 0.1 scales an own recipe"):
        TrainConfig(method="mcnet", recipe_scale=0.1)
    for bad in (0.0, 1.5):
        with pytest.raises(InputError, match="'recipe_scale'"):
            TrainConfig(method="mcnet", recipe="own", recipe_scale=bad)


# -- short runs on the synthetic demo data -----------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from semiseg3d.data.synthetic import SynthParams, write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, SynthParams(n_train=6, n_test=1, shape=(32, 32, 16), seed=0))
    return root


def _cfg(data: Path, method: str, **over: object) -> TrainConfig:
    base: dict[str, object] = {
        "data_dir": str(data),
        "dataset": "synthetic",
        "method": method,
        "labeled": 2,
        "patch": (16, 16, 16),
        "stride": (16, 16, 16),
        "iterations": 6,
        "lr": 0.05,
        "lr_steps": (),
        "rampup_unit": 1,
        "checkpoint_every": 100,
        "num_workers": 0,
        "device": "cpu",
        "seed": 5,
    }
    base.update(over)
    return TrainConfig(**base)  # type: ignore[arg-type]


#: method -> (config overrides, supervised terms summed per iteration)
_SHORT = {
    "uamt": ({}, ("sup",)),
    "dtc": ({}, ("sup_dice",)),
    "mcnet": ({}, ("sup_dice",)),
    "mcnet_plus": ({"iterations": 4}, ("sup_dice",)),
    "mcf": ({"iterations": 4}, ("sup_ce_v", "sup_dice_v", "sup_ce_r", "sup_dice_r")),
    # BCP: the supervised (pre-training) stage, then one self-training step
    "bcp": (
        {"bcp_pretrain_steps": 8, "iterations": 1, "patch": (32, 32, 16)},
        ("pre_ce", "pre_dice"),
    ),
    # baselines-more.md: the supervised terms each logs
    "sassnet": ({}, ("sup_dice",)),
    "urpc": ({}, ("sup",)),
    "ssnet": ({"iterations": 4}, ("sup_dice",)),
    "cpcl": ({}, ("sup",)),
    "acmt": ({}, ("sup",)),
    "luseg": ({"iterations": 4}, ("sup_ce_a", "sup_dice_a", "sup_ce_b", "sup_dice_b")),
    "mlrpl": ({}, ("sup_dice",)),
}


def result_cfg(run: Path) -> TrainConfig:
    """The config a finished run saved."""
    from semiseg3d.inference.rule import load_trained

    return load_trained(run)[0]


@pytest.mark.parametrize("method", baseline_names())
def test_short_run_lowers_the_supervised_loss(synth: Path, tmp_path: Path, method: str) -> None:
    from semiseg3d.training.trainer import train

    over, keys = _SHORT[method]
    result = train(_cfg(synth, method, **over), tmp_path / method, progress=False)
    assert result.finished and (tmp_path / method / "model_final.pt").is_file()
    sup = [sum(h[k] for k in keys) for h in result.history if keys[0] in h]
    # LUSEG (code_faithful) logs PGL as NaN where a prototype set is empty, as released;
    # it never reaches a parameter, but it makes the loser's logged scalar NaN too
    nan_ok = {"pgl", "loss_a", "loss_b"} if method == "luseg" else set()
    assert all(math.isfinite(v) for h in result.history for k, v in h.items() if k not in nan_ok)
    first, last = sum(sup[:2]) / 2, sum(sup[-2:]) / 2
    assert last < first, f"{method}: supervised loss did not drop: {sup}"
    # the method's own inference rule through `semiseg3d test`, and the other LCC variant
    from semiseg3d.evaluation.test_run import test_run

    table = test_run(tmp_path / method, verbose=False)
    assert "mean" in set(table["case"]) and len(table) == 1 + 3  # one test case + summaries
    lcc_default = get_method(result_cfg(tmp_path / method)).default_lcc
    other = "metrics_nolcc.csv" if lcc_default else "metrics_lcc.csv"
    assert lcc_default == (method in ("dtc", "ssnet", "bcp"))  # their own tests keep the LCC
    assert (tmp_path / method / "metrics.csv").is_file()
    assert (tmp_path / method / other).is_file()


def test_uamt_resume_is_bit_identical_and_keeps_the_teacher(synth: Path, tmp_path: Path) -> None:
    from semiseg3d.training.checkpoint import load_checkpoint
    from semiseg3d.training.trainer import train

    cfg = _cfg(synth, "uamt", iterations=3, checkpoint_every=2, keep_checkpoint=True)
    straight = train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", stop_after=2, progress=False)
    second = train(cfg, tmp_path / "resumed", progress=False)
    assert second.resumed_from == 2 and second.history == straight.history[2:]
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert set(a["teachers"]) == {"teacher"} and set(a["optimizers"]) == {"vnet"}
    for part in ("models", "teachers"):
        for name, state in a[part].items():
            for key, value in state.items():
                assert torch.equal(value, b[part][name][key]), (part, name, key)
    # the optimizer never touched the teacher: it is the EMA of the student, not a copy
    t_w = a["teachers"]["teacher"]["decoder.out_conv.weight"]
    s_w = a["models"]["vnet"]["decoder.out_conv.weight"]
    assert not torch.equal(t_w, s_w)
    final = torch.load(tmp_path / "resumed" / "model_final.pt", weights_only=True)
    assert set(final["models"]) == {"vnet"}


def test_inference_rules(tmp_path: Path) -> None:
    nets = {"mcnet": MCNet(2).eval()}
    rule = get_method(TrainConfig(method="mcnet"))
    (member,) = rule.inference_nets(nets, None)
    assert isinstance(member, VNet)  # decoder 1, loaded strictly into a plain V-Net
    mean = get_method(TrainConfig(method="mcnet", mcnet_infer="mean"))
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        probs = mean.prob_fn(mean.inference_nets(nets, None))(x)
    assert probs.shape == (1, 2, 16, 16, 16)
    assert torch.allclose(probs.sum(1), torch.ones(1, 16, 16, 16))
    dtc = get_method(TrainConfig(method="dtc"))
    net = VNetSDF().eval()
    with torch.no_grad():
        p = dtc.prob_fn([net])(x)
        assert torch.allclose(p[:, 1], torch.sigmoid(net(x)[0][:, 0]))
    assert dtc.default_lcc and get_method(TrainConfig(method="bcp")).default_lcc
    assert not any(get_method(TrainConfig(method=m)).default_lcc for m in ("uamt", "mcnet", "mcf"))
    with pytest.raises(InputError, match="one network"):
        dtc.inference_nets({"vnet": net}, "a")
