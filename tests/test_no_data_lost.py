"""Nothing lost, ever (issue 21): a full disk, a file in the way and a foreign folder must
not cost a user data; bad numbers, data errors, NaN voxels and usage errors are one line.

A full disk is made two ways: a 256 KiB tmpfs filled to the last block (needs the right to
mount; skipped elsewhere), and an ``OSError(ENOSPC)`` injected at the write call, which
runs on any machine.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import yaml
from test_checkpoint_resume import write_synthetic
from test_cli_errors import _run_folder, _train_yaml
from test_evaluate_cli import GT, SHIFTED, write_h5_case

from semiseg3d.cli import main as cli_main
from semiseg3d.config.run import TrainConfig, config_from_mapping
from semiseg3d.data.geometry import read_image
from semiseg3d.errors import InputError
from semiseg3d.evaluation.maskio import write_nifti_mask
from semiseg3d.io.atomic import atomic_path, remove_stale_temps
from semiseg3d.models import VNet
from semiseg3d.training.checkpoint import save_checkpoint, save_final

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"
MARKER_NAME = ".semiseg3d-output"  # marks a folder semiseg3d wrote (docs/safety.md)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _only_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture()
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a 256 KiB tmpfs filled to the last block: every write there is ENOSPC."""
    mount = tmp_path / "full"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _left_on(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "filler")


def _scan(path: Path) -> Path:
    noise = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    image = sitk.GetImageFromArray(noise)
    sitk.WriteImage(image, str(path))
    return path


def _predict_argv(run: Path, scan: Path, mask: Path) -> list[str]:
    return [
        "predict",
        "--run",
        str(run),
        "--input",
        str(scan),
        "--out",
        str(mask),
        "--device",
        "cpu",
    ]


# -- 1. a full disk is an error naming the output, with nothing left ---------------------------


def test_predict_on_a_full_disk_fails_naming_the_mask(
    tmp_path: Path, full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a3e8dfd: exit 0, "success", and a 0-byte mask (ITK's NIfTI writer ignores ENOSPC)
    run, scan = _run_folder(tmp_path), _scan(tmp_path / "scan.nii.gz")
    mask = full_disk / "m.nii.gz"
    code, _, err = _cli(_predict_argv(run, scan, mask), capsys)
    assert code == 2
    assert _only_line(err) == f"semiseg3d predict: error: {mask}: {NO_SPACE}"
    assert _left_on(full_disk) == []


@pytest.mark.parametrize("free", [0, 10**12])
def test_an_image_that_does_not_read_back_is_an_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    free: int,
) -> None:
    # what ITK does on a full disk, on any machine: an empty file, and no error
    run, scan = _run_folder(tmp_path), _scan(tmp_path / "scan.nii.gz")
    mask = tmp_path / "out" / "m.nii.gz"

    def silent_failure(image: sitk.Image, path: str, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"")

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(sitk, "WriteImage", silent_failure)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=free))
    code, _, err = _cli(_predict_argv(run, scan, mask), capsys)
    assert code == 2
    reason = NO_SPACE if free == 0 else "the written file does not read back intact"
    assert _only_line(err) == f"semiseg3d predict: error: {mask}: {reason}"
    assert list((tmp_path / "out").iterdir()) == []


