"""Segmentation metrics per case and their summaries (spec section 6.2).

Pure functions of arrays, computed with ``medpy.metric.binary`` exactly as the authors'
``test_util.py`` does, so the numbers are comparable with the paper:

* Dice and Jaccard as fractions in [0, 1];
* HD95: 95th percentile (linear interpolation) of the pooled directed surface distances
  pred -> gt and gt -> pred;
* ASD: mean of the directed distances pred -> gt only (medpy ``asd``, not the symmetric
  ``assd``);
* surfaces: mask XOR its erosion with the 6-connectivity structure; distances in voxels,
  plus ``hd95_mm`` / ``asd_mm`` in millimetres when the voxel spacing is known.

Empty masks (medpy cannot measure distances to an empty surface):

* empty prediction, non-empty ground truth: all four metrics 0 and ``empty_pred`` True
  (the paper-parity rule of the authors' code; it flatters HD95 and ASD, so such cases
  are counted in their own column);
* empty prediction, empty ground truth: a correct negative, scored as perfect
  (Dice 1, Jaccard 1, HD95 0, ASD 0), ``empty_pred`` True;
* non-empty prediction, empty ground truth: Dice 0, Jaccard 0, and HD95 / ASD NaN
  (there is no reference surface to measure to). Summaries skip NaN values.

See ``docs/metrics.md`` for the reasoning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from medpy.metric import binary

__all__ = [
    "METRICS",
    "MM_METRICS",
    "SUMMARY_ROWS",
    "case_metrics",
    "summarize",
    "metrics_table",
]

#: per-case metric columns, in metrics.csv order (voxel units for the distances)
METRICS: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd")
#: distance columns in millimetres, present when the spacing is known
MM_METRICS: tuple[str, ...] = ("hd95_mm", "asd_mm")
#: names of the summary rows, in the ``case`` column
SUMMARY_ROWS: tuple[str, ...] = ("mean", "sd", "sem")


def _spacing3(spacing: Sequence[float]) -> tuple[float, float, float]:
    """Validate a voxel spacing: three finite positive floats (mm)."""
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive numbers (mm), got {tuple(spacing)}")
    return values  # type: ignore[return-value]


def case_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None
) -> dict[str, Any]:
    """Dice, Jaccard, HD95 and ASD of one predicted mask against its ground truth.

    Args:
        pred: (X, Y, Z) predicted mask; foreground = value 1 (any other value is
            background, as in the paper's ``pred == 1`` comparison).
        gt: (X, Y, Z) ground-truth mask, same shape, foreground = 1.
        spacing: (x, y, z) voxel size in mm, or None when unknown.

    Returns:
        ``{"dice", "jaccard", "hd95", "asd", "empty_pred"}`` with distances in voxels,
        plus ``"hd95_mm"`` and ``"asd_mm"`` (millimetres) when ``spacing`` is given.
        ``empty_pred`` is a bool. Floats are Python floats; NaN marks an undefined
        distance (non-empty prediction against an empty ground truth).

    Raises:
        ValueError: shapes differ, masks are not 3-D, or the spacing is invalid.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    if pred.ndim != 3:
        raise ValueError(f"expected 3-D masks (X, Y, Z), got shape {pred.shape}")
    spacing3 = _spacing3(spacing) if spacing is not None else None
    p = np.asarray(pred) == 1
    g = np.asarray(gt) == 1
    empty_pred = not p.any()
    empty_gt = not g.any()

    if empty_pred:
        value = 1.0 if empty_gt else 0.0
        row: dict[str, Any] = {"dice": value, "jaccard": value, "hd95": 0.0, "asd": 0.0}
        mm = {"hd95_mm": 0.0, "asd_mm": 0.0}
    elif empty_gt:
        nan = float("nan")
        row = {"dice": 0.0, "jaccard": 0.0, "hd95": nan, "asd": nan}
        mm = {"hd95_mm": nan, "asd_mm": nan}
    else:
        row = {
            "dice": float(binary.dc(p, g)),
            "jaccard": float(binary.jc(p, g)),
            "hd95": float(binary.hd95(p, g)),
            "asd": float(binary.asd(p, g)),
        }
        if spacing3 is not None:
            mm = {
                "hd95_mm": float(binary.hd95(p, g, voxelspacing=spacing3)),
                "asd_mm": float(binary.asd(p, g, voxelspacing=spacing3)),
            }
    if spacing3 is not None:
        row.update(mm)
    row["empty_pred"] = bool(empty_pred)
    return row


def _as_frame(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Per-case rows as a DataFrame (a copy)."""
    if isinstance(rows, pd.DataFrame):
        return rows.copy()
    return pd.DataFrame(list(rows))


def _value_columns(frame: pd.DataFrame) -> list[str]:
    """The metric columns present in ``frame``, in metrics.csv order."""
    return [c for c in (*METRICS, *MM_METRICS) if c in frame.columns]


def summarize(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Summary rows over cases: mean, per-case SD (ddof 1) and SEM = SD / sqrt(N).

    NaN values (undefined distances) are left out; N is then the number of cases where
    that metric is defined. With N = 1 the SD and SEM are NaN.

    Args:
        rows: per-case rows (dicts or a DataFrame) holding the metric columns and
            optionally ``empty_pred``.

    Returns:
        DataFrame with three rows whose ``case`` column is ``mean``, ``sd``, ``sem``, one
        column per metric present, and ``empty_pred`` = the number of empty predictions
        in the ``mean`` row (NaN in the other two).
    """
    frame = _as_frame(rows)
    columns = _value_columns(frame)
    out: dict[str, list[Any]] = {"case": list(SUMMARY_ROWS)}
    for column in columns:
        values = pd.to_numeric(frame[column], errors="raise").astype(float).dropna()
        n = len(values)
        mean = float(values.mean()) if n else float("nan")
        sd = float(values.std(ddof=1)) if n > 1 else float("nan")
        sem = sd / math.sqrt(n) if n > 1 else float("nan")
        out[column] = [mean, sd, sem]
    if "empty_pred" in frame.columns:
        count = int(frame["empty_pred"].astype(bool).sum())
        out["empty_pred"] = [count, float("nan"), float("nan")]
    return pd.DataFrame(out)


def metrics_table(per_case_rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The metrics.csv table: one row per case, then the mean / sd / sem rows.

    Args:
        per_case_rows: dicts (or a DataFrame) with a ``case`` id and the outputs of
            :func:`case_metrics`.

    Returns:
        DataFrame with columns ``case, dice, jaccard, hd95, asd, empty_pred`` followed by
        ``hd95_mm, asd_mm`` when any case has them. ``empty_pred`` is 0/1 per case and the
        count of empty predictions in the ``mean`` row (empty in ``sd`` / ``sem``).

    Raises:
        ValueError: a row lacks ``case`` or a metric, or a case id repeats or collides
            with a summary row name.
    """
    frame = _as_frame(per_case_rows)
    required = ["case", *METRICS, "empty_pred"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"per-case rows lack the column(s) {missing}")
    cases = frame["case"].astype(str)
    repeated = sorted(set(cases[cases.duplicated()]))
    if repeated:
        raise ValueError(f"case id(s) {repeated} appear more than once")
    reserved = sorted(set(cases) & set(SUMMARY_ROWS))
    if reserved:
        raise ValueError(f"case id(s) {reserved} collide with the summary row names")
    frame["case"] = cases
    frame["empty_pred"] = frame["empty_pred"].astype(bool).astype(int)
    columns = ["case", *METRICS, "empty_pred", *[c for c in MM_METRICS if c in frame.columns]]
    frame = frame[columns]
    summary = summarize(frame)[columns]
    table = pd.concat([frame, summary], ignore_index=True)
    table["empty_pred"] = table["empty_pred"].astype("Int64")
    return table
