"""``semiseg3d evaluate``: score a folder of predicted masks against ground truth.

    semiseg3d evaluate --pred DIR --gt DIR --out metrics.csv [--spacing X Y Z] [--lcc]
                       [--cases FILE]

Masks are read by extension (NIfTI, NRRD, h5; see :mod:`semiseg3d.evaluation.maskio`) and
paired by case id. ``--gt`` may also be a preprocessed dataset folder (``<ID>.h5`` or
``<ID>/mri_norm2.h5`` with a ``label`` dataset).

Which cases are scored: the ids of ``--cases FILE`` (one per line) if given; otherwise,
when the ground-truth folder has a ``test.list`` (a dataset folder), the ids in it;
otherwise every ground-truth case. Each of these cases must have exactly one prediction,
and every prediction must belong to one of them: a missing or extra case, or a prediction
whose shape differs from its ground truth, is an error naming it (exit code 2, nothing
written).

Spacing for the millimetre columns: ``--spacing`` for every case, else the ground truth's
own (NIfTI / NRRD header, h5 ``spacing`` attribute); a prediction's header spacing is
never used. ``--lcc`` keeps only the largest connected component (26-connectivity) of
each prediction before scoring; it is off by default, as in the paper.

The output is the metrics.csv table of :func:`semiseg3d.evaluation.metrics.metrics_table`,
written atomically, and a one-line summary on stdout.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from semiseg3d.cliargs import add_path_options, add_xyz_option
from semiseg3d.data.postprocess import largest_connected_component
from semiseg3d.errors import InputError, format_numbers
from semiseg3d.evaluation.maskio import GT_KEYS, PRED_KEYS, list_masks, read_mask
from semiseg3d.evaluation.metrics import METRICS, SUMMARY_ROWS, case_metrics, metrics_table
from semiseg3d.io.atomic import atomic_path, remove_stale_temps

__all__ = [
    "add_arguments",
    "main",
    "read_case_list",
    "evaluate_folders",
    "write_metrics_csv",
    "summary_line",
]

PathLike = str | os.PathLike[str]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``semiseg3d evaluate``."""
    gt_help = "ground-truth masks, or a preprocessed dataset folder (<ID>/mri_norm2.h5)"
    add_path_options(
        parser,
        [
            ("--pred", "DIR", "predicted masks"),
            ("--gt", "DIR", gt_help),
            ("--out", "CSV", "metrics.csv to write"),
        ],
        required=True,
    )
    add_xyz_option(
        parser,
        "--spacing",
        "voxel size in mm for every case (default: the ground truth's own, if any)",
        kind=float,
    )
    parser.add_argument(
        "--lcc",
        action="store_true",
        help="keep only the largest connected component of each prediction (off by default)",
    )
    parser.add_argument(
        "--cases",
        type=Path,
        metavar="FILE",
        help="list of case ids to score (default: <gt>/test.list if present, else every gt case)",
    )


