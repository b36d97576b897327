"""The demo DAG end to end through `snakemake` (config/demo.yaml with fewer iterations), in a
temporary copy of the workflow: data, every run trained and tested, the report's tables and
figures, then `snakemake --report` bundles them into one HTML file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from test_pipeline_dag import copy_workflow, expected_runs, run_snakemake

from semiseg3d.grid.run_config import deep_merge, load_params

pytestmark = pytest.mark.slow

#: the demo as it is, but 3 iterations per run
FAST = {"train": {"synthetic": {"iterations": 3, "lr_steps": [2], "checkpoint_every": 3}}}


def _metrics(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {row["case"]: row for row in csv.DictReader(f)}


def test_demo_dag_end_to_end(root: Path, tmp_path: Path) -> None:
    repo = copy_workflow(root, tmp_path)
    (repo / "fast.yaml").write_text(yaml.safe_dump(FAST), encoding="utf-8")
    overlays = ["--configfile", "config/demo.yaml", "fast.yaml"]
    proc = run_snakemake(repo, "--cores", "2", "--resources", "gpu=1", *overlays, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    params = deep_merge(load_params(root / "params.yaml", [root / "config/demo.yaml"]), FAST)
    runs = expected_runs(params)
    assert len(runs) == 8  # full, no_pgl, cr_kl, lam0.3, suponly x2, dtc, urpc
    test_ids = (repo / "data/splits/synthetic/r20/test.list").read_text().split()
    assert len(test_ids) == params["data"]["synthetic"]["synth"]["test"]
    for run in sorted(runs):
        folder = repo / run
        _, _, dataset, variant, ratio, seed = Path(run).parts
        cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        assert cfg["iterations"] == 3 and cfg["dataset"] == dataset
        assert cfg["extra"] == {"variant": variant, "ratio": int(ratio[1:]), "seed": int(seed[1:])}
        assert (folder / "model_final.pt").is_file()
        rows = _metrics(folder / "metrics.csv")
        assert set(rows) == set(test_ids) | {"mean", "sd", "sem"}
        for case in test_ids:
            assert 0.0 <= float(rows[case]["dice"]) <= 1.0
        assert sorted(
            p.name.removesuffix(".nii.gz") for p in (folder / "predictions").glob("*.nii.gz")
        ) == sorted(test_ids)
        # the summary rows as YAML (the DVC evaluate stage's metrics)
        summary = repo / "results/metrics" / dataset / variant / ratio / f"{seed}.yaml"
        values = yaml.safe_load(summary.read_text(encoding="utf-8"))
        for row in ("mean", "sd", "sem"):
            for key in ("dice", "jaccard", "hd95", "asd"):
                assert values[row][key] == pytest.approx(float(rows[row][key]), rel=1e-12)
    # labeled counts of the demo's splits: r20 from params (3 of 16), r100 = all 16
    for ratio, n_labeled in (("r20", 3), ("r100", 16)):
        split = repo / "data/splits/synthetic" / ratio
        assert len((split / "labeled.list").read_text().split()) == n_labeled
        assert len((split / "train.list").read_text().split()) == 16

    reports = repo / "reports"
    assert (reports / "summary.md").is_file() and (reports / "runs_index.csv").is_file()
    tables = {p.name for p in (reports / "tables").iterdir()}
    for prefix in ("table_main", "table4", "table5"):
        for ext in (".md", ".tex", ".csv"):
            assert any(n.startswith(prefix) and n.endswith(ext) for n in tables), (prefix, ext)
    main = next((reports / "tables").glob("table_main_synthetic*.md")).read_text(encoding="utf-8")
    assert "| DTC |" in main and "| URPC |" in main  # a new baseline's row, end to end
    figures = {
        p.relative_to(reports / "figures").as_posix() for p in (reports / "figures").rglob("*.png")
    }
    assert "qualitative_synthetic.png" in figures and "figure8_synthetic.png" in figures
    assert sum(f.startswith("curves/") for f in figures) == 8

    # nothing left to do; then one HTML bundle of the tables, figures and run metrics
    again = run_snakemake(repo, "-n", *overlays)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    html = run_snakemake(repo, *overlays, "--report", "reports/report.html")
    assert html.returncode == 0, html.stderr[-3000:]
    text = (reports / "report.html").read_text(encoding="utf-8")
    for name in ("qualitative_synthetic.png", "figure8_synthetic.png", "runs_index.csv"):
        assert name in text
    assert any(n in text for n in tables if n.endswith(".csv"))
