"""AC-MT (baselines-more spec, section 7): thresholds, entropies and each variant's
consistency on hand-made tensors (expected values by hand or by plain loops written here),
the settings and batch rules, and one training step of every variant under 2 + 2 with no
forward on a single sample."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from step_harness import FakeContext, config_for, run_step
from torch import nn

from semiseg3d.errors import InputError
from semiseg3d.methods import acmt as acmt_module
from semiseg3d.methods.acmt import (
    ACMT,
    DEFAULT_LCC,
    ACMTSettings,
    ent_consistency,
    ent_threshold,
    mu_consistency,
    mu_threshold,
    normalized_entropy,
    perr_clean_mask,
    perr_consistency,
    perr_entropy,
    perr_prototype_label,
    perr_rectified_label,
    perr_uncertainty,
    serr_consistency,
)
from semiseg3d.models.complexity import count_params


def _probs(p_fg: list[float]) -> torch.Tensor:
    """(1, 2, V, 1, 1) probabilities (background first) with foreground ``p_fg``."""
    p = torch.tensor(p_fg, dtype=torch.float64).view(1, 1, -1, 1, 1)
    return torch.cat([1 - p, p], dim=1)


# -- thresholds and entropies ------------------------------------------------------------------


def test_thresholds() -> None:
    # rho(T/2; T) = exp(-5 / 4) = 0.286505: 0.75 + 0.2 * 0.286505 = 0.807301
    assert ent_threshold(0, 6000) == pytest.approx(0.751348, abs=1e-6)
    assert ent_threshold(3000, 6000) == pytest.approx(0.807301, abs=1e-6)
    assert ent_threshold(6000, 6000) == pytest.approx(0.95) == ent_threshold(9000, 6000)
    # (0.75 + 0.15 e^-5) ln 2 = 0.520561; 0.9 ln 2 = 0.623832
    assert mu_threshold(0, 20000) == pytest.approx(0.520561, abs=1e-6)
    assert mu_threshold(20000, 20000) == pytest.approx(0.623832, abs=1e-6)


def test_normalized_entropy_values() -> None:
    h = normalized_entropy(_probs([0.5, 0.1, 0.3])).flatten().tolist()
    assert h == pytest.approx([0.999997, 0.468993, 0.881288], abs=1e-6)
    # (0.5, 0.5) is selected at every t, (0.9, 0.1) never, (0.7, 0.3) while th <= 0.881288
    assert h[0] >= ent_threshold(10**6, 6000) and h[1] < ent_threshold(0, 6000)
    assert h[2] >= ent_threshold(3000, 6000) and h[2] < ent_threshold(6000, 6000)


# -- Ent and MU --------------------------------------------------------------------------------


def test_ent_and_mu_consistency_by_hand() -> None:
    student = _probs([0.5, 0.1, 0.3])
    teacher = _probs([0.4, 0.1, 0.5])
    d = (student - teacher) ** 2  # per voxel both channels: 0.01, 0, 0.04
    ent = normalized_entropy(student)
    # t = 0 (th 0.751348): voxels 1 and 3, (2 * 0.01 + 2 * 0.04) / 4 channels-voxels
    assert float(ent_consistency(d, ent, ent_threshold(0, 100))) == pytest.approx(0.025)
    # t = T (th 0.95): voxel 1 only, 2 * 0.01 / 2
    assert float(ent_consistency(d, ent, ent_threshold(100, 100))) == pytest.approx(0.01)
    assert float(ent_consistency(d, ent, 1.1)) == 0.0  # nothing selected: no NaN
    # MU with the same voxels selected: the mask counted once -> twice Ent's value
    u = ent[:, None] * math.log(2)
    assert float(mu_consistency(d, u, 0.751348 * math.log(2))) == pytest.approx(0.05)


class _SampleLogits(nn.Module):
    """Logits (0, 0) for a sample of mean about 0 and (2, -2) for one of mean about 10."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        high = (x.mean(dim=(1, 2, 3, 4)) > 5).float().view(-1, 1, 1, 1, 1)
        z = torch.cat([2 * high, -2 * high], dim=1).expand(-1, 2, *x.shape[2:])
        return z, x, x