def test_train_on_a_full_disk_names_the_file_and_leaves_no_folder(
    tmp_path: Path, full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a3e8dfd: "error: No space left on device" (no path) and an empty run folder left
    cfg = _train_yaml(tmp_path, write_synthetic(tmp_path / "data"))
    out = full_disk / "run"
    code, _, err = _cli(["train", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 2
    assert _only_line(err) == f"semiseg3d train: error: {out / 'config.yaml'}: {NO_SPACE}"
    assert _left_on(full_disk) == []


def _enospc(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, NO_SPACE)  # as Python's write() reports it: no file name


def test_train_write_error_injected_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _train_yaml(tmp_path, write_synthetic(tmp_path / "data"))
    empty = tmp_path / "made-by-snakemake"  # an existing, empty run folder stays empty
    empty.mkdir()
    monkeypatch.setattr(Path, "write_text", _enospc)
    for out in (tmp_path / "new" / "run", empty):
        code, _, err = _cli(["train", "--config", str(cfg), "--out", str(out)], capsys)
        assert code == 2
        assert _only_line(err) == f"semiseg3d train: error: {out / 'config.yaml'}: {NO_SPACE}"
    assert not (tmp_path / "new").exists()
    assert list(empty.iterdir()) == []


def test_evaluate_on_a_full_disk_names_the_table(
    tmp_path: Path, full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_h5_case(gt, "S", GT)
    write_nifti_mask(SHIFTED, pred / "S.nii.gz")
    out = full_disk / "metrics.csv"
    argv = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)]
    code, _, err = _cli(argv, capsys)
    assert code == 2
    assert _only_line(err) == f"semiseg3d evaluate: error: {out}: {NO_SPACE}"
    assert _left_on(full_disk) == []
    # the same with the error injected where pandas writes
    out = tmp_path / "metrics.csv"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pd.DataFrame, "to_csv", _enospc)
        code, _, err = _cli([*argv[:-1], str(out)], capsys)
    assert code == 2
    assert _only_line(err) == f"semiseg3d evaluate: error: {out}: {NO_SPACE}"
    assert [p.name for p in tmp_path.iterdir() if "metrics" in p.name] == []


def _state() -> dict:
    """A complete checkpoint state with 400 kB of weights (more than the full tmpfs)."""
    keys = ("optimizers", "scaler", "rng", "pgl_generator", "loader_generator", "logger")
    return {
        "iteration": 1,
        "config": {},
        "models": {"vnet": {"w": torch.zeros(100_000)}},
        **{k: {} for k in keys},
    }


@pytest.mark.parametrize("free_kib", [0, 64])
def test_checkpoint_on_a_full_disk_is_enospc_naming_it(
    tmp_path: Path, full_disk: Path, free_kib: int
) -> None:
    # a3e8dfd: torch.save to a file name says only "RuntimeError: ... unexpected pos ..."
    # (and through a file object, with room for part of it, torch's zip writer raises that
    # RuntimeError while handling the write's ENOSPC)
    filler = full_disk / "filler"
    os.truncate(filler, filler.stat().st_size - free_kib * 1024)
    path = full_disk / "checkpoint.pt"
    with pytest.raises(OSError) as info:
        save_checkpoint(path, _state())
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(path))
    assert _left_on(full_disk) == []


def test_checkpoint_write_error_injected_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch, "save", _enospc)
    for path, save in ((tmp_path / "checkpoint.pt", save_checkpoint), (tmp_path / "m.pt", None)):
        with pytest.raises(OSError) as info:
            if save is None:
                save_final(path, {"vnet": {}}, {}, 1)
            else:
                save(path, _state())
        assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(path))
    assert list(tmp_path.iterdir()) == []


# -- 2. what is not ours is never replaced -----------------------------------------------------


def _finished_run(tmp_path: Path) -> Path:
    """A run folder as `train` leaves it: model_final.pt and config.yaml (untrained V-Net)."""
    data = write_synthetic(tmp_path / "data", n_train=2, n_test=1)
    cfg = TrainConfig(
        data_dir=str(data),
        method="suponly",
        patch=(16, 16, 16),
        stride=(16, 16, 16),
        device="cpu",
        amp="none",
    )
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    save_final(run / "model_final.pt", {"vnet": VNet().state_dict()}, cfg.to_dict(), 0)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    return run


def test_test_refuses_a_file_where_predictions_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a3e8dfd: exit 0, the file silently replaced, a stray .predictions.old left
    run = _finished_run(tmp_path)
    (run / "predictions").write_text("my notes")
    code, stdout, err = _cli(["test", "--run", str(run)], capsys)
    assert code == 2 and stdout == ""
    assert _only_line(err) == (
        f"semiseg3d test: error: {run / 'predictions'}: a file is in the way of the output "
        "folder; move it away or choose another path"
    )
    assert (run / "predictions").read_text() == "my notes"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "model_final.pt", "predictions"]
    # its own predictions folder (also one written before the marker existed) is replaced
    (run / "predictions").unlink()
    (run / "predictions").mkdir()
    (run / "predictions" / "case02.nii.gz").write_bytes(b"old")
    for _ in range(2):
        assert _cli(["test", "--run", str(run)], capsys)[0] == 0
        assert sorted(p.name for p in (run / "predictions").iterdir()) == [
            MARKER_NAME,
            "case02.nii.gz",
        ]


