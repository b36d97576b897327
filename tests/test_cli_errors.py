"""Bad inputs give one line naming the right source, exit code 2, and no partial output
(issue 10, item 1): errors from DataLoader workers, `--set`, OS errors on output paths,
numbers in messages, labeled cases without a label."""

from __future__ import annotations

import errno
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from test_checkpoint_resume import write_synthetic
from test_evaluate_cli import GT, SHIFTED, write_h5_case

from semiseg3d.cli import main as cli_main
from semiseg3d.config.run import TrainConfig
from semiseg3d.data.convert import write_preprocess_json
from semiseg3d.data.preprocess import PreprocessOptions
from semiseg3d.errors import InputError
from semiseg3d.evaluation.maskio import read_mask, write_nifti_mask
from semiseg3d.models import VNet
from semiseg3d.training.checkpoint import save_final


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"semiseg3d {command}: error: "), err
    return lines[0]


def _train_yaml(tmp_path: Path, data: Path, **keys: object) -> Path:
    base = {
        "data_dir": str(data),
        "method": "suponly",
        "labeled": 2,
        "batch_labeled": 2,
        "patch": [16, 16, 16],
        "stride": [8, 8, 8],
        "iterations": 1,
        "num_workers": 0,
        "device": "cpu",
    }
    base.update(keys)
    path = tmp_path / "run.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in base.items()))
    return path


# -- DataLoader workers ----------------------------------------------------------------------


def test_worker_error_is_the_same_line_as_without_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "data")
    with h5py.File(data / "case00.h5", "a") as f:  # a label value outside {0, 1}
        label = f["label"][()]
        label[0, 0, 0] = 7
        f["label"][...] = label
    lines = {}
    for workers in (0, 1):
        cfg = _train_yaml(tmp_path, data, num_workers=workers, cache_volumes="false")
        code, _, err = _cli(
            ["train", "--config", str(cfg), "--out", str(tmp_path / f"run{workers}")], capsys
        )
        assert code == 2
        lines[workers] = err.strip().splitlines()[-1]
    assert lines[0] == lines[1], lines
    assert "Traceback" not in lines[1] and "DataLoader worker" not in lines[1]
    assert lines[1] == (
        f"semiseg3d train: error: {data / 'case00.h5'}: label has values {{7}} outside {{0, 1}}"
    )


def test_worker_message_unwrapped_by_the_error_class() -> None:
    # what torch's ExceptionWrapper.reraise passes to the error class
    text = (
        "Caught InputError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\n    raise InputError(m)\n'
        "semiseg3d.errors.InputError: /d/c.h5: label has values {7} outside {0, 1}\n"
    )
    assert str(InputError(text)) == "/d/c.h5: label has values {7} outside {0, 1}"


# -- train: --set, refused starts ------------------------------------------------------------


def test_set_errors_name_the_option_and_print_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "data")
    cfg = _train_yaml(tmp_path, data)
    out = tmp_path / "run"
    for item, expected in [
        ("tau=2", "--set tau: config key 'tau' = 2.0 is outside [0.5, 1.0]"),
        ("tau=high", "--set tau must be a number, got 'high'"),
        ("alph=1", "--set alph: unknown key(s) ['alph']"),
    ]:
        code, stdout, err = _cli(
            ["train", "--config", str(cfg), "--out", str(out), "--set", item], capsys
        )
        assert code == 2 and stdout == ""
        assert _one_error_line(err, "train") == f"semiseg3d train: error: {expected}"
        assert str(cfg) not in err
        assert not out.exists()
    # a bad value in the file names the file
    bad = _train_yaml(tmp_path, data, tau=2)
    code, _, err = _cli(["train", "--config", str(bad), "--out", str(out)], capsys)
    assert code == 2 and f"error: {bad}: config key 'tau'" in err


