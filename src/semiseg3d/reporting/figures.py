"""The paper's figures from run results (matplotlib, Agg backend, PNG).

- :func:`figure8`: Dice vs tau (CR confidence threshold), T (UE temperature) and lam (CR
  weight), one panel each, for one dataset; error bars are the SD over seeds; the
  dataset's default value is the ``full`` run (star marker).
- :func:`training_curves`: one run's dvclive curves - total losses, each loss term, and the
  learning rate (plus loss weights) - from ``live/plots/metrics/**.tsv``.
- :func:`qualitative_figure`: for one dataset, the middle axial slice (z, the last array
  axis) of a test case: the image, the ground truth, and each method's prediction (like the
  paper's Figures 5-7).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from semiseg3d.errors import InputError
from semiseg3d.io.atomic import atomic_path
from semiseg3d.reporting.collect import curve_files
from semiseg3d.reporting.context import (
    DATASET_TITLES,
    ReportContext,
    cell_stats,
    sweep_value,
)
from semiseg3d.reporting.tables import main_methods

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FIG8_FAMILIES",
    "FIG8_MIN_SPAN",
    "figure8",
    "draw_figure8",
    "read_curve",
    "training_curves",
    "draw_training_curves",
    "qualitative_figure",
    "qualitative_settings",
]

#: Figure 8 panels: (variant prefix, axis label)
FIG8_FAMILIES = (
    ("tau", "τ (CR confidence threshold)"),
    ("T", "T (UE temperature)"),
    ("lam", "λ (CR weight)"),
)


def _method_labels() -> dict[str, str]:
    """Variant -> its Tables 1-3 row label."""
    return {v: label for v, label, _ in main_methods()}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# -- Figure 8 ------------------------------------------------------------------------------


def _sweep_points(
    ctx: ReportContext, dataset: str, family: str, ratio: int
) -> list[tuple[float, str, bool]]:
    """(value, variant to look up, is default) for one panel, sorted by value."""
    default = ctx.default_value(dataset, family)
    points: dict[float, tuple[str, bool]] = {}
    for v in sorted(ctx.named_variants(dataset)):
        value = sweep_value(v, family)
        if value is not None and ratio in ctx.ratios(dataset, v):
            points[value] = (v, False)
    if default is not None:
        match = [v for v in points if math.isclose(v, default)]
        key = match[0] if match else default
        name = points[key][0] if match else "full"
        points[key] = (name, True)
    return sorted((value, name, is_default) for value, (name, is_default) in points.items())


def _fig8_ratios(ctx: ReportContext, dataset: str) -> list[int]:
    ratios: set[int] = set()
    for v in ctx.named_variants(dataset):
        if any(sweep_value(v, fam) is not None for fam, _ in FIG8_FAMILIES):
            ratios |= ctx.ratios(dataset, v)
    return sorted(ratios)


#: smallest Dice span (percentage points) of a Figure 8 panel's y axis, so that a difference
#: of a fraction of a point is not drawn across the whole panel
FIG8_MIN_SPAN = 5.0


def _at_least_span(ax: Any, span: float, lo: float = 0.0, hi: float = 100.0) -> None:
    """Widen the y axis of ``ax`` to at least ``span`` around its centre, within [lo, hi]."""
    bottom, top = ax.get_ylim()
    if top - bottom >= span:
        return
    centre = (bottom + top) / 2.0
    bottom, top = centre - span / 2.0, centre + span / 2.0
    if bottom < lo:
        bottom, top = lo, lo + span
    if top > hi:
        bottom, top = hi - span, hi
    ax.set_ylim(bottom, top)


def figure8(ctx: ReportContext, dataset: str, path: str | Path) -> Path | None:
    """Figure 8 for ``dataset``: Dice (%) vs tau, T and lam; one line per labeled ratio.

    Returns:
        The PNG path, or None when the dataset has no sweep variant (run or in the grid).
    """
    fig = draw_figure8(ctx, dataset)
    return None if fig is None else _save(fig, path)


def draw_figure8(ctx: ReportContext, dataset: str) -> Figure | None:
    """The Figure 8 of :func:`figure8`, not saved (None when there is no sweep variant).

    Each point is the mean Dice (%) over seeds; its error bar is the SD over seeds, drawn
    when the point has two or more seeds (the title says how many points have one). The
    y axis spans at least :data:`FIG8_MIN_SPAN` points.
    """
    ratios = _fig8_ratios(ctx, dataset)
    if not ratios:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(FIG8_FAMILIES), figsize=(4.2 * len(FIG8_FAMILIES), 3.4))
    single_seed = 0
    for ax, (family, label) in zip(np.atleast_1d(axes), FIG8_FAMILIES, strict=True):
        n_missing = 0
        plotted = False
        for ratio in ratios:
            xs, ys, errs, defaults = [], [], [], []
            for value, variant, is_default in _sweep_points(ctx, dataset, family, ratio):
                stats = cell_stats(ctx.case_rows(dataset, variant, ratio), "dice", 100.0)
                if stats is None:
                    n_missing += 1
                    continue
                xs.append(value)
                ys.append(stats.mean)
                # SD over seeds; a one-seed point has none (NaN: matplotlib draws no bar)
                errs.append(stats.sd_seeds if stats.n_seeds > 1 else math.nan)
                single_seed += stats.n_seeds < 2
                defaults.append(is_default)
            if not xs:
                continue
            plotted = True
            line = ax.errorbar(
                xs,
                ys,
                yerr=np.asarray(errs, dtype=float),
                marker="o",
                capsize=4,
                elinewidth=1.2,
                label=f"{ratio} % labeled",
            )
            dx = [x for x, d in zip(xs, defaults, strict=True) if d]
            dy = [y for y, d in zip(ys, defaults, strict=True) if d]
            if dx:
                ax.plot(
                    dx,
                    dy,
                    marker="*",
                    markersize=14,
                    linestyle="none",
                    color=line.lines[0].get_color(),
                )
        ax.set_xlabel(label)
        ax.set_ylabel("Dice (%)")
        title = f"Dice vs {family}"
        if n_missing:
            title += f" ({n_missing} point(s) missing)"
        ax.set_title(title, fontsize=9)
        if plotted:
            ax.legend(fontsize=7)
            _at_least_span(ax, FIG8_MIN_SPAN)
        else:
            ax.text(0.5, 0.5, "no tested runs", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    bars = "error bars: SD over seeds"
    if single_seed:
        bars += f", none on the {single_seed} point(s) with one seed"
    fig.suptitle(
        f"Figure 8 - {DATASET_TITLES.get(dataset, dataset)} ({bars}; "
        "star: dataset default = full run)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


# -- training curves -----------------------------------------------------------------------


def read_curve(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one dvclive TSV (columns ``step``, ``<name>`` and maybe ``timestamp``).

    Returns:
        ``(steps, values)`` as float arrays.

    Raises:
        InputError: unreadable file or no value column.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep="\t")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read training curve ({exc.__class__.__name__})") from exc
    value_cols = [c for c in frame.columns if c not in ("step", "timestamp")]
    if not value_cols:
        raise InputError(f"{path}: no value column (expected 'step' and the metric)")
    col = path.stem if path.stem in value_cols else value_cols[-1]
    steps = (
        pd.to_numeric(frame["step"], errors="coerce").to_numpy(float)
        if "step" in frame.columns
        else np.arange(len(frame), dtype=float)
    )
    return steps, pd.to_numeric(frame[col], errors="coerce").to_numpy(float)


def _smooth(values: np.ndarray) -> np.ndarray:
    window = max(1, len(values) // 50)
    if window == 1:
        return values
    return pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()


def _curve_group(name: str) -> str | None:
    base = name.rsplit("/", 1)[-1]
    if base == "winner":
        return None
    if base == "lr" or "weight" in base:
        return "schedule"
    if base in ("total", "loss") or base.startswith("loss") or base.endswith("total"):
        return "total"
    return "terms"


#: line styles cycled with the colours, so series stay apart in grey print and where
#: colours are close
_LINE_STYLES = ("-", "--", "-.", ":")


def _series_style(index: int) -> dict[str, Any]:
    """Colour and line style of the ``index``-th series of a panel: both differ from the
    neighbours', and no two of the first 20 series share a colour."""
    import matplotlib

    colours = matplotlib.colormaps["tab20"].colors
    # the even tab20 entries (strong), then the odd ones (light)
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return {
        "color": colours[order[index % 20]],
        "linestyle": _LINE_STYLES[index % len(_LINE_STYLES)],
    }


