"""``bench/gpu_data.py``: LA-lite's halved volumes packed for the GPU machine and rebuilt there
bit for bit, so that ``la_lite.py --downsample 1`` on the rebuilt folder trains on exactly
the arrays that ``--downsample 2`` makes from LA."""

from __future__ import annotations

import importlib.util
import io
import lzma
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pytest

from semiseg3d.data.dataset import VolumeDataset
from semiseg3d.errors import InputError


@pytest.fixture(scope="module")
def gpu_data(root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_data", root / "bench" / "gpu_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def test_packed_cache_rebuilds_the_halved_volumes_bit_for_bit(
    gpu_data: ModuleType, tmp_path: Path
) -> None:
    la = tmp_path / "la"
    # LA-like cases: quantised intensities (few distinct values), the LA layout, no spacing
    gpu_data.write_volumes(la, 3, 1, (34, 30, 20), lite=True)
    # one case with continuous intensities: 48 x 48 x 32 = 73,728 distinct halved values,
    # more than a uint16 index can address, so it is stored as float32
    rng = np.random.default_rng(1)
    (la / "case099").mkdir()
    with h5py.File(la / "case099" / "mri_norm2.h5", "w") as f:
        f["image"] = rng.normal(size=(96, 96, 64)).astype(np.float32)
        f["label"] = (rng.random((96, 96, 64)) < 0.3).astype(np.uint8)
    (la / "test.list").write_text("case003\ncase099\n")

    manifest = gpu_data.pack(la, tmp_path / "cache")
    assert sorted(manifest["cases"]) == ["case000", "case001", "case002", "case003", "case099"]
    stored = {
        case: set(
            np.load(
                io.BytesIO(lzma.decompress((tmp_path / "cache" / f"{case}.npz.xz").read_bytes()))
            )
        )
        for case in manifest["cases"]
    }
    assert stored["case000"] == {"index", "values", "label"}
    assert stored["case099"] == {"image", "label"}

    ids = gpu_data.unpack(tmp_path / "cache", tmp_path / "halved")
    assert ids == list(manifest["cases"])
    for name in ("train.list", "test.list"):
        assert (tmp_path / "halved" / name).read_text() == (la / name).read_text()
    # what la_lite.py reads: the rebuilt folder at factor 1 against LA at factor 2
    patch = (16, 16, 8)
    direct = VolumeDataset(la, ids, patch, downsample=2, with_label=True)
    rebuilt = VolumeDataset(tmp_path / "halved", ids, patch, downsample=1, with_label=True)
    for index, case in enumerate(ids):
        a, b = direct.volume(index), rebuilt.volume(index)
        assert a.image.dtype == b.image.dtype == np.float32, case
        assert a.image.shape == b.image.shape, case
        assert np.array_equal(_bits(a.image), _bits(b.image)), case
        assert np.array_equal(a.label, b.label) and a.spacing == b.spacing is None, case


def test_unpack_refuses_a_damaged_cache(gpu_data: ModuleType, tmp_path: Path) -> None:
    la = tmp_path / "la"
    gpu_data.write_volumes(la, 1, 1, (20, 20, 20), lite=True)
    gpu_data.pack(la, tmp_path / "cache")
    path = tmp_path / "cache" / "case000.npz.xz"
    arrays = dict(np.load(io.BytesIO(lzma.decompress(path.read_bytes()))))
    arrays["values"] = arrays["values"] + np.float32(1e-3)  # one changed value table
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(lzma.compress(buf.getvalue()))
    with pytest.raises(InputError, match=r"case000\.npz\.xz: rebuilt volume differs"):
        gpu_data.unpack(tmp_path / "cache", tmp_path / "out")
    with pytest.raises(InputError, match="no manifest.json"):
        gpu_data.unpack(tmp_path / "nothing", tmp_path / "out2")
