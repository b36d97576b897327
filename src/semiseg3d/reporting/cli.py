"""``semiseg3d report``: the paper's tables and figures from a results tree.

Command line::

    semiseg3d report --results results/runs --out reports \\
        [--params params.yaml [--overlay config/demo.yaml ...]] [--data-root data/processed] \\
        [--no-curves]

Writes under ``--out``::

    tables/<name>.md | .tex | .csv      Tables 1-3 (one per dataset), 4, 5, 6, 7
    figures/figure8_<dataset>.png       Dice vs tau / T / lam
    figures/qualitative_<dataset>.png   middle axial slice: image, ground truth, predictions
    figures/curves/<dataset>_<variant>_r<ratio>_s<seed>.png   training curves per run
    runs_index.csv                      the tidy table of every run and case
    summary.md                          links (and inlines) everything above

Everything is built in a staging folder first; ``tables/``, ``figures/``, ``runs_index.csv``
and ``summary.md`` then replace their previous versions one by one (other files under
``--out`` are left alone). Missing runs never stop the report: their cells say ``missing``.
With ``--params``, the grid says which cells are expected (and the seed count); without it,
the tables show the paper's rows for the paper's datasets plus whatever ran.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semiseg3d.io.atomic import check_output, fsync_path, replace_dir, write_error
from semiseg3d.reporting.collect import collect
from semiseg3d.reporting.context import DATASET_TITLES, ReportContext, load_paper_values
from semiseg3d.reporting.figures import (
    figure8,
    qualitative_figure,
    qualitative_settings,
    training_curves,
)
from semiseg3d.reporting.tables import CELL_NOTE, Table, build_tables, write_table

__all__ = ["ReportResult", "build_report", "add_arguments", "main"]


@dataclass
class ReportResult:
    """What a report run wrote (paths relative to the output folder) and what it skipped."""

    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _summary(
    ctx: ReportContext,
    results: Path,
    tables: list[Table],
    fig8: dict[str, str],
    qual: dict[str, str],
    curves: list[tuple[str, str]],
    notes: list[str],
) -> str:
    idx = ctx.index
    runs = idx.drop_duplicates("run_dir")
    counts = runs["status"].value_counts().to_dict() if not runs.empty else {}
    status = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("tested", "trained", "incomplete"))
    lines = [
        "# semiseg3d report",
        "",
        f"From `{results}`: {len(runs)} run folder(s) ({status}); datasets: "
        f"{', '.join(ctx.datasets()) or 'none'}. Index of every run and case: "
        "[runs_index.csv](runs_index.csv).",
        "",
        CELL_NOTE,
        "",
        "## Tables",
        "",
    ]
    if not tables:
        lines += ["No table applies (no runs and no grid).", ""]
    for t in tables:
        links = " · ".join(f"[{ext}](tables/{t.name}.{ext})" for ext in ("md", "tex", "csv"))
        lines += [t.to_markdown().rstrip("\n"), "", f"Files: {links}", ""]
    lines += ["## Figures", ""]
    for title, alt, figures in (
        ("Figure 8", "Figure 8", fig8),
        ("Qualitative", "qualitative", qual),
    ):
        for ds, rel in figures.items():
            lines += [
                f"### {title} - {DATASET_TITLES.get(ds, ds)}",
                "",
                f"![{alt} {ds}]({rel})",
                "",
            ]
    if curves:
        lines += ["### Training curves", ""]
        lines += [f"- [{name}]({rel})" for name, rel in curves]
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _stage(
    ctx: ReportContext,
    results: Path,
    staging: Path,
    data_root: Path | None,
    curves: bool,
) -> ReportResult:
    out = ReportResult()
    tables_dir = staging / "tables"
    figs_dir = staging / "figures"
    tables_dir.mkdir(parents=True)
    figs_dir.mkdir(parents=True)

    ctx.index.to_csv(staging / "runs_index.csv", index=False)
    tables = build_tables(ctx)
    for t in tables:
        write_table(t, tables_dir)
        if t.n_missing():
            out.notes.append(f"{t.title}: {t.n_missing()} missing cell(s).")
    titles = {t.name.split("_")[0] for t in tables}
    for number, what in ((4, "ablation"), (5, "cr_kl"), (6, "no_pgl_third"), (7, "alpha*")):
        if f"table{number}" not in titles:
            out.notes.append(f"Table {number} not written: no {what} run and none in the grid.")

    fig8: dict[str, str] = {}
    qual: dict[str, str] = {}
    variants, n_cases = qualitative_settings(ctx.params)
    for ds in ctx.datasets():
        p = figure8(ctx, ds, figs_dir / f"figure8_{ds}.png")
        if p is not None:
            fig8[ds] = _rel(p, staging)
        if data_root is None:
            continue
        q, reason = qualitative_figure(
            ctx,
            ds,
            data_root,
            figs_dir / f"qualitative_{ds}.png",
            variants=variants,
            n_cases=n_cases,
        )
        if q is not None:
            qual[ds] = _rel(q, staging)
        else:
            out.notes.append(f"Qualitative figure for {ds} not drawn: {reason}.")

    curve_links: list[tuple[str, str]] = []
    if curves:
        runs = ctx.index.drop_duplicates("run_dir")
        for _, run in runs.iterrows():
            name = f"{run['dataset']}_{run['variant']}_r{run['ratio']}_s{run['seed']}"
            title = f"{run['dataset']} / {run['variant']} / r{run['ratio']} / s{run['seed']}"
            p = training_curves(run["run_dir"], figs_dir / "curves" / f"{name}.png", title)
            if p is not None:
                curve_links.append((title, _rel(p, staging)))

    summary = _summary(ctx, results, tables, fig8, qual, curve_links, out.notes)
    (staging / "summary.md").write_text(summary, encoding="utf-8")
    out.files = sorted(_rel(p, staging) for p in staging.rglob("*") if p.is_file())
    return out


#: the report's outputs under ``--out``, folders first; ``summary.md`` last: its presence
#: means everything it links is in place
_OUTPUTS = (("tables", True), ("figures", True), ("runs_index.csv", False), ("summary.md", False))
#: a tables / figures folder beside this file is an earlier report's (written before the marker)
_OURS = ("../runs_index.csv",)


def _check_outputs(out: Path) -> None:
    """Refuse, before any work, a file or a foreign folder where an output goes."""
    for name, folder in _OUTPUTS:
        check_output(out / name, folder=folder, ours=_OURS)


def _replace(src: Path, dst: Path, folder: bool) -> None:
    """Move the complete staged ``src`` to ``dst`` (:mod:`semiseg3d.io.atomic` rules)."""
    if folder:
        replace_dir(src, dst, ours=_OURS)
    else:
        check_output(dst, folder=False)
        fsync_path(src)
        os.replace(src, dst)


def build_report(
    ctx: ReportContext,
    results: str | Path,
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    curves: bool = True,
) -> ReportResult:
    """Write every table and figure under ``out`` (see the module docstring).

    Args:
        ctx: the report context (collected runs, paper values, params).
        results: the results root (named in the summary).
        out: output folder.
        data_root: folder of preprocessed datasets (``{data_root}/{dataset}``) for the
            qualitative figures; None skips them.
        curves: draw each run's training curves.

    Returns:
        The files written (relative to ``out``) and notes on what was skipped.
    """
    out = Path(out)
    _check_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".report.*.tmp"):  # the staging folder of a killed earlier run
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".report.", suffix=".tmp", dir=out))
    try:
        result = _stage(ctx, Path(results), staging, Path(data_root) if data_root else None, curves)
        for name, folder in _OUTPUTS:
            _replace(staging / name, out / name, folder)
    except Exception as exc:  # a full disk names the output, not the staging folder
        named = write_error(exc, staging, out)
        if named is None:
            raise
        raise named from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d report``."""
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results/runs"),
        help="results root: {dataset}/{variant}/r{ratio}/s{seed}/ (default results/runs)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports"), help="output folder (default reports)"
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params.yaml: its grid marks expected cells and the seed count",
    )
    parser.add_argument(
        "--overlay",
        type=Path,
        action="append",
        default=[],
        help="params overlay merged over --params (repeatable), e.g. config/demo.yaml",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("data/processed"),
        help="preprocessed datasets for the qualitative figures (default data/processed)",
    )
    parser.add_argument("--no-curves", action="store_true", help="skip the per-run training curves")


def main(args: argparse.Namespace) -> int:
    """Run ``semiseg3d report``."""
    from semiseg3d.errors import InputError
    from semiseg3d.reporting.complexity import complexity_report

    params: dict[str, Any] | None = None
    if args.overlay and args.params is None:
        raise InputError("--overlay needs --params")
    if args.params is not None:
        from semiseg3d.grid.run_config import load_params, validate_params

        params = load_params(args.params, args.overlay)
        validate_params(params, source=str(args.params))
    index = collect(args.results)
    ctx = ReportContext(index, load_paper_values(), params, complexity_report)
    result = build_report(
        ctx, args.results, args.out, data_root=args.data_root, curves=not args.no_curves
    )
    print(f"wrote {len(result.files)} file(s) to {args.out} (see {args.out / 'summary.md'})")
    for note in result.notes:
        print(f"note: {note}")
    return 0
