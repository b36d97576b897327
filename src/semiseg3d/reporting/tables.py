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
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from semiseg3d.errors import InputError
from semiseg3d.io.atomic import write_text_atomic

__all__ = [
    "METRIC_SPECS",
    "PAPER_DATASETS",
    "CellStats",
    "ReportContext",
    "Table",
    "load_paper_values",
    "cell_stats",
    "format_cell",
    "format_paper",
    "main_table",
    "table4",
    "table5",
    "table6",
    "table7",
    "build_tables",
    "write_table",
]

#: (metric column in metrics.csv, header, scale applied to the stored value)
METRIC_SPECS: tuple[tuple[str, str, float], ...] = (
    ("dice", "Dice (%)", 100.0),
    ("jaccard", "Jaccard (%)", 100.0),
    ("hd95", "95HD (voxel)", 1.0),
    ("asd", "ASD (voxel)", 1.0),
)
#: the paper's datasets, in the order of its Tables 1-3
PAPER_DATASETS = ("la", "pancreas", "brats")
DATASET_TITLES = {"la": "LA", "pancreas": "Pancreas-CT", "brats": "BraTS-2019"}
#: Tables 1-3: (variant, row label, network whose complexity the row shows), in the
#: order of the rows: SupOnly, the baselines by publication year (the spec's order), ours.
#: A baseline's complexity is that of every network it trains (teachers included).
MAIN_METHODS = (
    ("suponly", "SupOnly (V-Net)", "vnet"),
    ("uamt", "UA-MT", "uamt"),
    ("dtc", "DTC", "dtc"),
    ("mcnet", "MC-Net", "mcnet"),
    ("mcnet_plus", "MC-Net+", "mcnet_plus"),
    ("mcf", "MCF", "mcf"),
    ("bcp", "BCP", "bcp"),
    ("full", "Ours", "dual"),
    ("code_faithful", "Ours (code-faithful)", "dual"),
)
#: the paper's rows of Tables 1-3: variant -> labeled ratios (a baseline's rows are the
#: ratios the paper values quote for it on that dataset, see :func:`main_table`)
PAPER_MAIN_ROWS = {"suponly": (10, 20, 100), "full": (10, 20)}
TABLE4_VARIANTS = (
    ("cps_only", "CPS only"),
    ("efs_only", "EFS only"),
    ("cce_only", "CCE only (CPS + EFS)"),
    ("no_cce", "w/o CCE"),
    ("no_pgl", "w/o PGL"),
    ("no_ue", "w/o UE"),
    ("no_cr", "w/o CR (Eq. 6 term)"),
    ("no_cr_ic", "w/o CR and L_IC"),
    ("full", "Full model"),
)
_SWEEP = re.compile(r"^(alpha|tau|T|lam)(\d+(?:\.\d+)?)$")

ComplexityFn = Callable[[str, Sequence[int]], Mapping[str, Any]]


def load_paper_values(path: str | Path | None = None) -> dict[str, Any]:
    """The paper's numbers (``paper_values.yaml`` next to this module, or ``path``)."""
    if path is None:
        text = (
            resources.files("semiseg3d.reporting").joinpath("paper_values.yaml").read_text("utf-8")
        )
        source = "paper_values.yaml"
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"{path}: cannot read paper values ({exc.__class__.__name__})"
            ) from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping")
    return data


def sweep_value(variant: str, family: str) -> float | None:
    """The value of a sweep variant (``alpha70`` -> 70.0 for family ``alpha``), else None."""
    m = _SWEEP.match(variant)
    if m and m.group(1) == family:
        return float(m.group(2))
    return None


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


# -- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellStats:
    """Statistics of one table cell (one metric of one dataset/variant/ratio).

    Attributes:
        mean: mean over seeds of the per-seed case means (scaled: % or voxels).
        sd_seeds: SD (ddof 1) of the per-seed means; NaN with one seed.
        sem_cases: mean over seeds of the per-seed SEM over cases; NaN with one case.
        n_seeds: seeds that contributed.
        n_cases: test cases per seed (the largest, if they differ).
    """

    mean: float
    sd_seeds: float
    sem_cases: float
    n_seeds: int
    n_cases: int


