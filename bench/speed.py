"""Speed of training and sliding-window inference: float32 eager against the fast path.

Everything is measured in this one process, on the same inputs, one after the other, so
the ratios compare like with like (run it alone: other jobs on the same cores distort it).

Training (real LA scans from ``--data``, through :func:`semiseg3d.training.trainer.train`,
i.e. data loading, the step and its logging): seconds per iteration of ``paper`` mode,
``code_faithful`` mode and SupOnly, for

- ``fp32``: ``amp: none``, ``channels_last: false`` (the reference; the project's path
  before the speed work), and
- ``fast``: ``amp: auto``, ``channels_last: auto`` (bf16 autocast and channels-last 3D where
  the device supports bf16; float32 elsewhere), and
- ``compiled``: ``fast`` plus ``compile: on`` (``torch.compile`` of every network's forward,
  :mod:`semiseg3d.compiled`); its first ``max(--warmup, 2)`` iterations, which compile, are
  dropped, and the seconds they took are printed beside the row (``--paths`` picks paths),

at the LA-lite patch (64 x 64 x 32 on the halved volumes) and at the paper's 112 x 112 x 80
(full-resolution volumes), on the first 16 cases of ``train.list`` (8 labeled + 8
unlabeled, held in memory in both paths: ``cache_volumes: auto``). The first ``--warmup``
iterations of each run are dropped. With ``--rounds R`` the paths alternate R times and
each row is the median of its R runs (the speed of a shared VM drifts over minutes).

Inference: the trained run ``--run`` (any finished dual run folder, e.g. one of
``bench/la_lite.py``) predicts ``--cases`` LA-lite test volumes with the sliding window
at stride 9 x 9 x 2, three ways: the pre-speed-work implementation kept here
(:func:`legacy_sliding_window_probs`, float32; the time reference), today's implementation
in float32 (its argmax must equal the legacy one on every voxel) and today's fast path
(bf16 + channels-last, BatchNorm folded and weights in bf16, as `semiseg3d test` does;
per-case Dice of its mask against the float32 mask is reported).

The authors' step (their released ``train_LA.py`` loop body, float32) cannot be run here
(the project does not import their code), so it is a **recorded** row (:data:`RECORDED`):
the figure measured for issue 20, with its machine, checkout and date; every run of this
script writes it again, marked ``recorded``, beside the live rows. Compare it only with
rows measured on that machine.

Output: a table on stdout and ``reports/bench/speed.csv`` (what, patch, precision, seconds,
ratio, mfu, machine, date), rows of this run replacing earlier rows with the same (what,
patch, precision, machine). On CUDA the training rows also get an MFU column: model FLOPs
of the step (2 x true MACs, the MACs 3 x those of one forward pass of ``semiseg3d
complexity`` per sample: forward + backward) per second, against the GPU's dense peak for
the row's precision (``--peak-tflops auto``: the table of ``bench/gpu_env.py``, bf16 peak for
the bf16 / fp16 rows and TF32 peak for the float32 rows, which cuDNN runs in TF32 by
default; or one number for every row).

Usage::

    python bench/speed.py --run results/bench/la_lite/val/paper_literal_s1337_it600
    python bench/speed.py --skip-inference --iterations 3 --patches lite
    python bench/speed.py --skip-inference --patches paper --volumes 192 144 88   # no LA at hand
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semiseg3d.accel import resolve_acceleration
from semiseg3d.config.run import config_from_mapping
from semiseg3d.data.dataset import VolumeDataset
from semiseg3d.inference.rule import load_trained, prepared_rule
from semiseg3d.inference.sliding_window import (
    ProbFn,
    pad_to_patch,
    predict_label,
    sliding_window_probs,
    window_grid,
)
from semiseg3d.methods import get_method
from semiseg3d.paths import repo_root, shared_dir
from semiseg3d.training.trainer import train

COLUMNS = ("what", "patch", "precision", "seconds", "ratio", "mfu", "machine", "date")
PATCHES = {"lite": ((64, 64, 32), 2), "paper": ((112, 112, 80), 1)}
METHODS = {
    "paper": {"method": "dual", "mode": "paper"},
    "code_faithful": {"method": "dual", "mode": "code_faithful"},
    "suponly": {"method": "suponly"},
}
PATHS = {
    "fp32": {"amp": "none", "channels_last": False},
    "fast": {"amp": "auto", "channels_last": "auto"},
    "compiled": {"amp": "auto", "channels_last": "auto", "compile": True},
}
#: warm-up iterations of the compiled path at least (the first compiles every graph)
COMPILED_WARMUP = 2

#: rows measured once and recorded, not measured by this script (see the module docstring)
RECORDED: tuple[dict[str, Any], ...] = (
    {
        # issue 20's table: one 2-core AMD EPYC (AVX-512 BF16, no AMX), each process alone,
        # LA-lite patch, batch 2 + 2, main at a3e8dfd (2026-12-02); the issue was filed before
        # 2026-12-07 and gives no exact day
        "what": "train iteration authors' train_LA.py loop body (recorded, main a3e8dfd)",
        "patch": "64x64x32",
        "precision": "fp32 eager (recorded)",
        "seconds": 2.99,
        "ratio": 1.0,
        "mfu": "",
        "machine": "cpu AMD EPYC 2 cores AVX-512 BF16 (issue 20)",
        "date": "2026-12",
    },
)


def machine() -> str:
    """The GPU's name, or the CPU's model and thread count (rows of different CPUs must not
    replace each other: the rows of 2026-12-01 labelled ``cpu x86_64 2 threads`` are the
    Intel AMX VM of bench/README.md)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    from semiseg3d.bf16check import cpu_info

    model = cpu_info()[0]
    if model == "unknown cpu":
        model = platform.machine()
    return f"cpu {model} {torch.get_num_threads()} threads"


