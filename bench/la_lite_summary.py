"""LA-lite over seeds: mean and SEM per method from the per-seed rows of ``bench/la_lite.py``.

    python bench/la_lite_summary.py [--csv reports/bench/la_lite.csv] [--out FILE.md]

Reads the per-run table (one row per method and seed, written as each run finished) and
prints one line per method: the seeds and the Dice of each, mean Dice over seeds and its SEM
(sample SD of the per-seed means / sqrt(n); blank for one seed), mean Jaccard, HD95 and ASD
over seeds, the empty predictions summed over seeds, and the median predicted / true
foreground volume (``vol_ratio``, averaged over seeds). Works on the validation table too
(``--csv reports/bench/la_lite_val.csv``). ``--out`` also writes the table as
Markdown (``reports/bench/la_lite_summary.md`` by convention). Rows of other iteration
counts are reported separately (the ``iterations`` column is part of the key).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
ORDER = (
    "suponly",
    "code_faithful",
    "paper",
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


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, iterations): seeds, mean and SEM of Dice over seeds, mean of the
    other metrics, summed empty predictions. Methods in :data:`ORDER` first."""
    out = []
    for (method, iterations), g in rows.groupby(["method", "iterations"], sort=False):
        n = len(g)
        sem = g["dice"].std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
        out.append(
            {
                "method": method,
                "iterations": int(iterations),
                "seeds": n,
                "seed_list": " ".join(str(s) for s in sorted(g["seed"])),
                "dice_per_seed": " / ".join(f"{d:.2f}" for d in g.sort_values("seed")["dice"]),
                "dice_mean": round(float(g["dice"].mean()), 2),
                "dice_sem": round(float(sem), 2),
                "dice_min": float(g["dice"].min()),
                "jaccard_mean": round(float(g["jaccard"].mean()), 2),
                "hd95_mean": round(float(g["hd95"].mean()), 2),
                "asd_mean": round(float(g["asd"].mean()), 2),
                "empty_total": int(g["empty"].sum()),
                "vol_ratio_mean": round(float(g["vol_ratio"].mean()), 3),
            }
        )
    table = pd.DataFrame(out)
    rank = {m: i for i, m in enumerate(ORDER)}
    table["_rank"] = [rank.get(m, len(ORDER)) for m in table["method"]]
    return table.sort_values(["_rank", "method", "iterations"]).drop(columns="_rank")


def to_markdown(table: pd.DataFrame) -> str:
    """The summary as a Markdown table (SEM blank for a single seed)."""
    head = (
        "| method | seeds | Dice per seed | Dice mean | SEM | min | Jaccard | HD95 | ASD "
        "| empty | predicted / true volume |"
    )
    lines = [head, "|---" * 11 + "|"]
    for r in table.itertuples(index=False):
        sem = "" if math.isnan(r.dice_sem) else f"{r.dice_sem:.2f}"
        lines.append(
            f"| {r.method} | {r.seed_list} | {r.dice_per_seed} | {r.dice_mean:.2f} | {sem} | "
            f"{r.dice_min:.2f} | {r.jaccard_mean:.2f} | {r.hd95_mean:.2f} | {r.asd_mean:.2f} | "
            f"{r.empty_total} | {r.vol_ratio_mean:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(REPO / "reports" / "bench" / "la_lite.csv"))
    p.add_argument("--out", default="", help="also write the Markdown table here")
    args = p.parse_args(argv)
    path = Path(args.csv)
    if not path.is_file():
        print(f"error: {path}: no such file (run bench/la_lite.py first)", file=sys.stderr)
        return 2
    table = summarize(pd.read_csv(path))
    text = to_markdown(table)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