def test_synth_refuses_a_folder_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a3e8dfd: exit 0 and notes.txt deleted
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's notes")
    argv = ["synth", "--out", str(out), "--cases", "2", "--test", "1", "--shape", "16", "16", "16"]
    code, _, err = _cli(argv, capsys)
    assert code == 2
    assert _only_line(err) == (
        f"semiseg3d synth: error: {out}: folder exists, is not empty and was not written by "
        f"semiseg3d (no {MARKER_NAME}); move it away or choose another path"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # its own output is replaced by a rerun
    own = tmp_path / "synthetic"
    argv[2] = str(own)
    assert _cli(argv, capsys)[0] == 0
    assert _cli(argv, capsys)[0] == 0
    assert (own / MARKER_NAME).is_file() and (own / "train.list").is_file()


def test_train_refuses_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _train_yaml(tmp_path, write_synthetic(tmp_path / "data"))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's notes")
    code, _, err = _cli(["train", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 2
    assert _only_line(err).startswith(f"semiseg3d train: error: {out}: folder exists, is not empty")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_report_refuses_what_is_in_the_way_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, out = tmp_path / "runs", tmp_path / "reports"
    runs.mkdir()
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "my_plot.png").write_bytes(b"a user's figure")
    code, _, err = _cli(["report", "--results", str(runs), "--out", str(out)], capsys)
    assert code == 2
    assert f"error: {out / 'figures'}: folder exists, is not empty" in _only_line(err)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "figures",
        "figures/my_plot.png",
    ]


def test_a_file_named_like_an_old_copy_is_not_removed(tmp_path: Path) -> None:
    # a3e8dfd moved a user's file at the output name to .predictions.old and left it there;
    # the stale-temporary clean-up must not then delete it
    (tmp_path / ".predictions.old").write_text("a user's file")
    assert remove_stale_temps(tmp_path / "predictions") == []
    assert (tmp_path / ".predictions.old").read_text() == "a user's file"


def test_a_folder_is_never_replaced_by_a_file_output(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").mkdir()
    (tmp_path / "metrics.csv" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="a folder is in the way of the output file"):
        with atomic_path(tmp_path / "metrics.csv") as tmp:
            tmp.write_text("a,b\n")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


# -- 3. numbers are range-checked with the config ----------------------------------------------


def test_negative_seed_is_one_line_before_the_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a3e8dfd: a 21-line traceback from data/sampler.py, exit 1, run folder left
    data = write_synthetic(tmp_path / "data")
    out = tmp_path / "run"
    cfg = _train_yaml(tmp_path, data, seed=-1)
    code, _, err = _cli(["train", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 2
    assert _only_line(err) == (
        f"semiseg3d train: error: {cfg}: config key 'seed' = -1 is outside [0, 4294967295]"
    )
    cfg = _train_yaml(tmp_path, data)
    code, _, err = _cli(
        ["train", "--config", str(cfg), "--out", str(out), "--set", "seed=-3"], capsys
    )
    assert code == 2
    assert _only_line(err) == (
        "semiseg3d train: error: --set seed: config key 'seed' = -3 is outside [0, 4294967295]"
    )
    assert not out.exists()


#: a value outside the range of every numeric key of TrainConfig (hand-picked from the
#: README's params.yaml reference)
BAD_NUMBERS = {
    "labeled": 0,
    "labeled_ratio": 1.5,
    "patch": [16, 16, 0],
    "stride": [0, 8, 8],
    "downsample": 17,
    "bcp_pretrain_steps": -1,
    "recipe_scale": 0.0,
    "pgl_proto_term_sign": 0,
    "tau": 0.4,
    "lam": -0.1,
    "T": 0.0,
    "alpha": 101.0,
    "tau_cps": 1.5,
    "noise_std": -1.0,
    "iterations": 0,
    "batch_labeled": 0,
    "batch_unlabeled": -1,
    "lr": float("nan"),
    "lr_steps": [-5, 10],
    "lr_gamma": 0.0,
    "poly_power": 0.0,
    "momentum": 1.0,
    "weight_decay": float("-inf"),
    "rampup_max": -0.5,
    "rampup_length": -1,
    "rampup_unit": 0,
    "seed": 2**32,
    "num_workers": -1,
    "checkpoint_every": 0,
}


def test_every_numeric_key_has_a_range() -> None:
    numeric = {
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("extra",)
        and not isinstance(f.default, bool | str)
        and (f.default is None or isinstance(f.default, int | float | tuple))
    }
    assert numeric == set(BAD_NUMBERS)  # a new numeric key needs a row here (and a range)
    for key, value in BAD_NUMBERS.items():
        with pytest.raises(InputError, match=f"config key '{key}'"):
            config_from_mapping({key: value})


# -- 4. data errors found by the loader come before the run folder -----------------------------


@pytest.mark.parametrize("fault", ["nan_image", "label_2"])
def test_data_errors_without_cache_leave_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    # a3e8dfd: the right line, but after config.yaml, train.log and live/ were written
    data = write_synthetic(tmp_path / "data")
    with h5py.File(data / "case01.h5", "a") as f:
        key = "image" if fault == "nan_image" else "label"
        array = f[key][()]
        array[2, 3, 4] = np.nan if fault == "nan_image" else 2
        f[key][...] = array
    expected = (
        f"{data / 'case01.h5'}: image has 1 non-finite intensities (NaN or inf)"
        if fault == "nan_image"
        else f"{data / 'case01.h5'}: label has values {{2}} outside {{0, 1}}"
    )
    empty = tmp_path / "existing"
    empty.mkdir()
    for workers in (0, 1):
        for out in (tmp_path / f"run{workers}", empty):
            cfg = _train_yaml(tmp_path, data, num_workers=workers, cache_volumes="false")
            code, _, err = _cli(["train", "--config", str(cfg), "--out", str(out)], capsys)
            assert code == 2
            assert _only_line(err) == f"semiseg3d train: error: {expected}"
            assert not (tmp_path / f"run{workers}").exists()
            assert list(empty.iterdir()) == []


# -- 5. NaN voxels are found as stored, whichever reader is used ------------------------------


def _nifti_with_nan(path: Path) -> Path:
    array = np.random.default_rng(0).normal(size=(30, 26, 20)).astype(np.float32)
    array[4, 5, 6] = np.nan
    array[7, 8, 9] = np.inf
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def test_nan_voxels_of_a_nifti_are_refused(tmp_path: Path) -> None:
    path = _nifti_with_nan(tmp_path / "scan.nii.gz")
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(info.value) == (
        f"{path}: 2 voxel value(s) are not finite (NaN or inf) as stored in the file"
    )
    # the same voxels in NRRD, which ITK reads as stored
    nrrd = tmp_path / "scan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.asarray(nib.load(str(path)).dataobj).T), str(nrrd))
    with pytest.raises(InputError, match="2 voxel value"):
        read_image(nrrd)


def test_predict_and_convert_refuse_a_nifti_with_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a3e8dfd: both accepted it (ITK's NIfTI reader turns NaN into 0)
    scan = _nifti_with_nan(tmp_path / "scan.nii.gz")
    run, mask = _run_folder(tmp_path), tmp_path / "mask.nii.gz"
    code, _, err = _cli(_predict_argv(run, scan, mask), capsys)
    assert code == 2 and f"error: {scan}: 2 voxel value(s) are not finite" in _only_line(err)
    assert not mask.exists()
    raw = tmp_path / "raw"
    image = _nifti_with_nan(raw / "imagesTr" / "c1.nii.gz")
    clean = np.random.default_rng(1).normal(size=(30, 26, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(clean, np.eye(4)), str(raw / "imagesTr" / "c2.nii.gz"))
    (raw / "labelsTr").mkdir()
    label = np.zeros((30, 26, 20), np.uint8)
    label[10:15, 10:15, 8:12] = 1
    for case in ("c1", "c2"):
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(raw / "labelsTr" / f"{case}.nii.gz"))
    out = tmp_path / "converted"
    argv = ["convert", "--dataset", "custom", "--raw", str(raw), "--out", str(out)]
    code, _, err = _cli(argv, capsys)
    assert code == 2
    assert f"error: {image}: 2 voxel value(s) are not finite" in _only_line(err)
    assert not out.exists()


# -- 6. usage errors are one line --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["complexity", "--patch", "16", "16", "x"],
            "semiseg3d complexity: error: argument --patch: invalid int value: 'x'; "
            "see 'semiseg3d complexity --help'",
        ),
        (
            ["synth", "--cases", "many"],
            "semiseg3d synth: error: argument --cases: invalid int value: 'many'; "
            "see 'semiseg3d synth --help'",
        ),
        (
            ["train"],
            "semiseg3d train: error: the following arguments are required: --out; "
            "see 'semiseg3d train --help'",
        ),
    ],
)
def test_usage_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # a3e8dfd: argparse's usage block (3-5 lines) before the error line
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    assert err == message + "\n"


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["trian"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert _only_line(err).startswith("semiseg3d: error: argument COMMAND: invalid choice: 'trian'")
    assert err.rstrip().endswith("; see 'semiseg3d --help'")


def test_snakemake_params_error_is_one_line(root: Path, tmp_path: Path) -> None:
    # a3e8dfd: "WorkflowError in file .../common.smk, line 54:", the message and a
    # traceback line, on stdout
    exe = Path(sys.executable).with_name("snakemake")
    if not exe.exists():
        pytest.skip("snakemake is not installed")
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "workflow", tmp_path / "workflow")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"train": {"la": {"lam": -1}}}))
    env = dict(os.environ, PATH=f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [str(exe), "-n", "--configfile", "bad.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: params.yaml, bad.yaml: train.la.lam: -1 is less than the minimum of 0"
    ]
    # stdout: at most Snakemake's own note that an overlay was given (printed on success too)
    assert len(proc.stdout.splitlines()) <= 1
    assert "Error" not in proc.stdout and "File " not in proc.stdout


# -- semiseg3d doctor --------------------------------------------------------------------------


@pytest.fixture()
def workspace(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout's params.yaml in an empty workspace, as the current folder."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(root / "params.yaml", ws / "params.yaml")
    monkeypatch.chdir(ws)
    monkeypatch.delenv("SEMISEG3D_SHARED", raising=False)
    return ws


def _doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    code = cli_main(["doctor"])
    lines = capsys.readouterr().out.strip().splitlines()
    by_name = {line[5:].split(": ", 1)[0]: line for line in lines}
    assert len(by_name) == len(lines)
    return code, by_name


def test_doctor_passes_on_a_fresh_workspace(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(workspace)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10**15))
    code, lines = _doctor(capsys)
    assert code == 0, lines
    for name in ("python", "torch", "cpu", "cuda", "params", "disk", "temporaries", "shared"):
        assert lines[name].startswith("ok   "), lines
    for name in ("data", "results", "reports"):
        assert lines[f"write {name}/"].startswith("ok   ")
    assert any(name.startswith("amp auto, patch [112, 112, 80] (la)") for name in lines)


def test_doctor_reports_a_disk_shortfall(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # params.yaml's grid: 342 runs of the method (README) and 36 of MCF and LUSEG (shared
    # and MCF's own recipe on LA and Pancreas, 2 ratios, 3 seeds) train the dual network,
    # each 27,379,220 float32 parameters = 109.5 MB of final weights, so at least 41.4 GB;
    # at most 645 runs of that size (+ 1 % file overhead) plus four copies of it for one
    # job's checkpoint (weights + momentum, and the temporary copy)
    dual = 27_379_220 * 4
    low, high = 378 * dual, (645 + 4) * dual * 1.01 + 645 * 10**6
    usage = shutil.disk_usage(workspace)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=int(low) - 1))
    code, lines = _doctor(capsys)
    assert code == 1
    assert lines["disk"].startswith(f"FAIL disk: {(low - 1) / 1e9:.2f} GB free on ")
    assert "645 of 645 run(s) unfinished" in lines["disk"] and "short by" in lines["disk"]
    assert [n for n, line in lines.items() if line.startswith("FAIL")] == ["disk"]
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=int(high)))
    code, lines = _doctor(capsys)
    assert code == 0 and lines["disk"].startswith("ok   disk:")


