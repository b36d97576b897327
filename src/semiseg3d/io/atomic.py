"""Safe writes: the one place that says how every command puts an output on disk.

The rule (docs/safety.md):

1. **Complete or absent.** An output is written under a temporary name beside its final
   name, flushed to disk (``fsync``) and renamed to the final name only when complete. A
   failed write (disk full, quota, read-only file system) is an ``OSError`` naming the
   output, and its temporary is removed.
2. **Ours only.** A command replaces or deletes only what semiseg3d wrote. A folder output
   is ours when it is empty, holds the marker file :data:`MARKER_NAME` (written into every
   folder made by :func:`atomic_dir` or :func:`replace_dir`), or holds a file that only
   semiseg3d writes there (a run's ``config.yaml``, a dataset's ``preprocess.json``).
   Anything else in the way - a regular file where a folder goes, a folder where a file
   goes, a foreign non-empty folder - is refused with one line, before any work.
   A file output named on the command line (``--out mask.nii.gz``) replaces a file of that
   name, as any command-line tool does.

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
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from semiseg3d.errors import InputError

__all__ = [
    "MARKER_NAME",
    "MARKER_TEXT",
    "WRITE_ERRNOS",
    "atomic_path",
    "atomic_dir",
    "replace_dir",
    "write_text_atomic",
    "check_output",
    "is_ours",
    "is_temporary",
    "remove_stale_temps",
    "current_umask",
    "fsync_path",
    "write_error",
]

#: written into every output folder; tells a later command that the folder is semiseg3d's
MARKER_NAME = ".semiseg3d-output"
MARKER_TEXT = (
    "Written by semiseg3d. The command that wrote this folder may replace it; "
    "semiseg3d never replaces a folder without this file (see docs/safety.md).\n"
)

#: error numbers of a failed write, reported against the output being written
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})

#: a temporary of this module: ``.<name>.<random characters>.tmp[<suffix>]``
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp(\..*)?$")


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_temporary(name: str) -> bool:
    """True for the name of a temporary file or folder written by this module."""
    return bool(_TEMP_NAME.match(name))


def is_ours(folder: str | os.PathLike[str], names: Sequence[str] = ()) -> bool:
    """True when ``folder`` (an existing folder) may be replaced by a semiseg3d command.

    That is when it is empty (temporaries of this module aside), holds :data:`MARKER_NAME`,
    or holds one of ``names``: files only semiseg3d writes there (a dataset's
    ``preprocess.json``), or paths relative to the folder (``../config.yaml``: the folder
    lies in a run folder, e.g. a run's ``predictions``).
    """
    root = Path(folder)
    if any((root / n).exists() for n in (MARKER_NAME, *names)):
        return True
    return _holds_only_temporaries(root)


def _holds_only_temporaries(root: Path) -> bool:
    """True when ``root`` holds nothing but temporaries of this module and folders that
    hold nothing else (what a killed write leaves), at any depth."""
    for entry in root.iterdir():
        if is_temporary(entry.name):
            continue
        if not entry.is_dir() or entry.is_symlink() or not _holds_only_temporaries(entry):
            return False
    return True


def check_output(path: str | os.PathLike[str], *, folder: bool, ours: Sequence[str] = ()) -> None:
    """Refuse, with one line, an output whose place holds something that is not ours.

    Args:
        path: the final path of the output.
        folder: True for a folder output, False for a file output.
        ours: names of files whose presence in an existing folder makes it ours
            (:func:`is_ours`).

    Raises:
        InputError: a folder output where a file (or a foreign, non-empty folder) is; a
            file output where a folder is.
    """
    p = Path(path)
    hint = "move it away or choose another path"
    if folder:
        if (p.exists() or p.is_symlink()) and not p.is_dir():
            raise InputError(f"{p}: a file is in the way of the output folder; {hint}")
        if p.is_dir() and not is_ours(p, ours):
            raise InputError(
                f"{p}: folder exists, is not empty and was not written by semiseg3d "
                f"(no {MARKER_NAME}); {hint}"
            )
    elif p.is_dir():
        raise InputError(f"{p}: a folder is in the way of the output file; {hint}")


def _make_parent(final: Path) -> None:
    """Create the folder of ``final``; a regular file in the way is ``NotADirectoryError``."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # mkdir's word for "a file is where a folder should be"
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", exc.filename) from exc


def _chmod_default(path: Path, base: int) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would: ``base & ~umask``."""
    os.chmod(path, base & ~current_umask())


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file, or a folder's entries, to disk (a no-op where the file system cannot)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """``fsync`` every file and folder under ``root`` (the folder included)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                fsync_path(full)
        fsync_path(dirpath)


def _os_write_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` of a failed write in ``exc`` or the exceptions it was raised from
    (torch's zip writer raises ``RuntimeError`` while handling the ``ENOSPC`` of a write)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in WRITE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


def write_error(exc: BaseException, temp: Path, final: Path) -> OSError | None:
    """The error of a failed write, naming ``final`` instead of the temporary (or nothing).

    Writers report a full disk as ``OSError(ENOSPC)`` without a file name (``write``),
    naming the temporary, or as another exception raised while handling it; the user must
    see the output and the reason. Other errors are left alone (None).
    """
    found = _os_write_error(exc)
    if found is None:
        return None
    name = found.filename
    if name is not None:
        try:
            rel = Path(os.fsdecode(name)).resolve().relative_to(temp.resolve())
        except ValueError:
            return None  # names another file: its own message is right
        final = final / rel if rel.parts else final
    return OSError(found.errno, os.strerror(found.errno), str(final))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it to ``path`` on success.

    The temporary is flushed to disk before the rename, and removed if the block raises.
    Parent folders are created. The suffix of ``path`` is kept, so writers that choose a
    format by extension (``.nii.gz``, ``.h5``, ``.csv``) behave the same. The final file
    has mode ``0666 & ~umask``. A file at ``path`` is replaced; a folder there is refused.

    Args:
        path: final file path.

    Yields:
        The temporary path to write to.

    Raises:
        InputError: a folder is at ``path``.
        OSError: a failed write (disk full ...), naming ``path``.
    """
    final = Path(path)
    check_output(final, folder=False)
    _make_parent(final)
    suffix = "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fsync_path(tmp)
        _chmod_default(tmp, 0o666)
        check_output(final, folder=False)  # nothing took its place meanwhile
        os.replace(tmp, final)
        fsync_path(final.parent)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        named = write_error(exc, tmp, final)
        if named is None:
            raise
        raise named from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _swap_in(tmp: Path, final: Path, ours: Sequence[str]) -> None:
    """Move the complete folder ``tmp`` to ``final``, replacing an old one that is ours."""
    (tmp / MARKER_NAME).write_text(MARKER_TEXT, encoding="utf-8")
    _fsync_tree(tmp)
    check_output(final, folder=True, ours=ours)  # nothing foreign took its place meanwhile
    if final.is_dir():
        # rename(2) replaces an empty folder: park the old one there, then remove it
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_path(final.parent)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, ours: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; move it to ``path`` on success.

    Before any work, something in the way that is not ours is refused
    (:func:`check_output`). An existing folder at ``path`` that is ours is replaced only
    once the new one is complete and flushed. The new folder gets the marker
    :data:`MARKER_NAME`. The temporary folder is removed if the block raises. The final
    folder has mode ``0777 & ~umask``.

    Args:
        path: final folder path.
        ours: names of files that make an existing folder ours besides the marker.

    Raises:
        InputError: a file, or a foreign non-empty folder, at ``path``.
        OSError: a failed write (disk full ...), naming ``path`` (or the file inside it).
    """
    final = Path(path)
    check_output(final, folder=True, ours=ours)
    _make_parent(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        _chmod_default(tmp, 0o777)
        yield tmp
        _swap_in(tmp, final, ours)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        named = write_error(exc, tmp, final)
        if named is None:
            raise
        raise named from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(
    src: str | os.PathLike[str], path: str | os.PathLike[str], *, ours: Sequence[str] = ()
) -> None:
    """Move the complete folder ``src`` (a staging folder on the same file system) to
    ``path`` by the rules of :func:`atomic_dir`: marker written, flushed, an old folder
    replaced only when it is ours.

    Raises:
        InputError: a file, or a foreign non-empty folder, at ``path``.
        OSError: a failed write, naming ``path``.
    """
    src, final = Path(src), Path(path)
    _chmod_default(src, 0o777)
    try:
        _swap_in(src, final, ours)
    except Exception as exc:
        named = write_error(exc, src, final)
        if named is None:
            raise
        raise named from exc


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete what a killed :func:`atomic_path` / :func:`atomic_dir` write of ``path`` left.

    That is every ``.<name>.*.tmp*`` file or folder beside ``path``, and the ``.<name>.old``
    folder an earlier version left in an interrupted replacement (only a folder: a file of
    that name may be a user's file that version moved aside). Call it only where no other
    process is writing ``path`` at the same time (each output has one writer: its command).

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
    if old.is_dir() and not old.is_symlink():
        found.append(old)
    for stale in found:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    return found