def cell_stats(rows: pd.DataFrame, metric: str, scale: float = 1.0) -> CellStats | None:
    """Statistics of ``metric`` over the per-case rows of one cell.

    Args:
        rows: per-case rows (not summary rows) of the cell's tested runs, with columns
            ``seed`` and ``metric``.
        metric: column name (e.g. ``dice``).
        scale: factor for the stored values (100 for Dice/Jaccard fractions -> %).

    Returns:
        The :class:`CellStats`, or None when no value is there.
    """
    means: list[float] = []
    sems: list[float] = []
    n_cases = 0
    if metric not in rows.columns or rows.empty:
        return None
    for _, group in rows.groupby("seed", sort=True):
        values = pd.to_numeric(group[metric], errors="coerce").dropna().to_numpy(float) * scale
        if values.size == 0:
            continue
        n_cases = max(n_cases, int(values.size))
        means.append(float(values.mean()))
        sems.append(
            float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
        )
    if not means:
        return None
    arr = np.asarray(means)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    finite_sems = [s for s in sems if not math.isnan(s)]
    sem = float(np.mean(finite_sems)) if finite_sems else math.nan
    return CellStats(float(arr.mean()), sd, sem, len(means), n_cases)


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_cell(stats: CellStats | None, expected_seeds: int | None = None, digits: int = 2) -> str:
    """The cell text ``mean ± SD_seeds [SEM_cases]`` (module docstring), or ``missing``."""
    if stats is None:
        return "missing"
    text = _f(stats.mean, digits)
    if stats.n_seeds > 1:
        text += f" ± {_f(stats.sd_seeds, digits)}"
    text += f" [{_f(stats.sem_cases, digits)}]"
    if expected_seeds is not None and stats.n_seeds < expected_seeds:
        text += f" ({stats.n_seeds}/{expected_seeds} seeds)"
    return text


def format_paper(
    paper: float | None, paper_pm: float | None, stats: CellStats | None, digits: int = 2
) -> str:
    """The ``paper (Δ)`` text: ``89.95 ± 0.58 (Δ -0.83)``, ``89.95 (Δ n/a)`` or ``n/a``."""
    if paper is None:
        return "n/a"
    text = _f(paper, digits)
    if paper_pm is not None:
        text += f" ± {_f(paper_pm, digits)}"
    diff = "n/a" if stats is None else f"{stats.mean - paper:+.{digits}f}"
    return f"{text} (Δ {diff})"


# -- context -------------------------------------------------------------------------------