def test_thin_volume_is_refused_before_the_run_folder_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "data")
    with h5py.File(data / "case01.h5", "w") as f:  # 6 slices, patch 16
        f["image"] = np.zeros((24, 24, 6), np.float32)
        f["label"] = np.zeros((24, 24, 6), np.uint8)
    out = tmp_path / "run"
    cfg = _train_yaml(tmp_path, data)
    code, stdout, err = _cli(["train", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 2 and stdout == ""
    line = _one_error_line(err, "train")
    assert (
        f"{data / 'case01.h5'}: volume shape 24x24x6 is smaller than the minimum 16x16x16" in line
    )
    assert "patch" in line
    assert not out.exists()
    # check-data refuses it for the same patch
    code, _, err = _cli(
        ["check-data", "--data", str(data), "--min-shape", "16", "16", "16"], capsys
    )
    assert code == 2 and "case01.h5: volume shape 24x24x6" in err


def test_refused_start_does_not_block_the_corrected_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "data")
    with h5py.File(data / "case00.h5", "a") as f:
        del f["label"]
    out = tmp_path / "run"
    code, _, err = _cli(
        ["train", "--config", str(_train_yaml(tmp_path, data)), "--out", str(out)], capsys
    )
    assert code == 2
    assert _one_error_line(err, "train").endswith(
        f"{data / 'case00.h5'}: labeled case case00 (first 2 of {data / 'train.list'}) has no "
        "'label' dataset"
    )
    assert not out.exists()
    # the corrected command: case00 moves to the end of the list (labeled = the first 2)
    ids = (data / "train.list").read_text().split()
    (data / "train.list").write_text("\n".join(ids[1:] + ids[:1]) + "\n")
    cfg = _train_yaml(tmp_path, data, iterations=2)
    code, _, err = _cli(["train", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 0, err
    assert (out / "model_final.pt").is_file()


def test_bad_label_values_found_while_loading_leave_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "data")
    with h5py.File(data / "case01.h5", "a") as f:  # only a full read finds this
        label = f["label"][()]
        label[1, 1, 1] = 3
        f["label"][...] = label
    out = tmp_path / "run"
    cfg = _train_yaml(tmp_path, data, cache_volumes="auto")  # volumes read before training
    code, stdout, err = _cli(["train", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 2 and stdout == ""
    assert _one_error_line(err, "train").endswith("label has values {3} outside {0, 1}")
    assert not out.exists()


# -- check-data and split: a labeled case needs a label ----------------------------------------


def test_check_data_and_split_refuse_a_labeled_case_without_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "data")
    with h5py.File(data / "case01.h5", "a") as f:
        del f["label"]
    code, _, err = _cli(["check-data", "--data", str(data)], capsys)
    assert code == 2
    assert f"{data / 'case01.h5'}: labeled case case01 has no 'label' dataset" in err
    code, _, err = _cli(
        ["split", "--data", str(data), "--labeled", "2", "--out", str(tmp_path / "s")], capsys
    )
    assert code == 2 and not (tmp_path / "s").exists()
    assert _one_error_line(err, "split").endswith(
        f"labeled case case01 (first 2 of {data / 'train.list'}) has no 'label' dataset"
    )
    # listed as unlabeled (as `convert` writes it) the case is fine for check-data, and a
    # split whose labeled cases all have labels is fine too
    (data / "unlabeled.list").write_text("case01\n")
    assert _cli(["check-data", "--data", str(data)], capsys)[0] == 0
    ids = (data / "train.list").read_text().split()
    (data / "train.list").write_text("\n".join([ids[0], *ids[2:], ids[1]]) + "\n")
    assert (
        _cli(
            ["split", "--data", str(data), "--labeled", "2", "--out", str(tmp_path / "s")], capsys
        )[0]
        == 0
    )
    # a test case needs a label too
    with h5py.File(data / "case07.h5", "a") as f:
        del f["label"]
    code, _, err = _cli(
        ["split", "--data", str(data), "--labeled", "2", "--out", str(tmp_path / "t")], capsys
    )
    assert code == 2 and "labeled case case07 (listed in" in err


# -- OS errors on output paths -----------------------------------------------------------------


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_h5_case(gt, "S", GT)
    write_nifti_mask(SHIFTED, pred / "S.nii.gz")
    return pred, gt


def test_evaluate_output_under_a_file_is_one_line(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, gt = folders
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    out = blocker / "metrics.csv"
    code, _, err = _cli(
        ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys
    )
    assert code == 2
    line = _one_error_line(err, "evaluate")
    assert str(blocker) in line and "Traceback" not in err


def test_evaluate_disk_full_is_one_line(
    folders: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pred, gt = folders
    out = tmp_path / "metrics.csv"

    def full(self: pd.DataFrame, path: object, **_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    code, _, err = _cli(
        ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys
    )
    assert code == 2
    assert "No space left on device" in _one_error_line(err, "evaluate")
    assert list(tmp_path.glob("*metrics*")) == []


def _run_folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    write_preprocess_json(data, "custom", PreprocessOptions(patch=(16, 16, 16)))
    cfg = TrainConfig(
        dataset="own",
        data_dir=str(data),
        method="suponly",
        patch=(16, 16, 16),
        stride=(16, 16, 16),
        device="cpu",
    )
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    save_final(run / "model_final.pt", {"vnet": VNet().state_dict()}, cfg.to_dict(), 0)
    return run


@pytest.mark.parametrize("where", ["blocked", "readonly"])
def test_predict_bad_entropy_path_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    run = _run_folder(tmp_path)
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(sitk.Image(20, 20, 20, sitk.sitkFloat32), str(scan))
    if where == "blocked":
        (tmp_path / "blocker").write_text("a regular file")
        entropy = tmp_path / "blocker" / "e.nii.gz"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        entropy = ro / "e.nii.gz"
        try:
            (ro / "probe").touch()
        except PermissionError:
            pass
        else:  # root ignores directory permissions
            (ro / "probe").unlink()
            pytest.skip("running as root: a read-only folder is still writable")
    mask = tmp_path / "mask.nii.gz"
    code, _, err = _cli(
        ["predict", "--run", str(run), "--input", str(scan), "--out", str(mask)]
        + ["--entropy", str(entropy), "--device", "cpu"],
        capsys,
    )
    assert code == 2
    assert str(entropy.parent) in _one_error_line(err, "predict")
    assert not mask.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mask")]


# -- numbers print as numbers ----------------------------------------------------------------


def test_spacing_in_messages_prints_plain_numbers(tmp_path: Path) -> None:
    path = write_h5_case(tmp_path, "A", GT, spacing=(1.0, 1.0, 0.0))
    with pytest.raises(InputError) as info:
        read_mask(path)
    assert str(info.value) == f"{path}: spacing (1, 1, 0) is not three positive numbers"
