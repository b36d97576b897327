"""Pancreas-CT converter (spec 5.2) on the pancreas-ct fixture: DICOM order and spacing,
label alignment by physical geometry (the fixture's label is y-flipped against the DICOM
grid), HU window, crop + padding, normalisation, lists, bad inputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from semiseg3d.cli import main as cli_main
from semiseg3d.data.convert import convert_dataset, default_options
from semiseg3d.data.convert_pancreas import load_case
from semiseg3d.errors import InputError

N_LABEL = 1327  # label voxels (fixture README)


def _case(fixtures_raw: Path) -> tuple[Path, Path]:
    root = fixtures_raw / "pancreas-ct"
    return (
        root / "Pancreas-CT" / "PANCREAS_0001",
        root / "TCIA_pancreas_labels-02-05-2017" / "label0001.nii.gz",
    )


def _xyz(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


def test_dicom_geometry_and_label_alignment(fixtures_raw: Path) -> None:
    case_dir, label_path = _case(fixtures_raw)
    ct, label = load_case(case_dir, label_path)
    assert ct.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(ct.GetSpacing(), (0.9765625, 0.9765625, 2.0))  # not SliceThickness 3
    # k = 0 is the most inferior slice (z = -804.5), z grows with k
    np.testing.assert_allclose(ct.GetOrigin(), (-249.51171875, -437.51171875, -804.5), atol=1e-3)
    np.testing.assert_allclose(ct.GetDirection(), np.eye(3).reshape(-1), atol=1e-6)
    hu, mask = _xyz(ct).astype(float), _xyz(label) > 0
    assert mask.sum() == N_LABEL
    inside = hu[mask]
    assert np.all((inside >= -100) & (inside <= 250))
    assert np.median(inside) == pytest.approx(65, abs=2)
    # independent: the nibabel array (x, y, z) flipped along y is the label on the CT grid
    nib_label = np.asarray(nib.load(label_path).dataobj) > 0
    np.testing.assert_array_equal(mask, nib_label[:, ::-1, :])
    assert np.median(hu[nib_label]) < 20  # the naive same-index overlay misses the organ


@pytest.fixture(scope="module")
def converted_default(tmp_path_factory: pytest.TempPathFactory, fixtures_raw: Path) -> Path:
    out = tmp_path_factory.mktemp("pan") / "pancreas"
    convert_dataset("pancreas", fixtures_raw / "pancreas-ct", out, log=None)
    return out


def test_default_recipe(converted_default: Path, fixtures_raw: Path) -> None:
    out = converted_default
    assert (out / "train.list").read_text() == "PANCREAS_0001\n"  # 0001 is in train 0001-0062
    assert (out / "test.list").read_text() == ""
    record = json.loads((out / "preprocess.json").read_text())
    assert record["options"]["window"] == [-120.0, 240.0]
    assert record["options"]["spacing"] == [1.0, 1.0, 1.0]
    with h5py.File(out / "PANCREAS_0001.h5", "r") as f:
        image, label, spacing = f["image"][()], f["label"][()], f.attrs["spacing"]
    np.testing.assert_allclose(spacing, (1.0, 1.0, 1.0))
    assert image.dtype == np.float32 and set(np.unique(label)) == {0, 1}
    assert all(s >= 96 for s in image.shape)
    # 1 mm grid: 500 x 500 x 40 voxels; label resampled by nearest neighbour, computed here
    # independently with numpy (voxel centre -> nearest source index)
    case_dir, label_path = _case(fixtures_raw)
    _, lab = load_case(case_dir, label_path)
    src = _xyz(lab) > 0
    idx = [
        np.clip(np.floor(np.arange(n) * 1.0 / sp + 0.5).astype(int), 0, src.shape[i] - 1)
        for i, (n, sp) in enumerate(zip((500, 500, 40), lab.GetSpacing(), strict=True))
    ]
    assert int(label.sum()) == int(src[np.ix_(*idx)].sum())
    crop = record["cases"]["PANCREAS_0001"]["crop"]
    assert crop["source_shape"] == [500, 500, 40]
    # z: 40 slices kept whole (box + pad + margin exceed them), padded to 96, centred
    assert (crop["start"][2], crop["stop"][2], crop["pad_before"][2]) == (0, 40, 28)
    # z-score over the crop (the padding is excluded from the statistics)
    s, e, b = crop["start"], crop["stop"], crop["pad_before"]
    core = image[b[0] : b[0] + e[0] - s[0], b[1] : b[1] + e[1] - s[1], b[2] : b[2] + e[2] - s[2]]
    assert core.mean() == pytest.approx(0.0, abs=1e-3)
    assert core.std() == pytest.approx(1.0, abs=1e-3)
    norm = record["cases"]["PANCREAS_0001"]["normaliser"]
    hu = (image.astype(np.float64) * norm["std"] + norm["mean"]) * 360.0 - 120.0
    assert hu.min() >= -120 - 1e-3 and hu.max() <= 240 + 1e-3
    assert 40 <= np.median(hu[label == 1]) <= 90


def test_window_only_without_resampling_keeps_label(tmp_path: Path, fixtures_raw: Path) -> None:
    opts = replace(default_options("pancreas"), spacing=None, intensity="window")
    out = tmp_path / "pan"
    convert_dataset("pancreas", fixtures_raw / "pancreas-ct", out, opts=opts, log=None)
    with h5py.File(out / "PANCREAS_0001.h5", "r") as f:
        image, label = f["image"][()], f["label"][()]
    assert int(label.sum()) == N_LABEL
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert all(s >= 96 for s in image.shape)
    hu = image.astype(np.float64) * 360.0 - 120.0  # the clipped HU
    inside = hu[label == 1]
    assert np.all((inside >= -100 - 1e-3) & (inside <= 250))
    assert np.median(inside) == pytest.approx(65, abs=2)
    crop = json.loads((out / "preprocess.json").read_text())["cases"]["PANCREAS_0001"]["crop"]
    # the MC-Net crop rule on the CT grid: label box x 273-321, y 245-284 (README / test above)
    for axis, (lo, hi) in enumerate([(273, 321), (245, 284)]):
        p = max(96 - (hi - lo), 0) // 2
        assert crop["start"][axis] == lo - p - 25
        assert crop["stop"][axis] == hi + p + 25


def _copy_raw(fixtures_raw: Path, tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(fixtures_raw / "pancreas-ct", raw)
    for p in raw.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return raw


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("semiseg3d convert: error:")
    return err[0]


def test_label_outside_ct(
    tmp_path: Path, fixtures_raw: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _copy_raw(fixtures_raw, tmp_path)
    label = raw / "TCIA_pancreas_labels-02-05-2017" / "label0001.nii.gz"
    img = sitk.ReadImage(str(label))
    img.SetOrigin(tuple(o + 1000.0 for o in img.GetOrigin()))
    sitk.WriteImage(img, str(label), useCompression=True)
    out = tmp_path / "out"
    err = _one_line_error(
        ["convert", "--dataset", "pancreas", "--raw", str(raw), "--out", str(out)], capsys
    )
    assert str(label) in err and "does not overlap" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_missing_label_and_corrupt_slice(
    tmp_path: Path, fixtures_raw: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _copy_raw(fixtures_raw, tmp_path)
    out = tmp_path / "out"
    shutil.rmtree(raw / "TCIA_pancreas_labels-02-05-2017")
    err = _one_line_error(
        ["convert", "--dataset", "pancreas", "--raw", str(raw), "--out", str(out)], capsys
    )
    assert "PANCREAS_0001" in err and "label0001.nii.gz" in err
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(_case(fixtures_raw)[1], labels / "label0001.nii.gz")
    (labels / "label0001.nii.gz").chmod(0o644)
    (slice_file,) = raw.rglob("1-005.dcm")
    # truncated in the header (GDCM needs seconds to give up on truncated pixel data)
    slice_file.write_bytes(slice_file.read_bytes()[:2_000])
    args = [
        "convert",
        "--dataset",
        "pancreas",
        "--raw",
        str(raw),
        "--labels",
        str(labels),
        "--out",
        str(out),
    ]
    err = _one_line_error(args, capsys)
    assert str(slice_file) in err
    assert not out.exists()


def test_empty_missing_and_bad_options(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no PANCREAS_XXXX case folders"):
        convert_dataset("pancreas", empty, tmp_path / "out", log=None)
    with pytest.raises(InputError, match=r"TCIA.*Pancreas-CT.*PANCREAS_0001/\*\*/\*\.dcm"):
        convert_dataset("pancreas", tmp_path / "nowhere", tmp_path / "out", log=None)
    with pytest.raises(InputError, match="label folder not found"):
        convert_dataset("pancreas", empty, tmp_path / "out", labels=tmp_path / "nolabels", log=None)
    assert not (tmp_path / "out").exists()