def test_mu_uncertainty_averages_each_sample_over_eight_passes() -> None:
    method = ACMT(config_for("acmt", {"variant": "mu"}))
    method.attach({"vnet": _SampleLogits()}, {"teacher": _SampleLogits()})
    x_u = torch.cat([torch.zeros(1, 1, 2, 2, 2), torch.full((1, 1, 2, 2, 2), 10.0)])
    ctx = FakeContext(2, (2, 2, 2))
    calls: list[int] = []
    handle = method.nets["vnet"].register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    u = method._mu_uncertainty(ctx, x_u)
    handle.remove()
    assert calls == [4, 4, 4, 4]  # x_u repeated twice, 4 calls
    q = 1 / (1 + math.exp(-4))  # softmax(2, -2)_0 = 0.982014
    expected = [
        -2 * 0.5 * math.log(0.5 + 1e-6),
        -(q * math.log(q + 1e-6) + (1 - q) * math.log(1 - q + 1e-6)),
    ]
    assert u.shape == (2, 1, 2, 2, 2)
    assert u[:, 0, 0, 0, 0].tolist() == pytest.approx(expected, rel=1e-5)


# -- P-Err -------------------------------------------------------------------------------------


def test_perr_uncertainty_is_the_unbiased_std_of_halved_sigmoids() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(10, 2, 2, 3, 1, 1))
    expected = np.std(1 / (1 + np.exp(-z / 2)), axis=0, ddof=1)
    assert np.allclose(perr_uncertainty(torch.from_numpy(z)).numpy(), expected, atol=1e-12)


def test_perr_rectified_label() -> None:
    p = _probs([0.3, 0.3, 0.3, 0.6])  # (0.7, 0.3) three times, then (0.4, 0.6)
    std = torch.tensor([[0.05, 0.2, 0.2, 0.05], [0.2, 0.05, 0.2, 0.05]], dtype=torch.float64)
    label = perr_rectified_label(p, std.view(1, 2, 4, 1, 1)).flatten().tolist()
    # (0.7, 0) -> 0; (0, 0.3) -> 1; both masked (0, 0) -> 0; both kept (0.4, 0.6) -> 1
    assert label == [0, 1, 0, 1]


def test_perr_prototype_label_and_clean_mask() -> None:
    # 4 voxels, 2-d features; v0 = (1, 0) and v1 = (0, 1) alone build the prototypes
    # (p'_0 = 1 on v0, p'_1 = 1 on v1, weight 0 elsewhere): pi_0 = (1, 0) / (1 + 1e-5),
    # pi_1 = (0, 1) / (1 + 1e-5). v2 = (0.5, 0.5) is equidistant (tie), v3 = (0.9, 0.2) nearer pi_0.
    feat = torch.tensor([[1.0, 0.0, 0.5, 0.9], [0.0, 1.0, 0.5, 0.2]], dtype=torch.float64)
    feat = feat.view(1, 2, 4, 1, 1)
    label = torch.tensor([0, 1, 0, 0]).view(1, 4, 1, 1)
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    s = perr_prototype_label(feat, label, probs.view(1, 2, 4, 1, 1))
    assert s[0, :, :, 0, 0].T.tolist() == [[1, 0], [0, 1], [0, 0], [1, 0]]
    student_argmax = torch.tensor([0, 0, 1, 0]).view(1, 4, 1, 1)
    clean = perr_clean_mask(s, student_argmax)
    # C_c = [S_c = O_c]: v0 (1,0)/(1,0) -> (1,1); v1 (0,1)/(1,0) -> (0,0); v2 (0,0)/(0,1) -> (1,0)
    assert clean[0, :, :, 0, 0].T.tolist() == [[1, 1], [0, 0], [1, 0], [1, 1]]


