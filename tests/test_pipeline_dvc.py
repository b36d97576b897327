"""`dvc repro` over the Snakemake phases, in a temporary copy of the workflow: the first
repro runs every stage, a second one is a no-op, and after a training parameter changes it
reruns train, evaluate and report but not data."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overlay
from test_pipeline_dag import copy_workflow, tool, tool_env

from semiseg3d.training.run_config import deep_merge, load_params

pytestmark = pytest.mark.slow


def _run(cwd: Path, *cmd: str, timeout: int = 600) -> str:
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-4000:]}"
    return out


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_dvc_repro_reruns_training_not_data(root: Path, tmp_path: Path) -> None:
    repo = copy_workflow(root, tmp_path)
    params = deep_merge(
        load_params(root / "params.yaml", [root / "config" / "demo.yaml"]),
        tiny_overlay(["suponly"]),
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    dvc = tool("dvc")
    _run(repo, tool("git", required=False), "init", "-q")
    _run(repo, dvc, "init", "-q")

    first = _run(repo, dvc, "repro")
    for stage in ("data", "train", "evaluate", "report"):
        assert f"Running stage '{stage}'" in first
    run = repo / "results/runs/synthetic/suponly/r50/s1337"
    assert (run / "model_final.pt").is_file() and (run / "metrics.csv").is_file()
    assert "mean.dice" in _run(repo, dvc, "metrics", "show")  # the evaluate stage's metrics
    assert (repo / "reports/summary.md").is_file() and (repo / "reports/report.html").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["iterations"] == 2
    data_before = _mtimes(repo / "data")
    model_before = (run / "model_final.pt").stat().st_mtime_ns

    # nothing changed: nothing reruns
    second = _run(repo, dvc, "repro")
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in _run(repo, dvc, "status")

    # a training parameter changes: train, evaluate and report rerun, data does not
    params["train"]["synthetic"]["iterations"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    status = _run(repo, dvc, "status")
    assert re.search(r"^train:", status, flags=re.M)  # the stage whose params section changed
    assert re.search(r"modified:\s+train$", status, flags=re.M)
    assert not re.search(r"^data:", status, flags=re.M)
    third = _run(repo, dvc, "repro")
    assert "Stage 'data' didn't change, skipping" in third
    for stage in ("train", "evaluate", "report"):
        assert f"Running stage '{stage}'" in third
    assert "Running stage 'data'" not in third
    assert yaml.safe_load((run / "config.yaml").read_text())["iterations"] == 3
    assert (run / "model_final.pt").stat().st_mtime_ns > model_before
    assert _mtimes(repo / "data") == data_before  # not even Snakemake touched the data
    assert "Data and pipelines are up to date" in _run(repo, dvc, "status")
    assert os.path.getsize(repo / "reports/report.html") > 0
