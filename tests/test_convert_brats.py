"""BraTS-2019 converter (spec 5.3, SSL4MIS recipe) on the brats2019 fixture: FLAIR only,
brain-box crop, 99.9 % clip, z-score on brain voxels, whole tumour, lists, bad inputs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from semiseg3d.cli import main as cli_main
from semiseg3d.data.convert import convert_dataset
from semiseg3d.errors import InputError

CASE = "BraTS19_TCIA_FX01_1"


def _fixture_case(fixtures_raw: Path) -> Path:
    return fixtures_raw / "brats2019" / "MICCAI_BraTS_2019_Data_Training" / "HGG" / CASE


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, fixtures_raw: Path) -> Path:
    out = tmp_path_factory.mktemp("brats") / "brats"
    convert_dataset("brats", fixtures_raw / "brats2019", out, log=None)
    return out


def test_matches_an_independent_ssl4mis_computation(converted: Path, fixtures_raw: Path) -> None:
    case = _fixture_case(fixtures_raw)
    flair = np.asarray(nib.load(case / f"{CASE}_flair.nii.gz").dataobj).astype(np.float64)
    seg = np.asarray(nib.load(case / f"{CASE}_seg.nii.gz").dataobj)
    # brain box of the non-zero FLAIR voxels, stop index exclusive (the public script's rule)
    nz = np.nonzero(flair)
    box = tuple(slice(int(ax.min()), int(ax.max())) for ax in nz)
    crop = flair[box]
    # the 99.9 % point of the cumulative histogram: smallest v with P(X <= v) >= 0.999
    ordered = np.sort(crop, axis=None)
    cut = ordered[math.ceil(0.999 * ordered.size) - 1]
    clipped = np.clip(crop, crop.min(), cut)
    brain = clipped[clipped > 0]
    expected = (clipped - brain.mean()) / brain.std()
    with h5py.File(converted / f"{CASE}.h5", "r") as f:
        image, label, spacing = f["image"][()], f["label"][()], f.attrs["spacing"]
    assert image.shape == crop.shape  # >= 96 on every axis: no padding
    assert all(s >= 96 for s in image.shape)
    np.testing.assert_allclose(image, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(label, (seg[box] > 0).astype(np.uint8))
    assert set(np.unique(label)) == {0, 1}
    # labels 1, 2, 4 all count as whole tumour; the tumour lies inside the brain box
    assert int(label.sum()) == int((seg > 0).sum()) == 2477 + 20862 + 6840
    np.testing.assert_allclose(spacing, (1.0, 1.0, 1.0))


def test_lists_are_the_published_ones_restricted(
    converted: Path, tmp_path: Path, fixtures_raw: Path
) -> None:
    # the fixture id is in no published list
    for name in ("train", "val", "test"):
        assert (converted / f"{name}.list").read_text() == ""
    notes = json.loads((converted / "preprocess.json").read_text())["notes"]
    assert any(CASE in n for n in notes)
    # the same files under two published ids (train and test) land in their lists;
    # t1/t1ce/t2 are not needed and LGG/ may be empty
    src = _fixture_case(fixtures_raw)
    raw = tmp_path / "raw" / "MICCAI_BraTS_2019_Data_Training"
    (raw / "LGG").mkdir(parents=True)
    for new_id in ("BraTS19_2013_8_1", "BraTS19_TCIA02_309_1"):
        d = raw / "HGG" / new_id
        d.mkdir(parents=True)
        for mod in ("flair", "seg"):
            (d / f"{new_id}_{mod}.nii.gz").symlink_to(src / f"{CASE}_{mod}.nii.gz")
    out = tmp_path / "out"
    convert_dataset("brats", tmp_path / "raw", out, log=None)
    assert (out / "train.list").read_text() == "BraTS19_2013_8_1\n"
    assert (out / "test.list").read_text() == "BraTS19_TCIA02_309_1\n"
    assert (out / "val.list").read_text() == ""


def _raw_with(tmp_path: Path, fixtures_raw: Path, mods: tuple[str, ...]) -> tuple[Path, Path]:
    src = _fixture_case(fixtures_raw)
    case = tmp_path / "raw" / "HGG" / CASE
    case.mkdir(parents=True)
    for mod in mods:
        (case / f"{CASE}_{mod}.nii.gz").symlink_to(src / f"{CASE}_{mod}.nii.gz")
    return tmp_path / "raw", case


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("semiseg3d convert: error:")
    return err[0]


@pytest.mark.parametrize(
    ("mods", "missing"), [(("t1", "t1ce", "t2", "seg"), "flair"), (("t1", "flair"), "seg")]
)
def test_wrong_modality_set(
    tmp_path: Path, fixtures_raw: Path, capsys: pytest.CaptureFixture[str], mods, missing
) -> None:
    raw, case = _raw_with(tmp_path, fixtures_raw, mods)
    out = tmp_path / "out"
    err = _one_line_error(
        ["convert", "--dataset", "brats", "--raw", str(raw), "--out", str(out)], capsys
    )
    assert str(case) in err and f"missing {missing}" in err
    assert not out.exists()


def test_seg_on_another_grid(
    tmp_path: Path, fixtures_raw: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, case = _raw_with(tmp_path, fixtures_raw, ("flair",))
    seg = sitk.ReadImage(str(_fixture_case(fixtures_raw) / f"{CASE}_seg.nii.gz"))
    seg = seg[:, :, :150]  # 5 slices fewer
    seg_path = case / f"{CASE}_seg.nii.gz"
    sitk.WriteImage(seg, str(seg_path))
    out = tmp_path / "out"
    err = _one_line_error(
        ["convert", "--dataset", "brats", "--raw", str(raw), "--out", str(out)], capsys
    )
    assert str(seg_path) in err and "grid differs" in err
    assert not out.exists()


def test_corrupt_file(
    tmp_path: Path, fixtures_raw: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, case = _raw_with(tmp_path, fixtures_raw, ("seg",))
    flair = case / f"{CASE}_flair.nii.gz"
    data = (_fixture_case(fixtures_raw) / f"{CASE}_flair.nii.gz").read_bytes()
    flair.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    err = _one_line_error(
        ["convert", "--dataset", "brats", "--raw", str(raw), "--out", str(out)], capsys
    )
    assert str(flair) in err
    assert not out.exists()


def test_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "empty" / "HGG").mkdir(parents=True)
    with pytest.raises(InputError, match="no BraTS case folders found"):
        convert_dataset("brats", tmp_path / "empty", tmp_path / "out", log=None)
    with pytest.raises(InputError, match=r"CBICA.*HGG,LGG\}/<ID>/<ID>_flair.nii.gz"):
        convert_dataset("brats", tmp_path / "nowhere", tmp_path / "out", log=None)
    assert not (tmp_path / "out").exists()
    shutil.rmtree(tmp_path / "empty")
