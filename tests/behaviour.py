"""Short deterministic runs of every method, and what they compute (issue 17).

Each run trains a few float32 iterations on a tiny synthetic dataset on the CPU
(``num_workers: 0``, ``amp: none``) through the command line (``semiseg3d synth``, ``train``,
``test``), then reads back every tensor of ``model_final.pt`` and every ``metrics*.csv``:

- ``sha256``: of each tensor's bytes (dtype and shape included) and of each CSV file - equal
  only on the same machine and library build;
- ``sum``, ``norm`` (float64) of each tensor and the metrics' values - comparable on any CPU
  at a relative tolerance (``tests/test_behaviour.py``, 1e-4).

Used two ways:

- ``tests/test_behaviour.py`` re-runs the runs and compares sums, norms and metrics with the
  fixture ``tests/data/behaviour_a3e8dfd.json`` recorded on main at a3e8dfd, before the
  redesign of issue 17 moved any code;
- by hand::

      PYTHONPATH=src python tests/behaviour.py record tests/data/behaviour_a3e8dfd.json
      PYTHONPATH=src python tests/behaviour.py check tests/data/behaviour_a3e8dfd.json

  ``check`` compares the SHA-256 of every tensor and CSV too (meaningful on the machine that
  recorded the fixture; its CPU and torch version are in the file).

Only the command line and the run folder's files are used, so the same code runs on the
code before and after the redesign.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = ["RUNS", "make_data", "run_one", "compare", "main"]

#: every key of the short runs (the synthetic data have 6 training cases, 2 labeled)
BASE: dict[str, Any] = {
    "dataset": "synthetic",
    "labeled": 2,
    "patch": [16, 16, 16],
    "stride": [16, 16, 16],
    "iterations": 4,
    "lr": 0.05,
    "lr_steps": [],
    "rampup_unit": 1,
    "rampup_length": 4,
    "checkpoint_every": 100,
    "num_workers": 0,
    "device": "cpu",
    "amp": "none",
    "channels_last": False,
    "cache_volumes": False,
    "seed": 5,
}

#: run name -> config keys laid over :data:`BASE`
RUNS: dict[str, dict[str, Any]] = {
    "dual_paper": {"method": "dual", "mode": "paper"},
    "dual_code_faithful": {"method": "dual", "mode": "code_faithful"},
    "suponly": {"method": "suponly"},
    "uamt": {"method": "uamt"},
    "dtc": {"method": "dtc"},
    "mcnet": {"method": "mcnet"},
    "mcnet_plus": {"method": "mcnet_plus"},
    "mcf": {"method": "mcf"},
    # both stages: 2 pre-training steps, then 2 self-training steps; halves of 1 + 1 need a
    # bottleneck larger than one voxel for BatchNorm, hence the larger patch
    "bcp": {"method": "bcp", "bcp_pretrain_steps": 2, "iterations": 2, "patch": [32, 32, 16]},
}


def _cli(*argv: str) -> None:
    from semiseg3d.cli import main as cli_main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = cli_main(list(argv))
    if rc != 0:
        raise RuntimeError(f"semiseg3d {' '.join(argv)} exited with {rc}")


def make_data(folder: Path) -> Path:
    """The synthetic dataset of the runs (6 training + 2 test cases of 32 x 32 x 16)."""
    data = folder / "data"
    _cli(
        "synth", "--out", str(data), "--cases", "6", "--test", "2",
        "--shape", "32", "32", "16", "--seed", "0",
    )  # fmt: skip
    return data


def _tensor_record(t: torch.Tensor) -> dict[str, Any]:
    arr = t.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{arr.dtype}{tuple(arr.shape)}".encode())
    digest.update(arr.numpy().tobytes())
    as64 = arr.double()
    return {
        "sha256": digest.hexdigest(),
        "sum": float(as64.sum()),
        "norm": float(as64.norm()),
        "numel": arr.numel(),
    }


def _metrics(path: Path) -> dict[str, Any]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    values = {
        f"{row['case']}/{key}": float(value)
        for row in rows
        for key, value in row.items()
        if key != "case" and value not in ("", None)
    }
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "values": values}


def run_one(name: str, data: Path, folder: Path) -> dict[str, Any]:
    """Train and test run ``name`` on ``data`` in ``folder/name``; what it computed."""
    cfg = {**BASE, **RUNS[name], "data_dir": str(data)}
    cfg_file = folder / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=True), encoding="utf-8")
    run = folder / name
    _cli("train", "--config", str(cfg_file), "--out", str(run), "--progress", "off")
    _cli("test", "--run", str(run))
    final = torch.load(run / "model_final.pt", weights_only=True, map_location="cpu")
    tensors = {
        f"{net}/{key}": _tensor_record(value)
        for net, state in sorted(final["models"].items())
        for key, value in state.items()
    }
    metrics = {p.name: _metrics(p) for p in sorted(run.glob("metrics*.csv"))}
    return {"tensors": tensors, "metrics": metrics}


def _close(a: float, b: float, rel: float, scale: float = 0.0) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel * scale)


def compare(
    got: dict[str, Any], want: dict[str, Any], rel: float = 1e-4, hashes: bool = False
) -> list[str]:
    """Differences between two records of one run (empty = the same).

    Sums and norms compare at relative tolerance ``rel`` (a sum near zero against ``rel``
    times the tensor's norm), metrics at ``rel`` (absolute ``rel`` near zero); ``hashes``
    also compares every SHA-256.
    """
    out: list[str] = []
    if set(got["tensors"]) != set(want["tensors"]):
        out.append(f"tensor names differ: {sorted(set(got['tensors']) ^ set(want['tensors']))}")
    for key, w in want["tensors"].items():
        g = got["tensors"].get(key)
        if g is None:
            continue
        if not _close(g["norm"], w["norm"], rel):
            out.append(f"{key}: norm {g['norm']!r} != {w['norm']!r}")
        if not _close(g["sum"], w["sum"], rel, max(w["norm"], 1e-12)):
            out.append(f"{key}: sum {g['sum']!r} != {w['sum']!r}")
        if hashes and g["sha256"] != w["sha256"]:
            out.append(f"{key}: sha256 differs")
    if set(got["metrics"]) != set(want["metrics"]):
        out.append(f"metrics files differ: {sorted(got['metrics'])} != {sorted(want['metrics'])}")
    for fname, w in want["metrics"].items():
        g = got["metrics"].get(fname)
        if g is None:
            continue
        if set(g["values"]) != set(w["values"]):
            out.append(f"{fname}: columns/rows differ")
        for key, value in w["values"].items():
            if key in g["values"] and not _close(g["values"][key], value, rel, 1.0):
                out.append(f"{fname} {key}: {g['values'][key]!r} != {value!r}")
        if hashes and g["sha256"] != w["sha256"]:
            out.append(f"{fname}: sha256 differs")
    return out


def _machine() -> dict[str, str]:
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return {
        "cpu": model,
        "node": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": commit,
    }


def main(argv: list[str] | None = None) -> int:
    """``record FILE`` or ``check FILE`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("file", type=Path)
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_data(folder)
        got = {name: run_one(name, data, folder) for name in args.runs}
    if args.action == "record":
        record = {"machine": _machine(), "base": BASE, "runs_config": RUNS, "runs": got}
        args.file.parent.mkdir(parents=True, exist_ok=True)
        args.file.write_text(
            json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8"
        )
        print(f"recorded {len(got)} runs -> {args.file}")
        return 0
    want = json.loads(args.file.read_text(encoding="utf-8"))
    print(f"fixture machine: {want['machine']}\nthis machine:    {_machine()}")
    bad = 0
    for name, rec in got.items():
        diffs = compare(rec, want["runs"][name], hashes=True)
        n_t = len(rec["tensors"])
        print(f"{name}: {'same hashes and values' if not diffs else 'DIFFERENT'} ({n_t} tensors)")
        for d in diffs[:10]:
            print(f"  {d}")
        bad += bool(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
