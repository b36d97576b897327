"""Reduced-scale real-data check: the full method vs SupOnly on LA (a benchmark, not a test).

Trains, on the LA dataset downsampled by 2,

- ``full``: the dual network in ``paper`` mode with every component on, 8 labeled + 72
  unlabeled cases (batches of 2 + 2), and
- ``suponly``: the V-Net alone on the same 8 labeled cases (batches of 2),

for the same number of iterations, then predicts the 20 test volumes with a sliding window
and scores them (Dice, Jaccard, HD95, ASD in voxels of the downsampled grid). One row per
method goes to ``reports/bench/la_lite.csv`` (method, labeled, iterations, dice, jaccard,
hd95, asd, seconds, machine, date); ``seconds`` is the training time.

Scaling choices for a short budget (explicit, so that the comparison is the paper's
schedule compressed, not a different one):

- patch 48 x 48 x 32 (multiples of 16; about 40 % of the voxels of 64 x 64 x 48, so about
  2.5 times the iterations fit the same CPU time; the downsampled LA volumes are about
  90 x 70 x 44 voxels, the atrium about 40 voxels across);
- sliding-window stride (24, 24, 16) = half the patch: the paper's dense LA stride
  (18, 18, 4), even divided by the downsampling, means about 200 windows per volume here,
  which costs more than the training on a CPU; half-patch overlap gives 12 windows;
- learning-rate steps at 5/12 and 5/6 of the iterations (the paper's 2500 and 5000 of
  6000), factor 0.1;
- PGL ramp-up unit = iterations / 40 (the paper's 150 of 6000), so the PGL weight reaches
  its maximum at the end of the run as in the paper.

Usage::

    python bench/la_lite.py --measure 3             # seconds per iteration of both methods
    nohup python bench/la_lite.py --iterations 200 > /work/bench-logs/la_lite.log 2>&1 &
    # or each method in its own process (both append their row to the same CSV):
    nohup python bench/la_lite.py --methods full > /work/bench-logs/la_lite_full.log 2>&1 &
    nohup python bench/la_lite.py --methods suponly > /work/bench-logs/la_lite_suponly.log 2>&1 &

Run folders go to ``--work``/``<method>_it<iterations>`` (default ``results/bench/la_lite``,
not versioned); a finished run is not trained again (``model_final.pt`` exists), so the
script can be restarted.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from semiseg3d.inference.test_run import test_run
from semiseg3d.paths import repo_root, shared_dir
from semiseg3d.training.config import TrainConfig, config_from_mapping, parse_overrides
from semiseg3d.training.trainer import train

COLUMNS = (
    "method",
    "labeled",
    "iterations",
    "dice",
    "jaccard",
    "hd95",
    "asd",
    "seconds",
    "machine",
    "date",
)


def scaled_schedule(iterations: int) -> dict[str, Any]:
    """The paper's 6000-iteration schedule compressed to ``iterations``.

    Returns:
        ``lr_steps`` at 5/12 and 5/6 of the run and ``rampup_unit`` = iterations / 40
        (at least 1), as config keys.
    """
    steps = (round(iterations * 5 / 12), round(iterations * 5 / 6))
    return {"lr_steps": list(steps), "rampup_unit": max(1, round(iterations / 40))}


def bench_config(method: str, args: argparse.Namespace, iterations: int) -> TrainConfig:
    """The config of one bench run (``method`` = ``full`` or ``suponly``)."""
    data = Path(args.data)
    mapping: dict[str, Any] = {
        "dataset": "la",
        "data_dir": str(data),
        "train_list": str(data / "train.list"),
        "test_list": str(data / "test.list"),
        "labeled": args.labeled,
        "downsample": args.downsample,
        "patch": list(args.patch),
        "stride": list(args.stride),
        "method": "dual" if method == "full" else "suponly",
        "mode": "paper",
        "iterations": iterations,
        "lr": args.lr,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "checkpoint_every": max(1, min(iterations, args.checkpoint_every)),
        "device": "auto",
        "extra": {"variant": args.name or method, "bench": "la_lite"},
        **scaled_schedule(iterations),
    }
    if method == "full":
        mapping.update(parse_overrides(args.overrides))
    return config_from_mapping(mapping, f"bench/la_lite.py ({method})")


def machine() -> str:
    """A short description of where the bench ran."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}"
    return f"cpu {platform.machine()} {torch.get_num_threads()} threads"