# -- training -------------------------------------------------------------------------------


def train_seconds(
    data: Path, method: str, path: str, patch: Sequence[int], downsample: int, n: int, warmup: int
) -> tuple[float, str]:
    """Mean seconds per iteration after ``warmup`` iterations, and the precision used."""
    # the compiled path drops its compiling iterations too
    skip = max(warmup, COMPILED_WARMUP) if path == "compiled" else warmup
    tmp = Path(tempfile.mkdtemp(prefix="speed_"))
    ids = [s for s in (data / "train.list").read_text().split() if s][:16]
    (tmp / "train.list").write_text("\n".join(ids) + "\n")  # 8 labeled + 8 unlabeled
    mapping = {
        "data_dir": str(data),
        "train_list": str(tmp / "train.list"),
        "labeled": 8,
        "patch": list(patch),
        "stride": list(patch),  # training only: the test-time stride is never used
        "downsample": downsample,
        "iterations": n + skip,
        "checkpoint_every": 10_000,
        "num_workers": 0,
        "seed": 1337,
        **METHODS[method],
        **PATHS[path],
    }
    cfg = config_from_mapping(mapping, f"bench/speed.py ({method}, {path})")
    try:
        result = train(cfg, tmp / "run", stop_after=n + skip, progress=False)
        import yaml

        runtime = yaml.safe_load((tmp / "run" / "config.yaml").read_text())["runtime"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    times = result.iteration_seconds[skip:]
    if path == "compiled":
        print(
            f"  compiled {method}: the first {skip} iterations took "
            f"{sum(result.iteration_seconds[:skip]):.1f} s (compiling)",
            flush=True,
        )
    return float(np.mean(times)), runtime["precision"]


def step_macs(method: str, patch: Sequence[int]) -> float:
    """True MACs of one training step (forward x 3 for forward + backward), whole batch."""
    from semiseg3d.models import DualNet, VNet
    from semiseg3d.models.complexity import true_macs

    dual = METHODS[method]["method"] == "dual"
    model = DualNet() if dual else VNet()
    nets = [model.resnet, model.vnet] if dual else [model]
    batch = 4 if dual else 2
    return 3.0 * batch * sum(true_macs(net, tuple(patch)) for net in nets)


# -- inference --------------------------------------------------------------------------------


def legacy_sliding_window_probs(
    prob_fn: ProbFn,
    image: np.ndarray,
    patch: Sequence[int],
    stride: Sequence[int],
    batch_size: int = 4,
) -> np.ndarray:
    """The sliding window as it was before the speed work (float32, windows stacked with
    ``torch.stack`` per batch, contiguous memory): the reference for time and equality."""
    padded, pad_widths = pad_to_patch(np.asarray(image), patch)
    corners = window_grid(padded.shape, patch, stride)
    px, py, pz = patch
    with torch.inference_mode():
        volume = torch.as_tensor(np.ascontiguousarray(padded, dtype=np.float32))
        score = torch.zeros((2, *padded.shape), dtype=torch.float32)
        count = torch.zeros(padded.shape, dtype=torch.float32)
        for start in range(0, len(corners), batch_size):
            chunk = corners[start : start + batch_size]
            x = torch.stack([volume[a : a + px, b : b + py, c : c + pz] for a, b, c in chunk])
            probs = prob_fn(x.unsqueeze(1)).float()
            for i, (a, b, c) in enumerate(chunk):
                score[:, a : a + px, b : b + py, c : c + pz] += probs[i]
                count[a : a + px, b : b + py, c : c + pz] += 1.0
        result = (score / count).numpy()
    index = [slice(None)]
    for (left, right), n in zip(pad_widths, result.shape[1:], strict=True):
        index.append(slice(left, n - right))
    return result[tuple(index)]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.count_nonzero((a == 1) & (b == 1))
    total = np.count_nonzero(a == 1) + np.count_nonzero(b == 1)
    return 1.0 if total == 0 else 2.0 * inter / total


def inference_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    cfg, nets = load_trained(args.run)
    # the float32 reference runs the method's own rule on the networks as trained (a
    # preset of the dual network such as LUSEG averages both subnets, SupOnly has one)
    method = get_method(cfg)
    members = method.inference_nets(nets, None)
    data = Path(args.data)
    ids = [s for s in (data / "test.list").read_text().split() if s][: args.cases]
    ds = VolumeDataset(data, ids, cfg.patch, downsample=cfg.downsample, with_label=True)
    volumes = [ds.volume(i).image for i in range(len(ids))]
    stride = tuple(args.stride)
    n_windows = sum(
        len(window_grid(pad_to_patch(v, cfg.patch)[0].shape, cfg.patch, stride)) for v in volumes
    )
    print(f"inference: {len(ids)} volumes, {n_windows} windows, patch {cfg.patch}, stride {stride}")

    prob_fn = method.prob_fn(members)
    accel = resolve_acceleration("auto", "auto", "cpu")
    # the fast path exactly as `semiseg3d test` prepares it (BatchNorm folded, weights in
    # bf16, channels-last); the windows then run under autocast
    _, fast_fn, _ = prepared_rule(cfg, nets, accel)
    warm = torch.zeros((4, 1, *cfg.patch))
    with torch.inference_mode():  # first calls create oneDNN primitives: not timed
        prob_fn(warm)
        with torch.autocast("cpu", dtype=accel.dtype or torch.float32, enabled=bool(accel.dtype)):
            fast_fn(accel.prepare(warm))
    t0 = time.perf_counter()
    legacy = [
        predict_label(legacy_sliding_window_probs(prob_fn, v, cfg.patch, stride)) for v in volumes
    ]
    t_legacy = time.perf_counter() - t0

    t0 = time.perf_counter()
    today32 = [
        predict_label(sliding_window_probs(prob_fn, v, cfg.patch, stride, batch_size=4))
        for v in volumes
    ]
    t_today32 = time.perf_counter() - t0
    differing = sum(int(np.count_nonzero(a != b)) for a, b in zip(legacy, today32, strict=True))

    t0 = time.perf_counter()
    fast = [
        predict_label(
            sliding_window_probs(
                fast_fn,
                v,
                cfg.patch,
                stride,
                batch_size=4,
                amp_dtype=accel.dtype,
                channels_last=accel.channels_last,
            )
        )
        for v in volumes
    ]
    t_fast = time.perf_counter() - t0
    dices = [dice(a, b) for a, b in zip(fast, today32, strict=True)]
    print(
        f"inference: fp32 argmax differs from the legacy path at {differing} voxels; "
        f"{accel.precision} vs fp32 per-case Dice: min {min(dices):.5f}, mean {np.mean(dices):.5f}"
    )
    n = len(ids)
    what = f"test volume ({n} LA-lite, stride {'x'.join(map(str, stride))})"
    patch = "x".join(map(str, cfg.patch))
    return [
        {
            "what": what,
            "patch": patch,
            "precision": "fp32 legacy",
            "seconds": t_legacy / n,
            "ratio": 1.0,
        },
        {
            "what": what,
            "patch": patch,
            "precision": "fp32",
            "seconds": t_today32 / n,
            "ratio": t_legacy / t_today32,
        },
        {
            "what": what,
            "patch": patch,
            "precision": accel.precision
            + (" cl" if accel.channels_last else "")
            + (" folded" if accel.dtype else ""),
            "seconds": t_fast / n,
            "ratio": t_legacy / t_fast,
        },
    ]


# -- table ------------------------------------------------------------------------------------


def mfu(method: str, patch: Sequence[int], seconds: float, precision: str, peak: str) -> str:
    """Model FLOPs utilisation of one training step on CUDA ("" off CUDA or without a peak)."""
    if not torch.cuda.is_available():
        return ""
    if peak == "auto":
        from gpu_env import peak_tflops

        tflops = peak_tflops(torch.cuda.get_device_name(0), precision.split()[0])
    else:
        tflops = float(peak)
    if not tflops:
        return ""
    return f"{step_macs(method, patch) * 2 / seconds / (tflops * 1e12):.3f}"


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    stamp = {"machine": machine(), "date": dt.date.today().isoformat()}
    rows = [{**{"mfu": ""}, **r, **stamp} for r in rows] + [dict(r) for r in RECORDED]
    keys = {(r["what"], r["patch"], r["precision"], r["machine"]) for r in rows}
    kept: list[dict[str, Any]] = []
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            kept = [
                r
                for r in csv.DictReader(f)
                if (r["what"], r["patch"], r["precision"], r["machine"]) not in keys
            ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in [*kept, *rows]:
            r = dict(r)
            for k in ("seconds", "ratio"):
                if isinstance(r[k], float):
                    r[k] = f"{r[k]:.3f}"
            writer.writerow(r)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_dir() / "data" / "LA"))
    p.add_argument(
        "--volumes",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="train on 16 synthetic volumes of this shape instead of --data (rows say so)",
    )
    p.add_argument(
        "--patch",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="one custom patch (no downsampling) instead of --patches (small dry runs)",
    )
    p.add_argument("--run", default="", help="trained run folder for the inference rows")
    p.add_argument("--cases", type=int, default=20, help="test volumes for the inference rows")
    p.add_argument("--stride", type=int, nargs=3, default=(9, 9, 2))
    p.add_argument("--iterations", type=int, default=5, help="timed iterations (LA-lite patch)")
    p.add_argument("--paper-iterations", type=int, default=2, help="timed iterations (112x112x80)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="alternate the paths this often (medians)")
    p.add_argument("--patches", nargs="+", default=["lite", "paper"], choices=list(PATCHES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument(
        "--paths",
        nargs="+",
        default=list(PATHS),
        choices=list(PATHS),
        help="training paths to time (the first is the ratios' reference)",
    )
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument(
        "--peak-tflops",
        default="auto",
        help="GPU dense peak for the MFU column: auto (bench/gpu_env.py's table) or TFLOP/s",
    )
    p.add_argument("--csv", default=str(repo_root() / "reports" / "bench" / "speed.csv"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"speed: {vars(args)} on {machine()}", flush=True)
    for r in RECORDED:
        print(
            f"{r['what']}: {r['seconds']:.2f} s at {r['patch']} ({r['precision']}; "
            f"{r['machine']}, {r['date']}): not measured by this run"
        )
    rows: list[dict[str, Any]] = []
    suffix = ""
    train_data = Path(args.data)  # the inference rows always read --data
    if args.volumes and not args.skip_training:
        from gpu_data import write_volumes

        train_data = Path(tempfile.mkdtemp(prefix="speed_volumes_"))
        write_volumes(train_data, 16, 1, tuple(args.volumes), lite=False)
        suffix = f" (synthetic {'x'.join(map(str, args.volumes))})"
    patches = {"custom": (tuple(args.patch), 1)} if args.patch else PATCHES
    keys = ["custom"] if args.patch else args.patches
    for key in [] if args.skip_training else keys:
        patch, downsample = patches[key]
        n = args.paper_iterations if key == "paper" else args.iterations
        for method in args.methods:
            # the paths alternate for --rounds rounds; each path's row is the median
            # of its rounds (this VM's speed drifts by 10-30 % over minutes)
            runs: dict[str, list[float]] = {path: [] for path in args.paths}
            precisions: dict[str, str] = {}
            for _ in range(args.rounds):
                for path in runs:
                    seconds, precisions[path] = train_seconds(
                        train_data, method, path, patch, downsample, n, args.warmup
                    )
                    runs[path].append(seconds)
            ref = None
            for path in runs:
                seconds, precision = float(np.median(runs[path])), precisions[path]
                ref = seconds if ref is None else ref
                row = {
                    "what": f"train iteration {method}{suffix}",
                    "patch": "x".join(map(str, patch)),
                    "precision": {"fp32": "fp32 eager", "fast": precision}.get(
                        path, f"{precision} compiled"
                    ),
                    "seconds": seconds,
                    "ratio": ref / seconds,
                }
                row["mfu"] = mfu(method, patch, seconds, precision, args.peak_tflops)
                rows.append(row)
                print(
                    f"{row['what']:32s} {row['patch']:>10s} {row['precision']:>12s} "
                    f"{seconds:8.3f} s  x{row['ratio']:.2f}  mfu {row['mfu'] or '-'}  (rounds: "
                    + ", ".join(f"{s:.3f}" for s in runs[path])
                    + ")",
                    flush=True,
                )
    if args.run and not args.skip_inference:
        for row in inference_rows(args):
            rows.append(row)
            print(
                f"{row['what']:32s} {row['patch']:>10s} {row['precision']:>12s} "
                f"{row['seconds']:8.3f} s  x{row['ratio']:.2f}",
                flush=True,
            )
    write_rows(rows, Path(args.csv))
    if suffix:
        shutil.rmtree(train_data, ignore_errors=True)
    print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
