"""Own-data converter: imagesTr/labelsTr pairs (NIfTI, NRRD), unlabeled images, split file,
preprocessing options from a file and --set, and the bad inputs (missing label, label on
another grid, truncated file, empty folder, bad options)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from semiseg3d.cli import main as cli_main
from semiseg3d.data.convert import convert_dataset, default_options
from semiseg3d.data.preprocess import load_options, options_from_mapping
from semiseg3d.data.volumes import load_volume, read_list
from semiseg3d.errors import InputError

SHAPE = (30, 26, 20)  # x, y, z
SPACING = (0.7, 0.8, 1.6)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # x/y swapped with a flip


def _image(array: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.SetSpacing(SPACING)
    img.SetOrigin((5.0, -3.0, 12.0))
    img.SetDirection(DIRECTION)
    return img


def _case(rng: np.random.Generator, corner: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Background ~ 20, an 8x6x5 cube of value 80 at ``corner`` labeled 1."""
    image = rng.normal(20.0, 2.0, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, dtype=np.uint8)
    x, y, z = corner
    label[x : x + 8, y : y + 6, z : z + 5] = 1
    image[label == 1] = 80.0
    return image, label


CORNERS = {
    "c1": (3, 4, 2),
    "c2": (10, 10, 10),
    "c3": (20, 15, 12),
    "c4": (5, 18, 3),
    "c5": (14, 2, 8),
}


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "raw"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesUnlabeled").mkdir()
    for i, (case_id, corner) in enumerate(CORNERS.items()):
        image, label = _case(rng, corner)
        ext = ".nrrd" if case_id == "c2" else ".nii.gz"
        name = (
            f"{case_id}_0000{ext}" if case_id == "c3" else f"{case_id}{ext}"
        )  # nnU-Net naming too
        sitk.WriteImage(_image(image), str(root / "imagesTr" / name))
        sitk.WriteImage(_image(label), str(root / "labelsTr" / f"{case_id}{ext}"))
        del i
    for case_id in ("u1", "u2"):
        image, _ = _case(rng, (6, 6, 6))
        sitk.WriteImage(_image(image), str(root / "imagesUnlabeled" / f"{case_id}.nii.gz"))
    return root


def _options_file(tmp_path: Path, **options: object) -> Path:
    path = tmp_path / "options.yaml"
    path.write_text(yaml.safe_dump({"options": options}))
    return path


def test_window_crop_and_lists(raw: Path, tmp_path: Path) -> None:
    opts_file = _options_file(
        tmp_path,
        intensity="window",
        window=[0, 100],
        crop="label",
        margin=2,
        patch=[16, 16, 16],
        test_fraction=0.2,
        seed=3,
    )
    out = tmp_path / "out"
    rc = cli_main(
        [
            "convert",
            "--dataset",
            "custom",
            "--raw",
            str(raw),
            "--out",
            str(out),
            "--options",
            str(opts_file),
        ]
    )
    assert rc == 0
    train, test = read_list(out / "train.list"), read_list(out / "test.list")
    unlabeled = read_list(out / "unlabeled.list")
    assert unlabeled == ["u1", "u2"]
    assert len(test) == 1 and len(train) == 4 + 2
    assert train[-2:] == ["u1", "u2"]  # unlabeled after the labeled ones
    assert sorted(train[:4] + test) == sorted(CORNERS)
    record = json.loads((out / "preprocess.json").read_text())
    assert record["n_labeled_train"] == 4
    assert record["split"] == {
        "source": "random",
        "seed": 3,
        "test_fraction": 0.2,
        "val_fraction": 0.0,
    }
    for case_id, corner in CORNERS.items():
        vol = load_volume(out / f"{case_id}.h5")
        assert vol.image.min() >= 0.0 and vol.image.max() <= 1.0
        assert int(vol.label.sum()) == 8 * 6 * 5
        np.testing.assert_allclose(vol.spacing, SPACING, rtol=1e-6)
        crop = record["cases"][case_id]["crop"]
        for axis, (c, n) in enumerate(zip(corner, (8, 6, 5), strict=True)):
            # box [c, c + n - 1] + margin 2 (inclusive end), clamped, then padded to 16
            assert crop["start"][axis] == max(c - 2, 0)
            assert crop["stop"][axis] == min(c + n - 1 + 2 + 1, SHAPE[axis])
            assert vol.shape[axis] == 16  # every box + margins is < 16 here
        # the cube (80 -> 0.8) sits in the label, the background ~ 0.2
        assert np.allclose(vol.image[vol.label == 1], 0.8)
    for case_id in ("u1", "u2"):
        with h5py.File(out / f"{case_id}.h5", "r") as f:
            assert "label" not in f  # unlabeled: no label dataset at all
            assert f["image"].shape == SHAPE  # no label: no label crop