def training_curves(run_dir: str | Path, path: str | Path, title: str = "") -> Path | None:
    """Plot a run's dvclive curves: total losses, per-term losses, learning rate.

    Args:
        run_dir: the run folder (``live/plots/metrics`` below it).
        path: PNG to write.
        title: figure title.

    Returns:
        The PNG path, or None when the run has no curves.
    """
    fig = draw_training_curves(run_dir, title)
    return None if fig is None else _save(fig, path)


def draw_training_curves(run_dir: str | Path, title: str = "") -> Figure | None:
    """The figure of :func:`training_curves`, not saved (None when there are no curves).

    One panel per group (total losses, loss terms, learning rate / weights); each series has
    its own colour and line style; the x axis is the iteration, the y axis the loss or value.
    """
    files = curve_files(run_dir)
    groups: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {
        "total": [],
        "terms": [],
        "schedule": [],
    }
    for name, file in files.items():
        group = _curve_group(name)
        if group is None:
            continue
        steps, values = read_curve(file)
        groups[group].append((name.rsplit("/", 1)[-1], steps, values))
    panels = [(g, c) for g, c in groups.items() if c]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4))
    titles = {"total": "total losses", "terms": "loss terms", "schedule": "learning rate / weights"}
    ylabels = {"total": "loss (smoothed)", "terms": "loss (smoothed)", "schedule": "value"}
    for ax, (group, curves) in zip(np.atleast_1d(axes), panels, strict=True):
        for i, (label, steps, values) in enumerate(curves):
            style = _series_style(i)
            if group == "total":
                ax.plot(steps, values, alpha=0.25, linewidth=0.6, color=style["color"])
                ax.plot(steps, _smooth(values), label=label, linewidth=1.2, **style)
            elif group == "terms":
                ax.plot(steps, _smooth(values), label=label, linewidth=1.0, **style)
            else:
                ax.plot(steps, values, label=label, linewidth=1.2, drawstyle="steps-post", **style)
        ylabel = ylabels[group]
        if group == "schedule":
            finite = np.concatenate([v[np.isfinite(v)] for _, _, v in curves])
            if finite.size and (finite > 0).all():
                ax.set_yscale("log")
                ylabel += " (log scale)"
        ax.set_title(titles[group], fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6, ncol=2 if len(curves) > 6 else 1)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# -- qualitative figure --------------------------------------------------------------------


