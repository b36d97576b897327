"""What the report's tables and figures read, and how one cell is computed and written.

:class:`ReportContext` holds the collected runs, the paper's values and the pipeline's
parameters; :func:`cell_stats` / :func:`format_cell` turn the runs of one cell into
``mean ± SD_seeds [SEM_cases]`` (the cell format is explained in
:mod:`semiseg3d.reporting.tables`); :func:`format_paper` writes the paper's value beside it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from semiseg3d.errors import InputError

__all__ = [
    "METRIC_SPECS",
    "PAPER_DATASETS",
    "DATASET_TITLES",
    "TABLE4_VARIANTS",
    "ComplexityFn",
    "CellStats",
    "ReportContext",
    "load_paper_values",
    "sweep_value",
    "cell_stats",
    "format_cell",
    "format_paper",
    "as_number",
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


def as_number(value: Any) -> float | None:
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
                num = as_number(value)
                if num is not None:
                    return num
        num = as_number(self._params_settings(dataset).get(key))
        if num is not None:
            return num
        return as_number(((self.paper.get("defaults") or {}).get(dataset) or {}).get(key))

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
            num = as_number(value)
            if num is not None:
                return int(num)
        if self.params:
            entry = ((self.params.get("data") or {}).get(dataset) or {}).get("labeled") or {}
            num = as_number(entry.get(f"r{int(ratio)}"))
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
                return as_number(entry.get(metric)), as_number(entry.get(f"{metric}_pm"))
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