def test_split_file_resample_and_set(raw: Path, tmp_path: Path) -> None:
    (raw / "split.yaml").write_text(
        yaml.safe_dump({"train": ["c5", "c1", "c2"], "test": ["c3"], "val": ["c4"]})
    )
    out = tmp_path / "out"
    args = ["convert", "--dataset", "custom", "--raw", str(raw), "--out", str(out)]
    args += ["--set", "spacing=[1.4, 1.6, 1.6]", "--set", "pad_to_patch=false"]
    assert cli_main(args) == 0
    assert read_list(out / "train.list") == ["c5", "c1", "c2", "u1", "u2"]
    assert read_list(out / "test.list") == ["c3"]
    assert read_list(out / "val.list") == ["c4"]
    # preprocess.json says where the lists came from: the split file, not a random split
    record = json.loads((out / "preprocess.json").read_text())
    assert record["split"] == {"source": "file", "file": "split.yaml", "found_in": "raw folder"}
    assert any("split.yaml" in note for note in record["notes"])
    vol = load_volume(out / "c1.h5")
    np.testing.assert_allclose(vol.spacing, (1.4, 1.6, 1.6))
    assert vol.shape == (15, 13, 20)  # round(30*0.7/1.4), round(26*0.8/1.6), 20
    # z-score over the whole volume (default)
    assert abs(float(vol.image.mean())) < 1e-3 and abs(float(vol.image.std()) - 1) < 1e-3


def _err(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli_main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semiseg3d convert: error:")
    return lines[0]


def test_label_on_another_grid(
    raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    label_path = raw / "labelsTr" / "c4.nii.gz"
    label = sitk.ReadImage(str(label_path))
    label.SetOrigin((6.0, -3.0, 12.0))  # shifted by 1 mm
    sitk.WriteImage(label, str(label_path))
    out = tmp_path / "out"
    err = _err(["convert", "--dataset", "custom", "--raw", str(raw), "--out", str(out)], capsys)
    assert str(label_path) in err and "grid differs" in err and "origin" in err
    assert not out.exists()
    # by request, mapped by geometry instead
    args = [
        "convert",
        "--dataset",
        "custom",
        "--raw",
        str(raw),
        "--out",
        str(out),
        "--set",
        "align_label=resample",
    ]
    assert cli_main(args) == 0
    assert load_volume(out / "c4.h5").label.sum() > 0


def test_missing_label_truncated_image_empty(
    raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    base = ["convert", "--dataset", "custom", "--out", str(out), "--raw"]
    (raw / "labelsTr" / "c5.nii.gz").rename(tmp_path / "c5_label.nii.gz")
    err = _err([*base, str(raw)], capsys)
    assert str(raw / "imagesTr" / "c5.nii.gz") in err and "no label" in err
    (tmp_path / "c5_label.nii.gz").rename(raw / "labelsTr" / "c5.nii.gz")
    image = raw / "imagesTr" / "c1.nii.gz"
    image.write_bytes(image.read_bytes()[:-200])
    err = _err([*base, str(raw)], capsys)
    assert str(image) in err and "truncated" in err
    empty = tmp_path / "empty"
    (empty / "imagesTr").mkdir(parents=True)
    err = _err([*base, str(empty)], capsys)
    assert "no images found" in err
    assert not out.exists()


def test_label_values_must_be_integers(raw: Path, tmp_path: Path) -> None:
    label_path = raw / "labelsTr" / "c1.nii.gz"
    arr = np.zeros(SHAPE, dtype=np.float32)
    arr[2:5, 2:5, 2:5] = 0.5
    sitk.WriteImage(_image(arr), str(label_path))
    with pytest.raises(InputError, match=f"{label_path}: label has non-integer values"):
        convert_dataset("custom", raw, tmp_path / "out", log=None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"crop_margin": 3}, "unknown preprocessing option"),
        ({"intensity": "minmax"}, "option 'intensity' must be one of"),
        ({"window": [100, 0]}, "option 'window' must be [lo, hi] with lo < hi"),
        ({"spacing": [1, 1]}, "option 'spacing' must be a list of 3 numbers"),
        ({"patch": [16, 0, 16]}, "option 'patch' must be >= 1"),
        ({"intensity": "window"}, "needs 'window: [lo, hi]'"),
        ({"crop_axes": "xw"}, "option 'crop_axes'"),
        ({"clip_percentile": 120}, "option 'clip_percentile'"),
    ],
)
def test_option_errors_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(InputError) as info:
        options_from_mapping(data, default_options("custom"), "params.yaml")
    assert str(info.value).startswith("params.yaml")
    assert message in str(info.value)


def test_options_file_accepts_params_sections(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"preprocess": {"crop": "foreground", "margin": [1, 2, 3]}}))
    opts = load_options(path, {"seed": 5}, default_options("custom"))
    assert (opts.crop, opts.margin, opts.seed) == ("foreground", (1, 2, 3), 5)