def _methods(
    ctx: ReportContext, dataset: str, variants: Sequence[str] | None
) -> list[tuple[str, int, str, Path]]:
    """(label, ratio, resolved variant, run folder of the lowest tested seed with
    predictions) for each method shown."""
    idx = ctx.index
    names = list(variants) if variants else [v for v, _, _ in main_methods()]
    out = []
    for named in names:
        variant = ctx.resolve(dataset, named)
        sel = (
            (idx["dataset"] == dataset) & (idx["variant"] == variant) & (idx["status"] == "tested")
        )
        runs = (
            idx.loc[sel, ["ratio", "seed", "run_dir"]]
            .drop_duplicates()
            .sort_values(["ratio", "seed"])
        )
        for ratio, group in runs.groupby("ratio", sort=True):
            for _, row in group.iterrows():
                run = Path(row["run_dir"])
                if (run / "predictions").is_dir():
                    label = f"{_method_labels().get(named, named)} {'All' if ratio == 100 else f'{ratio} %'}"
                    out.append((label, int(ratio), variant, run))
                    break
    return out


def _prediction(run: Path, case: str) -> Path | None:
    for ext in (".nii.gz", ".nii", ".nrrd", ".h5"):
        p = run / "predictions" / f"{case}{ext}"
        if p.is_file():
            return p
    return None


def _case_dice(ctx: ReportContext, run: Path, case: str) -> float | None:
    idx = ctx.index
    sel = (idx["run_dir"] == str(run)) & (idx["case"] == case)
    values = pd.to_numeric(idx.loc[sel, "dice"], errors="coerce").dropna()
    return float(values.iloc[0]) * 100.0 if len(values) else None


def _downsample_of(ctx: ReportContext, run: Path) -> int:
    idx = ctx.index
    if "downsample" not in idx.columns:
        return 1
    values = pd.to_numeric(
        idx.loc[idx["run_dir"] == str(run), "downsample"], errors="coerce"
    ).dropna()
    return int(values.iloc[0]) if len(values) else 1


