"""Batch geometry (baselines spec section 2, baselines-more spec section 2): one training
step of every registered method under 2 labeled + 2 unlabeled samples on a tiny patch, with
a forward hook on every network (and every BatchNorm layer) recording the batch size of
each train-mode call: none may see a single sample. Config validation refuses the batch
shapes a method cannot run."""

from __future__ import annotations

from typing import Any

import pytest
from step_harness import config_for, run_step

from semiseg3d.config.registry import method_names
from semiseg3d.errors import InputError
from semiseg3d.methods import get_method

PATCH = (16, 16, 16)

#: extra cases beyond each method's defaults: option variants with their own forwards, and
#: BCP's two stages (pre-training at t = 0, self-training at t = P)
VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any], int]] = [
    *[(name, {}, {}, 0) for name in method_names()],
    ("dual", {}, {"mode": "code_faithful"}, 0),
    ("acmt", {"variant": "mu"}, {}, 0),
    ("acmt", {"variant": "perr"}, {}, 0),
    ("cpcl", {"feature": "x5"}, {}, 0),
    ("bcp", {}, {"bcp_pretrain_steps": 1}, 1),
]


def _case_id(case: tuple[str, dict[str, Any], dict[str, Any], int]) -> str:
    name, options, keys, t = case
    extra = [f"{k}={v}" for k, v in {**options, **keys}.items()] + ([f"t={t}"] if t else [])
    return "-".join([name, *extra])


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=_case_id(case)) for case in VARIANTS],
)
def test_no_training_forward_sees_one_sample(
    case: tuple[str, dict[str, Any], dict[str, Any], int],
) -> None:
    name, options, keys, t = case
    cfg = config_for(name, options, patch=PATCH, iterations=20, **keys)
    method = get_method(cfg)
    b_u = cfg.batch_unlabeled if method.uses_unlabeled else 0
    # the released dual script adds a NaN PGL value without gradient (code_faithful)
    nan_ok = cfg.mode == "code_faithful"
    res = run_step(method, cfg.batch_labeled, b_u, PATCH, t=t, nan_total_ok=nan_ok)
    calls = res.recorder.calls
    networks = {*res.nets, *res.teachers}
    assert any(label in networks for label, _ in calls), "no network forward was recorded"
    single = sorted({label for label, b in calls if b < 2})
    assert not single, f"{name}: train-mode forwards on one sample: {single[:6]}"


@pytest.mark.parametrize(
    ("method", "options", "b_l", "b_u", "refused"),
    [
        ("dual", {}, 1, 1, False),
        ("suponly", {}, 2, 0, False),
        ("uamt", {}, 2, 0, True),
        ("sassnet", {}, 1, 1, False),
        ("sassnet", {}, 2, 0, True),  # D's targets need both kinds
        ("ssnet", {}, 2, 0, True),
        ("urpc", {}, 2, 0, True),
        ("mlrpl", {}, 2, 0, True),
        ("cpcl", {}, 2, 2, False),
        ("cpcl", {}, 1, 1, True),  # teacher on the unlabeled slice alone
        ("cpcl", {}, 2, 4, True),  # prototypes paired by sample
        ("acmt", {}, 1, 2, False),
        ("acmt", {}, 2, 1, True),  # teacher on the unlabeled slice alone
        ("acmt", {"variant": "perr"}, 2, 3, True),  # released entropy broadcast
        ("acmt", {"variant": "perr", "perr_entropy": "fixed"}, 2, 3, False),
        ("bcp", {}, 2, 2, False),
        ("bcp", {}, 3, 3, True),  # halves
        ("bcp", {}, 2, 4, True),
        ("luseg", {}, 2, 2, False),
    ],
)
def test_config_refuses_batches_a_method_cannot_run(
    method: str, options: dict[str, Any], b_l: int, b_u: int, refused: bool
) -> None:
    if refused:
        with pytest.raises(InputError, match=f"method '{method}'"):
            config_for(method, options, batch_labeled=b_l, batch_unlabeled=b_u)
    else:
        cfg = config_for(method, options, batch_labeled=b_l, batch_unlabeled=b_u)
        assert (cfg.batch_labeled, cfg.batch_unlabeled) == (b_l, b_u)
