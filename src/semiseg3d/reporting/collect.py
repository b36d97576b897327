"""Collect run results into one tidy table.

A results tree is laid out as ``{results}/{dataset}/{variant}/r{ratio}/s{seed}/``
(:data:`semiseg3d.grid.layout.RUN_PATH`; one run
folder per grid point). Each run folder may hold ``config.yaml`` (the resolved training
config), ``model_final.pt`` (training finished), ``metrics.csv`` (testing finished),
``predictions/<ID>.nii.gz`` and ``live/`` (dvclive training curves).

:func:`collect` returns one row per (run, case), plus the run's summary rows (``case`` =
``mean`` / ``sd`` / ``sem``, flagged by ``summary = True``); a run without ``metrics.csv``
contributes one row with an empty ``case`` and its ``status``. Folders that do not match the
layout are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from semiseg3d.errors import InputError
from semiseg3d.grid.layout import parse_ratio_dir, parse_seed_dir
from semiseg3d.io.yamlio import read_yaml

__all__ = [
    "METRICS",
    "OPTIONAL_METRICS",
    "SUMMARY_CASES",
    "INDEX_COLUMNS",
    "RunInfo",
    "find_runs",
    "read_metrics",
    "collect",
    "curve_files",
]

#: metric columns every metrics.csv has (Dice/Jaccard as fractions, distances in voxels)
METRICS = ("dice", "jaccard", "hd95", "asd")
#: metric columns present when the spacing was known (millimetres)
OPTIONAL_METRICS = ("hd95_mm", "asd_mm")
#: ``case`` values of the summary rows of metrics.csv
SUMMARY_CASES = ("mean", "sd", "sem")
#: config keys copied into the index (hyperparameters the figures need, and the patch)
CONFIG_KEYS = ("tau", "T", "lam", "alpha", "iterations", "mode", "method", "downsample")
#: column order of the tidy table
INDEX_COLUMNS = (
    "dataset",
    "variant",
    "ratio",
    "seed",
    "labeled",
    "status",
    "case",
    "summary",
    *METRICS,
    "empty_pred",
    *OPTIONAL_METRICS,
    *CONFIG_KEYS,
    "patch",
    "run_dir",
)


@dataclass(frozen=True)
class RunInfo:
    """One run folder of the results tree.

    Attributes:
        dataset, variant: names from the folder path.
        ratio: labeled percentage (integer; 100 = every training case labeled).
        seed: training seed.
        path: the run folder.
        status: ``tested`` (metrics.csv present), ``trained`` (model_final.pt present, not
            tested) or ``incomplete``.
        config: the run's ``config.yaml`` as a mapping (empty when absent).
    """

    dataset: str
    variant: str
    ratio: int
    seed: int
    path: Path
    status: str
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def metrics_path(self) -> Path:
        """``<run>/metrics.csv``."""
        return self.path / "metrics.csv"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return read_yaml(path, "run config", expect="a mapping of config keys")


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_runs(results: str | Path) -> list[RunInfo]:
    """Every run folder under ``results`` (``{dataset}/{variant}/r{ratio}/s{seed}``).

    Args:
        results: the results root, e.g. ``results/runs``.

    Returns:
        Runs sorted by (dataset, variant, ratio, seed).

    Raises:
        InputError: ``results`` is not a folder, or a ``config.yaml`` cannot be read.
    """
    root = Path(results)
    if not root.is_dir():
        raise InputError(f"{root}: results folder not found")
    runs: list[RunInfo] = []
    for ds in _subdirs(root):
        for var in _subdirs(ds):
            for rdir in _subdirs(var):
                ratio = parse_ratio_dir(rdir.name)
                if ratio is None:
                    continue
                for sdir in _subdirs(rdir):
                    seed = parse_seed_dir(sdir.name)
                    if seed is None:
                        continue
                    if (sdir / "metrics.csv").is_file():
                        status = "tested"
                    elif (sdir / "model_final.pt").is_file():
                        status = "trained"
                    else:
                        status = "incomplete"
                    runs.append(
                        RunInfo(
                            dataset=ds.name,
                            variant=var.name,
                            ratio=ratio,
                            seed=seed,
                            path=sdir,
                            status=status,
                            config=_read_config(sdir / "config.yaml"),
                        )
                    )
    return sorted(runs, key=lambda r: (r.dataset, r.variant, r.ratio, r.seed))


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read and check one ``metrics.csv``.

    Args:
        path: the file (columns ``case, dice, jaccard, hd95, asd`` at least, one row per
            case, then summary rows whose ``case`` is ``mean`` / ``sd`` / ``sem``).

    Returns:
        The rows with ``case`` as str, metric columns as float, and a bool column
        ``summary`` marking the summary rows.

    Raises:
        InputError: unreadable, a required column missing, non-numeric metric values, or no
            per-case row.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"case": str}, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read metrics ({exc.__class__.__name__})") from exc
    missing = [c for c in ("case", *METRICS) if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}")
    for col in [*METRICS, "empty_pred", *OPTIONAL_METRICS]:
        if col in frame.columns:
            values = pd.to_numeric(frame[col], errors="coerce")
            bad = frame[col].notna() & values.isna()
            if bad.any():
                where = frame.loc[bad, "case"].iloc[0]
                raise InputError(
                    f"{path}: column '{col}' has a non-numeric value for case {where!r}"
                )
            frame[col] = values.astype(float)
    frame["case"] = frame["case"].astype(str)
    frame["summary"] = frame["case"].isin(SUMMARY_CASES)
    if not (~frame["summary"]).any():
        raise InputError(f"{path}: no per-case row")
    return frame


def _patch_text(config: Mapping[str, Any]) -> str:
    patch = config.get("patch")
    if isinstance(patch, list | tuple) and len(patch) == 3:
        return "x".join(str(int(v)) for v in patch)
    return ""


def _config_value(config: Mapping[str, Any], key: str) -> Any:
    value = config.get(key)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def collect(results: str | Path) -> pd.DataFrame:
    """The tidy table of every run under ``results``.

    Args:
        results: the results root (``{dataset}/{variant}/r{ratio}/s{seed}/`` below it).

    Returns:
        A DataFrame with the columns :data:`INDEX_COLUMNS`: per-case and summary rows of
        every tested run (Dice/Jaccard as fractions, distances in voxels, as in
        metrics.csv), and one row with an empty ``case`` for every run not tested yet.
        ``labeled`` and the hyperparameter columns come from the run's ``config.yaml``.

    Raises:
        InputError: a missing results folder, or an unreadable config or metrics file.
    """
    rows: list[pd.DataFrame] = []
    for run in find_runs(results):
        base: dict[str, Any] = {
            "dataset": run.dataset,
            "variant": run.variant,
            "ratio": run.ratio,
            "seed": run.seed,
            "labeled": _config_value(run.config, "labeled"),
            "status": run.status,
            **{k: _config_value(run.config, k) for k in CONFIG_KEYS},
            "patch": _patch_text(run.config),
            "run_dir": str(run.path),
        }
        if run.status == "tested":
            frame = read_metrics(run.metrics_path)
            for key, value in base.items():
                frame[key] = value
        else:
            frame = pd.DataFrame([{**base, "case": "", "summary": False}])
        rows.append(frame)
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in INDEX_COLUMNS})
    table = pd.concat(rows, ignore_index=True)
    for col in INDEX_COLUMNS:
        if col not in table.columns:
            table[col] = None
    return table.loc[:, list(INDEX_COLUMNS)]


def curve_files(run_dir: str | Path) -> dict[str, Path]:
    """The dvclive metric files of a run: ``{name: path}``.

    dvclive 3.x writes one TSV per logged metric under ``live/plots/metrics/``; a metric
    logged as ``train/ce_a`` lands in ``train/ce_a.tsv`` with the columns ``step``,
    ``ce_a`` (and ``timestamp`` when enabled). The name is the path below
    ``plots/metrics`` without ``.tsv``.
    """
    base = Path(run_dir) / "live" / "plots" / "metrics"
    if not base.is_dir():
        return {}
    return {
        p.relative_to(base).with_suffix("").as_posix(): p
        for p in sorted(base.rglob("*.tsv"))
        if not p.name.startswith(".")
    }