def qualitative_figure(
    ctx: ReportContext,
    dataset: str,
    data_root: str | Path,
    path: str | Path,
    *,
    variants: Sequence[str] | None = None,
    n_cases: int = 1,
) -> tuple[Path | None, str]:
    """Middle axial slice of test case(s): image, ground truth, each method's prediction.

    Args:
        ctx: report context.
        dataset: dataset name.
        data_root: folder holding ``{dataset}/`` (the preprocessed dataset: volumes and
            ``test.list``).
        path: PNG to write.
        variants: variants to show (default: SupOnly, Ours, code-faithful); each at every
            labeled ratio with a tested run, lowest seed.
        n_cases: test cases (rows) to show; the first of ``test.list`` with a prediction.

    Returns:
        ``(path, "")`` on success, ``(None, reason)`` when the figure cannot be drawn.
    """
    from semiseg3d.data.volumes import read_list

    methods = _methods(ctx, dataset, variants)
    if not methods:
        return None, "no tested run with predictions"
    root = Path(data_root) / dataset
    if not root.is_dir():
        return None, f"dataset folder {root} not found"
    if (root / "test.list").is_file():
        try:
            candidates = read_list(root / "test.list")
        except InputError as exc:
            return None, str(exc)
    else:
        candidates = sorted(
            {
                p.name.split(".")[0]
                for _, _, _, run in methods
                for p in (run / "predictions").iterdir()
            }
        )
    cases = [c for c in candidates if any(_prediction(run, c) for _, _, _, run in methods)][
        :n_cases
    ]
    if not cases:
        return None, "no test case has a prediction"

    try:
        return _draw_qualitative(ctx, dataset, root, path, methods, cases), ""
    except InputError as exc:  # a broken volume or prediction: report it, draw nothing
        _pyplot().close("all")
        return None, str(exc)


def _draw_qualitative(
    ctx: ReportContext,
    dataset: str,
    root: Path,
    path: str | Path,
    methods: list[tuple[str, int, str, Path]],
    cases: list[str],
) -> Path:
    from semiseg3d.data.volumes import case_path, downsample_volume, load_volume
    from semiseg3d.evaluation.maskio import read_mask

    plt = _pyplot()
    ncols = 2 + len(methods)
    fig, axes = plt.subplots(
        len(cases), ncols, figsize=(2.3 * ncols, 2.5 * len(cases)), squeeze=False
    )
    for r, case in enumerate(cases):
        vol = load_volume(case_path(root, case))
        volumes: dict[int, Any] = {1: vol}
        z = vol.shape[2] // 2
        _panel(axes[r, 0], vol.image[:, :, z], None, None, f"{case}\nimage (z={z})")
        _panel(axes[r, 1], vol.image[:, :, z], vol.label[:, :, z], None, "ground truth")
        for c, (label, _, _, run) in enumerate(methods, start=2):
            ax = axes[r, c]
            pred_path = _prediction(run, case)
            if pred_path is None:
                _blank(ax, f"{label}\n(no prediction)")
                continue
            pred, _ = read_mask(pred_path)
            factor = _downsample_of(ctx, run)
            if factor not in volumes:
                volumes[factor] = downsample_volume(vol, factor)
            ref = volumes[factor] if pred.shape != vol.shape else vol
            if pred.shape != ref.shape:
                _blank(ax, f"{label}\n(shape {pred.shape} != {ref.shape})")
                continue
            zz = ref.shape[2] // 2
            dice = _case_dice(ctx, run, case)
            title = label + (f"\nDice {dice:.1f} %" if dice is not None else "")
            _panel(ax, ref.image[:, :, zz], pred[:, :, zz], ref.label[:, :, zz], title)
    fig.suptitle(
        f"{DATASET_TITLES.get(dataset, dataset)}: middle axial slice (filled: mask; red line: "
        "ground truth)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def _panel(
    ax: Any, image: np.ndarray, mask: np.ndarray | None, gt: np.ndarray | None, title: str
) -> None:
    ax.imshow(image.T, cmap="gray", origin="lower", interpolation="nearest")
    if mask is not None and mask.any():
        from matplotlib.colors import ListedColormap

        # ground truth filled green; predictions filled blue with the ground truth in red
        colour = "#2ca02c" if gt is None else "#1f77ff"
        overlay = np.ma.masked_where(mask.T == 0, mask.T)
        ax.imshow(
            overlay,
            cmap=ListedColormap([colour]),
            alpha=0.45,
            origin="lower",
            interpolation="nearest",
        )
    ref = gt if gt is not None else mask
    if ref is not None and ref.any() and ref.min() != ref.max():
        ax.contour(ref.T, levels=[0.5], colors="red", linewidths=0.8, origin="lower")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _blank(ax: Any, title: str) -> None:
    ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def qualitative_settings(params: Mapping[str, Any] | None) -> tuple[list[str] | None, int]:
    """``report.qualitative_variants`` and ``report.qualitative_cases`` of params (or defaults)."""
    report = (params or {}).get("report") or {}
    variants = report.get("qualitative_variants") or None
    return (list(variants) if variants else None), int(report.get("qualitative_cases") or 1)
