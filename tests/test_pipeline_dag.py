"""The Snakemake DAG without running it: `snakemake -n` lists every run of the grid,
`snakemake --lint` and `snakefmt --check` are clean, dvc.yaml matches the Snakefile."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from semiseg3d.config.run import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WORKFLOW_FILES = ("Snakefile", "params.yaml", "dvc.yaml", ".dvcignore")
WORKFLOW_DIRS = ("workflow", "config")


def tool(name: str, *, required: bool = True) -> str:
    """Path of a command-line tool: beside this interpreter (the venv) or on PATH.

    A missing project dependency (snakemake, dvc, snakefmt) fails the test; a missing
    system tool that is not required (git) skips it.
    """
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        message = f"{name} is not installed"
        if required:
            pytest.fail(f"{message} (pip install -e '.[test]' installs it)")
        pytest.skip(message)
    return found


def tool_env() -> dict[str, str]:
    """This environment with the interpreter's folder (the venv's bin) first on PATH."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def copy_workflow(root: Path, dest: Path) -> Path:
    """The workflow files of the checkout (not its data or results) copied to ``dest``."""
    for name in WORKFLOW_FILES:
        shutil.copy(root / name, dest / name)
    for name in WORKFLOW_DIRS:
        shutil.copytree(root / name, dest / name)
    return dest


def run_snakemake(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``snakemake ARGS`` in ``cwd`` with this environment's tools on PATH."""
    return subprocess.run(
        [tool("snakemake"), *args],
        cwd=cwd,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def expected_runs(params: dict[str, Any]) -> set[str]:
    """The run folders of the grid, worked out here from the grid definition alone.

    A grid point is (dataset, ratio, variant, seed) for every enabled block. A variant whose
    switches all equal the dataset's own settings (TrainConfig default < train.defaults <
    train.<dataset>) is the `full` run, trained once under that name.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name != "extra"}
    grid = params["grid"]
    runs: set[str] = set()
    for block in grid["experiments"]:
        if not block.get("enabled", True):
            continue
        for ds in block.get("datasets", grid["datasets"]):
            own = {**defaults, **params["train"].get("defaults", {}), **params["train"].get(ds, {})}
            for variant in block["variants"]:
                switches = params["variants"][variant] or {}
                same = all(
                    own.get(k) == v or (isinstance(v, list) and list(own.get(k, ())) == v)
                    for k, v in switches.items()
                )
                name = "full" if same else variant
                for ratio in block["ratios"]:
                    for seed in grid["seeds"]:
                        runs.add(f"results/runs/{ds}/{name}/r{ratio}/s{seed}")
    return runs


def _dry_run_runs(out: str) -> tuple[set[str], dict[str, int]]:
    runs = set(re.findall(r"output: (results/runs/\S+)/model_final\.pt", out))
    counts = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M)}
    return runs, counts


def test_dry_run_lists_every_run_of_the_paper_grid(root: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    expected = expected_runs(params)
    # by hand, per dataset and seed: Tables 1-3 full x2 + SupOnly x3; Table 4: 7 ablations
    # (+ full at 10 %); Table 5: cr_kl x4 + full at 15 and 25 %; Table 6: no_pgl_third x2;
    # Table 7: 8 alphas (the dataset's own alpha is full); Figure 8: 4 tau, 4 T and 5 lam
    # values (0.6, 0.5 and the dataset's lam are full) = 41; x 3 datasets x 3 seeds = 369.
    # Baselines of Tables 1-3, shared recipe, per seed: LA and Pancreas 10 methods (UA-MT,
    # SASSNet, DTC, MC-Net, SS-Net, MC-Net+, MCF, BCP, LUSEG, ML-RPL) x 2 ratios = 20 each,
    # BraTS 7 (UA-MT, DTC, URPC, CPCL, AC-MT, BCP, ML-RPL) x 2 = 14; own recipes where the
    # specs give one: LA 9 (all but LUSEG, whose own = shared) x 2 = 18, Pancreas 8 (no BCP)
    # x 2 = 16, BraTS 2 (UA-MT, URPC) x 2 = 4; x 3 seeds
    assert len(expected) == 41 * 3 * 3 + (20 + 20 + 14) * 3 + (18 + 16 + 4) * 3
    proc = run_snakemake(copy_workflow(root, tmp_path), "-n", "train")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs, counts = _dry_run_runs(proc.stdout)
    assert runs == expected
    assert counts["train_run"] == len(expected)
    assert counts["run_config"] == len(expected)


def test_dry_run_of_the_demo(root: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    demo = yaml.safe_load((root / "config" / "demo.yaml").read_text(encoding="utf-8"))
    params["grid"] = demo["grid"]  # the overlay replaces the grid wholesale
    for section in ("train", "data"):
        for ds, entry in demo.get(section, {}).items():
            params[section].setdefault(ds, {}).update(entry)
    expected = expected_runs(params)
    assert {Path(r).parts[3] for r in expected} == {
        "full",
        "suponly",
        "dtc",
        "urpc",
        "no_pgl",
        "cr_kl",
        "lam0.3",
    }
    proc = run_snakemake(copy_workflow(root, tmp_path), "-n", "--configfile", "config/demo.yaml")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs, counts = _dry_run_runs(proc.stdout)
    assert runs == expected
    assert counts["test_run"] == len(expected)
    assert counts["synth"] == 1 and counts["build_report"] == 1
    assert "fetch" not in counts and "convert" not in counts


def test_lint_clean(root: Path, tmp_path: Path) -> None:
    proc = run_snakemake(
        copy_workflow(root, tmp_path), "--lint", "--configfile", "config/demo.yaml"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Lints for" not in proc.stdout + proc.stderr


def test_snakefmt_clean(root: Path) -> None:
    files = [root / "Snakefile", *sorted((root / "workflow" / "rules").glob("*.smk"))]
    proc = subprocess.run(
        [tool("snakefmt"), "--check", *map(str, files)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _target_rules(root: Path) -> set[str]:
    text = (root / "Snakefile").read_text(encoding="utf-8")
    return set(re.findall(r"^rule (\w+):", text, flags=re.M))


def test_dvc_stages_match_snakefile_targets_and_params(root: Path) -> None:
    dvc = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    stages = dvc["stages"]
    targets = _target_rules(root) - {"all"}
    assert set(stages) == targets == {"data", "train", "evaluate", "report"}
    for name, stage in stages.items():
        cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        assert cmds[0].startswith("snakemake ") and cmds[0].split()[1] == name, name
        for path in stage.get("deps", []):
            produced = any(
                path == next(iter(o)) if isinstance(o, dict) else path == o
                for s in stages.values()
                for o in s.get("outs", []) + s.get("metrics", []) + s.get("plots", [])
            )
            assert produced or (root / path).exists(), f"{name}: dep {path} does not exist"
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            options = next(iter(out.values())) if isinstance(out, dict) else {}
            assert options.get("persist") is True, f"{name}: {out} is not persist: true"
    used = [p for s in stages.values() for p in s.get("params", [])]
    assert set(used) == set(params), "every params.yaml section is some stage's parameter"
    # the data phase must not depend on training settings (so a training change skips it)
    assert set(stages["data"]["params"]) == {"data", "grid"}
    assert {"train", "variants"} <= set(stages["train"]["params"])