def test_doctor_reports_a_stale_temporary(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(workspace)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10**15))
    run = workspace / "results" / "runs" / "la" / "full" / "r10" / "s1337"
    run.mkdir(parents=True)
    fresh = run / ".checkpoint.pt.k2j3h4g5.tmp.pt"  # a write in progress
    fresh.write_bytes(b"\0")
    assert _doctor(capsys)[0] == 0
    stale = run / ".model_final.pt.a1b2c3d4.tmp.pt"  # a write killed two hours ago
    stale.write_bytes(b"\0")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    code, lines = _doctor(capsys)
    assert code == 1
    assert lines["temporaries"] == (
        f"FAIL temporaries: 1 left by killed writes, e.g. {stale.relative_to(workspace)}; rerun the command that "
        "writes that output (it removes them) or delete them"
    )


def test_doctor_reports_a_folder_it_cannot_write(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(workspace)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10**15))
    (workspace / "reports").write_text("a file where the folder goes")
    results = workspace / "results"
    results.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(results)],
        capture_output=True,
        check=False,
    )
    readonly = proc.returncode == 0
    if not readonly:  # no right to mount: permissions do it, unless we are root
        results.chmod(0o555)
        readonly = os.geteuid() != 0
    try:
        code, lines = _doctor(capsys)
    finally:
        if proc.returncode == 0:
            subprocess.run(["umount", "-l", str(results)], check=False)
        results.chmod(0o755)
    assert code == 1
    assert lines["write reports/"] == (
        "FAIL write reports/: reports is a file, not a folder; move it away"
    )
    if readonly:
        reason = "Read-only file system" if proc.returncode == 0 else "Permission denied"
        assert lines["write results/"] == (
            f"FAIL write results/: cannot create a file in results: {reason}"
        )
    assert lines["write data/"].startswith("ok   ")