def test_perr_prototypes_are_taken_at_the_label_size() -> None:
    feat = torch.full((1, 3, 2, 2, 2), 1.0)  # half size, constant: every voxel at pi_0 = pi_1
    label = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    label[0, :2] = 1
    s = perr_prototype_label(feat, label, _probs([0.5] * 64).view(1, 2, 4, 4, 4).float())
    # pi_0 = pi_1 (same features, same S = 16 on each class): every voxel a tie, S = (0, 0)
    assert s.shape == (1, 2, 4, 4, 4) and float(s.sum()) == 0.0


def test_perr_entropy_code_mixes_samples_and_fixed_does_not() -> None:
    rng = np.random.default_rng(1)
    p_fg = rng.random((2, 3))
    probs = torch.from_numpy(np.stack([1 - p_fg, p_fg], axis=1)).view(2, 2, 3, 1, 1)
    clean = torch.from_numpy((rng.random((2, 2, 3)) > 0.5).astype(np.float64)).view(2, 2, 3, 1, 1)
    h = [
        [-(p * math.log(p + 1e-6) + (1 - p) * math.log(1 - p + 1e-6)) / math.log(2) for p in row]
        for row in p_fg
    ]
    c = clean.view(2, 2, 3).numpy()
    code = sum(c[n, k, v] * h[k][v] for n in range(2) for k in range(2) for v in range(3)) / 12
    fixed = sum(c[n, k, v] * h[n][v] for n in range(2) for k in range(2) for v in range(3)) / 12
    assert float(perr_entropy(probs, clean, "code")) == pytest.approx(code, rel=1e-9)
    assert float(perr_entropy(probs, clean, "fixed")) == pytest.approx(fixed, rel=1e-9)
    with pytest.raises(ValueError, match="B_u = 3"):
        perr_entropy(probs[[0, 1, 0]], clean[[0, 1, 0]], "code")
    one = perr_entropy(probs[:1], clean[:1], "code")
    assert float(one) == pytest.approx(float(perr_entropy(probs[:1], clean[:1], "fixed")))
    # the consistency adds the noisy-voxel MSE: N = 1 - C
    d = torch.full_like(probs, 0.04)
    noisy = 1 - c
    mse = float((noisy * 0.04).sum() / (noisy.sum() + 1e-16))
    total = perr_consistency(d, clean, probs, "fixed")
    assert float(total) == pytest.approx(mse + fixed, rel=1e-9)


# -- S-Err -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(112, 112, 80), (64, 64, 32)])
def test_serr_flags_are_reshaped_to_the_crop(shape: tuple[int, int, int]) -> None:
    probs = torch.full((2, 2, *shape), 0.5)
    probs[:, 1] = 0.2
    probs[:, 0] = 0.8
    probs[1, :, 10:20, 5:9, 3:7] = torch.tensor([0.1, 0.9]).view(2, 1, 1, 1)  # argmax 1 there
    teacher = torch.full_like(probs, 0.5)
    d = torch.zeros_like(probs)
    d[1, :, 10:12] = 1.0  # inside the flagged region: 2 x 4 x 4 voxels x 2 channels
    seen: dict[str, np.ndarray] = {}

    def finder(labels: np.ndarray, pred: np.ndarray) -> np.ndarray:
        seen["labels"], seen["pred"] = labels, pred
        return labels == 1  # flag every voxel the student calls foreground

    loss, flagged = serr_consistency(d, probs, teacher, finder)
    n_flag = 10 * 4 * 4
    assert seen["labels"].shape == (2 * math.prod(shape),) and seen["pred"].shape[1] == 2
    assert float(flagged) == pytest.approx(n_flag / (2 * math.prod(shape)))
    # sum(M d) = 2 * 4 * 4 * 2 channels; sum M = 160 voxels x 2 channels
    assert float(loss) == pytest.approx(64 / 320)


