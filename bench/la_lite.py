"""LA-lite: the real-data check at CPU scale (``../shared/spec/la-lite.md``; a benchmark, not a test).

Trains on the LA dataset downsampled by 2 (patch 64 x 64 x 32, batches of 2 labeled + 2
unlabeled, 600 iterations, SGD 0.01, lr x0.1 after iterations 250 and 500, ramp unit 15)
and scores the final weights with a sliding window (stride 9 x 9 x 2), metrics in voxels of
the halved grid. Everything runs through ``semiseg3d.training.trainer.train`` and
``semiseg3d.evaluation.test_run.test_run``, the code behind ``semiseg3d train`` / ``test``.

Two splits:

- ``--split test`` (LA-lite): labeled = the first 8 of ``train.list``, unlabeled = the other
  72, scored on the 20 cases of ``test.list``. Score it once per method and seed, for the
  final table.
- ``--split val`` (LA-lite-val): the last 10 cases of ``train.list`` are held out as the
  validation set (neither labeled nor unlabeled): 8 labeled + 62 unlabeled, scored on those
  10. Every design decision is taken here.

Methods (``--methods``; each a row of the CSV, with its seed):

- ``suponly``: the V-Net on the labeled cases alone (batches of 2 labeled);
- ``suponly_compiled``: the same with ``compile: on`` (the compiled step's equality check);
- ``suponly_torch_init``: SupOnly from PyTorch's default initialisation (``init: torch``), the
  control for the baselines that start from it;
- ``code_faithful``: the released objective (spec 2);
- ``paper``: the method as this project's ``paper`` mode defines it (the defaults of
  :class:`~semiseg3d.config.run.TrainConfig`);
- ``paper_torch_init``: ``paper`` from PyTorch's default initialisation, the method's side of
  the ``suponly_torch_init`` control;
- ``paper_literal``: the paper's text read literally (CPS target ``p_fg >= 0.6``, pseudo-label
  terms at weight 1 from the first iteration);
- a comparison method's config name (``uamt``, ``dtc``, ``mcnet``, ...): that method under
  the same protocol (its ``shared`` recipe; BCP's 2000 labeled-only pre-training steps
  scaled like the 6000 iterations: 200 at 600);
- that name with ``_own`` (``mcnet_own``, ``bcp_own``, ...): the original's own LA recipe
  (steps, batch, lr schedule, rotation and flip) with its step counts scaled as the shared
  recipe's are (``recipe_scale`` = ``--iterations`` / 6000: MC-Net's 15000 iterations run
  1500 here); the row's ``iterations`` is the scaled count;
- any other name with ``--set KEY=VALUE`` overrides on top of ``paper`` (diagnostics and
  ablations, e.g. ``--methods no_cps --set use_cps=false``).

Rows go to ``reports/bench/la_lite.csv`` (test split) or ``reports/bench/la_lite_val.csv``
(val split), keyed by (method, seed, iterations); a row already there is replaced. The
per-case metrics of each run go beside it to ``la_lite_cases.csv`` / ``la_lite_val_cases.csv``
(method, seed, split, iterations, case, dice, jaccard, hd95, asd, pred_voxels, true_voxels,
commit), replaced the same way: the paired statistics of ``bench/la_lite_summary.py`` need
them. Columns:
method, seed, split, labeled, iterations, dice, dice_sd, jaccard, hd95, asd, empty,
vol_ratio (median over cases of predicted / true foreground voxels), seconds (training),
s_per_it, precision, commit, machine, date. Dice and Jaccard in %, distances in voxels.

Run folders: ``results/bench/la_lite/<split>/<method>_s<seed>_it<iterations>/`` (not
versioned); a finished run is not trained again, so a stopped bench can be restarted.

Usage::

    python bench/la_lite.py --split val --methods suponly code_faithful paper --seed 1337
    python bench/la_lite.py --split val --methods ramp_argmax \
        --set pl_rampup=sigmoid --set cps_target=argmax
    python bench/la_lite.py --measure 5 --methods paper   # seconds per iteration only

Other data and scales (``bench/gpu_check.sh``): ``--data DIR --downsample 1`` trains on a
folder of volumes halved beforehand (``bench/gpu_data.py unpack``: the same arrays as LA
with ``--downsample 2``), and ``--downsample 1 --patch 112 112 80 --stride 18 18 4 --budget
S`` runs full-resolution LA for as many iterations as fit in S seconds (measured on a few
iterations first; ``--iterations`` is then the upper bound), testing included.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import fcntl
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semiseg3d.config.registry import baseline_names, resolve_recipe
from semiseg3d.config.run import TrainConfig, config_from_mapping, parse_overrides
from semiseg3d.data.dataset import VolumeDataset
from semiseg3d.evaluation.maskio import read_mask
from semiseg3d.evaluation.test_run import test_run
from semiseg3d.paths import repo_root, shared_dir
from semiseg3d.training.trainer import train

COLUMNS = (
    "method",
    "seed",
    "split",
    "labeled",
    "iterations",
    "dice",
    "dice_sd",
    "jaccard",
    "hd95",
    "asd",
    "empty",
    "vol_ratio",
    "seconds",
    "s_per_it",
    "precision",
    "commit",
    "machine",
    "date",
)

#: per-case table (``la_lite_cases.csv``): the statistics of bench/la_lite_summary.py need it
CASE_COLUMNS = (
    "method",
    "seed",
    "split",
    "iterations",
    "case",
    "dice",
    "jaccard",
    "hd95",
    "asd",
    "pred_voxels",
    "true_voxels",
    "commit",
)

#: named methods: config keys on top of the common protocol
PRESETS: dict[str, dict[str, Any]] = {
    "suponly": {"method": "suponly"},
    "suponly_compiled": {"method": "suponly", "compile": True},
    "suponly_torch_init": {"method": "suponly", "init": "torch"},
    "code_faithful": {"method": "dual", "mode": "code_faithful"},
    "paper": {"method": "dual", "mode": "paper"},
    "paper_torch_init": {"method": "dual", "mode": "paper", "init": "torch"},
    "paper_literal": {
        "method": "dual",
        "mode": "paper",
        "cps_target": "threshold",
        "pl_rampup": "none",
    },
}

VAL_HOLDOUT = 10


def scaled_schedule(iterations: int) -> dict[str, Any]:
    """The paper's 6000-iteration schedule compressed to ``iterations``: lr steps at 5/12
    and 5/6 of the run, ramp unit = iterations / 40 (600 -> 250, 500 and 15)."""
    steps = (round(iterations * 5 / 12), round(iterations * 5 / 6))
    return {"lr_steps": list(steps), "rampup_unit": max(1, round(iterations / 40))}


def split_lists(data: Path, split: str, work: Path) -> tuple[Path, Path]:
    """The train and evaluation list files of ``split`` (val lists are written to ``work``)."""
    train_list, test_list = data / "train.list", data / "test.list"
    if split == "test":
        return train_list, test_list
    ids = [line.strip() for line in train_list.read_text().splitlines() if line.strip()]
    folder = work / "lists"
    folder.mkdir(parents=True, exist_ok=True)
    train_val, val = folder / "train_minus_val.list", folder / "val.list"
    train_val.write_text("\n".join(ids[:-VAL_HOLDOUT]) + "\n")
    val.write_text("\n".join(ids[-VAL_HOLDOUT:]) + "\n")
    return train_val, val


def bench_config(method: str, args: argparse.Namespace, iterations: int) -> TrainConfig:
    """The config of one bench run."""
    data = Path(args.data)
    train_list, test_list = split_lists(data, args.split, Path(args.work))
    mapping: dict[str, Any] = {
        "dataset": "la",
        "data_dir": str(data),
        "train_list": str(train_list),
        "test_list": str(test_list),
        "labeled": args.labeled,
        "downsample": args.downsample,
        "patch": list(args.patch),
        "stride": list(args.stride),
        "iterations": iterations,
        "lr": 0.01,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "checkpoint_every": max(1, min(iterations, args.checkpoint_every)),
        "device": "auto",
        "amp": args.amp,
        "channels_last": "auto",
        "cache_volumes": "auto",
        "extra": {"variant": method, "bench": f"la_lite_{args.split}"},
        **scaled_schedule(iterations),
    }
    mapping.update(
        PRESETS.get(method) or _baseline_preset(method, args.iterations) or PRESETS["paper"]
    )
    if method not in ("suponly", "suponly_compiled", "suponly_torch_init", "code_faithful"):
        mapping.update(parse_overrides(args.overrides))
    return config_from_mapping(mapping, f"bench/la_lite.py ({method})")


#: the paper's iteration count, which ``--iterations`` scales (the shared recipe's 6000)
PAPER_ITERATIONS = 6000
#: BCP's labeled-only pre-training steps before the paper's 6000 (the config's default)
BCP_PRETRAIN = TrainConfig.bcp_pretrain_steps


def _baseline_preset(method: str, iterations: int) -> dict[str, Any] | None:
    """``{"method": name}`` when ``method`` names a registered comparison method (BCP with
    its pre-training scaled by ``iterations`` / 6000, as the run is); for ``<name>_own`` its
    own recipe at that scale."""
    if method in baseline_names():
        keys: dict[str, Any] = {"method": method}
        if method == "bcp":  # its labeled-only pre-training scales too (2000 of 6000 -> 200)
            keys["bcp_pretrain_steps"] = round(BCP_PRETRAIN * iterations / PAPER_ITERATIONS)
        return keys
    stem = method.removesuffix("_own")
    if stem != method and stem in baseline_names():
        return {"method": stem, "recipe": "own", "recipe_scale": iterations / PAPER_ITERATIONS}
    return None


def machine() -> str:
    """A short description of where the bench ran."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}"
    return f"cpu {platform.machine()} {torch.get_num_threads()} threads"


