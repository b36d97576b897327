"""bench/la_lite_summary.py: the per-seed summary and the paired comparison with `paper`
(issue 19), on hand-made tables whose expected values are worked out in the comments."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from semiseg3d.paths import repo_root


@pytest.fixture(scope="module")
def summary():
    path = repo_root() / "bench" / "la_lite_summary.py"
    spec = importlib.util.spec_from_file_location("la_lite_summary", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["la_lite_summary"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run_rows(method: str, dices: list[float]) -> list[dict]:
    return [
        {
            "method": method,
            "seed": s,
            "iterations": 600,
            "dice": d,
            "jaccard": d - 10,
            "hd95": 5.0 + i,
            "asd": 1.0,
            "empty": i % 2,
            "vol_ratio": 1.0,
        }
        for i, (s, d) in enumerate(zip((1337, 2024, 7), dices, strict=False))
    ]


def _case_rows(method: str, seeds: list[int], dice: dict[str, float]) -> list[dict]:
    return [
        {"method": method, "seed": s, "iterations": 600, "case": c, "dice": d}
        for s in seeds
        for c, d in dice.items()
    ]


def test_summary_mean_sem_order(summary) -> None:
    rows = pd.DataFrame(
        _run_rows("code_faithful", [80.0, 82.0, 84.0])
        + _run_rows("paper", [81.0])
        + _run_rows("mcf", [70.0, 72.0])
    )
    table = summary.summarize(rows)
    # Table 1's order: mcf before paper; code_faithful (not in Table 1) after both
    assert table["method"].tolist() == ["mcf", "paper", "code_faithful"]
    cf = table.set_index("method").loc["code_faithful"]
    # per-seed Dice 80, 82, 84: SD 2, SEM 2 / sqrt(3) = 1.1547; HD95 5, 6, 7 -> mean 6
    assert cf["dice_mean"] == 82.0 and cf["dice_sem"] == pytest.approx(1.15, abs=0.006)
    assert cf["hd95_mean"] == 6.0 and cf["hd95_sem"] == pytest.approx(0.58, abs=0.006)
    assert cf["empty_total"] == 1  # seeds 1 and 3 have 0, seed 2 has 1
    assert math.isnan(table.set_index("method").loc["paper", "dice_sem"])  # one seed


def test_paired_differences_use_only_shared_seeds_and_cases(summary) -> None:
    cases = pd.DataFrame(
        _case_rows("paper", [1337, 2024], {"a": 80.0, "b": 70.0, "c": 60.0})
        + _case_rows("mcf", [1337, 2024, 7], {"a": 82.0, "b": 69.0})
    )
    d = summary.paired_differences(cases, "mcf", "paper", 600)
    # 2 seeds x 2 cases; a: +2, b: -1
    assert len(d) == 4 and set(d["seed"]) == {1337, 2024} and set(d["case"]) == {"a", "b"}
    assert sorted(d["diff"].tolist()) == [-1.0, -1.0, 2.0, 2.0]


def test_paired_stats_by_hand(summary) -> None:
    # six cases, one seed, differences 1..6 (all positive, no ties): the exact two-sided
    # Wilcoxon p is 2 / 2^6 = 0.03125 (only the all-positive and all-negative sign patterns
    # are as extreme); the mean is 3.5; every bootstrap mean of positive values is > 0
    diffs = pd.DataFrame({"seed": [1] * 6, "case": list("abcdef"), "diff": [1.0, 2, 3, 4, 5, 6]})
    res = summary.paired_stats(diffs, n_boot=2000)
    assert res.n_cases == 6 and res.n_seeds == 1
    assert res.mean_diff == pytest.approx(3.5)
    assert res.p_wilcoxon == pytest.approx(0.03125)
    assert 1.0 <= res.ci_low < 3.5 < res.ci_high <= 6.0 and res.verdict == "above"
    # mirrored: -1..-6 is "below" with the same p
    neg = diffs.assign(diff=-diffs["diff"])
    res = summary.paired_stats(neg, n_boot=2000)
    assert res.verdict == "below" and res.p_wilcoxon == pytest.approx(0.03125)


def test_paired_stats_pools_seeds_and_resamples_cases(summary) -> None:
    # case a: +4 on two seeds; case b: -2 on one seed only; case c: 0 on two seeds.
    # pooled mean = (4 + 4 - 2 + 0 + 0) / 5 = 1.2; seed-averaged per case: 4, -2, 0
    diffs = pd.DataFrame(
        {"seed": [1, 2, 1, 1, 2], "case": ["a", "a", "b", "c", "c"], "diff": [4.0, 4, -2, 0, 0]}
    )
    res = summary.paired_stats(diffs, n_boot=4000, seed=3)
    assert res.mean_diff == pytest.approx(1.2) and res.n_cases == 3 and res.n_seeds == 2
    # a resample of only case b gives -2, of only case a gives +4: the interval spans 0
    assert res.ci_low < 0 < res.ci_high and res.verdict == "not distinguishable"
    # Wilcoxon on (4, -2, 0): scipy's default drops the zero, leaving ranks 2 (+) and 1 (-):
    # the exact two-sided p of n = 2 is 1.0 (no pattern is less likely than another)
    assert res.p_wilcoxon == pytest.approx(1.0)
    assert summary.paired_stats(diffs.iloc[0:0]) is None


def _write_paper_and_uamt(folder: Path, *more_runs: dict) -> None:
    """la_lite.csv and la_lite_cases.csv of `paper` and UA-MT, two seeds each, UA-MT one
    Dice point below `paper` on every case (80 / 82 / 78 against 79 / 81 / 77)."""
    runs = pd.DataFrame(
        _run_rows("paper", [80.0, 81.0]) + _run_rows("uamt", [78.0, 79.0]) + list(more_runs)
    )
    runs.to_csv(folder / "la_lite.csv", index=False)
    cases = pd.DataFrame(
        _case_rows("paper", [1337, 2024], {"a": 80.0, "b": 82.0, "c": 78.0})
        + _case_rows("uamt", [1337, 2024], {"a": 79.0, "b": 81.0, "c": 77.0})
    )
    cases.to_csv(folder / "la_lite_cases.csv", index=False)


def test_markdown_and_cli(summary, tmp_path: Path, capsys) -> None:
    _write_paper_and_uamt(tmp_path)
    out = tmp_path / "summary.md"
    assert (
        summary.main(["--csv", str(tmp_path / "la_lite.csv"), "--boot", "500", "--out", str(out)])
        == 0
    )
    text = out.read_text()
    assert text == capsys.readouterr().out
    # the paper's LA 10 % values beside ours (paper_values.yaml: UA-MT 87.10, the method 89.95)
    assert "| uamt | 1337 2024 | 78.00 / 79.00 | 78.50 +- 0.50 |" in text and "| 87.10 |" in text
    assert "| 89.95 |" in text
    # uamt is 1 below paper on every case and seed: interval [-1, -1], "below"
    assert "| uamt | 3 | 2 | -1.00 | [-1.00, -1.00] |" in text and "| below |" in text
    # no per-case table: said, not invented
    (tmp_path / "la_lite_cases.csv").unlink()
    assert summary.main(["--csv", str(tmp_path / "la_lite.csv")]) == 0
    assert "paired statistics left out" in capsys.readouterr().out
    assert summary.main(["--csv", str(tmp_path / "none.csv")]) == 2


def test_readme_table_rewrites_only_its_block(summary, tmp_path: Path, capsys) -> None:
    # paper_literal is a diagnostic: not in the README's table
    _write_paper_and_uamt(tmp_path, *_run_rows("paper_literal", [60.0]))
    readme = tmp_path / "README.md"
    before, after = "# title\n\nintro\n\n", "\nRead with care.\n"
    readme.write_text(f"{before}{summary.README_BEGIN}\nold table\n{summary.README_END}{after}")
    argv = ["--csv", str(tmp_path / "la_lite.csv"), "--boot", "500", "--readme", str(readme)]
    assert summary.main(argv) == 0
    capsys.readouterr()
    text = readme.read_text()
    assert text.startswith(before + summary.README_BEGIN + "\n") and text.endswith(after)
    block = text[len(before) : -len(after)].splitlines()
    assert block[0] == summary.README_BEGIN and block[-1] == summary.README_END
    rows = block[3:-1]  # header and rule first
    # Table 1's order: UA-MT before the method; paper_literal left out; uamt's per-seed
    # Dice 78 / 79: mean 78.5, SEM 0.5; HD95 5 / 6: mean 5.5, SEM 0.5; 1 below on every
    # case and seed: [-1, -1]; the paper's LA 10 %: UA-MT 87.10, the method 89.95
    assert [r.split(" | ")[0] for r in rows] == ["| UA-MT", "| **the method, `paper`**"]
    assert rows[0].startswith("| UA-MT | 1337 2024 | 78.50 +- 0.50 | 5.50 +- 0.50 | -1.00 ")
    assert "[-1.00, -1.00] (2 seeds)" in rows[0] and rows[0].endswith("| below | 87.10 |")
    assert rows[1].endswith("| - | - | - | 89.95 |")
    # run again: the same file (the block is replaced, not appended)
    assert summary.main(argv) == 0 and readme.read_text() == text


def test_readme_without_its_markers_is_refused_and_kept(summary, tmp_path: Path, capsys) -> None:
    pd.DataFrame(_run_rows("paper", [80.0])).to_csv(tmp_path / "la_lite.csv", index=False)
    pd.DataFrame(_case_rows("paper", [1337], {"a": 80.0})).to_csv(
        tmp_path / "la_lite_cases.csv", index=False
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{summary.README_BEGIN}\n")  # no end line
    argv = ["--csv", str(tmp_path / "la_lite.csv"), "--readme", str(readme)]
    assert summary.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(readme) in err and "found 1 and 0" in err
    assert readme.read_text() == f"# title\n{summary.README_BEGIN}\n"
    readme.write_text(f"{summary.README_END}\n{summary.README_BEGIN}\n")  # out of order
    assert summary.main(argv) == 2 and "comes before" in capsys.readouterr().err


def test_the_readme_table_is_what_the_committed_rows_give(summary) -> None:
    """README.md's results table equals the summary of the committed LA-lite tables, so a
    row committed without rerunning ``la_lite_summary.py --readme README.md`` fails here."""
    root = repo_root()
    rows = pd.read_csv(root / "reports" / "bench" / "la_lite.csv")
    cases = pd.read_csv(root / "reports" / "bench" / "la_lite_cases.csv")
    table = summary.summarize(rows)
    paired = summary.pair_all(table, cases, "paper")
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split(summary.README_BEGIN + "\n", 1)[1].split(summary.README_END, 1)[0]
    assert block == summary.readme_table(table, paired, "paper")


def test_an_own_recipe_is_paired_with_the_shared_protocol(summary) -> None:
    # mcnet_own ran 1500 iterations; paper has rows at 600 only, so the own rows pair with
    # those: +3 on each of two cases. A 300-iteration diagnostic of paper's own kind pairs
    # with paper's 300 rows where they exist (here: 0 difference on one case).
    cases = pd.DataFrame(
        _case_rows("paper", [1337], {"a": 80.0, "b": 70.0})
        + [
            {**r, "iterations": 1500}
            for r in _case_rows("mcnet_own", [1337], {"a": 83.0, "b": 73.0})
        ]
        + [{**r, "iterations": 300} for r in _case_rows("paper", [1337], {"a": 50.0})]
        + [{**r, "iterations": 300} for r in _case_rows("short", [1337], {"a": 50.0})]
    )
    table = pd.DataFrame(
        {"method": ["paper", "mcnet_own", "short"], "iterations": [600, 1500, 300]}
    )
    paired = summary.pair_all(table, cases, "paper", n_boot=200)
    assert set(paired) == {("mcnet_own", 1500), ("short", 300)}
    own = paired[("mcnet_own", 1500)]
    assert (own.n_cases, own.mean_diff, own.ci_low, own.ci_high) == (2, 3.0, 3.0, 3.0)
    assert paired[("short", 300)].n_cases == 1 and paired[("short", 300)].mean_diff == 0.0


def test_holm_by_hand(summary) -> None:
    # m = 3 valid values, sorted 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised
    # to the running maximum 0.06); NaN stays NaN and does not count; 0.5 x 4 would be 2 -> 1
    adj = summary.holm({"a": 0.04, "b": 0.01, "c": float("nan"), "d": 0.03})
    assert adj["b"] == pytest.approx(0.03) and adj["d"] == pytest.approx(0.06)
    assert adj["a"] == pytest.approx(0.06) and math.isnan(adj["c"])
    assert summary.holm({"x": 0.5, "y": 0.5, "z": 0.5, "w": 0.5}) == {
        "x": 1.0,
        "y": 1.0,
        "z": 1.0,
        "w": 1.0,
    }


def test_pair_all_adjusts_over_the_table(summary) -> None:
    # two methods against paper on six cases: differences 1..6 (exact p 0.03125) and
    # -1..-6 (the same p); Holm over the two: 2 x 0.03125 = 0.0625 for both
    paper = {c: 50.0 for c in "abcdef"}
    cases = pd.DataFrame(
        _case_rows("paper", [1], paper)
        + _case_rows("up", [1], {c: 50.0 + i + 1 for i, c in enumerate("abcdef")})
        + _case_rows("down", [1], {c: 50.0 - i - 1 for i, c in enumerate("abcdef")})
    )
    table = pd.DataFrame({"method": ["paper", "up", "down"], "iterations": [600] * 3})
    paired = summary.pair_all(table, cases, "paper", n_boot=200)
    for key in (("up", 600), ("down", 600)):
        assert paired[key].p_wilcoxon == pytest.approx(0.03125)
        assert paired[key].p_holm == pytest.approx(0.0625)
    assert math.isnan(
        summary.paired_stats(summary.paired_differences(cases, "up", "paper", 600)).p_holm
    )
