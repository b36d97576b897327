"""bench/first_steps.py: the recorded figures load and validate, and the statistic and the
verdict are computed as stated (expected values worked out by hand below)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from semiseg3d.errors import InputError
from semiseg3d.paths import repo_root


@pytest.fixture(scope="module")
def fs():
    bench = repo_root() / "bench"
    sys.path.insert(0, str(bench))  # first_steps imports la_lite from beside it
    try:
        spec = importlib.util.spec_from_file_location("first_steps", bench / "first_steps.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["first_steps"] = module  # its dataclass looks itself up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("first_steps", None)
        sys.path.remove(str(bench))


def test_the_committed_figures_load_and_name_registered_methods(fs) -> None:
    from semiseg3d.config.registry import baseline_names

    refs = fs.load_references()
    assert {r.method for r in refs} <= set(baseline_names())
    assert all(r.steps >= 1 and r.value > 0 and r.source for r in refs)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "- {method: mcnet, term: mc, steps: 0, statistic: mean, value: 0.3, source: x}",
            "'steps'",
        ),
        (
            "- {method: mcnet, term: mc, steps: 3, statistic: median, value: 0.3, source: x}",
            "'statistic'",
        ),
        ("- {method: mcnet, term: mc, steps: 3, statistic: mean, value: -1, source: x}", "'value'"),
        ("- {method: mcnet, term: mc, steps: 3, statistic: mean, value: 0.3}", "source"),
        ("{}", "non-empty list"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_key(
    fs, tmp_path: Path, entry: str, message: str
) -> None:
    path = tmp_path / "ref.yaml"
    path.write_text(entry + "\n")
    with pytest.raises(InputError) as err:
        fs.load_references(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_statistic_by_hand(fs) -> None:
    history = [
        {"mc": 0.5, "loss": 1.0},
        {"mc": float("nan"), "loss": 2.0},  # a step without the term counts as absent
        {"mc": 0.2, "loss": 4.0},
        {"loss": 8.0},
        {"mc": 9.0, "loss": 16.0},  # beyond the first 4 steps
    ]
    ref = fs.Reference("mcnet", "mc", 4, "mean", 1.0, "x")
    assert fs.statistic(history, ref) == pytest.approx((0.5 + 0.2) / 2)
    ref_max = fs.Reference("bcp", "loss", 4, "max", 1.0, "x")
    assert fs.statistic(history, ref_max) == 8.0
    with pytest.raises(InputError, match="6 needed"):
        fs.statistic(history, fs.Reference("mcnet", "mc", 6, "mean", 1.0, "x"))
    with pytest.raises(InputError, match="'pgl' not logged"):
        fs.statistic(history, fs.Reference("mcnet", "pgl", 2, "mean", 1.0, "x"))


def test_verdict_band(fs) -> None:
    # MC-Net's consistency term over its first 13 steps: authors 0.333; ours with
    # Kaiming-normal init 0.705 / 0.333 = 2.12 (a difference), with PyTorch's init
    # 0.354 / 0.333 = 1.063 (close)
    ratio, word = fs.verdict(0.705, 0.333)
    assert math.isclose(ratio, 0.705 / 0.333) and word == "DIFFERS"
    assert fs.verdict(0.354, 0.333)[1] == "close"
    assert fs.verdict(0.8, 1.0)[1] == "close" and fs.verdict(1.25, 1.0)[1] == "close"
    assert fs.verdict(0.79, 1.0)[1] == "DIFFERS" and fs.verdict(1.26, 1.0)[1] == "DIFFERS"


def test_rows_replace_only_their_own_key(fs, tmp_path: Path) -> None:
    # the table is keyed by (method, term, statistic): a new mcnet/mc/mean row replaces the
    # old one; mcnet/mc/max and bcp/loss/mean stay as they were
    la_lite = sys.modules["la_lite"]
    path = tmp_path / "first_steps.csv"
    key = ("method", "term", "statistic")

    def row(method: str, term: str, statistic: str, ours: str) -> dict[str, str]:
        return {"method": method, "term": term, "statistic": statistic, "ours": ours}

    la_lite.write_rows(
        [row("mcnet", "mc", "mean", "1"), row("mcnet", "mc", "max", "2")],
        path,
        fs.COLUMNS,
        key=key,
    )
    la_lite.write_rows([row("bcp", "loss", "mean", "3")], path, fs.COLUMNS, key=key)
    la_lite.write_rows([row("mcnet", "mc", "mean", "4")], path, fs.COLUMNS, key=key)
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(fs.COLUMNS)
    got = sorted(tuple(line.split(",")[:5]) for line in lines[1:])
    assert got == [
        ("bcp", "loss", "", "mean", "3"),
        ("mcnet", "mc", "", "max", "2"),
        ("mcnet", "mc", "", "mean", "4"),
    ]