def measure(args: argparse.Namespace) -> None:
    """Print seconds per iteration of both methods (``--measure K`` iterations each, the
    first one excluded as warm-up)."""
    k = args.measure
    for method in args.methods:
        tmp = Path(tempfile.mkdtemp(prefix=f"la_lite_measure_{method}_"))
        try:
            cfg = bench_config(method, args, iterations=k + 1)
            train(cfg, tmp / "run", stop_after=k + 1, progress=False)
            times = _iteration_times(tmp / "run" / "train.log")  # iteration 1 -> k + 1
            print(f"MEASURE {method}: {sum(times) / len(times):.2f} s/iteration", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _iteration_times(log: Path) -> list[float]:
    stamps = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if line[20:].startswith("iter "):
            stamps.append(dt.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
    return [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]


def run_method(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train and test one method; return its CSV row."""
    cfg = bench_config(method, args, args.iterations)
    label = args.name if method == "full" and args.name else method
    out = Path(args.work) / f"{label}_it{args.iterations}"
    t0 = time.monotonic()
    result = train(cfg, out, progress=False)
    train_seconds = result.seconds if not result.skipped else float("nan")
    print(f"{method}: trained in {time.monotonic() - t0:.0f} s wall", flush=True)
    t1 = time.monotonic()
    table = test_run(out, batch_size=args.batch_size)
    print(f"{method}: tested in {time.monotonic() - t1:.0f} s", flush=True)
    mean = table.set_index("case").loc["mean"]
    if result.skipped:  # resumed bench: take the time recorded in the checkpoint log
        train_seconds = _recorded_seconds(out)
    return {
        "method": label,
        "labeled": args.labeled,
        "iterations": args.iterations,
        "dice": round(float(mean["dice"]), 4),
        "jaccard": round(float(mean["jaccard"]), 4),
        "hd95": round(float(mean["hd95"]), 2),
        "asd": round(float(mean["asd"]), 2),
        "seconds": round(train_seconds),
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }


def _recorded_seconds(out: Path) -> float:
    from semiseg3d.training.checkpoint import load_checkpoint

    ckpt = out / "checkpoint.pt"
    return float(load_checkpoint(ckpt)["logger"]["elapsed"]) if ckpt.is_file() else float("nan")


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the bench table atomically, keeping the rows of other (method, iterations)
    pairs already in it (so the two methods, and several budgets, can share one table)."""
    from semiseg3d.io.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    mine = {(row["method"], str(row["iterations"])) for row in rows}
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            kept = [r for r in csv.DictReader(f) if (r["method"], r["iterations"]) not in mine]
        rows = sorted(
            [*kept, *rows], key=lambda r: (int(r["iterations"]), r["method"] != "full", r["method"])
        )
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_dir() / "data" / "LA"), help="LA dataset folder")
    p.add_argument("--work", default=str(repo_root() / "results" / "bench" / "la_lite"))
    p.add_argument("--csv", default=str(repo_root() / "reports" / "bench" / "la_lite.csv"))
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--labeled", type=int, default=8)
    p.add_argument("--downsample", type=int, default=2)
    p.add_argument("--patch", type=int, nargs=3, default=(48, 48, 32))
    p.add_argument("--stride", type=int, nargs=3, default=(24, 24, 16))
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=2, help="sliding-window batch")
    p.add_argument("--methods", nargs="+", default=["suponly", "full"], choices=["full", "suponly"])
    p.add_argument("--measure", type=int, default=0, help="only time K iterations per method")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="diagnostics: override a config key of the 'full' run (e.g. use_cps=false)",
    )
    p.add_argument("--name", default="", help="diagnostics: method name of the overridden full run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"la_lite: {vars(args)}", flush=True)
    if args.measure:
        measure(args)
        return 0
    rows = []
    for method in args.methods:
        rows.append(run_method(method, args))
        print(f"ROW {rows[-1]}", flush=True)
        write_rows(rows, Path(args.csv))
    print(f"wrote {args.csv}", flush=True)
    for row in rows:
        print(",".join(str(row[c]) for c in COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
