"""The demo's training jobs through SLURM: `snakemake --executor slurm` (the slurm-ci profile)
on the local one-node cluster that scripts/run-tests.sh starts
(workflow/profiles/slurm-ci/start-cluster.sh).

The SLURM executor plugin is not in the default install (the `slurm` extra): it may be in
the environment, or in the folder ``$SEMISEG3D_SLURM_PLUGINS`` (scripts/run-tests.sh
installs it to ``.slurm-plugins/``), which this test puts on PYTHONPATH."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overlay
from test_pipeline_dag import copy_workflow, tool, tool_env

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _cluster_ready() -> str | None:
    """None when a SLURM node takes jobs, else why the test cannot run."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM client commands (sinfo, sbatch) not found; scripts/run-tests.sh installs them as root"
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = proc.stdout.split()
    if proc.returncode != 0 or not states:
        return f"SLURM controller not reachable (sinfo: {proc.stderr.strip() or 'no nodes'}); start it with workflow/profiles/slurm-ci/start-cluster.sh"
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc", "comp") for s in states):
        return f"no SLURM node ready (states {states})"
    return None


def _plugin_env() -> dict[str, str] | None:
    """The tools' environment with the SLURM plugin importable, or None when it is nowhere."""
    env = tool_env()
    folder = os.environ.get("SEMISEG3D_SLURM_PLUGINS")
    if folder and (Path(folder) / "snakemake_executor_plugin_slurm").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (folder, env.get("PYTHONPATH")) if p)
        return env
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None:
        return env
    return None


def test_demo_training_runs_as_slurm_jobs(root: Path, tmp_path: Path) -> None:
    reason = _cluster_ready()
    if reason:
        pytest.skip(reason)
    env = _plugin_env()
    if env is None:
        pytest.skip(
            "snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]', or "
            "scripts/run-tests.sh as root puts it in .slurm-plugins/)"
        )
    repo = copy_workflow(root, tmp_path)
    (repo / "tiny.yaml").write_text(
        yaml.safe_dump(tiny_overlay(["full", "suponly"])), encoding="utf-8"
    )
    cmd = [tool("snakemake"), "train", "--profile", "workflow/profiles/slurm-ci"]
    cmd += ["--configfile", "config/demo.yaml", "tiny.yaml"]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    job_ids = {}
    for variant in ("full", "suponly"):
        run = repo / f"results/runs/synthetic/{variant}/r50/s1337"
        assert (run / "model_final.pt").is_file()
        log = (repo / f"results/logs/train/synthetic/{variant}/r50/s1337.log").read_text()
        found = re.search(r"slurm_job_id=(\d+)", log)
        assert found, f"{variant}: the train log records no SLURM job id:\n{log[:500]}"
        job_ids[variant] = found.group(1)
        # the rule's gpu=1 became --gpus=1: SLURM gave the job the (fake) GPU 0
        assert "cuda_visible_devices=0" in log
    assert len(set(job_ids.values())) == 2

    # the controller still lists the finished jobs (MinJobAge 300 s), completed
    proc = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i %T %j", "-j", ",".join(job_ids.values())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    states = dict(line.split()[:2] for line in proc.stdout.splitlines() if line.strip())
    assert set(states) == set(job_ids.values()), proc.stdout + proc.stderr
    assert set(states.values()) == {"COMPLETED"}
    # the executor's own per-job logs (kept by the profile) name the train rule
    slurm_logs = list((repo / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert any("train_run" in str(p) for p in slurm_logs)
