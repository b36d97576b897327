"""The paper's tables from the collected run results, as Markdown, LaTeX and CSV.

Cell format (Markdown and LaTeX; the CSV has every number in its own column)::

    mean ± SD_seeds [SEM_cases]          e.g.  89.12 ± 0.41 [0.62]

- ``mean``: the mean over seeds of each seed's mean over test cases.
- ``SD_seeds``: the standard deviation (ddof 1) of those per-seed means - the run-to-run
  spread. Left out (``89.12 [0.62]``) when only one seed is there.
- ``SEM_cases``: each seed's standard error over test cases (per-case SD with ddof 1, over
  the square root of the number of cases), averaged over seeds. This is the figure that
  the paper's "±" matches (spec 6.2).
- ``(k/n seeds)`` follows a cell that averages over fewer seeds than expected; a cell with
  no tested run says ``missing``.

Dice and Jaccard are in %, HD95 and ASD in voxels. Beside each metric, the column
``paper (Δ)`` holds the paper's value (with its ``±`` when the spec quotes it) and our mean
minus it, or ``n/a`` where the spec quotes no paper value (``paper_values.yaml``).
The cells come from :mod:`semiseg3d.reporting.context`; the rows of Tables 1-3 from the
method registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from semiseg3d.config.registry import METHODS, ReportRow
from semiseg3d.io.atomic import write_text_atomic
from semiseg3d.reporting.context import (
    DATASET_TITLES,
    METRIC_SPECS,
    PAPER_DATASETS,
    TABLE4_VARIANTS,
    ReportContext,
    as_number,
    cell_stats,
    format_cell,
    format_paper,
    sweep_value,
)

__all__ = [
    "main_rows",
    "main_methods",
    "OWN_SUFFIX",
    "CELL_NOTE",
    "Table",
    "latex_escape",
    "main_table",
    "table4",
    "table5",
    "table6",
    "table7",
    "build_tables",
    "write_table",
]

#: suffix of a baseline's variant under its original's own recipe (``uamt_own``); such runs
#: get a row "<label> (own recipe)" right below the baseline's shared-recipe row
OWN_SUFFIX = "_own"


def main_rows() -> tuple[ReportRow, ...]:
    """Tables 1-3: the rows of every registered method, in registry order (SupOnly, the
    baselines in the order of the paper's Tables 1-3, ours;
    :data:`semiseg3d.config.registry.METHODS`). A baseline's complexity is that of every
    network it trains (teachers included)."""
    return tuple(row for entry in METHODS.values() for row in entry.report)


def main_methods() -> tuple[tuple[str, str, str], ...]:
    """(variant, row label, network whose complexity the row shows) of :func:`main_rows`."""
    return tuple((row.variant, row.label, row.model) for row in main_rows())


@dataclass
class Table:
    """One table in three renderings.

    Attributes:
        name: file stem (``table1_la``).
        title: caption.
        display: text cells for Markdown and LaTeX.
        numeric: one number per column, for CSV.
        notes: footnotes (cell format, unmapped paper rows, ...).
    """

    name: str
    title: str
    display: pd.DataFrame
    numeric: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def n_missing(self) -> int:
        """Number of ``missing`` cells."""
        return int((self.display == "missing").to_numpy().sum())

    def to_markdown(self) -> str:
        """A Markdown table with the title as heading and the notes below."""

        def esc(text: Any) -> str:
            return str(text).replace("|", "\\|")

        cols = list(self.display.columns)
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(esc(c) for c in cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        for _, row in self.display.iterrows():
            lines.append("| " + " | ".join(esc(row[c]) for c in cols) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {n}" for n in self.notes)
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        """A LaTeX ``table`` with a ``tabular`` (no packages beyond plain LaTeX)."""
        cols = list(self.display.columns)
        lines = [
            "\\begin{table}[ht]",
            "\\centering",
            f"\\caption{{{latex_escape(self.title)}}}",
            f"\\label{{tab:{self.name}}}",
            "\\footnotesize",
            "\\begin{tabular}{" + "l" * len(cols) + "}",
            "\\hline",
            " & ".join(latex_escape(c) for c in cols) + " \\\\",
            "\\hline",
        ]
        for _, row in self.display.iterrows():
            lines.append(" & ".join(latex_escape(row[c]) for c in cols) + " \\\\")
        lines += ["\\hline", "\\end{tabular}"]
        if self.notes:
            lines.append("\\par\\smallskip")
            lines.extend(f"{latex_escape(n)}\\par" for n in self.notes)
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The numeric frame as CSV (one number per column; cell texts in ``*_cell``)."""
        return self.numeric.to_csv(index=False)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
}


