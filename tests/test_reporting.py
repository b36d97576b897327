"""Reports from a hand-made results tree: collection, table cells, files, figures, CLI.

Every expected number below is worked out by hand from the per-case values written by the
fixtures (see the comments at each fixture).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from semiseg3d.cli import main as cli_main
from semiseg3d.errors import InputError
from semiseg3d.reporting.collect import collect, curve_files, find_runs, read_metrics
from semiseg3d.reporting.context import (
    CellStats,
    ReportContext,
    cell_stats,
    format_cell,
    format_paper,
    load_paper_values,
)
from semiseg3d.reporting.figures import (
    FIG8_MIN_SPAN,
    draw_figure8,
    draw_training_curves,
    figure8,
    qualitative_figure,
    read_curve,
    training_curves,
)
from semiseg3d.reporting.tables import (
    build_tables,
    latex_escape,
    main_table,
    table4,
    table7,
    write_table,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_complexity(model: str, patch: list[int] | tuple[int, ...]) -> dict[str, float]:
    """Stand-in for models.complexity.complexity_report (fixed numbers, any patch)."""
    if model == "vnet":
        return {"params": 9_448_866, "macs_g": 40.108687, "macs_g_legacy": 47.102}
    return {"params": 27_379_220, "macs_g": 112.844, "macs_g_legacy": 126.844}


def write_run(
    root: Path,
    dataset: str,
    variant: str,
    ratio: int,
    seed: int,
    cases: list[tuple[str, float, float, float, float]] | None,
    **config: object,
) -> Path:
    """A run folder with config.yaml, model_final.pt and (unless ``cases`` is None) a
    metrics.csv of per-case rows (case, dice, jaccard, hd95, asd) plus summary rows."""
    run = root / dataset / variant / f"r{ratio}" / f"s{seed}"
    run.mkdir(parents=True)
    cfg = {
        "dataset": dataset,
        "labeled": config.pop("labeled", 8),
        "patch": config.pop("patch", [112, 112, 80]),
        "seed": seed,
        "extra": {"variant": variant, "ratio": ratio, "seed": seed},
        **config,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (run / "model_final.pt").write_bytes(b"")
    if cases is not None:
        frame = pd.DataFrame(cases, columns=["case", "dice", "jaccard", "hd95", "asd"])
        frame["empty_pred"] = 0
        values = frame[["dice", "jaccard", "hd95", "asd"]]
        summary = pd.DataFrame(
            {
                "case": ["mean", "sd", "sem"],
                **{
                    c: [
                        values[c].mean(),
                        values[c].std(ddof=1),
                        values[c].std(ddof=1) / math.sqrt(len(values)),
                    ]
                    for c in values.columns
                },
                "empty_pred": [0, np.nan, np.nan],
            }
        )
        pd.concat([frame, summary]).to_csv(run / "metrics.csv", index=False)
    return run


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """A small results tree.

    la/full/r10: seed 1 dice (0.90, 0.92), seed 2 (0.88, 0.90)
        -> per-seed means 91, 89 -> mean 90.00, SD over seeds sqrt(2) = 1.41,
           per-seed SEM = sqrt(2)/sqrt(2) = 1.00 each -> [1.00].
        jaccard seed 1 (0.80, 0.84), seed 2 (0.78, 0.82) -> 81.00 ± 1.41 [2.00].
        hd95 seed 1 (2, 4), seed 2 (4, 6) -> 4.00 ± 1.41 [1.00].
    la/suponly/r10: seed 1 only, dice (0.80, 0.70) -> 75.00 [5.00] (1/2 seeds).
    la/cps_only/r10: seed 1 only, dice (0.90, 0.88) -> 89.00 [1.00]; paper 89.70 -> Δ -0.70.
    la/alpha30/r10: seed 1 only, dice (0.50, 0.70) -> 60.00 [10.00].
    la/tau0.7/r10: seed 1, dice (0.85, 0.85).
    la/full/r20: trained, not tested (no metrics.csv).
    """
    root = tmp_path / "runs"
    for seed, dice, jac, hd in (
        (1, (0.90, 0.92), (0.80, 0.84), (2, 4)),
        (2, (0.88, 0.90), (0.78, 0.82), (4, 6)),
    ):
        write_run(
            root,
            "la",
            "full",
            10,
            seed,
            [("A", dice[0], jac[0], hd[0], 1.0), ("B", dice[1], jac[1], hd[1], 1.0)],
            alpha=70.0,
            tau=0.6,
            T=0.5,
            lam=0.5,
        )
    write_run(
        root, "la", "suponly", 10, 1, [("A", 0.80, 0.7, 5.0, 2.0), ("B", 0.70, 0.6, 7.0, 2.0)]
    )
    write_run(
        root, "la", "cps_only", 10, 1, [("A", 0.90, 0.8, 3.0, 1.0), ("B", 0.88, 0.8, 3.0, 1.0)]
    )
    write_run(
        root,
        "la",
        "alpha30",
        10,
        1,
        [("A", 0.50, 0.4, 9.0, 3.0), ("B", 0.70, 0.6, 9.0, 3.0)],
        alpha=30.0,
    )
    write_run(
        root,
        "la",
        "tau0.7",
        10,
        1,
        [("A", 0.85, 0.7, 3.0, 1.0), ("B", 0.85, 0.7, 3.0, 1.0)],
        tau=0.7,
    )
    write_run(root, "la", "full", 20, 1, None, labeled=16)
    # junk that does not match the layout is ignored
    (root / "la" / "full" / "notes").mkdir()
    (root / "la" / "full" / "r10" / "scratch").mkdir()
    return root


def _ctx(results: Path, **kw: object) -> ReportContext:
    return ReportContext(collect(results), load_paper_values(), complexity=_fake_complexity, **kw)


def _row(table, **match: str) -> pd.Series:
    sel = np.ones(len(table.display), dtype=bool)
    for key, value in match.items():
        sel &= (table.display[key] == value).to_numpy()
    assert sel.sum() == 1, (match, table.display)
    return table.display[sel].iloc[0]


# -- collect -------------------------------------------------------------------------------


def test_find_runs_layout_and_status(results: Path) -> None:
    runs = find_runs(results)
    keys = [(r.dataset, r.variant, r.ratio, r.seed, r.status) for r in runs]
    assert keys == [
        ("la", "alpha30", 10, 1, "tested"),
        ("la", "cps_only", 10, 1, "tested"),
        ("la", "full", 10, 1, "tested"),
        ("la", "full", 10, 2, "tested"),
        ("la", "full", 20, 1, "trained"),
        ("la", "suponly", 10, 1, "tested"),
        ("la", "tau0.7", 10, 1, "tested"),
    ]


def test_collect_tidy_rows(results: Path) -> None:
    idx = collect(results)
    full10 = idx[(idx["variant"] == "full") & (idx["ratio"] == 10)]
    # 2 seeds x (2 cases + 3 summary rows)
    assert len(full10) == 10
    assert sorted(full10.loc[~full10["summary"], "case"]) == ["A", "A", "B", "B"]
    assert set(full10.loc[full10["summary"], "case"]) == {"mean", "sd", "sem"}
    assert set(full10["labeled"]) == {8} and set(full10["alpha"]) == {70.0}
    assert set(full10["patch"]) == {"112x112x80"}
    untested = idx[(idx["variant"] == "full") & (idx["ratio"] == 20)]
    assert len(untested) == 1 and untested["status"].iloc[0] == "trained"
    assert untested["case"].iloc[0] == "" and untested["labeled"].iloc[0] == 16


def test_collect_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="results folder not found"):
        collect(tmp_path / "nope")
    run = write_run(tmp_path / "r", "la", "full", 10, 1, [("A", 0.9, 0.8, 1.0, 1.0)])
    (run / "metrics.csv").write_text("case,dice,jaccard,hd95\nA,0.9,0.8,1\n")
    with pytest.raises(InputError, match=r"metrics\.csv: missing column\(s\) \['asd'\]"):
        collect(tmp_path / "r")
    (run / "metrics.csv").write_text("case,dice,jaccard,hd95,asd\nA,abc,0.8,1,1\n")
    with pytest.raises(InputError, match="non-numeric value for case 'A'"):
        read_metrics(run / "metrics.csv")
    (run / "metrics.csv").write_text("case,dice,jaccard,hd95,asd\nmean,0.9,0.8,1,1\n")
    with pytest.raises(InputError, match="no per-case row"):
        read_metrics(run / "metrics.csv")


def test_collect_empty_tree(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    idx = collect(tmp_path / "runs")
    assert idx.empty and "dice" in idx.columns


# -- statistics and cell text --------------------------------------------------------------


def test_cell_stats_by_hand() -> None:
    rows = pd.DataFrame({"seed": [1, 1, 2, 2], "dice": [0.90, 0.92, 0.88, 0.90]})
    s = cell_stats(rows, "dice", 100.0)
    assert s is not None
    assert s.mean == pytest.approx(90.0)
    assert s.sd_seeds == pytest.approx(math.sqrt(2.0))
    assert s.sem_cases == pytest.approx(1.0)
    assert (s.n_seeds, s.n_cases) == (2, 2)
    assert format_cell(s, 2) == "90.00 ± 1.41 [1.00]"
    assert format_cell(s, 3) == "90.00 ± 1.41 [1.00] (2/3 seeds)"
    assert cell_stats(rows.iloc[:0], "dice") is None
    assert format_cell(None, 3) == "missing"


def test_format_single_seed_and_paper() -> None:
    s = CellStats(mean=75.0, sd_seeds=math.nan, sem_cases=5.0, n_seeds=1, n_cases=2)
    assert format_cell(s, 1) == "75.00 [5.00]"
    assert format_paper(89.95, 0.58, CellStats(90.0, 1.0, 1.0, 2, 2)) == "89.95 ± 0.58 (Δ +0.05)"
    assert format_paper(71.83, None, CellStats(70.0, 1.0, 1.0, 2, 2)) == "71.83 (Δ -1.83)"
    assert format_paper(71.83, None, None) == "71.83 (Δ n/a)"
    assert format_paper(None, None, s) == "n/a"


def test_latex_escape() -> None:
    assert latex_escape("10 % a_b ± Δ") == r"10 \% a\_b $\pm$ $\Delta$"


# -- tables --------------------------------------------------------------------------------


def test_main_table_cells(results: Path) -> None:
    table = main_table(_ctx(results), "la")
    assert table is not None and table.name == "table1_la"
    ours10 = _row(table, Method="Ours", Labeled="10 % (8)")
    assert ours10["Dice (%)"] == "90.00 ± 1.41 [1.00]"
    assert ours10["Dice paper (Δ)"] == "89.95 ± 0.58 (Δ +0.05)"
    assert ours10["Jaccard (%)"] == "81.00 ± 1.41 [2.00]"
    assert ours10["Jaccard paper (Δ)"] == "n/a"
    assert ours10["95HD (voxel)"] == "4.00 ± 1.41 [1.00]"
    assert ours10["Params (M)"] == "27.38 (paper 27.30)"
    assert ours10["MACs true (G)"] == "112.84"
    assert ours10["MACs legacy (G)"] == "126.84 (paper 126.95)"
    sup10 = _row(table, Method="SupOnly (V-Net)", Labeled="10 % (8)")
    assert sup10["Dice (%)"] == "75.00 [5.00] (1/2 seeds)"
    assert sup10["Params (M)"] == "9.45 (paper 9.44)"
    assert sup10["MACs legacy (G)"] == "47.10 (paper 47.10)"
    # the paper's rows are there even without runs; the untested r20 run counts as missing
    assert _row(table, Method="SupOnly (V-Net)", Labeled="All")["Dice (%)"] == "missing"
    ours20 = _row(table, Method="Ours", Labeled="20 % (16)")
    assert ours20["Dice (%)"] == "missing" and ours20["Dice paper (Δ)"] == "n/a"
    # SupOnly 20 %, All and Ours 20 %, and the ten Table 1 baselines at 10 and 20 % (their
    # paper values are quoted, so their rows are there without runs), four metrics each
    assert table.n_missing() == 4 * (3 + 10 * 2)
    methods = list(dict.fromkeys(table.display["Method"]))
    # the paper's Table 1 order
    assert methods == [
        "SupOnly (V-Net)",
        "UA-MT",
        "SASSNet",
        "DTC",
        "MC-Net",
        "SS-Net",
        "MC-Net+",
        "MCF",
        "BCP",
        "LUSEG",
        "ML-RPL",
        "Ours",
    ]
    bcp20 = _row(table, Method="BCP", Labeled="20 % (16)")
    assert bcp20["Dice (%)"] == "missing" and bcp20["Dice paper (Δ)"] == "91.61 (Δ n/a)"
    num = table.numeric.set_index(["variant", "ratio"])
    assert num.loc[("full", 10), "dice_mean"] == pytest.approx(90.0)
    assert num.loc[("full", 10), "dice_diff"] == pytest.approx(0.05)
    assert num.loc[("full", 10), "dice_sem_cases"] == pytest.approx(1.0)
    assert num.loc[("full", 10), "params"] == 27_379_220


def test_main_table_real_complexity(results: Path) -> None:
    from semiseg3d.reporting.complexity import complexity_report

    ctx = ReportContext(collect(results), load_paper_values(), complexity=complexity_report)
    table = main_table(ctx, "la")
    # spec 1.5: V-Net 9,448,866 params, legacy 47.102 G and true 40.109 G at 112x112x80
    sup = _row(table, Method="SupOnly (V-Net)", Labeled="10 % (8)")
    assert sup["Params (M)"] == "9.45 (paper 9.44)"
    assert sup["MACs true (G)"] == "40.11"
    assert sup["MACs legacy (G)"] == "47.10 (paper 47.10)"
    uamt = _row(table, Method="UA-MT", Labeled="10 % (8)")
    assert uamt["Params (M)"] == "18.90 (paper 18.88)"  # student + EMA teacher
    assert _row(table, Method="MC-Net+", Labeled="20 % (16)")["Params (M)"] == "15.25 (paper 15.25)"
    assert _row(table, Method="DTC", Labeled="10 % (8)")["MACs legacy (G)"] == "47.10"


def test_table3_rows_own_recipe_rows_and_complexity_notes(results: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "results"
    shutil.copytree(results, root)
    write_run(root, "brats", "urpc", 10, 1, [("A", 0.8, 0.7, 3.0, 1.0)], patch=[96, 96, 96])
    write_run(root, "brats", "urpc_own", 10, 1, [("A", 0.7, 0.6, 3.0, 1.0)], patch=[96, 96, 96])
    table = main_table(_ctx(root), "brats")
    assert table is not None and table.name == "table3_brats"
    methods = list(dict.fromkeys(table.display["Method"]))
    # the paper's Table 3 order; ML-RPL's BraTS value is not transcribed and the grid is
    # not given here, so its row is absent; the own-recipe row follows its baseline
    assert methods == [
        "SupOnly (V-Net)",
        "UA-MT",
        "DTC",
        "URPC",
        "URPC (own recipe)",
        "CPCL",
        "AC-MT",
        "BCP",
        "Ours",
    ]
    own = _row(table, Method="URPC (own recipe)")
    assert own["Labeled"].startswith("10 %") and own["Dice (%)"].startswith("70.00")
    assert own["Dice paper (Δ)"] == "n/a"  # the paper's value is the shared row's
    shared = table.display[table.display["Method"] == "URPC"]
    assert list(shared["Dice paper (Δ)"]) == ["82.59 (Δ -2.59)", "82.93 (Δ n/a)"]
    notes = " ".join(table.notes)
    for name in ("URPC: the paper's 5.88 M", "CPCL: the paper's 18.88 M", "BCP: the paper's"):
        assert name in notes
    assert "SASSNet" not in notes and "ML-RPL" not in notes  # rows not in this table


def test_table4_and_unmapped_rows_note(results: Path) -> None:
    table = table4(_ctx(results))
    assert table is not None
    cps = _row(table, Variant="cps_only")
    assert cps["Dice (%)"] == "89.00 [1.00] (1/2 seeds)"
    assert cps["Dice paper (Δ)"] == "89.70 (Δ -0.70)"
    assert _row(table, Variant="no_ue")["Dice (%)"] == "missing"
    assert _row(table, Variant="no_ue")["Dice paper (Δ)"] == "n/a"
    assert _row(table, Variant="full")["Dice paper (Δ)"] == "89.95 ± 0.58 (Δ +0.05)"
    assert "no_cr_ic" not in set(table.display["Variant"])
    assert any("88.37 / 89.47 / 89.77 / 89.93" in n for n in table.notes)


def test_table7_default_alpha_is_full_run(results: Path) -> None:
    table = table7(_ctx(results))
    assert table is not None
    assert list(table.display["alpha"]) == [
        "10",
        "20",
        "30",
        "40",
        "50",
        "60",
        "70 (default)",
        "80",
        "90",
    ]
    default = _row(table, alpha="70 (default)")
    assert default["Dice (%)"] == "90.00 ± 1.41 [1.00]"
    assert default["Dice paper (Δ)"] == "89.95 ± 0.58 (Δ +0.05)"
    assert _row(table, alpha="30")["Dice (%)"] == "60.00 [10.00] (1/2 seeds)"
    assert _row(table, alpha="10")["Dice (%)"] == "missing"
    num = table.numeric.set_index("alpha")
    assert num.loc[70.0, "alpha_default"] and num.loc[70.0, "run_variant"] == "full"
    assert num.loc[30.0, "dice_mean"] == pytest.approx(60.0)


def test_tables_5_6_absent_without_their_variants(results: Path) -> None:
    names = [t.name for t in build_tables(_ctx(results))]
    assert names == ["table1_la", "table4_ablation", "table7_alpha"]


def test_grid_marks_expected_cells_and_seeds(results: Path) -> None:
    pytest.importorskip("semiseg3d.grid.run_config")
    params = {
        "data": {"la": {"labeled": {"r10": 8}}},
        "train": {"la": {"alpha": 70}},
        "variants": {"full": {}, "cr_kl": {"cr_distance": "kl"}, "alpha70": {"alpha": 70}},
        "grid": {
            "seeds": [1, 2, 3],
            "datasets": ["la"],
            "experiments": [
                {"name": "t5", "ratios": [10], "variants": ["full", "cr_kl", "alpha70"]}
            ],
        },
    }
    ctx = _ctx(results, params=params)
    assert ctx.expected_seeds("la") == 3
    assert ctx.resolve("la", "alpha70") == "full"
    names = [t.name for t in build_tables(ctx)]
    assert "table5_cr_distance" in names  # in the grid, though nothing ran
    t1 = main_table(ctx, "la")
    assert (
        _row(t1, Method="Ours", Labeled="10 % (8)")["Dice (%)"] == "90.00 ± 1.41 [1.00] (2/3 seeds)"
    )


def test_table_files(results: Path, tmp_path: Path) -> None:
    table = main_table(_ctx(results), "la")
    paths = write_table(table, tmp_path / "tables")
    assert sorted(p.name for p in paths) == ["table1_la.csv", "table1_la.md", "table1_la.tex"]
    md = (tmp_path / "tables" / "table1_la.md").read_text()
    assert "| Ours | 10 % (8) | 90.00 ± 1.41 [1.00] | 89.95 ± 0.58 (Δ +0.05) |" in md
    tex = (tmp_path / "tables" / "table1_la.tex").read_text()
    assert r"90.00 $\pm$ 1.41 [1.00]" in tex and r"\begin{tabular}" in tex and r"\end{table}" in tex
    assert "%" not in tex.replace(r"\%", "")  # every percent sign escaped
    csv = pd.read_csv(tmp_path / "tables" / "table1_la.csv")
    ours = csv[(csv["variant"] == "full") & (csv["ratio"] == 10)].iloc[0]
    assert ours["dice_mean"] == pytest.approx(90.0) and ours["dice_paper"] == pytest.approx(89.95)
    assert ours["dice_sd_seeds"] == pytest.approx(math.sqrt(2)) and ours["dice_n_seeds"] == 2


# -- figures -------------------------------------------------------------------------------


def _is_png(path: Path) -> bool:
    import matplotlib.image as mpimg

    return path.read_bytes()[:8] == PNG_MAGIC and mpimg.imread(path).ndim == 3


def test_figure8_png(results: Path, tmp_path: Path) -> None:
    ctx = _ctx(results)
    path = figure8(ctx, "la", tmp_path / "f8.png")
    assert path is not None and _is_png(path)
    assert figure8(_ctx(results), "pancreas", tmp_path / "none.png") is None


def _yerr_segments(ax) -> dict[float, float]:
    """x -> length of the vertical error bar drawn there, over every errorbar of ``ax``."""
    out: dict[float, float] = {}
    for container in ax.containers:
        if not getattr(container, "has_yerr", False):
            continue
        for collection in container.lines[2]:
            for seg in collection.get_segments():
                if len(seg) and np.isfinite(seg).all():
                    out[round(float(seg[0][0]), 6)] = float(abs(seg[1][1] - seg[0][1]))
    return out


def test_figure8_error_bars_and_axis_span(results: Path) -> None:
    import matplotlib.pyplot as plt

    # tau0.7 at r10 gets a second seed whose Dice differs by a fraction of a point
    write_run(results, "la", "tau0.7", 10, 2, [("A", 0.853, 0.7, 2, 1), ("B", 0.853, 0.7, 2, 1)])
    fig = draw_figure8(_ctx(results), "la")
    assert fig is not None
    try:
        tau = fig.axes[0]
        bars = _yerr_segments(tau)
        # la/full/r10 (the default tau 0.6): per-seed means 91 and 89 -> SD sqrt(2) each way
        assert bars[0.6] == pytest.approx(2 * math.sqrt(2), rel=1e-6)
        # tau0.7: per-seed means 85.0 and 85.3 -> SD 0.3 / sqrt(2) each way
        assert bars[0.7] == pytest.approx(2 * 0.3 / math.sqrt(2), rel=1e-6)
        # every panel spans at least FIG8_MIN_SPAN Dice points
        for ax in fig.axes:
            lo, hi = ax.get_ylim()
            assert hi - lo >= FIG8_MIN_SPAN - 1e-9 and 0.0 <= lo and hi <= 100.0
        assert "SD over seeds" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_figure8_one_seed_points_have_no_bar(results: Path) -> None:
    import matplotlib.pyplot as plt

    fig = draw_figure8(_ctx(results), "la")
    assert fig is not None
    try:
        bars = _yerr_segments(fig.axes[0])
        assert 0.6 in bars and 0.7 not in bars  # tau0.7 has one seed here
        lo, hi = fig.axes[0].get_ylim()
        assert hi - lo >= FIG8_MIN_SPAN - 1e-9
        assert "none on the" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_training_curves_series_are_told_apart(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    run = tmp_path / "run"
    base = run / "live" / "plots" / "metrics" / "train"
    base.mkdir(parents=True)
    names = [f"term{i}" for i in range(12)] + ["loss_a", "loss_b", "lr", "pgl_weight"]
    for k, name in enumerate(names):
        rows = "".join(f"{i}\t{(k + 1) * 0.1 + 0.01 * i}\n" for i in range(5))
        (base / f"{name}.tsv").write_text(f"step\t{name}\n{rows}")
    fig = draw_training_curves(run, "demo")
    assert fig is not None
    try:
        assert len(fig.axes) == 3
        for ax in fig.axes:
            assert ax.get_xlabel() == "iteration" and ax.get_ylabel()
            labelled = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
            assert labelled
            colours = [
                tuple(np.round(line.get_color(), 6))
                if not isinstance(line.get_color(), str)
                else line.get_color()
                for line in labelled
            ]
            assert len(set(colours)) == len(labelled), ax.get_title()
            # neighbours in the legend differ in line style too
            styles = [line.get_linestyle() for line in labelled]
            assert all(a != b for a, b in zip(styles, styles[1:], strict=False)), styles
        terms = next(ax for ax in fig.axes if ax.get_title() == "loss terms")
        assert len([ln for ln in terms.get_lines() if not ln.get_label().startswith("_")]) == 12
    finally:
        plt.close(fig)


def _write_curves(run: Path) -> None:
    base = run / "live" / "plots" / "metrics" / "train"
    base.mkdir(parents=True)
    for name, values in (
        ("loss_a", [2.0, 1.5, 1.0]),
        ("ce_a", [0.7, 0.5, 0.4]),
        ("lr", [0.01, 0.01, 0.001]),
    ):
        rows = "".join(f"{i}\t{v}\n" for i, v in enumerate(values))
        (base / f"{name}.tsv").write_text(f"step\t{name}\n{rows}")
    (base / "winner.tsv").write_text("step\ttimestamp\twinner\n0\t1\t1.0\n")


def test_training_curves(results: Path, tmp_path: Path) -> None:
    run = results / "la" / "full" / "r10" / "s1"
    _write_curves(run)
    assert sorted(curve_files(run)) == ["train/ce_a", "train/loss_a", "train/lr", "train/winner"]
    steps, values = read_curve(run / "live/plots/metrics/train/winner.tsv")
    assert steps.tolist() == [0.0] and values.tolist() == [1.0]
    path = training_curves(run, tmp_path / "c.png", "la full")
    assert path is not None and _is_png(path)
    assert training_curves(results / "la" / "suponly" / "r10" / "s1", tmp_path / "x.png") is None


def _synthetic_with_predictions(tmp_path: Path) -> tuple[Path, Path]:
    import nibabel as nib

    from semiseg3d.data.synthetic import SynthParams, write_dataset

    data_root = tmp_path / "processed"
    write_dataset(
        data_root / "synthetic", SynthParams(n_train=1, n_test=2, shape=(16, 16, 16), seed=0)
    )
    import h5py

    runs = tmp_path / "sruns"
    for variant, ratio in (("full", 50), ("suponly", 50)):
        run = write_run(
            runs,
            "synthetic",
            variant,
            ratio,
            1,
            [("synth_0001", 0.8, 0.7, 1.0, 1.0), ("synth_0002", 0.6, 0.5, 2.0, 1.0)],
            patch=[16, 16, 16],
            stride=[8, 8, 8],
            labeled=1,
        )
        (run / "predictions").mkdir()
        for case in ("synth_0001", "synth_0002"):
            with h5py.File(data_root / "synthetic" / f"{case}.h5") as f:
                label = f["label"][()]
            nib.save(
                nib.Nifti1Image(label.astype(np.uint8), np.eye(4)),
                run / "predictions" / f"{case}.nii.gz",
            )
    return data_root, runs


def test_qualitative_figure(tmp_path: Path) -> None:
    data_root, runs = _synthetic_with_predictions(tmp_path)
    ctx = _ctx(runs)
    path, reason = qualitative_figure(ctx, "synthetic", data_root, tmp_path / "q.png")
    assert reason == "" and path is not None and _is_png(path)
    none, reason = qualitative_figure(ctx, "synthetic", tmp_path / "nowhere", tmp_path / "q2.png")
    assert none is None and "not found" in reason


# -- command line --------------------------------------------------------------------------


def test_cli_report_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import semiseg3d.reporting.complexity as cx

    monkeypatch.setattr(cx, "complexity_report", _fake_complexity)
    data_root, runs = _synthetic_with_predictions(tmp_path)
    _write_curves(runs / "synthetic" / "full" / "r50" / "s1")
    out = tmp_path / "reports"
    (out / "bench").mkdir(parents=True)
    (out / "bench" / "keep.csv").write_text("x\n")
    argv = ["report", "--results", str(runs), "--out", str(out), "--data-root", str(data_root)]
    assert cli_main(argv) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "bench/keep.csv",
        "figures/.semiseg3d-output",  # the marker: these folders are the report's
        "figures/curves/synthetic_full_r50_s1.png",
        "figures/qualitative_synthetic.png",
        "runs_index.csv",
        "summary.md",
        "tables/.semiseg3d-output",
        "tables/table_main_synthetic.csv",
        "tables/table_main_synthetic.md",
        "tables/table_main_synthetic.tex",
    ]
    summary = (out / "summary.md").read_text()
    assert (
        "tables/table_main_synthetic.tex" in summary
        and "figures/qualitative_synthetic.png" in summary
    )
    md = (out / "tables" / "table_main_synthetic.md").read_text()
    # one seed, cases 80 and 60 -> mean 70, SEM = sd(80, 60) / sqrt(2) = 10
    assert "| Ours | 50 % (1) | 70.00 [10.00] | n/a |" in md
    index = pd.read_csv(out / "runs_index.csv")
    assert len(index) == 2 * (2 + 3)
    # a rerun replaces the outputs and leaves no staging folder behind
    assert cli_main([*argv, "--no-curves"]) == 0
    assert not (out / "figures" / "curves").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_missing_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli_main(["report", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "results folder not found" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.md").exists()