def test_doctor_shows_the_bf16_self_check(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU with native bf16, the amp lines carry the self-check's cached verdict for the
    dual network (never cached here: the session cache is empty for these patches, and
    a simulated failed verdict turns the line to float32)."""
    from semiseg3d import accel, bf16check

    monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(bf16check, "cached_verdict", lambda probe, cl: None)
    usage = shutil.disk_usage(workspace)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10**15))
    code, lines = _doctor(capsys)
    la = next(line for name, line in lines.items() if name.startswith("amp auto, patch [112"))
    assert code == 0 and "bf16 on cpu" in la and "bf16 self-check not run yet" in la
    failed = bf16check.Bf16Verdict(False, "ResNet34EncDec: non-finite bf16 gradients", 0.1, 1e30)
    seen: list[tuple[int, ...]] = []

    def cached(probe: bf16check.Bf16Probe, cl: bool) -> bf16check.Bf16Verdict:
        seen.append(probe.shape)
        return failed

    monkeypatch.setattr(bf16check, "cached_verdict", cached)
    code, lines = _doctor(capsys)
    la = next(line for name, line in lines.items() if name.startswith("amp auto, patch [112"))
    assert code == 0 and la.startswith("ok   ") and "fp32 on cpu" in la
    assert "bf16 self-check failed (dual network: ResNet34EncDec: non-finite" in la
    assert (4, 1, 112, 112, 80) in seen  # the dual network's 2 + 2 batch at LA's patch
