"""Atomic writes: outputs honour the umask, and what a killed write left is removed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from semiseg3d.data.volumes import discover_cases
from semiseg3d.io.atomic import atomic_dir, atomic_path, remove_stale_temps, write_text_atomic


@pytest.fixture()
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_and_folders_get_the_umask_mode(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.csv") as tmp:
            tmp.write_text("y")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "inner.txt").write_text("z")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o666 & ~mask
    assert _mode(tmp_path / "b.csv") == 0o666 & ~mask
    assert _mode(tmp_path / "folder") == 0o777 & ~mask


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path: Path, umask_022: None) -> None:
    # what kill -9 in the middle of atomic_path / atomic_dir leaves behind
    (tmp_path / ".checkpoint.pt.abc123.tmp.pt").write_bytes(b"\0" * 100)
    (tmp_path / ".model_final.pt.x_y.tmp.pt").write_bytes(b"\0")
    (tmp_path / ".predictions.q1w2.tmp").mkdir()
    (tmp_path / ".predictions.q1w2.tmp" / "case.nii.gz").write_bytes(b"\0")
    (tmp_path / ".predictions.old").mkdir()
    keep = [tmp_path / "checkpoint.pt", tmp_path / ".other.tmp", tmp_path / "notes.txt"]
    for path in keep:
        path.write_text("keep")
    removed = set()
    for name in ("checkpoint.pt", "model_final.pt", "predictions"):
        removed |= {p.name for p in remove_stale_temps(tmp_path / name)}
    assert removed == {
        ".checkpoint.pt.abc123.tmp.pt",
        ".model_final.pt.x_y.tmp.pt",
        ".predictions.q1w2.tmp",
        ".predictions.old",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)
    assert remove_stale_temps(tmp_path / "missing" / "x") == []


def test_hidden_temporaries_are_not_cases(tmp_path: Path) -> None:
    (tmp_path / "case1.h5").write_bytes(b"")
    (tmp_path / ".case2.h5.k3j4.tmp.h5").write_bytes(b"")  # a killed converter write
    (tmp_path / "case3").mkdir()
    (tmp_path / "case3" / "mri_norm2.h5").write_bytes(b"")
    (tmp_path / ".case3.tmp").mkdir()
    (tmp_path / ".case3.tmp" / "mri_norm2.h5").write_bytes(b"")
    assert discover_cases(tmp_path) == ["case1", "case3"]


def test_synth_and_convert_remove_what_a_killed_run_left(tmp_path: Path) -> None:
    from semiseg3d.data.synthetic import SynthParams, write_dataset

    out = tmp_path / "data" / "synthetic"
    out.parent.mkdir(parents=True)
    stale = out.parent / ".synthetic.k1ll.tmp"  # a killed atomic_dir write of the dataset
    stale.mkdir()
    (stale / "case_000.h5").write_bytes(b"\0" * 10)
    write_dataset(out, SynthParams(n_train=2, n_test=1, shape=(16, 16, 16), seed=0))
    assert not stale.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["synthetic"]


def test_report_removes_a_killed_staging_folder(tmp_path: Path) -> None:
    from semiseg3d.cli import main as cli_main

    runs, out = tmp_path / "runs", tmp_path / "reports"
    runs.mkdir()
    (out / ".report.abc.tmp" / "tables").mkdir(parents=True)
    cli_main(["report", "--results", str(runs), "--out", str(out)])
    assert not (out / ".report.abc.tmp").exists()
