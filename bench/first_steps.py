"""A short run of ours against the recorded first steps of the authors' code (issue 18).

For every entry of ``bench/reference_first_steps.yaml`` (method, logged term, first N steps,
mean or max, the authors' value), trains ours for N iterations of the LA-lite protocol
(:func:`la_lite.bench_config`, the `shared` recipe, the same seed), takes the same
statistic of the same term and prints ours, theirs and the ratio. A ratio outside
[0.8, 1.25] is marked ``DIFFERS``: the crops and random draws of the two codes differ, so
only a coarse agreement is expected, but an initialisation, a loss weight or a ramp that is
off shows up here in seconds instead of after a 20-minute run (a Kaiming-normal MC-Net gave
1.8x its authors' consistency term over the first 13 steps).

Usage::

    python bench/first_steps.py                   # every recorded method
    python bench/first_steps.py --methods mcnet   # one of them

Output: a table on stdout and ``reports/bench/first_steps.csv`` (method, term, steps,
statistic, ours, theirs, ratio, verdict, precision, commit, machine, date), rows replacing
earlier rows of the same (method, term, statistic). Exit status 1 when any row DIFFERS.
Run it alone: it trains (about 1-2 s per step on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import la_lite
import yaml

from semiseg3d.errors import InputError
from semiseg3d.paths import repo_root
from semiseg3d.training.trainer import train

REFERENCE = Path(__file__).with_name("reference_first_steps.yaml")
#: ours / theirs within this band counts as agreeing
BAND = (0.8, 1.25)
COLUMNS = (
    "method",
    "term",
    "steps",
    "statistic",
    "ours",
    "theirs",
    "ratio",
    "verdict",
    "precision",
    "commit",
    "machine",
    "date",
)


@dataclass(frozen=True)
class Reference:
    """One recorded figure of the authors' code (see the YAML file's header)."""

    method: str
    term: str
    steps: int
    statistic: str
    value: float
    source: str


def load_references(path: Path = REFERENCE) -> list[Reference]:
    """The recorded figures, validated.

    Raises:
        InputError: naming the file, the entry and the key that is wrong.
    """
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: expected a non-empty list of recorded figures")
    out = []
    for i, e in enumerate(entries):
        where = f"{path}: entry {i}"
        if not isinstance(e, dict):
            raise InputError(f"{where}: expected a mapping")
        missing = {"method", "term", "steps", "statistic", "value", "source"} - set(e)
        if missing:
            raise InputError(f"{where}: missing key(s) {sorted(missing)}")
        if not isinstance(e["steps"], int) or isinstance(e["steps"], bool) or e["steps"] < 1:
            raise InputError(f"{where}: 'steps' must be an integer >= 1, got {e['steps']!r}")
        if e["statistic"] not in ("mean", "max"):
            raise InputError(f"{where}: 'statistic' must be mean or max, got {e['statistic']!r}")
        value = e["value"]
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise InputError(f"{where}: 'value' must be a number > 0, got {value!r}")
        out.append(
            Reference(
                str(e["method"]),
                str(e["term"]),
                e["steps"],
                e["statistic"],
                float(value),
                str(e["source"]),
            )
        )
    return out


def statistic(history: list[dict[str, float]], ref: Reference) -> float:
    """``ref.statistic`` of ``ref.term`` over the first ``ref.steps`` entries of a run's
    per-iteration history (steps where the term is absent or NaN are left out).

    Raises:
        InputError: the run is shorter than ``ref.steps`` or never logged the term.
    """
    if len(history) < ref.steps:
        raise InputError(f"{ref.method}: {len(history)} steps logged, {ref.steps} needed")
    values = [
        h[ref.term] for h in history[: ref.steps] if ref.term in h and math.isfinite(h[ref.term])
    ]
    if not values:
        raise InputError(
            f"{ref.method}: term '{ref.term}' not logged in the first {ref.steps} steps"
        )
    return sum(values) / len(values) if ref.statistic == "mean" else max(values)


def verdict(ours: float, theirs: float) -> tuple[float, str]:
    """``(ours / theirs, "close" or "DIFFERS")`` (:data:`BAND`)."""
    ratio = ours / theirs
    return ratio, "close" if BAND[0] <= ratio <= BAND[1] else "DIFFERS"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=None, help="default: every recorded method")
    p.add_argument("--reference", default=str(REFERENCE))
    p.add_argument("--csv", default=str(repo_root() / "reports" / "bench" / "first_steps.csv"))
    args, rest = p.parse_known_args(argv)
    refs = load_references(Path(args.reference))
    methods = args.methods or sorted({r.method for r in refs})
    unknown = set(methods) - {r.method for r in refs}
    if unknown:
        raise SystemExit(f"first_steps.py: no recorded figures for {sorted(unknown)}")
    lite = la_lite.parse_args(["--split", "test", *rest])
    rows, differs = [], 0
    for method in methods:
        mine = [r for r in refs if r.method == method]
        steps = max(r.steps for r in mine)
        with tempfile.TemporaryDirectory(prefix="first_steps_") as tmp:
            lite.work = tmp
            cfg = la_lite.bench_config(method, lite, lite.iterations)
            result = train(cfg, Path(tmp) / "run", stop_after=steps, progress=False)
            runtime = yaml.safe_load((Path(tmp) / "run" / "config.yaml").read_text())["runtime"]
        for ref in mine:
            ours = statistic(result.history, ref)
            ratio, word = verdict(ours, ref.value)
            differs += word == "DIFFERS"
            rows.append(
                {
                    "method": method,
                    "term": ref.term,
                    "steps": ref.steps,
                    "statistic": ref.statistic,
                    "ours": f"{ours:.4f}",
                    "theirs": f"{ref.value:.4f}",
                    "ratio": f"{ratio:.3f}",
                    "verdict": word,
                    "precision": runtime["precision"],
                    "commit": lite.commit,
                    "machine": la_lite.machine(),
                    "date": dt.date.today().isoformat(),
                }
            )
            print(
                f"{method:10s} {ref.statistic} {ref.term} over {ref.steps} steps: ours "
                f"{ours:.4f}, theirs {ref.value:.4f}, ratio {ratio:.2f} {word}",
                flush=True,
            )
    la_lite.write_rows(rows, Path(args.csv), COLUMNS, key=("method", "term", "statistic"))
    print(f"wrote {args.csv}")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
