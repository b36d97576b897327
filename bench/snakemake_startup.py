"""Benchmark: how long `snakemake -n` takes on the full paper grid, and what the SLURM
executor plugin adds to every `snakemake` call when it is importable.

Snakemake imports every executor plugin it finds at start-up. snakemake-executor-plugin-slurm
runs `which sacct`, `which squeue` and, when `sinfo` is on PATH, `scontrol show config`
(timeout 10 s) while its module is imported; on a machine whose controller does not answer
(e.g. after `scripts/run-tests.sh` stopped its test cluster) that is most of the start-up.
The plugin is therefore not in the default install (`pip install -e '.[slurm]'` adds it).

The script copies the workflow files to a temporary folder (no data, no results), then runs,
side by side in one process:

- ``snakemake -n --quiet`` on the paper grid (``params.yaml``): what a user waits for;
- ``python -c "import snakemake_executor_plugin_slurm"`` from the environment or from
  ``--plugins DIR`` (``.slurm-plugins/`` as ``scripts/run-tests.sh`` installs it), when the
  plugin is found: what it would add;
- ``python -c "import snakemake"``: the floor.

It prints the median of ``--repeats`` runs of each, and the plugin import as a fraction of
the dry run. It is a benchmark, not a test: run it by hand, on an idle machine for numbers
worth quoting::

    python bench/snakemake_startup.py [--repeats 3] [--plugins .slurm-plugins]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "params.yaml", "dvc.yaml", ".dvcignore")
WORKFLOW_DIRS = ("workflow", "config")


def _env(plugins: Path | None) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if plugins is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugins), env.get("PYTHONPATH")) if p)
    return env


def _time(cmd: list[str], cwd: Path, env: dict[str, str], repeats: int) -> tuple[float, int]:
    """Median wall seconds of ``cmd`` over ``repeats`` runs, and the last exit code."""
    times, rc = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        rc = proc.returncode
        if rc != 0:
            print(f"  {' '.join(cmd)} exited {rc}: {(proc.stderr or proc.stdout)[-500:]}")
            break
    return statistics.median(times), rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (median)")
    parser.add_argument(
        "--plugins",
        type=Path,
        default=None,
        help="folder holding snakemake_executor_plugin_slurm (default: look in the environment)",
    )
    args = parser.parse_args()
    snakemake = Path(sys.executable).with_name("snakemake")
    if not snakemake.exists():
        snakemake = Path(shutil.which("snakemake") or "snakemake")
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="snakemake-startup-") as tmp:
        repo = Path(tmp)
        for name in WORKFLOW_FILES:
            shutil.copy(ROOT / name, repo / name)
        for name in WORKFLOW_DIRS:
            shutil.copytree(ROOT / name, repo / name)
        env = _env(None)
        in_env = (
            subprocess.run(
                [py, "-c", "import snakemake_executor_plugin_slurm"], env=env, capture_output=True
            ).returncode
            == 0
        )
        print(
            f"machine: {platform.node()} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}); "
            f"sinfo on PATH: {shutil.which('sinfo') is not None}; "
            f"SLURM plugin in the environment: {in_env}"
        )
        dry, rc = _time([str(snakemake), "-n", "--quiet"], repo, env, args.repeats)
        print(f"snakemake -n --quiet (paper grid): {dry:.2f} s (exit {rc})")
        floor, _ = _time([py, "-c", "import snakemake"], repo, env, args.repeats)
        print(f"python -c 'import snakemake':      {floor:.2f} s")
        plugin_env = _env(args.plugins) if args.plugins else env
        if args.plugins or in_env:
            imp, rc = _time(
                [py, "-c", "import snakemake_executor_plugin_slurm"],
                repo,
                plugin_env,
                args.repeats,
            )
            where = args.plugins or "the environment"
            print(
                f"import snakemake_executor_plugin_slurm ({where}): {imp:.2f} s (exit {rc}) = "
                f"{imp / dry:.2f} x the dry run above"
            )
        else:
            print("SLURM plugin: not importable here, so it adds nothing to the dry run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
