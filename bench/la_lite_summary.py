"""LA-lite over seeds: mean and SEM per method, and each method against `paper` case by case.

    python bench/la_lite_summary.py [--csv reports/bench/la_lite.csv] [--cases FILE]
        [--reference paper] [--boot 10000] [--out FILE.md]

Reads the per-run table of ``bench/la_lite.py`` (one row per method and seed) and, where it
exists, the per-case table beside it (``la_lite_cases.csv``: one row per method, seed and
test case). Prints, per method and iteration count, in the order of the paper's Table 1 (its
rows first, then the methods it does not list):

- the seeds and the Dice of each; mean over seeds of Dice, Jaccard, HD95 and ASD with the SEM
  (sample SD of the per-seed means / sqrt(n); blank for one seed); empty predictions summed
  over seeds; the median predicted / true foreground volume (averaged over seeds);
- the paper's LA 10 % Dice for that method (``semiseg3d/reporting/paper_values.yaml``; the
  paper trains at 112x112x80 for 6000 iterations on full-resolution scans, LA-lite at half
  resolution for 600: a different scale, shown for orientation only);
- against the reference method (``paper`` by default), from the per-case table: the paired
  difference of per-case Dice (method minus reference) pooled over the seeds both have and
  the cases (same case, same seed), its 95 % bootstrap interval (resampling cases with
  replacement, each drawn case bringing all of its seeds; ``--boot`` resamples, fixed seed),
  and the two-sided Wilcoxon signed-rank p-value over cases of the seed-averaged differences
  (``scipy.stats.wilcoxon``). "not distinguishable" where the interval covers 0.

Works on the validation table too (``--csv reports/bench/la_lite_val.csv``). ``--out`` also
writes the Markdown (``reports/bench/la_lite_summary.md`` by convention). Rows of other
iteration counts are reported separately (the ``iterations`` column is part of the key).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
#: the paper's Table 1 (LA) in its order, then the methods it does not list
TABLE1 = (
    "suponly",
    "uamt",
    "sassnet",
    "dtc",
    "mcnet",
    "ssnet",
    "mcnet_plus",
    "mcf",
    "bcp",
    "luseg",
    "mlrpl",
    "paper",
)
OTHERS = (
    "code_faithful",
    "urpc",
    "cpcl",
    "acmt",
    "ramp_argmax",  # the validation table's name for today's `paper` default
    "paper_literal",
    # the validation ladder: code_faithful's terms in paper mode, then one module added ...
    "ladder_base",
    "ladder_cps",
    "ladder_efs",
    "ladder_uet",
    "ladder_pgl",
    # ... and the default with one module off
    "no_cr",
    "no_cps",
    "no_efs",
    "no_ue",
    "no_pgl",
)
ORDER = TABLE1 + OTHERS
#: bench method name -> variant name in paper_values.yaml (the method itself is `full`)
PAPER_VARIANT = {"paper": "full"}


def _sem(values: pd.Series) -> float:
    n = len(values)
    return float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, iterations): seeds, mean and SEM over seeds of Dice, Jaccard, HD95 and
    ASD, summed empty predictions, mean volume ratio. Methods in :data:`ORDER` first."""
    out = []
    for (method, iterations), g in rows.groupby(["method", "iterations"], sort=False):
        g = g.sort_values("seed")
        rec = {
            "method": method,
            "iterations": int(iterations),
            "seeds": len(g),
            "seed_list": " ".join(str(s) for s in g["seed"]),
            "dice_per_seed": " / ".join(f"{d:.2f}" for d in g["dice"]),
            "dice_min": float(g["dice"].min()),
            "empty_total": int(g["empty"].sum()),
            "vol_ratio_mean": round(float(g["vol_ratio"].mean()), 3),
        }
        for metric in ("dice", "jaccard", "hd95", "asd"):
            rec[f"{metric}_mean"] = round(float(g[metric].mean()), 2)
            rec[f"{metric}_sem"] = round(_sem(g[metric]), 2)
        out.append(rec)
    table = pd.DataFrame(out)
    rank = {m: i for i, m in enumerate(ORDER)}
    table["_rank"] = [rank.get(m, len(ORDER)) for m in table["method"]]
    return table.sort_values(["_rank", "method", "iterations"]).drop(columns="_rank")


@dataclass(frozen=True)
class Paired:
    """A method against the reference on the cases and seeds both have.

    Attributes:
        n_cases: cases in the comparison; ``n_seeds``: seeds both methods have.
        mean_diff: mean of the per-case Dice differences (method - reference, Dice points)
            pooled over seeds and cases.
        ci_low, ci_high: 95 % bootstrap interval of ``mean_diff`` (resampling cases).
        p_wilcoxon: two-sided Wilcoxon signed-rank p-value over the seed-averaged per-case
            differences (NaN when every difference is 0).
    """

    n_cases: int
    n_seeds: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_wilcoxon: float

    @property
    def verdict(self) -> str:
        """``not distinguishable`` when the interval covers 0, else above / below."""
        if self.ci_low <= 0.0 <= self.ci_high:
            return "not distinguishable"
        return "above" if self.mean_diff > 0 else "below"


def paired_differences(
    cases: pd.DataFrame, method: str, reference: str, iterations: int
) -> pd.DataFrame:
    """Per (seed, case) Dice of ``method`` minus ``reference``, on the pairs both have.

    Returns:
        Columns seed, case, diff (Dice points).
    """
    sel = cases[cases["iterations"] == iterations]
    a = sel[sel["method"] == method][["seed", "case", "dice"]]
    b = sel[sel["method"] == reference][["seed", "case", "dice"]]
    both = a.merge(b, on=["seed", "case"], suffixes=("_m", "_r"))
    both["diff"] = both["dice_m"] - both["dice_r"]
    return both[["seed", "case", "diff"]]