@dataclass
class ReportContext:
    """Everything the tables and figures read: the collected runs, the paper's values, and
    optionally the pipeline's parameters (its grid says which cells are expected).

    Attributes:
        index: the tidy table of :func:`semiseg3d.reporting.collect.collect`.
        paper: the paper values (:func:`load_paper_values`).
        params: the merged ``params.yaml`` (with overlays), or None.
        complexity: ``f(model_name, patch) -> {"params", "params_m", "macs_g",
            "macs_g_legacy"}``; None leaves the complexity columns ``n/a``.
    """

    index: pd.DataFrame
    paper: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] | None = None
    complexity: ComplexityFn | None = None

    def __post_init__(self) -> None:
        idx = self.index
        self._tested = idx[(idx["status"] == "tested") & ~idx["summary"].astype(bool)]
        self._expected = self._expected_points()
        self._complexity_cache: dict[tuple[str, tuple[int, ...]], Mapping[str, Any] | None] = {}
        self._resolved: dict[tuple[str, str], str] = {}

    # -- what exists and what is expected ------------------------------------------------
    def _expected_points(self) -> set[tuple[str, str, int]]:
        if not self.params:
            return set()
        from semiseg3d.grid.run_config import experiment_points

        return {(k.dataset, k.variant, int(k.ratio)) for k in experiment_points(self.params)}

    def datasets(self) -> list[str]:
        """Datasets with runs or in the grid: the paper's first, then alphabetical."""
        names = set(self.index["dataset"].dropna().astype(str)) | {d for d, _, _ in self._expected}
        return [d for d in PAPER_DATASETS if d in names] + sorted(names - set(PAPER_DATASETS))

    def run_variants(self, dataset: str) -> set[str]:
        """Variant folder names with any run of ``dataset``."""
        idx = self.index
        return set(idx.loc[idx["dataset"] == dataset, "variant"].astype(str))

    def named_variants(self, dataset: str) -> set[str]:
        """Variants with runs of ``dataset`` or in its grid (names as in the grid)."""
        return self.run_variants(dataset) | {v for d, v, _ in self._expected if d == dataset}

    def ratios(self, dataset: str, variant: str) -> set[int]:
        """Labeled ratios of ``variant`` on ``dataset`` with runs or in the grid."""
        idx = self.index
        sel = (idx["dataset"] == dataset) & (idx["variant"] == variant)
        present = {int(r) for r in idx.loc[sel, "ratio"]}
        return present | {r for d, v, r in self._expected if d == dataset and v == variant}

    def expected_seeds(self, dataset: str) -> int:
        """Seeds a cell should have: the grid's seed count, else the most seeds any cell of
        ``dataset`` has run folders for."""
        if self.params:
            seeds = (self.params.get("grid") or {}).get("seeds") or []
            if seeds:
                return len(seeds)
        idx = self.index[self.index["dataset"] == dataset]
        if idx.empty:
            return 1
        return int(idx.groupby(["variant", "ratio"])["seed"].nunique().max())

    # -- settings ------------------------------------------------------------------------
    def _params_settings(self, dataset: str) -> dict[str, Any]:
        if not self.params:
            return {}
        train = self.params.get("train") or {}
        return {**(train.get("defaults") or {}), **(train.get(dataset) or {})}

    def default_value(self, dataset: str, key: str) -> float | None:
        """The dataset's default of a hyperparameter: the ``full`` runs' config, else
        ``params.yaml``, else the paper's (``paper_values.yaml`` ``defaults``)."""
        idx = self.index
        sel = (idx["dataset"] == dataset) & (idx["variant"] == "full")
        if key in idx.columns:
            for value in idx.loc[sel, key]:
                num = _num(value)
                if num is not None:
                    return num
        num = _num(self._params_settings(dataset).get(key))
        if num is not None:
            return num
        return _num(((self.paper.get("defaults") or {}).get(dataset) or {}).get(key))

    def patch(self, dataset: str) -> tuple[int, int, int] | None:
        """The training patch of ``dataset`` (run configs, params, paper defaults)."""
        idx = self.index
        for text in idx.loc[idx["dataset"] == dataset, "patch"].dropna().astype(str):
            if text:
                return tuple(int(v) for v in text.split("x"))  # type: ignore[return-value]
        for source in (
            self._params_settings(dataset),
            (self.paper.get("defaults") or {}).get(dataset) or {},
        ):
            patch = source.get("patch")
            if isinstance(patch, list | tuple) and len(patch) == 3:
                return tuple(int(v) for v in patch)  # type: ignore[return-value]
        return None

    def labeled(self, dataset: str, ratio: int) -> int | None:
        """Labeled case count at ``ratio``: from run configs, else ``params.yaml``."""
        idx = self.index
        sel = (idx["dataset"] == dataset) & (idx["ratio"] == ratio)
        for value in idx.loc[sel, "labeled"]:
            num = _num(value)
            if num is not None:
                return int(num)
        if self.params:
            entry = ((self.params.get("data") or {}).get(dataset) or {}).get("labeled") or {}
            num = _num(entry.get(f"r{int(ratio)}"))
            if num is not None:
                return int(num)
        return None

    def labeled_text(self, dataset: str, ratio: int) -> str:
        """``10 % (8)``, or ``All (80)`` for ratio 100."""
        head = "All" if ratio == 100 else f"{ratio} %"
        n = self.labeled(dataset, ratio)
        return f"{head} ({n})" if n is not None else head

    # -- looking up runs -----------------------------------------------------------------
    def resolve(self, dataset: str, variant: str) -> str:
        """The variant folder holding a grid point's runs.

        A variant that has runs under its own name is itself. Otherwise, grid points whose
        settings equal another variant's are trained under that one (``alpha70`` on LA is
        ``full``): with params, the pipeline's own rule decides; without, a sweep variant
        whose value equals the dataset default (``alpha70``, ``tau0.6``, ...) is ``full``.
        """
        key = (dataset, variant)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(dataset, variant)
        return self._resolved[key]

    def _resolve(self, dataset: str, variant: str) -> str:
        if variant in self.run_variants(dataset):
            return variant
        if self.params:
            from semiseg3d.grid.run_config import canonical_variant

            try:
                canonical = canonical_variant(self.params, dataset, variant)
            except InputError:
                canonical = variant
            if canonical != variant:
                return canonical
        m = _SWEEP.match(variant)
        if m:
            default = self.default_value(dataset, m.group(1))
            if default is not None and math.isclose(default, float(m.group(2))):
                return "full"
        return variant

    def case_rows(self, dataset: str, variant: str, ratio: int) -> pd.DataFrame:
        """Per-case rows of the tested runs of one cell (``variant`` is resolved)."""
        name = self.resolve(dataset, variant)
        t = self._tested
        return t[(t["dataset"] == dataset) & (t["variant"] == name) & (t["ratio"] == ratio)]

    def paper_value(
        self, dataset: str, variant: str, ratio: int, metric: str
    ) -> tuple[float | None, float | None]:
        """The paper's (value, ±) for a cell; looked up by the named, then the resolved
        variant."""
        runs = self.paper.get("runs") or {}
        for name in dict.fromkeys((variant, self.resolve(dataset, variant))):
            entry = (((runs.get(dataset) or {}).get(name) or {}).get(ratio)) or {}
            if metric in entry:
                return _num(entry.get(metric)), _num(entry.get(f"{metric}_pm"))
        return None, None

    def model_complexity(self, model: str, dataset: str) -> Mapping[str, Any] | None:
        """Parameter and MAC counts of ``model`` at the dataset's patch, or None."""
        patch = self.patch(dataset)
        if self.complexity is None or patch is None:
            return None
        key = (model, tuple(patch))
        if key not in self._complexity_cache:
            try:
                self._complexity_cache[key] = self.complexity(model, patch)
            except InputError:
                self._complexity_cache[key] = None
        return self._complexity_cache[key]


