"""semiseg3d predict: the mask lands on the input's own grid (shape, spacing, origin,
direction), through resampling, cropping and downsampling, for NIfTI, NRRD and DICOM input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from semiseg3d.cli import main as cli_main
from semiseg3d.config.run import TrainConfig
from semiseg3d.data.convert import write_preprocess_json
from semiseg3d.data.preprocess import PreprocessOptions
from semiseg3d.errors import InputError
from semiseg3d.inference.predict import predict_image, predict_scan
from semiseg3d.models import VNet
from semiseg3d.training.checkpoint import save_final

SIZE = (40, 36, 30)  # x, y, z voxels
SPACING = (0.8, 0.9, 1.5)  # mm
ORIGIN = (10.0, -20.0, 30.0)  # mm
ANGLE = math.radians(30)
# a rotation about z followed by a y reflection: neither identity nor axis-aligned
DIRECTION = np.array(
    [
        [math.cos(ANGLE), -math.sin(ANGLE), 0.0],
        [math.sin(ANGLE), math.cos(ANGLE), 0.0],
        [0.0, 0.0, 1.0],
    ]
) @ np.diag([1.0, -1.0, 1.0])
CENTRE_INDEX = (20, 17, 14)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small convolutions on a shared 2-core machine run far faster on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


RADIUS_MM = 7.0


def _physical_grid() -> np.ndarray:
    """Physical coordinates (x, y, z mm) of every voxel centre, computed with numpy from
    origin + direction @ (index * spacing): shape (X, Y, Z, 3)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in SIZE], indexing="ij"), axis=-1).astype(float)
    return np.asarray(ORIGIN) + (idx * np.asarray(SPACING)) @ DIRECTION.T


def _sphere_mask() -> np.ndarray:
    pts = _physical_grid()
    centre = pts[CENTRE_INDEX]
    return np.linalg.norm(pts - centre, axis=-1) <= RADIUS_MM


def _scan(zero_border: int = 0) -> sitk.Image:
    """A bright sphere (value 100) on a dim background (10 + a ramp), optionally zero outside
    an inner box (a 'skull-stripped' volume for the foreground crop)."""
    rng = np.random.default_rng(0)
    arr = 10.0 + 0.1 * np.arange(SIZE[0])[:, None, None] + rng.normal(0, 0.5, SIZE)
    arr[_sphere_mask()] = 100.0
    if zero_border:
        b = zero_border
        keep = np.zeros(SIZE, dtype=bool)
        keep[b:-b, b:-b, b:-b] = True
        arr[~keep] = 0.0
    image = sitk.GetImageFromArray(arr.astype(np.float32).transpose(2, 1, 0))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(tuple(DIRECTION.reshape(-1)))
    return image


def _threshold_prob_fn(x: torch.Tensor) -> torch.Tensor:
    """Foreground where the normalised intensity is high (a stand-in for a trained net)."""
    p1 = torch.sigmoid(8.0 * (x - 1.0))
    return torch.cat([1 - p1, p1], dim=1)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _assert_same_grid(img: sitk.Image, ref: sitk.Image) -> None:
    assert img.GetSize() == ref.GetSize()
    np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-5)


def _xyz(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


def test_sphere_lands_on_its_voxels_without_resampling() -> None:
    image = _scan()
    opts = PreprocessOptions(patch=(16, 16, 16))
    pred = predict_image(image, _threshold_prob_fn, opts, (16, 16, 16), (8, 8, 8))
    for out in (pred.mask, pred.probability, pred.entropy):
        _assert_same_grid(out, image)
    mask = _xyz(pred.mask)
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask.astype(bool), _sphere_mask())
    ent = _xyz(pred.entropy)
    assert ent.min() >= 0 and ent.max() <= math.log(2) + 1e-6
    prob = _xyz(pred.probability)
    assert prob.min() >= 0 and prob.max() <= 1


def test_resample_and_foreground_crop_are_undone() -> None:
    image = _scan(zero_border=3)
    opts = PreprocessOptions(
        spacing=(1.2, 1.2, 1.2), crop="foreground", margin=(2, 2, 2), patch=(16, 16, 16)
    )
    pred = predict_image(image, _threshold_prob_fn, opts, (16, 16, 16), (8, 8, 8))
    _assert_same_grid(pred.mask, image)
    _assert_same_grid(pred.probability, image)
    assert _dice(_xyz(pred.mask).astype(bool), _sphere_mask()) > 0.9


