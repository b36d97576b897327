"""LUSEG as a preset of the dual network (baselines-more spec section 9): the registered
preset, its refusals, and the section's assertable facts.

Expected values: the ten-voxel example is the spec's (entropies 0.1 ... 1.0, the 20th
percentile by linear interpolation = 0.1 + 0.2 * 9 * 0.1 = 0.28, eight voxels at or above
it ignored, w = 10 / 2 = 5); its cross-entropies are recomputed in the test with numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semiseg3d.config.registry import LUSEG_PRESET, preset_of, spec
from semiseg3d.config.run import TrainConfig, config_from_mapping, load_config
from semiseg3d.errors import InputError
from semiseg3d.losses.cce import IGNORE_INDEX, efs_code_faithful, percentile, uncertain_mask
from semiseg3d.losses.objective import DualSettings, dual_objective


def test_preset_fixes_its_keys_and_refuses_others() -> None:
    cfg = TrainConfig(method="luseg")
    assert (cfg.mode, cfg.ic_distance, cfg.use_ue, cfg.alpha, cfg.efs_entropy_input) == (
        "code_faithful",
        "none",
        False,
        20.0,
        "probs",
    )
    assert spec("luseg").cls == spec("dual").cls  # the dual method's class, not a copy
    # a config written back and read again is the same run
    assert config_from_mapping(cfg.to_dict()) == cfg
    for key, value in (("alpha", 30.0), ("ic_distance", "mse")):
        with pytest.raises(InputError, match=f"'{key}'.*method 'luseg' is a preset"):
            TrainConfig(method="luseg", **{key: value})
        with pytest.raises(InputError, match=f"'{key}'.*method 'luseg' is a preset"):
            config_from_mapping({"method": "luseg", key: value})
    # a key written out in a config file is refused even at the dual default
    with pytest.raises(InputError, match="'use_ue' = True: method 'luseg' is a preset"):
        config_from_mapping({"method": "luseg", "use_ue": True})
    # written out, even the dual default is refused (no silent override)
    with pytest.raises(InputError, match=r"--set mode: .*fixes mode: 'code_faithful'"):
        load_config(None, {"method": "luseg", "mode": "paper"})
    with pytest.raises(InputError, match="'method_options.grad' must be one of"):
        TrainConfig(method="luseg", method_options={"grad": "both"})


def test_luseg_grad_paper_switch() -> None:
    cfg = TrainConfig(method="luseg", method_options={"grad": "paper"})
    # spec 9: mode paper, use_cps false, use_ue false, ic none, alpha 20, no agreement
    # requirement, pseudo-label terms at weight 1 from the start
    assert (cfg.mode, cfg.use_cps, cfg.use_ue, cfg.ic_distance, cfg.alpha) == (
        "paper",
        False,
        False,
        "none",
        20.0,
    )
    assert cfg.pgl_require_agreement is False and cfg.pl_rampup == "none"
    assert preset_of("luseg") == dict(LUSEG_PRESET)


def _outputs(seed: int, b: int = 4, shape: tuple[int, ...] = (6, 6, 4)) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    za = torch.randn(b, 2, *shape, generator=gen)
    fa = torch.randn(b, 16, *shape, generator=gen)
    zb = torch.randn(b, 2, *shape, generator=gen)
    fb = torch.randn(b, 16, *shape, generator=gen)
    return [t.requires_grad_(True) for t in (za, fa, zb, fb)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_luseg_gradients_equal_code_faithful_without_ic_and_ue(seed: int) -> None:
    label = (torch.rand(2, 6, 6, 4, generator=torch.Generator().manual_seed(seed)) > 0.6).long()
    luseg = DualSettings.of(TrainConfig(method="luseg"))
    cf = DualSettings.of(TrainConfig(mode="code_faithful", ic_distance="none", use_ue=False))
    grads, terms = [], []
    for settings in (luseg, cf):
        za, fa, zb, fb = _outputs(seed)
        gen = torch.Generator().manual_seed(5)
        loss_a, loss_b, t = dual_objective((za, fa), (zb, fb), label, settings, 3000, gen)
        (loss_a + loss_b).backward()
        grads.append([x.grad for x in (za, fa, zb, fb)])
        terms.append(t)
    for g_l, g_c in zip(*grads, strict=True):
        if g_l is None or g_c is None:
            assert g_l is None and g_c is None
        else:
            assert torch.equal(g_l, g_c)
    assert grads[0][0] is not None and grads[0][2] is not None
    # what differs is logged only: the EFS values (entropies of probabilities vs logits)
    assert not torch.equal(terms[0]["efs_a"], terms[1]["efs_a"])
    assert "ue" not in terms[0] and "ic" not in terms[0]


def test_efs_and_pgl_carry_no_gradient() -> None:
    label = torch.zeros(2, 6, 6, 4, dtype=torch.long)
    label[:, 2:4, 2:4, 1:3] = 1
    from semiseg3d.losses.objective import dual_terms

    za, fa, zb, fb = _outputs(7)
    settings = DualSettings.of(TrainConfig(method="luseg"))
    res = dual_terms((za, fa), (zb, fb), label, settings, 100, torch.Generator().manual_seed(0))
    for name in ("efs_a", "efs_b", "pgl"):
        assert not res.terms[name].requires_grad, name


def _probs_with_entropy(h: float) -> float:
    """The foreground probability p <= 0.5 whose entropy -p ln p - (1-p) ln(1-p) is h
    (bisection; independent of the code under test)."""
    lo, hi = 1e-12, 0.5
    for _ in range(200):
        mid = (lo + hi) / 2
        ent = -mid * math.log(mid) - (1 - mid) * math.log(1 - mid)
        lo, hi = (mid, hi) if ent < h else (lo, mid)
    return (lo + hi) / 2


def test_ten_voxel_entropy_example() -> None:
    ents = [0.1 * k for k in range(1, 11)]
    # entropies above ln 2 = 0.693 are not reachable with two classes: the threshold and
    # the mask are checked on the entropy maps themselves, the EFS weight on probabilities
    h = torch.tensor(ents, dtype=torch.float64).view(1, 10, 1, 1)
    assert float(percentile(h, 20)) == pytest.approx(0.28, abs=1e-12)
    mask = uncertain_mask(h, h, 20)
    assert int(mask.sum()) == 8 and not bool(mask[0, :2].any())

    # EFS on probabilities whose entropies rise: the two most certain kept, w = 10 / 2 = 5
    p_fg = [_probs_with_entropy(0.06 * k) for k in range(1, 11)]
    p = torch.tensor(p_fg, dtype=torch.float64).view(1, 1, 10, 1, 1)
    probs = torch.cat([1 - p, p], dim=1)
    efs_a, _, target = efs_code_faithful(probs, probs, probs, probs, 20.0)
    assert int((target == IGNORE_INDEX).sum()) == 8
    kept = np.array(p_fg[:2])  # both predicted background (p_fg < 0.5): label 0
    # CE of the probabilities used as logits, class 0: -log softmax(q)_0
    q = np.stack([1 - kept, kept], axis=1)
    ce = -(q[:, 0] - np.log(np.exp(q).sum(axis=1)))
    assert float(efs_a) == pytest.approx(5.0 * ce.mean(), rel=1e-12)

    # the released input (raw logits, some negative): NaN entropies, nothing ignored, w = 1
    logits = torch.log(probs)
    efs_l, _, target_l = efs_code_faithful(probs, probs, logits, logits, 20.0)
    assert int((target_l == IGNORE_INDEX).sum()) == 0
    q_all = np.stack([1 - np.array(p_fg), np.array(p_fg)], axis=1)
    ce_all = -(q_all[:, 0] - np.log(np.exp(q_all).sum(axis=1)))
    assert float(efs_l) == pytest.approx(ce_all.mean(), rel=1e-12)