def latex_escape(text: Any) -> str:
    """Escape LaTeX's special characters; ``±`` and ``Δ`` become math symbols."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def write_table(table: Table, folder: str | Path) -> list[Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` into ``folder`` (atomically)."""
    folder = Path(folder)
    out = []
    for ext, text in (
        ("md", table.to_markdown()),
        ("tex", table.to_latex()),
        ("csv", table.to_csv()),
    ):
        path = folder / f"{table.name}.{ext}"
        write_text_atomic(path, text)
        out.append(path)
    return out


CELL_NOTE = (
    "Cells: mean ± SD over seeds [mean SEM over test cases]; Dice/Jaccard in %, 95HD/ASD in "
    "voxels; '(k/n seeds)' = fewer seeds than expected; 'missing' = no tested run. "
    "'paper (Δ)': the paper's value and our mean minus it; n/a = not quoted by the spec."
)


def _metric_cells(
    ctx: ReportContext, dataset: str, variant: str, ratio: int
) -> tuple[dict[str, str], dict[str, Any]]:
    rows = ctx.case_rows(dataset, variant, ratio)
    expected = ctx.expected_seeds(dataset)
    display: dict[str, str] = {}
    numeric: dict[str, Any] = {
        "run_variant": ctx.resolve(dataset, variant),
        "seeds_expected": expected,
    }
    for metric, header, scale in METRIC_SPECS:
        stats = cell_stats(rows, metric, scale)
        paper, pm = ctx.paper_value(dataset, variant, ratio, metric)
        display[header] = format_cell(stats, expected)
        display[f"{header.split(' ')[0]} paper (Δ)"] = format_paper(paper, pm, stats)
        numeric.update(
            {
                f"{metric}_mean": None if stats is None else stats.mean,
                f"{metric}_sd_seeds": None if stats is None else stats.sd_seeds,
                f"{metric}_sem_cases": None if stats is None else stats.sem_cases,
                f"{metric}_n_seeds": 0 if stats is None else stats.n_seeds,
                f"{metric}_n_cases": 0 if stats is None else stats.n_cases,
                f"{metric}_paper": paper,
                f"{metric}_paper_pm": pm,
                f"{metric}_diff": None if stats is None or paper is None else stats.mean - paper,
                f"{metric}_cell": display[header],
            }
        )
    return display, numeric


