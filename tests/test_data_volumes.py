"""Case files: location, validation errors, downsampling, check-data, VolumeDataset, real LA."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from semiseg3d.cli import main as cli_main
from semiseg3d.data.dataset import NO_LABEL, VolumeDataset, make_loader
from semiseg3d.data.sampler import TwoStreamBatchSampler
from semiseg3d.data.volumes import (
    Volume,
    case_path,
    downsample_volume,
    load_volume,
    read_list,
)
from semiseg3d.errors import InputError


def write_case(path: Path, image=None, label=None, *, shape=(20, 18, 16), spacing=None, **extra):
    """Write a small h5 case; ``image``/``label`` default to a valid pair of ``shape``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    if label is None:
        label = np.zeros(shape, dtype=np.uint8)
        label[2:6, 3:7, 4:8] = 1
    with h5py.File(path, "w") as f:
        if image is not False:
            f.create_dataset("image", data=image)
        if label is not False:
            f.create_dataset("label", data=label)
        for key, value in extra.items():
            f.create_dataset(key, data=value)
        if spacing is not None:
            f.attrs["spacing"] = spacing
    return path


def assert_one_line_error(exc: pytest.ExceptionInfo[InputError], path: Path, *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert path.name in message
    for word in words:
        assert word in message, message


# -- case_path and read_list ---------------------------------------------------------------


def test_case_path_both_layouts(tmp_path: Path) -> None:
    flat = write_case(tmp_path / "A01.h5")
    nested = write_case(tmp_path / "B02" / "mri_norm2.h5")
    assert case_path(tmp_path, "A01") == flat
    assert case_path(tmp_path, "B02") == nested
    assert load_volume(flat).case_id == "A01"
    assert load_volume(nested).case_id == "B02"


def test_case_path_missing_names_id_and_root(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        case_path(tmp_path, "NOPE7")
    assert "NOPE7" in str(exc.value) and str(tmp_path) in str(exc.value)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "a b"])
def test_case_path_rejects_non_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InputError):
        case_path(tmp_path, bad)


def test_read_list_strips_and_ignores_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "train.list"
    p.write_text("A01\n\n  B02  \r\nC03", encoding="utf-8")
    assert read_list(p) == ["A01", "B02", "C03"]