def read_case_list(path: PathLike) -> list[str]:
    """Case ids of a list file: one per line; blank lines and ``#`` comments skipped.

    Raises:
        InputError: the file is missing, empty, or repeats an id.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: case list not found")
    ids = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line)
    if not ids:
        raise InputError(f"{p}: case list is empty")
    repeated = sorted({c for c in ids if ids.count(c) > 1})
    if repeated:
        raise InputError(f"{p}: case id(s) {_names(repeated)} listed more than once")
    return ids


def _names(cases: Sequence[str], limit: int = 10) -> str:
    """Case ids for a message, at most ``limit`` of them."""
    shown = ", ".join(cases[:limit])
    return shown if len(cases) <= limit else f"{shown}, ... ({len(cases)} in all)"


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(
            f"--spacing: expected three positive numbers (mm), got {format_numbers(spacing)}"
        )
    return values  # type: ignore[return-value]


def evaluate_folders(
    pred_dir: PathLike,
    gt_dir: PathLike,
    *,
    spacing: Sequence[float] | None = None,
    lcc: bool = False,
    cases: Sequence[str] | PathLike | None = None,
) -> pd.DataFrame:
    """Score every predicted mask of ``pred_dir`` against its ground truth in ``gt_dir``.

    Args:
        pred_dir: folder of predicted masks (``<ID>.nii.gz``, ``.nii``, ``.nrrd``,
            ``.nhdr``, ``.h5`` with dataset ``pred`` or ``label``).
        gt_dir: folder of ground-truth masks or a preprocessed dataset folder.
        spacing: (x, y, z) mm for every case; None = each ground truth's own, if known.
        lcc: keep only the largest connected component of each prediction first.
        cases: the case ids to score, or a list file; None = ``<gt_dir>/test.list`` if it
            exists, else every ground-truth case.

    Returns:
        The metrics.csv table (:func:`~semiseg3d.evaluation.metrics.metrics_table`).

    Raises:
        InputError: a missing or extra case, a shape mismatch, an unreadable file, a bad
            spacing, or no case to score.
    """
    pred_root, gt_root = Path(pred_dir), Path(gt_dir)
    fixed_spacing = _check_spacing(spacing) if spacing is not None else None
    preds = list_masks(pred_root)
    gts = list_masks(gt_root)
    if cases is None and (gt_root / "test.list").is_file():
        cases = gt_root / "test.list"
    if cases is None:
        wanted, source = list(gts), str(gt_root)
    elif isinstance(cases, str | os.PathLike):
        wanted, source = read_case_list(cases), str(cases)
    else:
        wanted, source = [str(c) for c in cases], "the requested cases"
    if not wanted:
        raise InputError(f"{gt_root}: no ground-truth masks found")
    no_gt = [c for c in wanted if c not in gts]
    if no_gt:
        raise InputError(f"{gt_root}: no ground truth for case(s) {_names(no_gt)} (from {source})")
    missing = [c for c in wanted if c not in preds]
    extra = [c for c in preds if c not in set(wanted)]
    problems = []
    if missing:
        problems.append(f"no prediction for case(s) {_names(missing)}")
    if extra:
        problems.append(f"prediction(s) for case(s) {_names(extra)} not in {source}")
    if problems:
        raise InputError(f"{pred_root}: {'; '.join(problems)}")

    rows = []
    for case in wanted:
        pred, _ = read_mask(preds[case], h5_keys=PRED_KEYS)
        gt, gt_spacing = read_mask(gts[case], h5_keys=GT_KEYS)
        if pred.shape != gt.shape:
            raise InputError(
                f"{preds[case]}: shape {pred.shape} differs from {gts[case]} shape {gt.shape}"
            )
        if lcc:
            pred = largest_connected_component(pred)
        case_spacing = fixed_spacing if fixed_spacing is not None else gt_spacing
        rows.append({"case": case, **case_metrics(pred, gt, spacing=case_spacing)})
    return metrics_table(rows)


def write_metrics_csv(table: pd.DataFrame, path: PathLike) -> None:
    """Write a metrics table as CSV atomically (no index column, NaN as an empty cell)."""
    remove_stale_temps(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def summary_line(table: pd.DataFrame) -> str:
    """One line: number of cases, mean and SEM of each metric, empty predictions, and the
    number of cases whose distances are undefined (prediction against an empty ground truth)."""
    summary = table.set_index("case")
    per_case = table[~table["case"].isin(SUMMARY_ROWS)]
    n_cases = len(per_case)
    parts = []
    for column in METRICS:
        mean, sem = summary.at["mean", column], summary.at["sem", column]
        parts.append(f"{column} {mean:.4f} (sem {sem:.4f})")
    if "hd95_mm" in summary.columns:
        parts.append(f"hd95_mm {summary.at['mean', 'hd95_mm']:.3f}")
        parts.append(f"asd_mm {summary.at['mean', 'asd_mm']:.3f}")
    text = f"{n_cases} cases: " + ", ".join(parts)
    text += f"; {int(summary.at['mean', 'empty_pred'])} empty predictions"
    undefined = int(per_case["hd95"].isna().sum())
    if undefined:
        text += f"; {undefined} with an empty ground truth (distances undefined, left out)"
    return text


def main(args: argparse.Namespace) -> int:
    """Run ``semiseg3d evaluate``; return 0 (errors are raised as InputError)."""
    table = evaluate_folders(
        args.pred, args.gt, spacing=args.spacing, lcc=args.lcc, cases=args.cases
    )
    write_metrics_csv(table, args.out)
    print(f"{summary_line(table)} -> {args.out}")
    return 0