def test_serr_falls_back_to_the_plain_mse() -> None:
    d = torch.rand(2, 2, 4, 4, 4)

    def broken(labels: np.ndarray, pred: np.ndarray) -> np.ndarray:
        raise RuntimeError("no issues found")

    loss, flagged = serr_consistency(
        d, torch.rand(2, 2, 4, 4, 4), torch.rand(2, 2, 4, 4, 4), broken
    )
    assert float(loss) == pytest.approx(float(d.mean())) and math.isnan(float(flagged))


@pytest.mark.skipif(importlib.util.find_spec("cleanlab") is not None, reason="cleanlab installed")
def test_serr_without_cleanlab_is_refused() -> None:
    with pytest.raises(InputError, match="method_options.variant.*cleanlab"):
        ACMT(config_for("acmt", {"variant": "serr"}))


# -- settings, batch rules, parameters ---------------------------------------------------------


def test_settings_and_batch_rules() -> None:
    s = ACMTSettings.from_config(config_for("acmt"))
    assert (s.variant, s.mu_net, s.perr_entropy) == ("ent", "student", "code")
    for key, bad in (("variant", "entropy"), ("mu_net", "both"), ("perr_entropy", "x")):
        with pytest.raises(InputError, match=f"'method_options.{key}' must be one of"):
            config_for("acmt", {key: bad})
    assert config_for("acmt", batch_unlabeled=4).batch_unlabeled == 4
    with pytest.raises(InputError, match="'batch_unlabeled' must be >= 2 for method 'acmt'"):
        config_for("acmt", batch_unlabeled=1)
    # P-Err's released entropy broadcast runs for B_u <= 2 only; 'fixed' lifts the limit
    assert config_for("acmt", {"variant": "perr"}).batch_unlabeled == 2
    with pytest.raises(InputError, match="<= 2 for method 'acmt' with method_options.variant"):
        config_for("acmt", {"variant": "perr"}, batch_unlabeled=3)
    config_for("acmt", {"variant": "perr", "perr_entropy": "fixed"}, batch_unlabeled=3)
    config_for("acmt", {"variant": "ent"}, batch_unlabeled=3)
    assert not DEFAULT_LCC and not ACMT.default_lcc


def test_parameter_counts() -> None:
    method = ACMT(config_for("acmt"))
    with torch.device("meta"):
        _, nets = method.build()
        teachers = method.build_teachers()
    assert count_params(nets["vnet"]) == 9_448_866
    assert count_params(nets["vnet"]) + count_params(teachers["teacher"]) == 18_897_732


# -- one training step of each variant ---------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "student_calls", "teacher_calls"),
    [
        ("ent", [4], [2]),  # the unused clean teacher pass is not run
        ("mu", [4, 4, 4, 4, 4], [2]),  # + 4 no-grad student passes on x_u repeated twice
        ("perr", [4], [2] * 12),  # clean, noisy, 10 clean passes
        ("serr", [4], [2, 2]),  # clean, noisy
    ],
)
def test_one_step_under_two_plus_two(
    monkeypatch: pytest.MonkeyPatch,
    variant: str,
    student_calls: list[int],
    teacher_calls: list[int],
) -> None:
    def fake_finder():  # noqa: ANN202 - stands in for cleanlab (an optional dependency)
        return lambda labels, pred: labels != pred.argmax(1)

    monkeypatch.setattr(acmt_module, "cleanlab_finder", fake_finder)
    method = ACMT(config_for("acmt", {"variant": variant}, iterations=100))
    res = run_step(method, t=0)
    assert res.no_grad == []
    assert res.recorder.sizes("vnet") == student_calls
    assert res.recorder.sizes("teacher") == teacher_calls
    assert res.recorder.smallest() >= 2
    assert float(res.terms["cons_weight"]) == pytest.approx(0.1 * math.exp(-5))
    assert math.isfinite(float(res.terms["cons"]))
    for p_t, p_s in zip(
        res.teachers["teacher"].parameters(), res.nets["vnet"].parameters(), strict=True
    ):
        assert torch.equal(p_t, p_s)  # the first EMA update copies the student