def test_downsampled_run_maps_back() -> None:
    image = _scan()
    pred = predict_image(
        image, _threshold_prob_fn, PreprocessOptions(), (16, 16, 16), (8, 8, 8), downsample=2
    )
    _assert_same_grid(pred.mask, image)
    assert _dice(_xyz(pred.mask).astype(bool), _sphere_mask()) > 0.8


def _run_folder(tmp_path: Path, opts: PreprocessOptions, dataset: str = "own") -> Path:
    """A finished SupOnly run with random weights and its data folder's recipe."""
    data = tmp_path / "data"
    data.mkdir()
    write_preprocess_json(data, "custom", opts)
    cfg = TrainConfig(
        dataset=dataset,
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


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_cli_writes_mask_probs_entropy_on_input_grid(tmp_path: Path, suffix: str) -> None:
    run = _run_folder(tmp_path, PreprocessOptions(spacing=(2.0, 2.0, 2.0), patch=(16, 16, 16)))
    scan = tmp_path / f"scan{suffix}"
    image = _scan()
    sitk.WriteImage(image, str(scan))
    image = sitk.ReadImage(str(scan))  # the geometry as stored in the file
    out, probs, ent = tmp_path / "m.nii.gz", tmp_path / "p.nii.gz", tmp_path / "e.nii.gz"
    rc = cli_main(
        ["predict", "--run", str(run), "--input", str(scan), "--out", str(out)]
        + ["--probs", str(probs), "--entropy", str(ent), "--device", "cpu"]
    )
    assert rc == 0
    for path in (out, probs, ent):
        written = sitk.ReadImage(str(path))
        _assert_same_grid(written, image)
    mask = sitk.ReadImage(str(out))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= {0, 1}
    p = sitk.GetArrayFromImage(sitk.ReadImage(str(probs)))
    assert p.min() >= 0.0 and p.max() <= 1.0
    # the mask is the probability thresholded at 0.5
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), (p > 0.5).astype(np.uint8))
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(
        ["data", "run", scan.name, "m.nii.gz", "p.nii.gz", "e.nii.gz"]
    )


def test_dicom_folder_input(tmp_path: Path, fixtures_raw: Path) -> None:
    from semiseg3d.data.geometry import read_dicom_series

    series = fixtures_raw / "pancreas-ct" / "Pancreas-CT" / "PANCREAS_0001"
    opts = PreprocessOptions(
        spacing=(8.0, 8.0, 4.0), intensity="window_zscore", window=(-120, 240), patch=(16, 16, 16)
    )
    run = _run_folder(tmp_path, opts)
    out = tmp_path / "mask.nii.gz"
    predict_scan(run, series, out, device="cpu", verbose=False)
    _assert_same_grid(sitk.ReadImage(str(out)), read_dicom_series(series))


def test_builtin_recipe_used_without_preprocess_json(tmp_path: Path) -> None:
    run = _run_folder(tmp_path, PreprocessOptions(), dataset="synthetic")
    (tmp_path / "data" / "preprocess.json").unlink()
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(_scan(), str(scan))
    pred = predict_scan(run, scan, tmp_path / "m.nii.gz", device="cpu", verbose=False)
    _assert_same_grid(pred.mask, sitk.ReadImage(str(scan)))


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_folder(tmp_path, PreprocessOptions(patch=(16, 16, 16)))
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(_scan(), str(scan))
    with pytest.raises(InputError, match="model_final.pt"):
        predict_scan(tmp_path / "data", scan, tmp_path / "m.nii.gz")
    with pytest.raises(InputError, match="missing.nii.gz"):
        predict_scan(run, tmp_path / "missing.nii.gz", tmp_path / "m.nii.gz")
    with pytest.raises(InputError, match="unsupported file type"):
        predict_scan(run, scan, tmp_path / "m.png")
    (tmp_path / "data" / "preprocess.json").unlink()
    with pytest.raises(InputError, match="no preprocessing recipe for dataset 'own'"):
        predict_scan(run, scan, tmp_path / "m.nii.gz")
    if not torch.cuda.is_available():
        rc = cli_main(
            [
                "predict",
                "--run",
                str(run),
                "--input",
                str(scan),
                "--out",
                str(tmp_path / "m.nii.gz"),
            ]
            + ["--device", "cuda", "--preprocess", str(tmp_path / "none.json")]
        )
        assert rc == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("semiseg3d predict: error:")
    assert not (tmp_path / "m.nii.gz").exists()
