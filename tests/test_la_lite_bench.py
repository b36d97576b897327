"""bench/la_lite.py's method names: presets, baselines and their own recipes at LA-lite scale."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from semiseg3d.config.registry import resolve_recipe
from semiseg3d.paths import repo_root


@pytest.fixture(scope="module")
def la_lite():
    sys.path.insert(0, str(repo_root() / "bench"))
    try:
        import la_lite
    finally:
        sys.path.pop(0)
    return la_lite


def _args(la_lite, tmp_path: Path, *extra: str):
    for name in ("train.list", "test.list"):
        (tmp_path / name).write_text("a\nb\n")
    return la_lite.parse_args(["--split", "test", "--data", str(tmp_path), "--commit", "x", *extra])


def test_the_init_controls_are_presets(la_lite, tmp_path: Path) -> None:
    # no --set needed: the method and SupOnly from PyTorch's default initialisation
    args = _args(la_lite, tmp_path)
    paper = la_lite.bench_config("paper_torch_init", args, 600)
    assert (paper.method, paper.mode, paper.init) == ("dual", "paper", "torch")
    assert la_lite.bench_config("suponly_torch_init", args, 600).init == "torch"
    assert la_lite.bench_config("paper", args, 600).init == "auto"


def test_a_baseline_runs_the_shared_protocol(la_lite, tmp_path: Path) -> None:
    cfg = resolve_recipe(la_lite.bench_config("mcnet", _args(la_lite, tmp_path), 600))
    # the shared recipe scaled to 600 iterations: lr steps at 5/12 and 5/6, ramp unit 600/40
    assert (cfg.method, cfg.recipe, cfg.iterations) == ("mcnet", "shared", 600)
    assert (cfg.lr_steps, cfg.rampup_unit, cfg.augment) == ((250, 500), 15, "none")
    # BCP's labeled-only pre-training is scaled as the iterations are: 2000 of 6000 -> 200
    bcp = resolve_recipe(la_lite.bench_config("bcp", _args(la_lite, tmp_path), 600))
    assert (bcp.recipe, bcp.iterations, bcp.bcp_pretrain_steps) == ("shared", 600, 200)


def test_own_names_scale_the_original_recipe(la_lite, tmp_path: Path) -> None:
    args = _args(la_lite, tmp_path)
    cfg = resolve_recipe(la_lite.bench_config("mcnet_plus_own", args, args.iterations))
    # 600 of the paper's 6000 steps -> a tenth of MC-Net+'s 15000, constant lr, rot-flip,
    # the ramp unit of the shared runs (15)
    assert (cfg.method, cfg.recipe, cfg.recipe_scale) == ("mcnet_plus", "own", 0.1)
    assert (cfg.iterations, cfg.lr_steps, cfg.augment, cfg.rampup_unit) == (1500, (), "rotflip", 15)
    args = _args(la_lite, tmp_path, "--iterations", "300")
    bcp = resolve_recipe(la_lite.bench_config("bcp_own", args, args.iterations))
    # 300 / 6000 = 0.05: 15000 -> 750, 2000 -> 100, batches 4 + 4
    assert (bcp.iterations, bcp.bcp_pretrain_steps, bcp.batch_labeled) == (750, 100, 4)
    # a name that is neither a preset nor a baseline (+ _own) stays `paper` with overrides
    other = la_lite.bench_config("nothing_own", args, args.iterations)
    assert (other.method, other.recipe) == ("dual", "shared")
