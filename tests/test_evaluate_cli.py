"""Mask I/O and ``semiseg3d evaluate`` end to end in a temporary folder."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from semiseg3d.cli import main as cli_main
from semiseg3d.errors import InputError
from semiseg3d.evaluation.maskio import (
    GT_KEYS,
    case_id_from_path,
    list_masks,
    read_image,
    read_mask,
    write_nifti_mask,
)

SHAPE = (18, 15, 14)  # deliberately different along each axis, to catch transposes


def cube(start: tuple[int, int, int], size: int = 10) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    x, y, z = start
    mask[x : x + size, y : y + size, z : z + size] = 1
    return mask


# Ground truth: 10^3 cube at (2, 2, 2); the "shifted" prediction moves it by +2 along x.
# Worked by hand in tests/test_metrics.py: Dice 0.8, Jaccard 2/3, HD95 2, ASD 336/488 voxels;
# with spacing (0.5, 1, 2) mm: HD95 1.0 mm, ASD 182/488 mm.
GT = cube((2, 2, 2))
SHIFTED = cube((4, 2, 2))


def write_h5_case(root: Path, case: str, label: np.ndarray, spacing: tuple | None = None) -> Path:
    """A preprocessed case in the LA layout: ``<root>/<case>/mri_norm2.h5``."""
    path = root / case / "mri_norm2.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["image"] = np.random.default_rng(0).normal(size=label.shape).astype(np.float32)
        f["label"] = label
        if spacing is not None:
            f.attrs["spacing"] = np.asarray(spacing, dtype=float)
    return path


def write_nrrd(path: Path, array: np.ndarray, spacing: tuple[float, float, float]) -> None:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- mask I/O ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "case"),
    [
        ("preds/LA001.nii.gz", "LA001"),
        ("x.y.nii", "x.y"),
        ("a/b.nrrd", "b"),
        ("b.NHDR", "b"),
        ("c.h5", "c"),
        ("LA/0RZDK210BSMWAA6467LU/mri_norm2.h5", "0RZDK210BSMWAA6467LU"),
    ],
)
def test_case_id_from_path(path: str, case: str) -> None:
    assert case_id_from_path(path) == case


def test_case_id_rejects_unknown_extension() -> None:
    with pytest.raises(InputError, match="notes.txt"):
        case_id_from_path("notes.txt")


def test_nifti_roundtrip_with_spacing(tmp_path: Path) -> None:
    path = tmp_path / "a.nii.gz"
    write_nifti_mask(SHIFTED, path, spacing=(0.5, 1.0, 2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]  # no temporary left
    mask, spacing = read_mask(path)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, SHIFTED)
    assert spacing == pytest.approx((0.5, 1.0, 2.0))
    assert nib.load(str(path)).affine[0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        write_nifti_mask(SHIFTED, tmp_path / "b.nii.gz", spacing=(1, 1, 1), affine=np.eye(4))


def test_nrrd_is_transposed_to_xyz(tmp_path: Path) -> None:
    path = tmp_path / "a.nrrd"
    write_nrrd(path, SHIFTED, (0.7, 0.8, 0.9))
    mask, spacing = read_mask(path)
    assert mask.shape == SHAPE
    np.testing.assert_array_equal(mask, SHIFTED)
    assert spacing == pytest.approx((0.7, 0.8, 0.9))


def test_h5_keys_and_spacing(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f["label"] = GT
        f["pred"] = SHIFTED
        f["image"] = GT.astype(np.float32) * 3
        f.attrs["spacing"] = [1.0, 1.5, 2.0]
    pred, spacing = read_mask(path)  # default: "pred" first
    np.testing.assert_array_equal(pred, SHIFTED)
    assert spacing == pytest.approx((1.0, 1.5, 2.0))
    label, _ = read_mask(path, h5_keys=GT_KEYS)
    np.testing.assert_array_equal(label, GT)
    image, _ = read_image(path)
    assert image.dtype == np.float32 and image.max() == 3.0
    no_spacing = write_h5_case(tmp_path, "CASE", GT)
    assert read_mask(no_spacing)[1] is None


def test_bad_mask_files_are_one_line_errors(tmp_path: Path) -> None:
    bad_values = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image((GT * 255).astype(np.uint8), np.eye(4)), str(bad_values))
    corrupt = tmp_path / "c.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b this is not a gzip stream")
    no_key = tmp_path / "k.h5"
    with h5py.File(no_key, "w") as f:
        f["something"] = GT
    flat = tmp_path / "f.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.uint8)), str(flat))
    for path, what in [
        (bad_values, "255"),
        (corrupt, "cannot read"),
        (no_key, "something"),
        (flat, "3-D"),
        (tmp_path / "missing.nii", "not found"),
    ]:
        with pytest.raises(InputError) as info:
            read_mask(path)
        message = str(info.value)
        assert str(path) in message and what in message and "\n" not in message


def test_list_masks_finds_both_layouts(tmp_path: Path) -> None:
    write_h5_case(tmp_path, "A", GT)
    write_nifti_mask(GT, tmp_path / "B.nii.gz")
    (tmp_path / ".B.nii.gz.tmp.nii.gz").write_bytes(b"")  # unfinished write: ignored
    (tmp_path / "train.list").write_text("A\n")
    (tmp_path / "empty_dir").mkdir()
    assert list(list_masks(tmp_path)) == ["A", "B"]
    write_nifti_mask(GT, tmp_path / "A.nii")
    with pytest.raises(InputError, match="case A has two files"):
        list_masks(tmp_path)


# -- the command ------------------------------------------------------------------------


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """gt: LA-layout h5 dataset folder; pred: NIfTI masks. Case S is shifted, case P perfect."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_h5_case(gt, "S", GT)
    write_h5_case(gt, "P", GT)
    write_nifti_mask(SHIFTED, pred / "S.nii.gz")
    write_nifti_mask(GT, pred / "P.nii.gz")
    return pred, gt