def test_read_list_duplicate_names_file_and_lines(tmp_path: Path) -> None:
    p = tmp_path / "train.list"
    p.write_text("A01\nB02\nA01\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        read_list(p)
    assert_one_line_error(exc, p, "A01", "1", "3")


def test_read_list_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        read_list(tmp_path / "none.list")
    assert_one_line_error(exc, tmp_path / "none.list", "not found")


# -- load_volume ---------------------------------------------------------------------------


def test_load_volume_reads_arrays_and_spacing(tmp_path: Path) -> None:
    image = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    label = (np.arange(24).reshape(2, 3, 4) % 2).astype(np.int16)
    path = write_case(tmp_path / "C1.h5", image, label, spacing=[0.625, 0.625, 2.5])
    vol = load_volume(path)
    assert vol.image.dtype == np.float32 and vol.label.dtype == np.uint8
    assert vol.shape == (2, 3, 4)
    np.testing.assert_array_equal(vol.image, image.astype(np.float32))
    np.testing.assert_array_equal(vol.label, label)
    assert vol.spacing == (0.625, 0.625, 2.5)
    assert vol.path == path


def test_load_volume_without_label(tmp_path: Path) -> None:
    path = write_case(tmp_path / "U1.h5", label=False)
    assert load_volume(path, require_label=False).label is None
    with pytest.raises(InputError) as exc:
        load_volume(path)
    assert_one_line_error(exc, path, "'label'")


def _corrupt(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 8)
    return path


def _truncated(path: Path) -> Path:
    write_case(path, shape=(32, 32, 32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _damaged_chunk(path: Path) -> Path:
    """A compressed file of the right size whose middle bytes are zeroed."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for key, data in (
            ("image", rng.standard_normal((32, 32, 32)).astype(np.float32)),
            ("label", np.zeros((32, 32, 32), np.uint8)),
        ):
            f.create_dataset(key, data=data, compression="gzip", chunks=(16, 16, 16))
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 2000] = bytes(2000)
    path.write_bytes(bytes(data))
    return path


BAD_CASES = {
    "missing image": (lambda p: write_case(p, image=False), ["'image'"]),
    "missing label": (lambda p: write_case(p, label=False), ["'label'"]),
    "shape mismatch": (
        lambda p: write_case(p, label=np.zeros((20, 18, 15), np.uint8)),
        ["20x18x16", "20x18x15"],
    ),
    "not 3-D": (
        lambda p: write_case(
            p, image=np.zeros((1, 4, 4, 4), np.float32), label=np.zeros((1, 4, 4, 4), np.uint8)
        ),
        ["(1, 4, 4, 4)", "3-D"],
    ),
    "label value 2": (
        lambda p: write_case(
            p, label=np.pad(np.full((1, 1, 1), 2, np.uint8), ((0, 19), (0, 17), (0, 15)))
        ),
        ["{2}"],
    ),
    "label values 2 and 255": (
        lambda p: write_case(
            p, label=np.pad(np.array([[[2, 255, 1]]], np.uint8), ((0, 19), (0, 17), (0, 13)))
        ),
        ["{2, 255}"],
    ),
    "nan and inf": (
        lambda p: write_case(
            p,
            image=np.pad(
                np.array([[[np.nan, np.inf, -np.inf, 0.0]]], np.float32),
                ((0, 19), (0, 17), (0, 12)),
            ),
        ),
        ["3 non-finite"],
    ),
    "corrupt bytes": (_corrupt, ["HDF5"]),
    "truncated": (_truncated, ["HDF5"]),
    "damaged chunk": (_damaged_chunk, ["HDF5"]),
    "bad spacing": (lambda p: write_case(p, spacing=[1.0, -1.0, 1.0]), ["spacing"]),
    "empty axis": (
        lambda p: write_case(
            p, image=np.zeros((4, 0, 4), np.float32), label=np.zeros((4, 0, 4), np.uint8)
        ),
        ["empty"],
    ),
}


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_load_volume_errors_are_one_line_and_name_the_file(tmp_path: Path, name: str) -> None:
    make, words = BAD_CASES[name]
    path = make(tmp_path / "Bad_Case.h5")
    with pytest.raises(InputError) as exc:
        load_volume(path)
    assert_one_line_error(exc, path, *words)


def test_load_volume_too_small_names_the_axis(tmp_path: Path) -> None:
    path = write_case(tmp_path / "Small.h5", shape=(20, 18, 16))
    load_volume(path, min_shape=(16, 16, 16))  # fits
    with pytest.raises(InputError) as exc:
        load_volume(path, min_shape=(16, 32, 16))
    assert_one_line_error(exc, path, "axis y", "18 < 32")


def test_load_volume_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        load_volume(tmp_path / "Gone.h5")
    assert_one_line_error(exc, tmp_path / "Gone.h5", "not found")


# -- downsample ----------------------------------------------------------------------------


def test_downsample_block_mean_majority_and_trim() -> None:
    # image[x, y, z] = 100 x + 10 y + z on a 5x4x3 grid; factor 2 trims to 4x4x2.
    # Block (bx, by, 0) covers x in {2bx, 2bx+1}, y in {2by, 2by+1}, z in {0, 1}:
    # mean = 100 (2bx + 0.5) + 10 (2by + 0.5) + 0.5 = 200 bx + 20 by + 55.5.
    x, y, z = np.meshgrid(np.arange(5), np.arange(4), np.arange(3), indexing="ij")
    image = (100 * x + 10 * y + z).astype(np.float32)
    label = np.zeros((5, 4, 3), np.uint8)
    label[0, 0, 0] = label[1, 1, 1] = label[0, 1, 0] = label[1, 0, 1] = 1  # block (0,0,0): 4 of 8
    label[2, 0, 0] = label[3, 1, 1] = label[2, 1, 0] = 1  # block (1,0,0): 3 of 8
    label[4, :, :] = 1  # trimmed away
    label[0, 3, 2] = 1  # trimmed (z = 2)
    vol = Volume(image=image, label=label, spacing=(0.5, 0.5, 1.0), case_id="D")
    out = downsample_volume(vol, 2)
    assert out.shape == (2, 2, 1)
    expected = np.array([[[55.5], [75.5]], [[255.5], [275.5]]], np.float32)
    np.testing.assert_allclose(out.image, expected)
    np.testing.assert_array_equal(out.label, np.array([[[1], [0]], [[0], [0]]], np.uint8))
    assert out.label.dtype == np.uint8 and out.image.dtype == np.float32
    assert out.spacing == (1.0, 1.0, 2.0)
    assert downsample_volume(vol, 1) is vol


def test_downsample_rejects_bad_factor() -> None:
    vol = Volume(image=np.zeros((4, 4, 1), np.float32), label=None, spacing=None, case_id="E")
    with pytest.raises(InputError):
        downsample_volume(vol, 0)
    with pytest.raises(InputError) as exc:
        downsample_volume(vol, 2)  # z = 1 < 2
    assert "'E'" in str(exc.value)


# -- check-data ----------------------------------------------------------------------------


def _small_dataset(root: Path) -> Path:
    write_case(root / "A.h5", shape=(20, 18, 16))
    write_case(root / "B" / "mri_norm2.h5", shape=(24, 18, 16))
    (root / "train.list").write_text("A\n", encoding="utf-8")
    (root / "test.list").write_text("B\n", encoding="utf-8")
    return root


def test_check_data_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _small_dataset(tmp_path / "ds")
    assert cli_main(["check-data", "--data", str(root), "--min-shape", "16", "16", "16"]) == 0
    out = capsys.readouterr().out.strip()
    assert "\n" not in out
    # foreground: 4*4*4 = 64 voxels of 20*18*16 = 5760 (1.1 %) and of 24*18*16 = 6912 (0.9 %)
    assert "2 cases OK" in out and "x 20-24" in out and "y 18-18" in out and "z 16-16" in out
    assert "0.9%-1.1%" in out


def test_check_data_exits_2_on_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _small_dataset(tmp_path / "ds")
    write_case(root / "A.h5", label=np.full((20, 18, 16), 3, np.uint8))
    assert cli_main(["check-data", "--data", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "A.h5" in err and "{3}" in err
    assert cli_main(["check-data", "--data", str(root), "--list", "test.list"]) == 0
    assert (
        cli_main(
            [
                "check-data",
                "--data",
                str(root),
                "--list",
                "test.list",
                "--min-shape",
                "32",
                "16",
                "16",
            ]
        )
        == 2
    )
    assert "axis x (24 < 32)" in capsys.readouterr().err


# -- VolumeDataset -------------------------------------------------------------------------


def _coded_case(path: Path, shape: tuple[int, int, int]) -> None:
    """image = 10000 x + 100 y + z + 1 (coordinates readable from values); label = (x+y+z) odd."""
    x, y, z = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    write_case(
        path, (10000 * x + 100 * y + z + 1).astype(np.float32), ((x + y + z) % 2).astype(np.uint8)
    )


def test_volume_dataset_crop_and_whole_volume(tmp_path: Path) -> None:
    _coded_case(tmp_path / "P.h5", (20, 18, 16))
    ds = VolumeDataset(tmp_path, ["P"], (16, 16, 8))
    item = ds[(0, 1234)]
    assert item["image"].shape == (1, 16, 16, 8) and item["image"].dtype == torch.float32
    assert item["label"].shape == (16, 16, 8) and item["label"].dtype == torch.int64
    assert item["case"] == "P"
    # no padding (every axis > patch): offsets drawn in axis order from default_rng(1234)
    g = np.random.default_rng(1234)
    ox, oy, oz = (int(g.integers(0, s - p)) for s, p in zip((20, 18, 16), (16, 16, 8), strict=True))
    assert item["image"][0, 0, 0, 0].item() == 10000 * ox + 100 * oy + oz + 1
    assert item["label"][0, 0, 0].item() == (ox + oy + oz) % 2
    assert torch.equal(ds[(0, 1234)]["image"], item["image"])  # pure function of the seed
    whole = ds[0]
    assert whole["image"].shape == (1, 20, 18, 16) and whole["label"].shape == (20, 18, 16)


def test_volume_dataset_downsample_min_shape_and_missing_label(tmp_path: Path) -> None:
    write_case(tmp_path / "Q.h5", shape=(20, 18, 16), label=False)
    ds = VolumeDataset(tmp_path, ["Q"], (8, 8, 8), downsample=2, with_label=False)
    item = ds[(0, 5)]
    assert item["image"].shape == (1, 8, 8, 8)
    assert torch.all(item["label"] == NO_LABEL)
    assert ds[0]["image"].shape == (1, 10, 9, 8)
    small = VolumeDataset(
        tmp_path, ["Q"], (8, 8, 8), downsample=2, min_shape=(16, 16, 16), with_label=False
    )
    with pytest.raises(InputError) as exc:
        small[0]
    assert "Q.h5" in str(exc.value) and "downsampled by 2" in str(exc.value)
    with pytest.raises(InputError):
        VolumeDataset(tmp_path, ["Q", "Missing"], (8, 8, 8))
    # a case of the labeled stream must have its label even with with_label=False
    write_case(tmp_path / "R.h5", shape=(20, 18, 16))
    mixed = VolumeDataset(tmp_path, ["R", "Q"], (8, 8, 8), with_label=False, labeled_indices=[0])
    assert set(torch.unique(mixed[(0, 1)]["label"]).tolist()) <= {0, 1}
    assert torch.all(mixed[(1, 1)]["label"] == NO_LABEL)
    strict = VolumeDataset(tmp_path, ["Q", "R"], (8, 8, 8), with_label=False, labeled_indices=[0])
    with pytest.raises(InputError) as exc:
        strict[(0, 1)]
    assert "Q.h5" in str(exc.value) and "'label'" in str(exc.value)


def test_make_loader_batches_match_direct_access_with_workers(tmp_path: Path) -> None:
    for i in range(4):
        _coded_case(tmp_path / f"C{i}.h5", (12, 12, 10))
    ids = [f"C{i}" for i in range(4)]
    ds = VolumeDataset(tmp_path, ids, (8, 8, 8))
    sampler = TwoStreamBatchSampler([0, 1], [2, 3], 1, 1, seed=3)
    loader = make_loader(ds, sampler.with_iterations(3), num_workers=1, seed=3)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    for t, batch in enumerate(batches):
        expected = [ds[key] for key in sampler.batch(t)]
        assert batch["image"].shape == (2, 1, 8, 8, 8)
        assert batch["case"] == [e["case"] for e in expected]
        assert torch.equal(batch["image"], torch.stack([e["image"] for e in expected]))
        assert torch.equal(batch["label"], torch.stack([e["label"] for e in expected]))


# -- real LA -------------------------------------------------------------------------------


def test_real_la_cases(la_dir: Path) -> None:
    ids = read_list(la_dir / "train.list")[:2]
    for case_id in ids:
        path = case_path(la_dir, case_id)
        assert path == la_dir / case_id / "mri_norm2.h5"
        with h5py.File(path, "r") as f:
            assert set(f.keys()) == {"image", "label"}
            assert f["image"].dtype == np.float32 and f["label"].dtype == np.uint8
        vol = load_volume(path, min_shape=(148, 132, 88))
        assert vol.shape[2] == 88
        assert vol.shape[0] >= 148 and vol.shape[1] >= 132
        assert set(np.unique(vol.label).tolist()) == {0, 1}
    ds = VolumeDataset(la_dir, ids, (112, 112, 80))
    item = ds[(1, 42)]
    assert item["image"].shape == (1, 112, 112, 80) and item["label"].shape == (112, 112, 80)
    assert set(torch.unique(item["label"]).tolist()) <= {0, 1}
    vol = load_volume(case_path(la_dir, ids[1]))
    g = np.random.default_rng(42)
    o = [int(g.integers(0, s - p)) for s, p in zip(vol.shape, (112, 112, 80), strict=True)]
    window = np.s_[o[0] : o[0] + 112, o[1] : o[1] + 112, o[2] : o[2] + 80]
    np.testing.assert_array_equal(item["image"][0].numpy(), vol.image[window])
    np.testing.assert_array_equal(item["label"].numpy(), vol.label[window])
