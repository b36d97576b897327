"""``semiseg3d run-config`` and the grid functions of semiseg3d.grid.run_config."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from semiseg3d.cli import main as cli_main
from semiseg3d.config.run import load_config
from semiseg3d.errors import InputError
from semiseg3d.grid.run_config import (
    RunKey,
    build_run_config,
    canonical_variant,
    deep_merge,
    expand_grid,
    experiment_points,
    labeled_for_ratio,
    load_params,
    validate_params,
)


def _params() -> dict:
    """A small hand-written params mapping (two datasets, a few variants)."""
    return {
        "data": {
            "alpha": {"source": "synth", "synth": {"cases": 10, "test": 2}, "labeled": {"r20": 2}},
            "beta": {"source": "synth", "synth": {"cases": 10, "test": 2}},
        },
        "train": {
            "defaults": {"num_workers": 0, "iterations": 7},
            "alpha": {"patch": [32, 32, 16], "alpha": 70, "lam": 0.5},
            "beta": {"patch": [16, 16, 16], "stride": [8, 8, 8], "alpha": 80, "lam": 0.6},
        },
        "variants": {
            "suponly": {"method": "suponly"},
            "full": {},
            "alpha70": {"alpha": 70},
            "alpha80": {"alpha": 80},
            "lam0.6": {"lam": 0.6},
        },
        "grid": {
            "seeds": [1, 2],
            "datasets": ["alpha", "beta"],
            "experiments": [
                {"name": "main", "ratios": [20], "variants": ["full", "suponly"]},
                {"name": "sweep", "ratios": [20], "variants": ["alpha70", "alpha80", "lam0.6"]},
                {"name": "off", "enabled": False, "ratios": [50], "variants": ["full"]},
            ],
        },
    }


def _write_split(folder: Path, labeled: list[str], unlabeled: list[str], test: list[str]) -> None:
    folder.mkdir(parents=True)
    for name, ids in (
        ("labeled", labeled),
        ("unlabeled", unlabeled),
        ("train", labeled + unlabeled),
        ("test", test),
    ):
        (folder / f"{name}.list").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def test_deep_merge_mappings_recursively_lists_replaced() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    over = {"a": {"y": [3], "z": 4}, "c": 5}
    assert deep_merge(base, over) == {"a": {"x": 1, "y": [3], "z": 4}, "b": 2, "c": 5}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2}  # inputs untouched


def test_canonical_variant_merges_coincident_points() -> None:
    p = _params()
    # alpha70 on dataset alpha (alpha 70) is the full run; on beta (alpha 80) it is not
    assert canonical_variant(p, "alpha", "alpha70") == "full"
    assert canonical_variant(p, "beta", "alpha70") == "alpha70"
    assert canonical_variant(p, "beta", "alpha80") == "full"
    assert canonical_variant(p, "alpha", "lam0.6") == "lam0.6"
    assert canonical_variant(p, "beta", "lam0.6") == "full"
    assert canonical_variant(p, "alpha", "suponly") == "suponly"


def test_expand_grid_counts_by_hand() -> None:
    p = _params()
    runs = expand_grid(p)
    # per dataset: full, suponly + sweep points that differ from full
    # alpha: alpha80, lam0.6 (alpha70 == full); beta: alpha70 (alpha80, lam0.6 == full)
    per_seed = {
        ("alpha", "full"),
        ("alpha", "suponly"),
        ("alpha", "alpha80"),
        ("alpha", "lam0.6"),
        ("beta", "full"),
        ("beta", "suponly"),
        ("beta", "alpha70"),
    }
    expected = {RunKey(d, v, 20, s) for d, v in per_seed for s in (1, 2)}
    assert set(runs) == expected
    assert len(runs) == 14
    # the disabled block (ratio 50) is not there; named points keep their names
    assert all(r.ratio == 20 for r in runs)
    assert RunKey("alpha", "alpha70", 20, 1) in experiment_points(p)


def test_labeled_for_ratio() -> None:
    p = _params()
    assert labeled_for_ratio(p, "alpha", 20) == 2
    assert labeled_for_ratio(p, "alpha", 10) is None
    assert labeled_for_ratio(p, "beta", 20) is None
    with pytest.raises(InputError, match="gamma"):
        labeled_for_ratio(p, "gamma", 20)


def test_build_run_config_resolution_order(tmp_path: Path) -> None:
    p = _params()
    split = tmp_path / "split"
    _write_split(split, ["a", "b"], ["c", "d", "e"], ["t1"])
    cfg = build_run_config(
        p, RunKey("beta", "alpha70", 20, 2), data_dir=tmp_path / "data", split=split
    )
    assert cfg.dataset == "beta"
    assert cfg.patch == (16, 16, 16)  # train.beta
    assert cfg.alpha == 70.0  # the variant wins over train.beta (80)
    assert cfg.lam == 0.6  # train.beta
    assert cfg.iterations == 7  # train.defaults
    assert cfg.num_workers == 0
    assert cfg.tau == 0.6  # TrainConfig default
    assert cfg.labeled == 2
    assert cfg.seed == 2
    assert cfg.train_list == str(split / "train.list")
    assert cfg.test_list == str(split / "test.list")
    assert cfg.data_dir == str(tmp_path / "data")
    assert cfg.extra == {"variant": "alpha70", "ratio": 20, "seed": 2}


def test_build_run_config_checks_split(tmp_path: Path) -> None:
    p = _params()
    split = tmp_path / "split"
    _write_split(split, ["a", "b", "c"], ["d"], ["t1"])
    # data.alpha.labeled.r20 = 2 but the split has 3 labeled cases
    with pytest.raises(InputError, match=r"labeled\.r20 is 2"):
        build_run_config(p, RunKey("alpha", "full", 20, 1), split=split)
    (split / "train.list").write_text("d\na\nb\nc\n", encoding="utf-8")
    with pytest.raises(InputError, match="train.list"):
        build_run_config(p, RunKey("beta", "full", 20, 1), split=split)
    with pytest.raises(InputError, match="unknown variant 'nope'"):
        build_run_config(p, RunKey("beta", "nope", 20, 1), split=split)


def _cli_setup(tmp_path: Path) -> tuple[Path, Path]:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params()), encoding="utf-8")
    split = tmp_path / "split"
    _write_split(split, ["a", "b"], ["c", "d", "e"], ["t1", "t2"])
    return params, split


def test_cli_writes_a_config_train_accepts(tmp_path: Path) -> None:
    params, split = _cli_setup(tmp_path)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("train:\n  alpha:\n    iterations: 3\n", encoding="utf-8")
    out = tmp_path / "cfg" / "run.yaml"
    argv = ["run-config", "--params", str(params), "--overlay", str(overlay)]
    argv += ["--dataset", "alpha", "--ratio", "20", "--variant", "lam0.6", "--seed", "5"]
    argv += ["--split", str(split), "--data-dir", "somewhere", "--out", str(out)]
    assert cli_main(argv) == 0
    cfg = load_config(out)  # what `semiseg3d train --config` reads
    assert cfg.iterations == 3  # overlay over train.alpha over train.defaults (7)
    assert cfg.lam == 0.6 and cfg.alpha == 70.0 and cfg.patch == (32, 32, 16)
    assert cfg.labeled == 2 and cfg.seed == 5 and cfg.data_dir == "somewhere"
    assert cfg.extra == {"variant": "lam0.6", "ratio": 20, "seed": 5}
    assert [p.name for p in out.parent.iterdir()] == ["run.yaml"]  # no temporary left


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--dataset", "gamma", "unknown dataset 'gamma'"),
        ("--variant", "nope", "unknown variant 'nope'"),
    ],
)
def test_cli_unknown_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    params, split = _cli_setup(tmp_path)
    args = {"--dataset": "alpha", "--variant": "full"}
    args[flag] = value
    argv = ["run-config", "--params", str(params), "--ratio", "20", "--seed", "1"]
    argv += ["--split", str(split), "--out", str(tmp_path / "x.yaml")]
    argv += [a for kv in args.items() for a in kv]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("semiseg3d run-config: error:") and message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "x.yaml").exists()


def test_cli_bad_params_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params, split = _cli_setup(tmp_path)
    bad = _params()
    bad["train"]["alpha"]["tau"] = 1.5
    params.write_text(yaml.safe_dump(bad), encoding="utf-8")
    argv = ["run-config", "--params", str(params), "--dataset", "alpha", "--ratio", "20"]
    argv += ["--variant", "full", "--seed", "1", "--split", str(split)]
    argv += ["--out", str(tmp_path / "x.yaml")]
    assert cli_main(argv) == 2
    assert "train.alpha.tau" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_repo_params_and_overlays_validate(root: Path) -> None:
    for overlays in ([], ["config/demo.yaml"], ["config/la-lite.yaml"]):
        params = load_params(root / "params.yaml", [root / o for o in overlays])
        validate_params(params)


def test_overlay_replaces_lists(root: Path) -> None:
    base = load_params(root / "params.yaml")
    demo = load_params(root / "params.yaml", [root / "config/demo.yaml"])
    assert demo["grid"]["datasets"] == ["synthetic"]
    assert len(demo["grid"]["seeds"]) == 1
    # untouched sections come through unchanged
    assert demo["variants"] == base["variants"]
    assert demo["train"]["la"] == base["train"]["la"]
    assert copy.deepcopy(demo) == demo
