"""Safe extraction of ``.zip`` and ``.tar[.gz|.bz2|.xz]`` / ``.tgz`` archives.

Dataset downloads often come as archives. A crafted archive can hold members such as
``../../.bashrc``, ``/etc/passwd``, or a symlink that points outside and a later member
written through it. :func:`safe_extract` checks every member before writing anything: only
regular files and folders whose resolved path stays inside the target folder are accepted;
links, devices and anything else are refused. A refused member is an
:class:`~semiseg3d.errors.InputError` naming the archive and the member, and nothing is
extracted.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from semiseg3d.errors import InputError

__all__ = ["ARCHIVE_SUFFIXES", "is_archive", "safe_extract"]

#: recognised archive endings (lower case)
ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive(path: str | os.PathLike[str]) -> bool:
    """True for an existing file whose name ends in one of :data:`ARCHIVE_SUFFIXES`."""
    p = Path(path)
    return p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_target(dest: Path, name: str, archive: Path) -> Path:
    """The path a member named ``name`` would be written to; refuse escapes."""
    clean = name.replace("\\", "/")
    pure = PurePosixPath(clean)
    if pure.is_absolute() or clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise InputError(f"{archive}: member '{name}' has an absolute path; refusing to extract")
    if any(part == ".." for part in pure.parts):
        raise InputError(f"{archive}: member '{name}' points outside the target folder ('..')")
    target = (dest / Path(*pure.parts)).resolve() if pure.parts else dest
    if target != dest and dest not in target.parents:
        raise InputError(f"{archive}: member '{name}' points outside the target folder")
    return target


def _write_plan(plan: list[tuple[Path, Any]], open_member: Callable[[Any], IO[bytes]]) -> None:
    """Write checked members: ``(target, member)``; a member of None is a folder."""
    for target, member in plan:
        if member is None:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{archive}: not a readable zip archive ({exc})") from exc
    with zf:
        members = zf.infolist()
        plan = []
        for info in members:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InputError(
                    f"{archive}: member '{info.filename}' is a symbolic link; refusing to extract"
                )
            plan.append((info, _safe_target(dest, info.filename, archive)))
        try:
            _write_plan([(t, None if i.is_dir() else i) for i, t in plan], zf.open)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InputError(f"{archive}: corrupt or truncated zip archive ({exc})") from exc


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{archive}: not a readable tar archive ({exc})") from exc
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"{archive}: corrupt or truncated tar archive ({exc})") from exc
        plan = []
        for m in members:
            if not (m.isfile() or m.isdir()):
                kind = "link" if (m.issym() or m.islnk()) else "special file"
                raise InputError(f"{archive}: member '{m.name}' is a {kind}; refusing to extract")
            plan.append((m, _safe_target(dest, m.name, archive)))

        def open_member(m: tarfile.TarInfo) -> IO[bytes]:
            src = tf.extractfile(m)
            if src is None:  # pragma: no cover - regular files always have data
                raise InputError(f"{archive}: member '{m.name}' has no data")
            return src

        try:
            _write_plan([(t, None if m.isdir() else m) for m, t in plan], open_member)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"{archive}: corrupt or truncated tar archive ({exc})") from exc


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract ``archive`` into the folder ``dest`` (created), refusing unsafe members.

    Regular files and folders only; file modes and owners from the archive are not applied.

    Args:
        archive: a ``.zip`` or tar archive (compression detected from the content).
        dest: target folder.

    Returns:
        ``dest`` as a resolved path.

    Raises:
        InputError: unreadable/corrupt archive, or a member that is absolute, contains
            ``..``, resolves outside ``dest`` or is a link / device (nothing is written).
    """
    archive = Path(archive)
    if not archive.is_file():
        raise InputError(f"{archive}: archive not found")
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    dest_path = dest_path.resolve()
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest_path)
    elif archive.name.lower().endswith(ARCHIVE_SUFFIXES):
        _extract_tar(archive, dest_path)
    else:
        raise InputError(
            f"{archive}: not a supported archive (expected one of {list(ARCHIVE_SUFFIXES)})"
        )
    return dest_path