def commit() -> str:
    """The checked-out commit (with ``+dirty`` when the tree has changes), or ``unknown``."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=repo_root(), capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def seconds_per_iteration(method: str, args: argparse.Namespace, k: int) -> float:
    """Mean seconds of iterations 2 .. k + 1 of a throw-away run (the first is warm-up)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"la_lite_measure_{method}_"))
    try:
        cfg = bench_config(method, args, iterations=k + 1)
        result = train(cfg, tmp / "run", stop_after=k + 1, progress=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return float(np.mean(result.iteration_seconds[1:]))


def measure(args: argparse.Namespace) -> None:
    """Print seconds per iteration of each method (``--measure K`` iterations, the first
    one excluded as warm-up)."""
    for method in args.methods:
        t0 = time.monotonic()
        per_it = seconds_per_iteration(method, args, args.measure)
        print(f"MEASURE {method}: {per_it:.2f} s/iteration ({time.monotonic() - t0:.0f} s)")


def fit_iterations(method: str, args: argparse.Namespace, started: float, cap: int) -> int:
    """Iterations of ``method`` that fit in what is left of ``--budget`` seconds (counted
    from ``started``) after ``--test-reserve`` seconds for testing; at most ``cap``."""
    per_it = seconds_per_iteration(method, args, 3)
    left = args.budget - (time.monotonic() - started) - args.test_reserve
    n = min(cap, int(left / per_it))
    print(
        f"{method}: {per_it:.3f} s/iteration measured, {left:.0f} s left for training "
        f"-> {n} iterations",
        flush=True,
    )
    if n < 1:
        raise SystemExit(f"la_lite.py: --budget {args.budget:g} s leaves no time to train")
    return n


def foreground_voxels(run: Path, cfg: TrainConfig) -> dict[str, tuple[int, int]]:
    """``case -> (predicted, true)`` foreground voxels of each evaluated case of a tested run
    (on the halved grid)."""
    ids = [line.strip() for line in Path(cfg.test_list).read_text().splitlines() if line.strip()]
    ds = VolumeDataset(cfg.data_dir, ids, cfg.patch, downsample=cfg.downsample)
    out = {}
    for index, case in enumerate(ids):
        pred = read_mask(run / "predictions" / f"{case}.nii.gz")[0]
        label = ds.volume(index).label
        assert label is not None
        out[case] = (int(np.count_nonzero(pred == 1)), int(np.count_nonzero(label)))
    return out


def case_rows(
    method: str,
    args: argparse.Namespace,
    iterations: int,
    table: Any,
    voxels: dict[str, tuple[int, int]],
) -> list[dict[str, Any]]:
    """The per-case rows of one run (Dice and Jaccard in %, distances in voxels)."""
    rows = []
    for r in table.itertuples(index=False):
        if r.case in ("mean", "sd", "sem"):
            continue
        pred, true = voxels[r.case]
        rows.append(
            {
                "method": method,
                "seed": args.seed,
                "split": args.split,
                "iterations": iterations,
                "case": r.case,
                "dice": round(100 * float(r.dice), 4),
                "jaccard": round(100 * float(r.jaccard), 4),
                "hd95": round(float(r.hd95), 4),
                "asd": round(float(r.asd), 4),
                "pred_voxels": pred,
                "true_voxels": true,
                "commit": args.commit,
            }
        )
    return rows


def run_method(method: str, args: argparse.Namespace) -> tuple[dict[str, Any], list[dict]]:
    """Train and score one method; return its CSV row and its per-case rows."""
    cfg = resolve_recipe(bench_config(method, args, args.iterations))
    iterations = cfg.iterations  # an own recipe's scaled count, else --iterations
    out = Path(args.work) / args.split / f"{method}_s{args.seed}_it{iterations}"
    t0 = time.monotonic()
    result = train(cfg, out, progress=False)
    print(f"{method}: trained in {time.monotonic() - t0:.0f} s wall", flush=True)
    seconds = result.seconds if not result.skipped else _recorded_seconds(out)
    t1 = time.monotonic()
    table = test_run(out, batch_size=args.batch_size, verbose=False)
    print(f"{method}: scored in {time.monotonic() - t1:.0f} s", flush=True)
    stats = table.set_index("case")
    mean, sd = stats.loc["mean"], stats.loc["sd"]
    voxels = foreground_voxels(out, cfg)
    ratios = [p / max(1, t) for p, t in voxels.values()]
    import yaml

    runtime = yaml.safe_load((out / "config.yaml").read_text()).get("runtime", {})
    row = {
        "method": method,
        "seed": args.seed,
        "split": args.split,
        "labeled": args.labeled,
        "iterations": iterations,
        "dice": round(100 * float(mean["dice"]), 2),
        "dice_sd": round(100 * float(sd["dice"]), 2),
        "jaccard": round(100 * float(mean["jaccard"]), 2),
        "hd95": round(float(mean["hd95"]), 2),
        "asd": round(float(mean["asd"]), 2),
        "empty": int(mean["empty_pred"]),
        "vol_ratio": round(float(np.median(ratios)), 3),
        "seconds": round(seconds),
        "s_per_it": round(seconds / iterations, 2),
        "precision": runtime.get("precision", "?"),
        "commit": args.commit,
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }
    return row, case_rows(method, args, iterations, table, voxels)


def _recorded_seconds(out: Path) -> float:
    """Training seconds of a finished run, from the last ``finished ... in X s`` log line."""
    import re

    found = re.findall(r"finished \d+ iterations in ([\d.]+) s", (out / "train.log").read_text())
    return float(found[-1]) if found else float("nan")


def write_row(row: dict[str, Any], path: Path) -> None:
    """Add ``row`` to the table at ``path`` atomically, replacing an earlier row with the
    same (method, seed, iterations); other rows are kept."""
    write_rows([row], path, COLUMNS)


def write_rows(
    new: list[dict[str, Any]],
    path: Path,
    columns: tuple[str, ...],
    key: tuple[str, ...] = ("method", "seed", "iterations"),
) -> None:
    """Add ``new`` to the table at ``path`` atomically, replacing the earlier rows whose
    ``key`` columns equal those of a new row (by default the rows of the same run: method,
    seed and iterations); other rows are kept."""
    from semiseg3d.io.atomic import atomic_path

    if not new:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    replaced = {tuple(str(row[k]) for k in key) for row in new}
    # two bench processes may finish together: the read-modify-write holds a lock
    with (path.parent / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows: list[dict[str, Any]] = []
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if tuple(r[k] for k in key) not in replaced]
        rows.extend(new)
        with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_dir() / "data" / "LA"), help="LA dataset folder")
    p.add_argument("--work", default=str(repo_root() / "results" / "bench" / "la_lite"))
    p.add_argument("--csv", default="", help="output table (default by --split)")
    p.add_argument(
        "--cases-csv", default="", help="per-case output table (default: the table's name + _cases)"
    )
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--labeled", type=int, default=8)
    p.add_argument(
        "--downsample", type=int, default=2, help="2: LA-lite; 1: halved data or full resolution"
    )
    p.add_argument("--patch", type=int, nargs=3, default=(64, 64, 32))
    p.add_argument("--stride", type=int, nargs=3, default=(9, 9, 2))
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--amp", default="auto", choices=("auto", "none", "bf16"))
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4, help="sliding-window batch")
    p.add_argument("--methods", nargs="+", default=["suponly", "code_faithful", "paper"])
    p.add_argument("--measure", type=int, default=0, help="only time K iterations per method")
    p.add_argument(
        "--budget",
        type=float,
        default=0.0,
        help="seconds per method: train as many iterations as fit (at most --iterations)",
    )
    p.add_argument(
        "--test-reserve", type=float, default=90.0, help="seconds of --budget kept for testing"
    )
    p.add_argument("--commit", default="", help="the commit column (default: git's answer here)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for the named (non-preset) methods, e.g. use_cps=false",
    )
    args = p.parse_args(argv)
    if not args.csv:
        name = "la_lite.csv" if args.split == "test" else "la_lite_val.csv"
        args.csv = str(repo_root() / "reports" / "bench" / name)
    if not args.cases_csv:
        csv_path = Path(args.csv)
        args.cases_csv = str(csv_path.with_name(csv_path.stem + "_cases.csv"))
    args.commit = args.commit or commit()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"la_lite: {vars(args)}", flush=True)
    if args.measure:
        measure(args)
        return 0
    cap = args.iterations
    for method in args.methods:
        if args.budget:
            args.iterations = fit_iterations(method, args, time.monotonic(), cap)
        row, cases = run_method(method, args)
        write_row(row, Path(args.csv))
        write_rows(cases, Path(args.cases_csv), CASE_COLUMNS)
        print("ROW " + ",".join(str(row[c]) for c in COLUMNS), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
