"""``bench/gpu_check.sh --cpu-dry-run``: every stage of the first GPU run, at tiny sizes on the
CPU, so that the script, the CUDA tests and the benches it drives cannot rot while no GPU is
lent (issue 20: it must pass in CI in under 2 minutes)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

#: stage -> the status a dry run must end with (wheels runs only where bench/gpu_wheels.sh
#: filled .whl/)
EXPECTED = {
    "env": "ok",
    "data": "ok",
    "cuda": "ok",
    "speed": "ok",
    "lite_suponly": "ok",
    "lite_code_faithful": "ok",
    "lite_paper": "ok",
    "speed_compiled": "ok",
    "full": "ok",
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))


@pytest.mark.slow
def test_cpu_dry_run_runs_every_stage(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "SEMISEG3D_TEST_DEVICE")}
    env.update(PYTHON=sys.executable, TMPDIR=str(tmp_path))
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(root / "bench" / "gpu_check.sh"), "--cpu-dry-run", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - t0
    print(f"gpu_check.sh --cpu-dry-run: {seconds:.0f} s\n{proc.stdout[-3000:]}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    status = {r["stage"]: r for r in _rows(out / "summary.tsv")}
    for stage, expected in EXPECTED.items():
        assert status[stage]["status"] == expected, (stage, status.get(stage))
    assert status["wheels"]["status"] in ("ok", "skipped")
    # the device tool brings back at most 8 files, no folders needed
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "details.tar.gz",
        "env.txt",
        "gpu_check.log",
        "la_full.csv",
        "la_lite.csv",
        "la_lite_cases.csv",
        "speed.csv",
        "summary.tsv",
    ], files
    env_txt = (out / "env.txt").read_text()
    assert "torch: " in env_txt and "cuda_available: " in env_txt
    assert "nvidia-smi" in env_txt  # found or "not found": the line is there either way

    speed = _rows(out / "speed.csv")
    live = [r for r in speed if r["patch"] == "16x16x16"]
    assert {r["what"] for r in live} == {
        "train iteration suponly (synthetic 32x32x24)",
        "train iteration paper (synthetic 32x32x24)",
    }
    compiled = [r for r in live if r["precision"].endswith(" compiled")]
    assert [r["what"] for r in compiled] == ["train iteration suponly (synthetic 32x32x24)"]
    assert all(float(r["seconds"]) > 0 for r in live)
    recorded = [r for r in speed if "recorded" in r["what"]]
    assert len(recorded) == 1 and recorded[0]["seconds"] == "2.990"
    assert "a3e8dfd" in recorded[0]["what"] and "EPYC" in recorded[0]["machine"]

    lite = _rows(out / "la_lite.csv")
    assert sorted(r["method"] for r in lite) == ["code_faithful", "paper", "suponly"]
    for r in lite:
        assert r["seed"] == "1337" and r["split"] == "test" and r["iterations"] == "2"
        assert r["machine"].startswith("cpu ") and 0.0 <= float(r["dice"]) <= 100.0
    cases = _rows(out / "la_lite_cases.csv")  # 2 test cases per method
    assert sorted((r["method"], r["case"]) for r in cases) == [
        (m, c) for m in ("code_faithful", "paper", "suponly") for c in ("case006", "case007")
    ]
    (full,) = _rows(out / "la_full.csv")
    assert full["method"] == "paper" and 1 <= int(full["iterations"]) <= 3

    with tarfile.open(out / "details.tar.gz") as tar:
        names = tar.getnames()
        junit = tar.extractfile("./logs/cuda_junit.xml")
        assert junit is not None
        suite = ET.parse(io.BytesIO(junit.read())).getroot().find("testsuite")
    assert suite is not None
    # the CPU parts of the CUDA tests ran (the predict one skips where SimpleITK is missing;
    # the compiled-run test is GPU-only and skips on the CPU)
    cases = suite.findall("testcase")
    skipped = [c.get("name", "") for c in cases if c.find("skipped") is not None]
    assert len(cases) == 5 and suite.get("failures") == "0", [c.get("name") for c in cases]
    assert suite.get("errors") == "0"
    assert "test_compiled_run_trains_stops_and_resumes_on_the_gpu[suponly]" in skipped, skipped
    assert all(n.startswith(("test_compiled_run", "test_predict")) for n in skipped), skipped
    assert any(n.endswith("train.log") for n in names)
    assert not any(n.endswith(".pt") for n in names)
