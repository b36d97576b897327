"""Split files: first N labeled, ratio rounding, byte-identical reruns, list errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from semiseg3d.cli import main as cli_main
from semiseg3d.data.splits import labeled_from_ratio, split_labeled, write_split
from semiseg3d.errors import InputError

TRAIN = ["T1", "T2", "T3", "T4", "T5", "T6"]
TEST = ["S1", "S2"]


def _dataset(root: Path, train=TRAIN, test=TEST, files=None) -> Path:
    root.mkdir(parents=True)
    for case_id in files if files is not None else [*train, *test]:
        with h5py.File(root / f"{case_id}.h5", "w") as f:
            f.create_dataset("image", data=np.zeros((4, 4, 4), np.float32))
            f.create_dataset("label", data=np.zeros((4, 4, 4), np.uint8))
    (root / "train.list").write_text("\n".join(train) + "\n", encoding="utf-8")
    (root / "test.list").write_text("\n".join(test) + "\n", encoding="utf-8")
    return root


def test_split_labeled_first_n_in_file_order() -> None:
    assert split_labeled(TRAIN, 2) == (["T1", "T2"], ["T3", "T4", "T5", "T6"])
    assert split_labeled(TRAIN, 6) == (TRAIN, [])


@pytest.mark.parametrize("n", [0, 7, -1])
def test_split_labeled_out_of_range(n: int) -> None:
    with pytest.raises(InputError) as exc:
        split_labeled(TRAIN, n)
    assert str(n) in str(exc.value) and "6" in str(exc.value)


@pytest.mark.parametrize(
    ("ratio", "n_train", "expected"),
    [
        (0.15, 62, 9),  # 9.3 -> 9
        (0.25, 62, 16),  # 15.5 -> 16 (half up)
        (0.10, 62, 6),  # 6.2 -> 6
        (0.20, 62, 12),  # 12.4 -> 12
        (0.10, 80, 8),
        (0.20, 80, 16),
        (0.15, 80, 12),
        (0.25, 80, 20),
        (0.15, 250, 38),  # 37.5 -> 38
        (0.25, 250, 63),  # 62.5 -> 63
        (0.35, 10, 4),  # 3.5 -> 4
        (0.145, 100, 15),  # 14.5 -> 15 although 0.145 * 100 == 14.499999999999998 in binary
        (1.0, 5, 5),
    ],
)
def test_labeled_from_ratio_rounds_half_up(ratio: float, n_train: int, expected: int) -> None:
    assert labeled_from_ratio(ratio, n_train) == expected


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan"), 0.04])
def test_labeled_from_ratio_errors(ratio: float) -> None:
    with pytest.raises(InputError):
        labeled_from_ratio(ratio, 10)  # 0.04 x 10 = 0.4 -> 0 labeled cases


def test_split_command_writes_lists_byte_identical_on_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _dataset(tmp_path / "ds")
    out = tmp_path / "split"
    args = ["split", "--data", str(data), "--labeled", "2", "--out", str(out)]
    assert cli_main(args) == 0
    assert (out / "labeled.list").read_bytes() == b"T1\nT2\n"
    assert (out / "unlabeled.list").read_bytes() == b"T3\nT4\nT5\nT6\n"
    assert (out / "test.list").read_bytes() == b"S1\nS2\n"
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(first) == {"labeled.list", "unlabeled.list", "test.list"}
    assert cli_main(args) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert "2 labeled, 4 unlabeled, 2 test" in capsys.readouterr().out


def test_split_command_ratio(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds")
    out = tmp_path / "split"
    # 0.25 x 6 = 1.5 -> 2
    assert cli_main(["split", "--data", str(data), "--ratio", "0.25", "--out", str(out)]) == 0
    assert (out / "labeled.list").read_text() == "T1\nT2\n"


def test_split_copies_val_list_and_checks_its_overlap(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds", files=[*TRAIN, *TEST, "V1"])
    (data / "val.list").write_text("V1\n", encoding="utf-8")
    result = write_split(data, tmp_path / "a", labeled=6)
    assert result["unlabeled"] == [] and (tmp_path / "a" / "unlabeled.list").read_bytes() == b""
    assert (tmp_path / "a" / "val.list").read_bytes() == b"V1\n"
    (data / "val.list").write_text("V1\nT3\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        write_split(data, tmp_path / "b", labeled=2)
    assert "T3" in str(exc.value) and "val.list" in str(exc.value)


def _run_expect_error(args: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("semiseg3d split: error:")
    for word in words:
        assert word in err, err
    return err


def test_split_labeled_out_of_range_writes_nothing(tmp_path: Path, capsys) -> None:
    data = _dataset(tmp_path / "ds")
    out = tmp_path / "split"
    _run_expect_error(
        ["split", "--data", str(data), "--labeled", "7", "--out", str(out)], capsys, "7", "6"
    )
    assert not out.exists()


def test_split_missing_volume_named(tmp_path: Path, capsys) -> None:
    data = _dataset(tmp_path / "ds", files=["T1", "T2", "T3", "T4", "T6", "S1", "S2"])
    out = tmp_path / "split"
    _run_expect_error(
        ["split", "--data", str(data), "--labeled", "2", "--out", str(out)],
        capsys,
        "train.list",
        "T5",
    )
    assert not out.exists()


def test_split_overlap_between_train_and_test(tmp_path: Path, capsys) -> None:
    data = _dataset(tmp_path / "ds", test=["S1", "T4"])
    out = tmp_path / "split"
    _run_expect_error(
        ["split", "--data", str(data), "--labeled", "2", "--out", str(out)],
        capsys,
        "train.list",
        "test.list",
        "T4",
    )
    assert not out.exists()


def test_split_duplicate_in_list(tmp_path: Path, capsys) -> None:
    data = _dataset(tmp_path / "ds", train=["T1", "T2", "T1"])
    _run_expect_error(
        ["split", "--data", str(data), "--labeled", "1", "--out", str(tmp_path / "o")],
        capsys,
        "train.list",
        "T1",
    )


def test_split_real_la_first_eight(la_dir: Path, tmp_path: Path) -> None:
    result = write_split(la_dir, tmp_path / "la8", labeled=8)
    # spec 5.1: the first 8 lines of LA train.list (the 10 % cut)
    assert result["labeled"] == [
        "06SR5RBREL16DQ6M8LWS",
        "0RZDK210BSMWAA6467LU",
        "1D7CUD1955YZPGK8XHJX",
        "1GU15S0GJ6PFNARO469W",
        "1MHBF3G6DCPWHSKG7XCP",
        "23X6SY44VT9KFHR7S7OC",
        "2XL5HSFSE93RMOJDRGR4",
        "38CWS74285MFGZZXR09Z",
    ]
    assert len(result["unlabeled"]) == 72 and len(result["test"]) == 20
    assert (tmp_path / "la8" / "test.list").read_bytes().count(b"\n") == 20