def test_evaluate_nifti_against_h5(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, gt = folders
    out = tmp_path / "metrics.csv"
    code, stdout, _ = run_cli(
        ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys
    )
    assert code == 0
    assert stdout.count("\n") == 1 and "2 cases" in stdout and "dice 0.9000" in stdout
    table = pd.read_csv(out).set_index("case")
    assert list(table.columns) == ["dice", "jaccard", "hd95", "asd", "empty_pred"]
    assert list(table.index) == ["P", "S", "mean", "sd", "sem"]
    assert table.loc["S", ["dice", "jaccard", "hd95", "asd"]].tolist() == pytest.approx(
        [0.8, 2 / 3, 2.0, 336 / 488]
    )
    assert table.loc["P", ["dice", "jaccard", "hd95", "asd"]].tolist() == pytest.approx(
        [1, 1, 0, 0]
    )
    # Two cases, dice 1.0 and 0.8: mean 0.9, sd sqrt(2 * 0.1^2 / 1) = 0.1414, sem = sd / sqrt(2) = 0.1
    assert table.loc["mean", "dice"] == pytest.approx(0.9)
    assert table.loc["sd", "dice"] == pytest.approx(math.sqrt(0.02))
    assert table.loc["sem", "dice"] == pytest.approx(0.1)
    assert table.loc["mean", "hd95"] == pytest.approx(1.0)
    assert table.loc["mean", "empty_pred"] == 0
    assert pd.isna(table.loc["sd", "empty_pred"])


def test_evaluate_spacing_and_lcc(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, gt = folders
    # A stray voxel far from the cube: LCC removes it, so case P stays perfect.
    stray = GT.copy()
    stray[16, 13, 12] = 1
    write_nifti_mask(stray, pred / "P.nii.gz")
    out = tmp_path / "m.csv"
    argv = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)]
    code, _, _ = run_cli([*argv, "--spacing", "0.5", "1", "2", "--lcc"], capsys)
    assert code == 0
    table = pd.read_csv(out).set_index("case")
    assert table.loc["S", "hd95_mm"] == pytest.approx(1.0)
    assert table.loc["S", "asd_mm"] == pytest.approx(182 / 488)
    assert table.loc["P", "dice"] == 1.0
    code, _, _ = run_cli(argv, capsys)  # without --lcc the stray voxel costs Dice
    assert code == 0
    dice_p = pd.read_csv(out).set_index("case").loc["P", "dice"]
    assert dice_p == pytest.approx(2 * 1000 / 2001)


def test_evaluate_nrrd_against_nifti_gt_spacing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_nifti_mask(GT, gt / "S.nii.gz", spacing=(0.5, 1.0, 2.0))
    pred.mkdir()
    write_nrrd(pred / "S.nrrd", SHIFTED, (9.0, 9.0, 9.0))  # a prediction's spacing is not used
    out = tmp_path / "metrics.csv"
    code, _, _ = run_cli(
        ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys
    )
    assert code == 0
    row = pd.read_csv(out).set_index("case").loc["S"]
    assert row["dice"] == pytest.approx(0.8)
    assert row["hd95_mm"] == pytest.approx(1.0) and row["asd_mm"] == pytest.approx(182 / 488)


def test_evaluate_uses_test_list_of_a_dataset_folder(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, gt = folders
    write_h5_case(gt, "TRAIN1", GT)  # a training case without prediction: not scored
    (gt / "test.list").write_text("S\nP\n")
    out = tmp_path / "metrics.csv"
    code, _, _ = run_cli(
        ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)], capsys
    )
    assert code == 0
    assert list(pd.read_csv(out)["case"]) == ["S", "P", "mean", "sd", "sem"]


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ("missing", ["no prediction", "P"]),
        ("extra", ["EXTRA", "not in"]),
        ("shape", ["P.nii.gz", "mri_norm2.h5", "shape"]),
        ("values", ["P.nii.gz", "expected {0, 1}"]),
        ("spacing", ["--spacing"]),
    ],
)
def test_evaluate_errors_leave_nothing(
    folders: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str,
    needles: list[str],
) -> None:
    pred, gt = folders
    extra_args: list[str] = []
    if change == "missing":
        (pred / "P.nii.gz").unlink()
    elif change == "extra":
        write_nifti_mask(GT, pred / "EXTRA.nii.gz")
    elif change == "shape":
        write_nifti_mask(GT[:-1], pred / "P.nii.gz")
    elif change == "values":
        nib.save(nib.Nifti1Image(GT * 2, np.eye(4)), str(pred / "P.nii.gz"))
    else:
        extra_args = ["--spacing", "1", "-1", "1"]
    out = tmp_path / "out" / "metrics.csv"
    code, stdout, stderr = run_cli(
        ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), *extra_args], capsys
    )
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("semiseg3d evaluate: error: ") and stderr.count("\n") == 1
    for needle in needles:
        assert needle in stderr
    assert not out.exists()


def test_installed_command_runs(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = folders
    out = tmp_path / "metrics.csv"
    done = subprocess.run(
        [sys.executable, "-m", "semiseg3d", "evaluate", "--pred", str(pred), "--gt", str(gt)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "dice 0.9000" in done.stdout and out.is_file()
