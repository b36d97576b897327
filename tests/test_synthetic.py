"""The synthetic demo dataset: determinism, layout, value ranges, and that it is not trivial."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage

from semiseg3d.cli import main as cli_main
from semiseg3d.data.synthetic import SynthParams, case_ids, write_dataset
from semiseg3d.errors import InputError

SHAPE = (32, 32, 16)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["image"][()], f["label"][()], np.asarray(f.attrs["spacing"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    write_dataset(
        out, SynthParams(n_train=5, n_test=3, shape=SHAPE, seed=7, spacing=(1.0, 1.0, 2.5))
    )
    return out


def test_layout_and_lists(dataset: Path) -> None:
    train = (dataset / "train.list").read_text().split()
    test = (dataset / "test.list").read_text().split()
    assert len(train) == 5 and len(test) == 3
    assert not set(train) & set(test)
    assert sorted(p.stem for p in dataset.glob("*.h5")) == sorted(train + test)
    # no temporary folder left beside the output
    assert [p.name for p in dataset.parent.iterdir()] == ["ds"]


def test_arrays_dtypes_shapes_and_values(dataset: Path) -> None:
    for path in dataset.glob("*.h5"):
        image, label, spacing = _read(path)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.shape == SHAPE and label.shape == SHAPE
        assert set(np.unique(label)) == {0, 1}
        assert np.all(np.isfinite(image))
        # z-scored over the volume
        assert abs(float(image.mean())) < 1e-4
        assert abs(float(image.std()) - 1.0) < 1e-3
        np.testing.assert_allclose(spacing, [1.0, 1.0, 2.5])


def test_foreground_fraction_and_single_component(dataset: Path) -> None:
    for path in dataset.glob("*.h5"):
        _, label, _ = _read(path)
        frac = label.mean()
        assert 0.05 <= frac <= 0.20, (path.name, frac)
        _, n = ndimage.label(label)
        assert n == 1


def test_byte_identical_reruns(tmp_path: Path) -> None:
    params = SynthParams(n_train=2, n_test=1, shape=SHAPE, seed=3)
    write_dataset(tmp_path / "a", params)
    write_dataset(tmp_path / "b", params)
    for name in ["synth_0000.h5", "synth_0001.h5", "synth_0002.h5", "train.list", "test.list"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    ia, la, _ = _read(tmp_path / "a" / "synth_0001.h5")
    ib, lb, _ = _read(tmp_path / "b" / "synth_0001.h5")
    assert ia.tobytes() == ib.tobytes() and la.tobytes() == lb.tobytes()


def test_seed_changes_data_and_cases_differ(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", SynthParams(n_train=2, n_test=1, shape=SHAPE, seed=3))
    write_dataset(tmp_path / "b", SynthParams(n_train=2, n_test=1, shape=SHAPE, seed=4))
    ia, _, _ = _read(tmp_path / "a" / "synth_0000.h5")
    ib, _, _ = _read(tmp_path / "b" / "synth_0000.h5")
    ia1, _, _ = _read(tmp_path / "a" / "synth_0001.h5")
    assert not np.array_equal(ia, ib)
    assert not np.array_equal(ia, ia1)


def _best_threshold_dice(image: np.ndarray, fg: np.ndarray) -> float:
    """Dice of the best global threshold, searched over 200 intensity quantiles."""
    best = 0.0
    for t in np.quantile(image, np.linspace(0.0, 0.999, 200)):
        pred = image > t
        best = max(best, 2.0 * np.sum(pred & fg) / (pred.sum() + fg.sum()))
    return best


def test_foreground_brighter_but_threshold_is_not_enough(dataset: Path) -> None:
    dices = []
    for path in dataset.glob("*.h5"):
        image, label, _ = _read(path)
        fg = label.astype(bool)
        # the organ is brighter on average than the background by a clear margin
        assert image[fg].mean() > image[~fg].mean() + 1.0
        dices.append(_best_threshold_dice(image, fg))
    # no case is solved by a global threshold, even with the best threshold chosen per case
    assert max(dices) < 0.95, dices


def test_case_ids() -> None:
    assert case_ids(2, 1) == (["synth_0000", "synth_0001"], ["synth_0002"])


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_train": 0}, "--cases"),
        ({"n_test": -1}, "--test"),
        ({"shape": (8, 32, 32)}, "--shape"),
        ({"shape": (32, 32)}, "--shape"),
        ({"seed": -1}, "--seed"),
        ({"spacing": (1.0, 0.0, 1.0)}, "--spacing"),
        ({"spacing": (1.0, float("nan"), 1.0)}, "--spacing"),
    ],
)
def test_bad_parameters(kwargs: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        SynthParams(**kwargs)


def test_cli_writes_dataset_and_reports_bad_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--cases", "2", "--test", "1", "--shape", "16", "16", "16"]
    assert cli_main([*argv, "--seed", "1"]) == 0
    assert (out / "synth_0002.h5").is_file()
    bad = tmp_path / "bad"
    code = cli_main(["synth", "--out", str(bad), "--shape", "16", "16", "15", "--cases", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("semiseg3d synth: error: --shape")
    assert not bad.exists()
