"""Atomic writes: a file or folder appears under its final name complete, or not at all.

Every command writes its outputs through these helpers, so a crash or a bad input never
leaves a partial output behind for Snakemake or DVC to mistake for a finished one.

The temporary names are hidden siblings of the final name: ``.<name>.<random>.tmp<suffix>``
for a file, ``.<name>.<random>.tmp`` for a folder. A process killed mid-write (``kill -9``,
out of memory) leaves one behind; :func:`remove_stale_temps` deletes them and the next run
of the same command calls it. Outputs get the permissions of an ordinary file or folder
under the process umask (e.g. 0644 / 0755 under umask 022), not the 0600 / 0700 of
:mod:`tempfile`.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_dir",
    "replace_path",
    "write_text_atomic",
    "remove_stale_temps",
    "current_umask",
]


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_parent(final: Path) -> None:
    """Create the folder of ``final``; a regular file in the way is ``NotADirectoryError``."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # mkdir's word for "a file is where a folder should be"
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", exc.filename) from exc


def _chmod_default(path: Path, base: int) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would: ``base & ~umask``."""
    os.chmod(path, base & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it to ``path`` on success.

    The temporary file is removed if the block raises. Parent folders are created.
    The suffix of ``path`` is kept, so writers that choose a format by extension
    (``.nii.gz``, ``.h5``, ``.csv``) behave the same. The final file has mode
    ``0666 & ~umask``.

    Args:
        path: final file path.

    Yields:
        The temporary path to write to.
    """
    final = Path(path)
    _make_parent(final)
    suffix = "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _chmod_default(tmp, 0o666)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; move it to ``path`` on success.

    An existing folder at ``path`` is replaced only once the new one is complete.
    The temporary folder is removed if the block raises. The final folder has mode
    ``0777 & ~umask``.
    """
    final = Path(path)
    _make_parent(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        _chmod_default(tmp, 0o777)
        yield tmp
        replace_path(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_path(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing what is there: a folder is moved aside
    (``.<name>.old``) first and removed after; anything else is replaced by one rename."""
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete what a killed :func:`atomic_path` / :func:`atomic_dir` write of ``path`` left.

    That is every ``.<name>.*.tmp*`` file or folder beside ``path`` and the ``.<name>.old``
    folder of an interrupted replacement. Call it only where no other process is writing
    ``path`` at the same time (each output has one writer: its command).

    Args:
        path: the final path whose temporaries to remove (need not exist).

    Returns:
        The paths removed.
    """
    final = Path(path)
    if not final.parent.is_dir():
        return []
    pattern = os.path.join(glob.escape(str(final.parent)), f".{glob.escape(final.name)}.*.tmp*")
    found = [Path(p) for p in glob.glob(pattern)]
    old = final.with_name(f".{final.name}.old")
    if old.exists() or old.is_symlink():
        found.append(old)
    for stale in found:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    return found
