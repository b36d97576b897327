"""LA raw converter (spec 5.1) on the la-raw fixture: labels, whole-volume z-score, the
UA-MT crop rule with seeded 10-19 voxel margins, padding, reproducibility, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from semiseg3d.cli import main as cli_main
from semiseg3d.data.convert import convert_dataset, default_options
from semiseg3d.errors import InputError

CASES = {"FIXTURE0000000000001": 4137, "FIXTURE0000000000002": 453}  # laendo == 255 counts (README)
PATCH = (112, 112, 80)


def _raw_xyz(path: Path) -> np.ndarray:
    """Independent read: SimpleITK array (z, y, x) -> (x, y, z)."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, fixtures_raw: Path) -> Path:
    out = tmp_path_factory.mktemp("la") / "la"
    convert_dataset("la-raw", fixtures_raw / "la-raw", out, log=None)
    return out


def test_layout_and_lists(converted: Path) -> None:
    names = sorted(p.name for p in converted.iterdir())
    assert names == sorted(
        [*CASES, ".semiseg3d-output", "preprocess.json", "train.list", "test.list"]
    )
    # the fixture ids are not in the published fold-0 lists: both lists are empty
    assert (converted / "train.list").read_text() == ""
    assert (converted / "test.list").read_text() == ""
    record = json.loads((converted / "preprocess.json").read_text())
    assert record["dataset"] == "la-raw"
    assert record["options"]["random_margin"] == [10, 20]
    assert any("not in the published split" in n for n in record["notes"])


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_case_content(converted: Path, fixtures_raw: Path, case_id: str) -> None:
    raw_dir = fixtures_raw / "la-raw" / "Training Set" / case_id
    raw = _raw_xyz(raw_dir / "lgemri.nrrd").astype(np.float64)
    lab = _raw_xyz(raw_dir / "laendo.nrrd") == 255
    with h5py.File(converted / case_id / "mri_norm2.h5", "r") as f:
        image, label = f["image"][()], f["label"][()]
        spacing = f.attrs["spacing"]
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1}
    assert int(label.sum()) == CASES[case_id]  # every atrium voxel is inside the crop
    np.testing.assert_allclose(spacing, [0.78125, 0.78125, 6.5], rtol=1e-6)
    crop = json.loads((converted / "preprocess.json").read_text())["cases"][case_id]["crop"]
    # z is kept whole (25 or 23 slices) and padded, centred, to 80
    assert crop["start"][2] == 0 and crop["stop"][2] == raw.shape[2]
    assert crop["pad_before"][2] == (80 - raw.shape[2]) // 2
    assert image.shape[2] == 80
    # x, y: the UA-MT rule with margins m in [10, 19]
    for axis in (0, 1):
        idx = np.flatnonzero(lab.any(axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = int(idx[0]), int(idx[-1])
        p = max(PATCH[axis] - (hi - lo), 0) // 2
        start, stop = crop["start"][axis], crop["stop"][axis]
        if start > 0:
            assert 10 <= lo - p - start <= 19
        else:
            assert lo - p - 19 <= 0
        if stop < raw.shape[axis]:
            assert 10 <= stop - hi - p <= 19
        else:
            assert hi + p + 10 >= raw.shape[axis]
        assert image.shape[axis] >= PATCH[axis]
    # image = whole-volume z-score, cropped
    z = ((raw - raw.mean()) / raw.std()).astype(np.float32)
    s, e = crop["start"], crop["stop"]
    pz = crop["pad_before"][2]
    inner = image[:, :, pz : pz + raw.shape[2]]
    px, py = crop["pad_before"][0], crop["pad_before"][1]
    inner = inner[px : px + e[0] - s[0], py : py + e[1] - s[1]]
    np.testing.assert_allclose(inner, z[s[0] : e[0], s[1] : e[1], :], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        label[px : px + e[0] - s[0], py : py + e[1] - s[1], pz : pz + raw.shape[2]],
        lab[s[0] : e[0], s[1] : e[1], :],
    )
    # padding carries the normalised background (the volume minimum)
    np.testing.assert_allclose(image[:, :, 0], z.min(), rtol=1e-5)


def test_seeded_margins_reproducible(tmp_path: Path, fixtures_raw: Path, converted: Path) -> None:
    again = tmp_path / "again"
    convert_dataset("la-raw", fixtures_raw / "la-raw", again, log=None)
    for case_id in CASES:
        a = (converted / case_id / "mri_norm2.h5").read_bytes()
        b = (again / case_id / "mri_norm2.h5").read_bytes()
        assert a == b
    other = tmp_path / "seed7"
    opts = default_options("la-raw")
    from dataclasses import replace

    convert_dataset("la-raw", fixtures_raw / "la-raw", other, opts=replace(opts, seed=7), log=None)
    crops0 = json.loads((converted / "preprocess.json").read_text())["cases"]
    crops7 = json.loads((other / "preprocess.json").read_text())["cases"]
    assert any(crops0[c]["crop"] != crops7[c]["crop"] for c in CASES)


def _copy_raw(fixtures_raw: Path, tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(fixtures_raw / "la-raw", raw)
    for p in raw.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return raw


def _assert_one_line_error(
    args: list[str], capsys: pytest.CaptureFixture[str], *needles: str
) -> None:
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("semiseg3d convert: error:")
    for needle in needles:
        assert needle in err[0]


def test_missing_label(
    tmp_path: Path, fixtures_raw: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _copy_raw(fixtures_raw, tmp_path)
    label = raw / "Training Set" / "FIXTURE0000000000002" / "laendo.nrrd"
    label.unlink()
    out = tmp_path / "out"
    args = ["convert", "--dataset", "la-raw", "--raw", str(raw), "--out", str(out)]
    _assert_one_line_error(args, capsys, str(label), "missing")
    assert not out.exists()


def test_label_on_another_grid(
    tmp_path: Path, fixtures_raw: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _copy_raw(fixtures_raw, tmp_path)
    label = raw / "Training Set" / "FIXTURE0000000000001" / "laendo.nrrd"
    img = sitk.ReadImage(str(label))
    img.SetSpacing((1.0, 1.0, 6.5))
    sitk.WriteImage(img, str(label), useCompression=True)
    out = tmp_path / "out"
    args = ["convert", "--dataset", "la-raw", "--raw", str(raw), "--out", str(out)]
    _assert_one_line_error(args, capsys, str(label), "grid differs")
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_truncated_file(
    tmp_path: Path, fixtures_raw: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _copy_raw(fixtures_raw, tmp_path)
    image = raw / "Training Set" / "FIXTURE0000000000002" / "lgemri.nrrd"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    args = ["convert", "--dataset", "la-raw", "--raw", str(raw), "--out", str(out)]
    _assert_one_line_error(args, capsys, str(image))
    assert not out.exists()


def test_testing_set_beside_training_set_is_ignored(tmp_path: Path, fixtures_raw: Path) -> None:
    raw = _copy_raw(fixtures_raw, tmp_path)
    unlabeled = raw / "Testing Set" / "TESTCASE000000000001"
    unlabeled.mkdir(parents=True)
    shutil.copy(raw / "Training Set" / "FIXTURE0000000000002" / "lgemri.nrrd", unlabeled)
    summary = convert_dataset("la-raw", raw, tmp_path / "out", log=None)
    assert summary["cases"] == 2
    # pointed at a folder that holds it, the unlabeled case is an error naming its label
    with pytest.raises(InputError, match=f"{unlabeled / 'laendo.nrrd'}: label file missing"):
        convert_dataset("la-raw", raw / "Testing Set", tmp_path / "out2", log=None)


def test_empty_and_missing_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no LA cases found"):
        convert_dataset("la-raw", empty, tmp_path / "out", log=None)
    with pytest.raises(
        InputError, match=r"Atrial Segmentation Challenge.*Training Set/<ID>/lgemri.nrrd"
    ):
        convert_dataset("la-raw", tmp_path / "nowhere", tmp_path / "out", log=None)
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path, fixtures_raw: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="was not written by semiseg3d"):
        convert_dataset("la-raw", fixtures_raw / "la-raw", out, log=None)
    assert (out / "notes.txt").read_text() == "keep me"
