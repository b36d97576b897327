"""DVC over the Snakemake phases.

- A fresh `git clone` of the checkout is a DVC project: `dvc status` and a dry repro work
  with no other step (the committed `.dvc/`).
- `dvc repro` in a temporary copy of the workflow: the first repro runs every stage, a
  second one is a no-op, and after a training parameter changes it reruns train, evaluate
  and report but not data.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overlay
from test_pipeline_dag import copy_workflow, tool, tool_env

from semiseg3d.grid.run_config import deep_merge, load_params

STAGES = ("data", "train", "evaluate", "report")


def _run(cwd: Path, *cmd: str, timeout: int = 600) -> str:
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-4000:]}"
    return out


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_fresh_clone_is_a_dvc_project(root: Path, tmp_path: Path) -> None:
    """`git clone`, then `dvc status` and `dvc repro --dry`: no `dvc init` or other step."""
    git = tool("git", required=False)
    head = subprocess.run(
        [git, "-C", str(root), "rev-parse", "--verify", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip(f"{root} is not a git checkout with a commit")
    clone = tmp_path / "clone"
    _run(tmp_path, git, "clone", "-q", str(root), str(clone))
    for name in (".dvc/config", ".dvc/.gitignore", ".dvcignore", "dvc.yaml"):
        assert (clone / name).is_file(), f"{name} is not committed"
    dvc = tool("dvc")
    status = _run(clone, dvc, "status")
    for stage in STAGES:
        assert re.search(rf"^{stage}:", status, flags=re.M), status
    # every stage's command, in the order of the stage graph, before any output exists
    dry = _run(clone, dvc, "repro", "--dry")
    positions = [dry.find(f"> snakemake {stage} --cores all") for stage in STAGES]
    assert -1 not in positions and positions == sorted(positions), dry
    assert not (clone / "data" / "processed").exists()  # a dry run makes nothing
    assert _run(clone, git, "status", "--porcelain").strip() == ""


@pytest.mark.slow
def test_dvc_repro_reruns_training_not_data(root: Path, tmp_path: Path) -> None:
    repo = copy_workflow(root, tmp_path)
    params = deep_merge(
        load_params(root / "params.yaml", [root / "config" / "demo.yaml"]),
        tiny_overlay(["suponly"]),
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    dvc = tool("dvc")
    _run(repo, tool("git", required=False), "init", "-q")
    # the committed DVC project files, as a clone has them (no `dvc init`)
    (repo / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(root / ".dvc" / name, repo / ".dvc" / name)

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
