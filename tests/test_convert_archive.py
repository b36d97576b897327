"""Archives: a raw dataset given as .zip / .tar.gz converts like the folder; members that
would escape the target folder (.., absolute paths, links) are refused before anything is
written."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from semiseg3d.data.archive import safe_extract
from semiseg3d.data.convert import convert_dataset
from semiseg3d.errors import InputError


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("ok.txt", b"1"), ("../evil.txt", b"x")], "'../evil.txt' points outside"),
        ([("a/../../evil.txt", b"x")], "points outside"),
        ([("/tmp/evil_abs.txt", b"x")], "absolute path"),
    ],
)
def test_zip_escape_refused(tmp_path: Path, members: list[tuple[str, bytes]], message: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    dest = tmp_path / "sub" / "dest"
    with pytest.raises(InputError, match=message) as info:
        safe_extract(archive, dest)
    assert str(archive) in str(info.value)
    assert list(dest.iterdir()) == []  # nothing written, not even the harmless member
    assert not (tmp_path / "sub" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(_file("../evil.txt"), b"x")], "points outside"),
        ([(_file("/tmp/evil_abs.txt"), b"x")], "absolute path"),
        ([(_link("up", ".."), None), (_file("up/evil.txt"), b"x")], "is a link"),
        ([(_link("hard", "/etc/passwd", hard=True), None)], "is a link"),
    ],
)
def test_tar_escape_refused(tmp_path: Path, members, message: str) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", members)
    dest = tmp_path / "sub" / "dest"
    with pytest.raises(InputError, match=message):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "sub" / "evil.txt").exists()


def test_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match=f"{archive}: "):
        safe_extract(archive, tmp_path / "dest")


def test_convert_from_zip(tmp_path: Path, fixtures_raw: Path) -> None:
    src = fixtures_raw / "la-raw" / "Training Set"
    archive = tmp_path / "LA.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, Path("2018LA_Seg_Training Set") / path.relative_to(src))
    out = tmp_path / "data" / "la"
    summary = convert_dataset("la-raw", archive, out, log=None)
    assert summary["cases"] == 2
    assert (out / "FIXTURE0000000000001" / "mri_norm2.h5").is_file()
    # the temporary extraction folder is gone
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["la"]


def test_convert_from_malicious_zip_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "raw.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("imagesTr/a.nii.gz", b"x")
        zf.writestr("../../escaped.txt", b"x")
    out = tmp_path / "data" / "own"
    with pytest.raises(InputError, match="points outside"):
        convert_dataset("custom", archive, out, log=None)
    assert list((tmp_path / "data").iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()