# -- tables --------------------------------------------------------------------------------


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
        return _num(entry.get("params_m"))
    patch = ctx.patch(dataset)
    if patch is None:
        return None
    return _num((entry.get(key) or {}).get("x".join(str(v) for v in patch)))


def _with_paper(value: float | None, paper: float | None, digits: int = 2) -> str:
    text = "n/a" if value is None else f"{value:.{digits}f}"
    return text if paper is None else f"{text} (paper {paper:.{digits}f})"


def _main_table_number(dataset: str) -> int | None:
    return PAPER_DATASETS.index(dataset) + 1 if dataset in PAPER_DATASETS else None


def main_table(ctx: ReportContext, dataset: str) -> Table | None:
    """Tables 1-3 layout for one dataset: SupOnly, the baselines, Ours and (if run)
    code-faithful rows per labeled ratio (a row where runs exist, the grid names it, or the
    paper is quoted for it); the four metrics with the paper's values; parameters and both
    MAC counts (true and legacy thop-style) at the dataset's patch. None when no row
    applies."""
    disp_rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for variant, label, model in MAIN_METHODS:
        ratios = ctx.ratios(dataset, variant)
        if dataset in PAPER_DATASETS:
            ratios |= set(PAPER_MAIN_ROWS.get(variant, ()))
            quoted = ((ctx.paper.get("runs") or {}).get(dataset) or {}).get(variant) or {}
            if variant not in PAPER_MAIN_ROWS and variant not in ("code_faithful",):
                ratios |= {int(r) for r in quoted}
        cx = ctx.model_complexity(model, dataset) if ratios else None
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
        "FLOPs / 2, 'legacy' = the thop-style rule of the paper's tables (spec 1.5).",
    ]
    return Table(name, title, display, numeric, notes)


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