def paired_stats(diffs: pd.DataFrame, n_boot: int = 10_000, seed: int = 0) -> Paired | None:
    """Mean paired difference, its case-bootstrap interval and the Wilcoxon p-value.

    Args:
        diffs: columns seed, case, diff (:func:`paired_differences`).
        n_boot: bootstrap resamples of the cases.
        seed: the bootstrap's random seed (the interval is reproducible).

    Returns:
        A :class:`Paired`, or None without pairs.
    """
    if diffs.empty:
        return None
    per_case = diffs.groupby("case")["diff"]
    sums = per_case.sum().to_numpy(dtype=np.float64)  # each case's differences over seeds
    counts = per_case.count().to_numpy(dtype=np.float64)
    means = per_case.mean().to_numpy(dtype=np.float64)  # seed-averaged, for Wilcoxon
    n = len(sums)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    if np.all(means == 0):
        p = float("nan")
    else:
        p = float(stats.wilcoxon(means, alternative="two-sided").pvalue)
    return Paired(
        n_cases=n,
        n_seeds=int(diffs["seed"].nunique()),
        mean_diff=float(sums.sum() / counts.sum()),
        ci_low=float(low),
        ci_high=float(high),
        p_wilcoxon=p,
    )


def paper_la10(method: str, values: dict | None = None) -> float | None:
    """The paper's LA 10 % Dice of ``method`` (None where the spec quotes none)."""
    if values is None:
        path = REPO / "src" / "semiseg3d" / "reporting" / "paper_values.yaml"
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    la = values.get("runs", {}).get("la", {})
    cell = la.get(PAPER_VARIANT.get(method, method), {}).get(10, {})
    return cell.get("dice")


def _fmt(value: float, digits: int = 2) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def to_markdown(
    table: pd.DataFrame,
    paired: dict[tuple[str, int], Paired | None] | None = None,
    reference: str = "paper",
) -> str:
    """The summary (and, given ``paired``, the comparison with ``reference``) as Markdown."""
    head = (
        "| method | seeds | Dice per seed | Dice | Jaccard | HD95 | ASD | empty "
        "| pred / true vol. | paper LA 10 % (full scale) |"
    )
    lines = [head, "|---" * 10 + "|"]
    for r in table.itertuples(index=False):
        cells = []
        for metric in ("dice", "jaccard", "hd95", "asd"):
            mean, sem = getattr(r, f"{metric}_mean"), getattr(r, f"{metric}_sem")
            cells.append(f"{mean:.2f}" + (f" +- {sem:.2f}" if not math.isnan(sem) else ""))
        ref = paper_la10(r.method)
        label = r.method if r.iterations == 600 else f"{r.method} ({r.iterations} it.)"
        lines.append(
            f"| {label} | {r.seed_list} | {r.dice_per_seed} | {' | '.join(cells)} | "
            f"{r.empty_total} | {r.vol_ratio_mean:.3f} | {_fmt(ref) or 'n/a'} |"
        )
    text = "\n".join(lines) + "\n"
    if paired is None:
        return text
    lines = [
        "",
        f"Against `{reference}`, per-case Dice (method - {reference}, Dice points; cases x seeds "
        "both have; 95 % bootstrap interval over cases; Wilcoxon signed-rank over the "
        "seed-averaged per-case differences):",
        "",
        "| method | cases | seeds | mean difference | 95 % interval | Wilcoxon p | reading |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        if r.method == reference:
            continue
        res = paired.get((r.method, int(r.iterations)))
        if res is None:
            lines.append(f"| {r.method} | | | | | | no per-case rows shared with {reference} |")
            continue
        lines.append(
            f"| {r.method} | {res.n_cases} | {res.n_seeds} | {res.mean_diff:+.2f} | "
            f"[{res.ci_low:+.2f}, {res.ci_high:+.2f}] | {_fmt(res.p_wilcoxon, 4)} | "
            f"{res.verdict} |"
        )
    return text + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(REPO / "reports" / "bench" / "la_lite.csv"))
    p.add_argument("--cases", default="", help="per-case table (default: <csv stem>_cases.csv)")
    p.add_argument("--reference", default="paper", help="method the others are compared with")
    p.add_argument("--boot", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--out", default="", help="also write the Markdown here")
    args = p.parse_args(argv)
    path = Path(args.csv)
    if not path.is_file():
        print(f"error: {path}: no such file (run bench/la_lite.py first)", file=sys.stderr)
        return 2
    if args.boot < 100:
        print(f"error: --boot must be at least 100, got {args.boot}", file=sys.stderr)
        return 2
    table = summarize(pd.read_csv(path))
    cases_path = Path(args.cases) if args.cases else path.with_name(path.stem + "_cases.csv")
    paired: dict[tuple[str, int], Paired | None] | None = None
    if cases_path.is_file():
        cases = pd.read_csv(cases_path)
        paired = {
            (m, int(it)): paired_stats(
                paired_differences(cases, m, args.reference, int(it)), n_boot=args.boot
            )
            for m, it in zip(table["method"], table["iterations"], strict=True)
            if m != args.reference
        }
    text = to_markdown(table, paired, args.reference)
    if paired is None:
        shown = cases_path.resolve()
        if shown.is_relative_to(REPO):
            shown = shown.relative_to(REPO)
        text += f"\n(no per-case table at {shown}: paired statistics left out)\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
