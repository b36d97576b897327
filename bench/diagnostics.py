"""Per-100-iteration means of the loss terms and diagnostics in a run's ``train.log``.

Usage: ``python bench/diagnostics.py results/bench/la_lite/val/<run>/train.log [--every 100]``
(the ``diag_*`` values are described in bench/README.md).
"""

from __future__ import annotations

import argparse
import re

import numpy as np

KEYS = (
    "diag_fg_true_l",
    "diag_fg_true_u",
    "diag_fg_a_u",
    "diag_fg_b_u",
    "diag_dice_a_u",
    "diag_dice_b_u",
    "diag_cps_fg",
    "diag_efs_ignored",
    "diag_efs_fg",
    "sup_dice_a",
    "sup_dice_b",
    "cps_a",
    "efs_a",
    "ue",
    "pgl",
)


def read_log(path: str) -> list[dict[str, float]]:
    """The ``key=value`` pairs of every ``iter`` line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if " iter " in line:
                pairs = re.findall(r"(\w+)=([-+\w.]+)", line)
                rows.append({k: float(v) for k, v in pairs})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log")
    p.add_argument("--every", type=int, default=100)
    args = p.parse_args()
    rows = read_log(args.log)
    keys = [k for k in KEYS if any(k in r for r in rows)]
    print("iterations " + " ".join(f"{k.removeprefix('diag_'):>11s}" for k in keys))
    for start in range(0, len(rows), args.every):
        chunk = rows[start : start + args.every]
        means = [np.nanmean([r.get(k, np.nan) for r in chunk]) for k in keys]
        label = f"{start}-{start + len(chunk) - 1}"
        print(f"{label:>10s} " + " ".join(f"{m:11.4f}" for m in means))


if __name__ == "__main__":
    main()