def _frames(
    rows: Iterable[tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = list(rows)
    return pd.DataFrame([d for d, _ in rows]), pd.DataFrame([n for _, n in rows])


def _paper_complexity(ctx: ReportContext, model: str, dataset: str, key: str) -> float | None:
    entry = (ctx.paper.get("complexity") or {}).get(model) or {}
    if key == "params_m":
        return as_number(entry.get("params_m"))
    patch = ctx.patch(dataset)
    if patch is None:
        return None
    return as_number((entry.get(key) or {}).get("x".join(str(v) for v in patch)))


def _with_paper(value: float | None, paper: float | None, digits: int = 2) -> str:
    text = "n/a" if value is None else f"{value:.{digits}f}"
    return text if paper is None else f"{text} (paper {paper:.{digits}f})"


def _main_table_number(dataset: str) -> int | None:
    return PAPER_DATASETS.index(dataset) + 1 if dataset in PAPER_DATASETS else None


def main_table(ctx: ReportContext, dataset: str) -> Table | None:
    """Tables 1-3 layout for one dataset: SupOnly, the baselines in the registry's order
    (the paper's; each followed by its own-recipe row where run), Ours and (if run)
    code-faithful rows per labeled ratio (a row where runs exist, the grid names it, or the
    paper is quoted for it); the four metrics with the paper's values; parameters and both
    MAC counts (true and legacy thop-style) at the dataset's patch, with a footnote for each
    row whose paper complexity figure does not describe the trained networks. None when no
    row applies."""
    disp_rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    notes: list[str] = []
    for row, own in _with_own_rows(ctx, dataset):
        variant, label, model = row.variant, row.label, row.model
        ratios = ctx.ratios(dataset, variant)
        if dataset in PAPER_DATASETS and not own:
            if row.paper_ratios is not None:  # the paper's own rows
                ratios |= set(row.paper_ratios)
            else:  # the ratios the paper values quote for it on that dataset
                quoted = ((ctx.paper.get("runs") or {}).get(dataset) or {}).get(variant) or {}
                ratios |= {int(r) for r in quoted}
        cx = ctx.model_complexity(model, dataset) if ratios else None
        if ratios and row.complexity_note and row.complexity_note not in notes:
            notes.append(row.complexity_note)
        for ratio in sorted(ratios):
            display: dict[str, Any] = {"Method": label, "Labeled": ctx.labeled_text(dataset, ratio)}
            numeric: dict[str, Any] = {
                "dataset": dataset,
                "method": label,
                "variant": variant,
                "ratio": ratio,
                "labeled": ctx.labeled(dataset, ratio),
            }
            d, n = _metric_cells(ctx, dataset, variant, ratio)
            display.update(d)
            numeric.update(n)
            p_params = _paper_complexity(ctx, model, dataset, "params_m")
            p_legacy = _paper_complexity(ctx, model, dataset, "macs_g_legacy")
            params_m = None if cx is None else float(cx["params"]) / 1e6
            macs = None if cx is None else float(cx["macs_g"])
            legacy = None if cx is None else float(cx["macs_g_legacy"])
            display["Params (M)"] = _with_paper(params_m, p_params)
            display["MACs true (G)"] = _with_paper(macs, None)
            display["MACs legacy (G)"] = _with_paper(legacy, p_legacy)
            numeric.update(
                {
                    "model": model,
                    "params": None if cx is None else int(cx["params"]),
                    "params_m": params_m,
                    "params_m_paper": p_params,
                    "macs_g_true": macs,
                    "macs_g_legacy": legacy,
                    "macs_g_legacy_paper": p_legacy,
                }
            )
            disp_rows.append((display, numeric))
    if not disp_rows:
        return None
    display, numeric = _frames(disp_rows)
    number = _main_table_number(dataset)
    title_ds = DATASET_TITLES.get(dataset, dataset)
    patch = ctx.patch(dataset)
    patch_text = "x".join(map(str, patch)) if patch else "unknown patch"
    name = f"table{number}_{dataset}" if number else f"table_main_{dataset}"
    title = f"{'Table ' + str(number) if number else 'Main results'}: {title_ds}"
    notes = [
        CELL_NOTE,
        f"Params and MACs: batch 1 at the training patch {patch_text}; 'true' = FlopCounterMode "
        "FLOPs / 2, 'legacy' = the thop-style rule of the paper's tables (spec 1.5). A "
        "baseline counts every network it trains (EMA teachers included).",
        *notes,
    ]
    return Table(name, title, display, numeric, notes)


def _with_own_rows(ctx: ReportContext, dataset: str) -> list[tuple[ReportRow, bool]]:
    """:func:`main_rows` in order, each baseline followed by its ``own``-recipe row where
    runs of ``<variant>_own`` exist or the grid names them on ``dataset``."""
    out: list[tuple[ReportRow, bool]] = []
    for entry in METHODS.values():
        for row in entry.report:
            out.append((row, False))
            own = row.variant + OWN_SUFFIX
            if entry.baseline and entry.recipes and ctx.ratios(dataset, own):
                label = f"{row.label} (own recipe)"
                out.append((ReportRow(own, label, row.model, (), row.complexity_note), True))
    return out


def _rows_table(
    ctx: ReportContext,
    name: str,
    title: str,
    specs: Iterable[tuple[dict[str, Any], str, str, int]],
    notes: list[str],
) -> Table | None:
    """A table with one row per (key columns, dataset, variant, ratio) spec."""
    rows = []
    for keys, dataset, variant, ratio in specs:
        d, n = _metric_cells(ctx, dataset, variant, ratio)
        display = {**keys, **d}
        numeric = {
            **{k.lower().replace(" ", "_"): v for k, v in keys.items()},
            "dataset": dataset,
            "variant": variant,
            "ratio": ratio,
            "labeled": ctx.labeled(dataset, ratio),
            **n,
        }
        rows.append((display, numeric))
    if not rows:
        return None
    display, numeric = _frames(rows)
    numeric = numeric.loc[:, ~numeric.columns.duplicated()]
    return Table(name, title, display, numeric, [CELL_NOTE, *notes])


def _table_datasets(ctx: ReportContext, variants: Iterable[str]) -> list[str]:
    wanted = set(variants)
    return [d for d in ctx.datasets() if ctx.named_variants(d) & wanted]


def _ratios(
    ctx: ReportContext, dataset: str, variants: Iterable[str], paper: Iterable[int]
) -> list[int]:
    out: set[int] = set()
    for v in variants:
        out |= ctx.ratios(dataset, v)
    if dataset in PAPER_DATASETS:
        out |= set(paper)
    return sorted(out)


def _ds_title(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


def table4(ctx: ReportContext) -> Table | None:
    """Table 4: component ablation (rows: variants; 10 % labeled, or the ratios run)."""
    specific = [v for v, _ in TABLE4_VARIANTS if v != "full"]
    specs = []
    for ds in _table_datasets(ctx, specific):
        names = ctx.named_variants(ds)
        for ratio in _ratios(ctx, ds, specific, (10,)):
            for variant, label in TABLE4_VARIANTS:
                if variant == "no_cr_ic" and variant not in names:
                    continue
                keys = {"Dataset": _ds_title(ds), "Variant": variant, "Components": label}
                keys["Labeled"] = ctx.labeled_text(ds, ratio)
                specs.append((keys, ds, variant, ratio))
    notes = []
    unmapped = ctx.paper.get("table4_unmapped_rows") or {}
    for ds in _table_datasets(ctx, specific):
        if ds in unmapped:
            vals = " / ".join(f"{float(v):.2f}" for v in unmapped[ds])
            notes.append(
                f"{_ds_title(ds)}: the paper's leave-one-out rows 4-7 report Dice {vals} (printed "
                "order); which module each row removes is not recoverable (spec 9), so they are "
                "not matched to no_cce / no_pgl / no_ue / no_cr here."
            )
    return _rows_table(ctx, "table4_ablation", "Table 4: component ablation", specs, notes)


def _full_vs_variant(
    ctx: ReportContext,
    name: str,
    title: str,
    column: str,
    rows: tuple[tuple[str, str], tuple[str, str]],
    default_ratios: tuple[int, ...],
    note: str,
) -> Table | None:
    """A table of the full model against one variant (``rows`` = (label, variant) pairs,
    the full model first) for each dataset that has the variant, x labeled ratio."""
    other = rows[1][1]
    specs = []
    for ds in _table_datasets(ctx, [other]):
        ratios = _ratios(ctx, ds, [other], default_ratios)
        for label, variant in rows:
            for ratio in ratios:
                keys = {
                    "Dataset": _ds_title(ds),
                    column: label,
                    "Labeled": ctx.labeled_text(ds, ratio),
                }
                specs.append((keys, ds, variant, ratio))
    return _rows_table(ctx, name, title, specs, [note])


def table5(ctx: ReportContext) -> Table | None:
    """Table 5: MSE (``full``) vs KL (``cr_kl``) distance in the CR term x labeled ratio."""
    return _full_vs_variant(
        ctx,
        "table5_cr_distance",
        "Table 5: distance in the CR term (Eq. 6)",
        "Distance",
        (("MSE", "full"), ("KL", "cr_kl")),
        (10, 15, 20, 25),
        "MSE rows are the full model (variant full); KL rows are variant cr_kl.",
    )


def table6(ctx: ReportContext) -> Table | None:
    """Table 6: L_PGL with (``full``) and without (``no_pgl_third``) its third term."""
    return _full_vs_variant(
        ctx,
        "table6_pgl_third",
        "Table 6: PGL with and without its third term",
        "Third term",
        (("with", "full"), ("without", "no_pgl_third")),
        (10, 20),
        "'with' rows are the full model (variant full); 'without' rows are no_pgl_third.",
    )


def table7(ctx: ReportContext) -> Table | None:
    """Table 7: EFS/PGL entropy percentile alpha; the dataset's default alpha is ``full``."""
    specs = []
    notes = []
    alphas: list[tuple[float, bool]] = []
    alpha_variants = lambda ds: sorted(  # noqa: E731
        v for v in ctx.named_variants(ds) if sweep_value(v, "alpha") is not None
    )
    for ds in [d for d in ctx.datasets() if alpha_variants(d)]:
        variants = alpha_variants(ds)
        default = ctx.default_value(ds, "alpha")
        values = {sweep_value(v, "alpha") for v in variants}
        if ds in PAPER_DATASETS:
            values |= {float(a) for a in range(10, 100, 10)}
        if default is not None:
            values.add(default)
            notes.append(f"{_ds_title(ds)}: default alpha = {default:g} (the full run).")
        for ratio in _ratios(ctx, ds, variants, (10,)):
            for alpha in sorted(v for v in values if v is not None):
                variant = f"alpha{alpha:g}"
                is_default = default is not None and math.isclose(alpha, default)
                label = f"{alpha:g} (default)" if is_default else f"{alpha:g}"
                keys = {
                    "Dataset": _ds_title(ds),
                    "alpha": label,
                    "Labeled": ctx.labeled_text(ds, ratio),
                }
                specs.append((keys, ds, variant, ratio))
                alphas.append((alpha, is_default))
    table = _rows_table(ctx, "table7_alpha", "Table 7: EFS entropy percentile alpha", specs, notes)
    if table is not None:
        table.numeric["alpha"] = [a for a, _ in alphas]
        table.numeric.insert(2, "alpha_default", [d for _, d in alphas])
    return table


def build_tables(ctx: ReportContext) -> list[Table]:
    """Every table that applies: Tables 1-3 (one per dataset), then Tables 4-7 where any of
    their variants has runs or is in the grid."""
    tables = [t for t in (main_table(ctx, d) for d in ctx.datasets()) if t is not None]
    tables += [t for t in (table4(ctx), table5(ctx), table6(ctx), table7(ctx)) if t is not None]
    return tables
