"""``semiseg3d fetch``: the preprocessed LA release, downloaded or copied, SHA-256 checked.

::

    semiseg3d fetch --dataset la --out DIR [--source-dir DIR | --url-base URL] [--checksums FILE]
    (--local is an alias of --source-dir)

The LA release (spec 5.1) is the 100 ``mri_norm2.h5`` files of yulequan/UA-MT
(``data/2018LA_Seg_Training Set/<ID>/mri_norm2.h5``) plus its ``data/train.list`` and
``data/test.list``. Every file is checked against the SHA-256 list the package carries
(``semiseg3d/data/checksums/la_sha256sums.txt``, ``sha256sum`` format, paths relative to the
release folder). The lists are checked by content: their lines (stripped, blank lines dropped)
joined by newlines must hash to the listed value, so a copy with CRLF line ends still passes.

* ``--source-dir DIR``: copy from a local folder laid out like the release
  (``DIR/<ID>/mri_norm2.h5`` or ``DIR/2018LA_Seg_Training Set/<ID>/mri_norm2.h5``, and
  ``DIR/train.list``, ``DIR/test.list``), e.g. ``../shared/data/LA``. No network.
* otherwise download from ``--url-base`` (default: the raw-file URLs of UA-MT's ``data``
  folder). A download goes to ``<file>.part`` and resumes with an HTTP Range request after an
  interruption; the file appears under its final name only once its checksum matches.

Files are fetched into a staging folder beside the output, ``.<DIR name>.fetch/``, and
move into ``DIR`` only once every file is verified: an unfinished fetch leaves ``DIR``
without partial content, and the next run resumes from the staging folder (verified files
are kept, a ``.part`` file continues with a Range request; a body cut short is asked for
again from where it stopped). Temporaries of a killed write are removed.

Files already present with the right checksum (in ``DIR`` or staged) are skipped. A
checksum mismatch is an :class:`~semiseg3d.errors.InputError` naming the file; the bad
download is removed. The output is ``DIR/<ID>/mri_norm2.h5``, ``DIR/train.list``, ``DIR/test.list`` and
``DIR/preprocess.json`` (the LA recipe, read by ``semiseg3d predict``).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from semiseg3d.errors import InputError
from semiseg3d.io.atomic import (
    MARKER_NAME,
    MARKER_TEXT,
    atomic_path,
    check_output,
    fsync_path,
    remove_stale_temps,
    write_text_atomic,
)

__all__ = [
    "LA_URL_BASE",
    "LA_H5_FOLDER",
    "read_checksums",
    "sha256_file",
    "list_digest",
    "download_file",
    "fetch_la",
    "staging_dir",
    "FetchSummary",
    "add_arguments",
    "main",
]

#: raw-file URL of UA-MT's ``data`` folder
LA_URL_BASE = "https://raw.githubusercontent.com/yulequan/UA-MT/HEAD/data"
#: folder of the h5 files inside the release
LA_H5_FOLDER = "2018LA_Seg_Training Set"
_LIST_NAMES = ("train.list", "test.list")
_CHUNK = 1 << 20

_REGISTRATION_HELP = {
    "pancreas": "NIH Pancreas-CT needs a TCIA download (collection 'Pancreas-CT'); then run "
    "semiseg3d convert --dataset pancreas --raw DIR",
    "brats": "BraTS-2019 needs registration (CBICA Image Processing Portal / IEEE DataPort "
    "doi:10.21227/hdtd-5j88); then run semiseg3d convert --dataset brats --raw DIR",
    "la-raw": "the raw LA challenge data needs registration (STACOM 2018 Atrial Segmentation "
    "Challenge); then run semiseg3d convert --dataset la-raw --raw DIR",
}


def read_checksums(path: str | Path | None = None) -> dict[str, str]:
    """Read a ``sha256sum``-format list: ``<64 hex>  <relative path>`` per line.

    Args:
        path: the list; None reads the package's LA list.

    Returns:
        relative path -> lower-case hex digest, in file order.

    Raises:
        InputError: unreadable file or a malformed line (naming the line).
    """
    if path is None:
        text = (
            resources.files("semiseg3d.data")
            .joinpath("checksums", "la_sha256sums.txt")
            .read_text("utf-8")
        )
        where = "la_sha256sums.txt"
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: checksum list not found")
        text = p.read_text(encoding="utf-8")
        where = str(p)
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(maxsplit=1)
        digest = parts[0].lower()
        if len(parts) != 2 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InputError(
                f"{where} line {number}: expected '<sha256>  <path>', got {line.strip()!r}"
            )
        name = parts[1].lstrip("*").strip()
        if name.startswith("/") or ".." in Path(name).parts:
            raise InputError(f"{where} line {number}: path {name!r} must be relative, without '..'")
        out[name] = digest
    if not out:
        raise InputError(f"{where}: checksum list is empty")
    return out


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def list_digest(text: str) -> str:
    """SHA-256 of a list file's content: stripped non-blank lines, each ending in ``\\n``."""
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode("utf-8")).hexdigest()


def _file_ok(path: Path, digest: str, is_list: bool) -> bool:
    if not path.is_file():
        return False
    if is_list:
        try:
            return list_digest(path.read_text(encoding="utf-8")) == digest
        except UnicodeDecodeError:
            return False
    return sha256_file(path) == digest


def _mismatch(name: str, got: str, want: str) -> InputError:
    return InputError(
        f"{name}: SHA-256 mismatch (got {got[:16]}..., expected {want[:16]}...); the file was removed"
    )


def download_file(
    url: str,
    dest: Path,
    digest: str,
    *,
    is_list: bool = False,
    timeout: float = 60.0,
    retries: int = 3,
    name: str | None = None,
) -> None:
    """Download ``url`` to ``dest``, resuming ``dest.part``, and check its SHA-256.

    The bytes go to ``<dest>.part``. When that file exists (an interrupted download), the
    request asks for the rest with ``Range: bytes=<size>-``; a server that answers 200
    instead of 206 restarts the file. Network errors are retried ``retries`` times, each
    resuming where the last stopped. The complete file is checked, then renamed to ``dest``.

    Args:
        url: source URL.
        dest: final path.
        digest: expected hex SHA-256 (of the content, see :func:`list_digest`, when ``is_list``).
        is_list: check by list content instead of raw bytes.
        timeout: socket timeout in seconds.
        retries: attempts after the first failure.
        name: how errors name the file (default ``dest``).

    Raises:
        InputError: checksum mismatch (the ``.part`` file is removed) or the download failed
            after the retries (the ``.part`` file is kept for the next resume).
    """
    name = name or str(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "semiseg3d-fetch"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = getattr(response, "status", 200)
                mode = "ab" if (have and status == 206) else "wb"
                length = response.headers.get("Content-Length", "")
                with open(part, mode) as out:
                    got = _copy_counted(response, out)
            # a body cut short (the server or a proxy closed the connection early) is kept
            # in the .part file and the next attempt asks for the rest with a Range request
            if length.isdigit() and got < int(length):
                last_error = f"connection closed after {got} of {length} bytes"
            else:
                break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to send: the .part is complete
                break
            last_error = f"HTTP {exc.code} {exc.reason}"
            if exc.code in (403, 404, 410):
                raise InputError(f"{url}: download failed ({last_error})") from exc
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
            last_error = str(getattr(exc, "reason", exc)) or exc.__class__.__name__
        if attempt < retries:
            time.sleep(min(2.0**attempt, 10.0))
    else:
        raise InputError(
            f"{url}: download failed after {retries + 1} attempts ({last_error}); rerun to resume"
        )
    got = (
        list_digest(part.read_text(encoding="utf-8", errors="replace"))
        if is_list
        else sha256_file(part)
    )
    if got != digest:
        with open(part, "rb") as f:
            lfs = f.read(40).startswith(b"version https://git-lfs")
        part.unlink(missing_ok=True)
        if lfs:
            raise InputError(
                f"{name}: the server sent a Git LFS pointer, not the file; use --url-base "
                "https://media.githubusercontent.com/media/yulequan/UA-MT/HEAD/data"
            )
        raise _mismatch(name, got, digest)
    if is_list:
        text = part.read_text(encoding="utf-8")
        normalised = "".join(f"{line.strip()}\n" for line in text.splitlines() if line.strip())
        write_text_atomic(dest, normalised)
        part.unlink(missing_ok=True)
    else:
        fsync_path(part)  # complete and verified: on disk before it takes its name
        os.replace(part, dest)


def _copy_counted(src: Any, dst: Any) -> int:
    """Copy a response body to an open file; return the bytes copied."""
    total = 0
    while chunk := src.read(_CHUNK):
        dst.write(chunk)
        total += len(chunk)
    return total


def _copy_checked(src: Path, dest: Path, digest: str, is_list: bool) -> None:
    if not src.is_file():
        raise InputError(f"{src}: file missing in the source folder")
    if is_list:
        text = src.read_text(encoding="utf-8")
        got = list_digest(text)
        if got != digest:
            raise InputError(
                f"{src}: SHA-256 mismatch of the list content (got {got[:16]}..., expected {digest[:16]}...)"
            )
        write_text_atomic(
            dest, "".join(f"{line.strip()}\n" for line in text.splitlines() if line.strip())
        )
        return
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        got = sha256_file(tmp)
        if got != digest:
            raise InputError(
                f"{src}: SHA-256 mismatch (got {got[:16]}..., expected {digest[:16]}...); not copied"
            )


def _release_path(name: str) -> str:
    """Path inside the UA-MT ``data`` folder of a checksum-list entry."""
    return name if name in _LIST_NAMES else f"{LA_H5_FOLDER}/{name}"


def _local_source(source_dir: Path, name: str) -> Path:
    direct = source_dir / name
    if name in _LIST_NAMES or direct.is_file():
        return direct
    nested = source_dir / LA_H5_FOLDER / name
    return nested if nested.is_file() else direct


def staging_dir(out: str | Path) -> Path:
    """Where :func:`fetch_la` keeps the verified files of an unfinished fetch of ``out``:
    the hidden sibling ``.<name>.fetch/``, which the next run resumes from."""
    out = Path(out)
    return out.parent / f".{out.name}.fetch"


@dataclass(frozen=True)
class FetchSummary:
    """What :func:`fetch_la` did: counts of files fetched and already present."""

    fetched: int
    skipped: int
    out: Path


def fetch_la(
    out: str | Path,
    *,
    source_dir: str | Path | None = None,
    url_base: str | None = None,
    checksums: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> FetchSummary:
    """Get the preprocessed LA release into ``out``, every file SHA-256 checked.

    Args:
        out: output folder (``<ID>/mri_norm2.h5``, ``train.list``, ``test.list``,
            ``preprocess.json``).
        source_dir: local copy of the release (no network), or None to download.
        url_base: URL of the release's ``data`` folder (default :data:`LA_URL_BASE`).
        checksums: a ``sha256sum`` list to use instead of the package's (tests, mirrors).
        log: receives progress lines (None: silent).

    Returns:
        :class:`FetchSummary`.

    Raises:
        InputError: missing source folder or file, checksum mismatch (naming the file),
            download failure.
    """
    out = Path(out)
    emit = log or (lambda _line: None)
    sums = read_checksums(checksums)
    if source_dir is not None:
        source_dir = Path(source_dir)
        if not source_dir.is_dir():
            raise InputError(
                f"{source_dir}: LA source folder not found (expected <ID>/mri_norm2.h5, train.list, test.list)"
            )
    from semiseg3d.data.convert import PREPROCESS_FILE

    # a file or a foreign folder is refused: the release's files would replace its own
    check_output(out, folder=True, ours=(PREPROCESS_FILE,))
    base = (url_base or LA_URL_BASE).rstrip("/")
    staging = staging_dir(out)
    fetched = skipped = 0
    for i, (name, digest) in enumerate(sums.items(), start=1):
        is_list = name in _LIST_NAMES
        dest, staged = out / name, staging / name
        remove_stale_temps(dest)  # unfinished writes of a killed run
        remove_stale_temps(staged)
        if _file_ok(dest, digest, is_list) or _file_ok(staged, digest, is_list):
            skipped += 1
            continue
        staged.unlink(missing_ok=True)  # a stale or damaged copy
        if source_dir is not None:
            _copy_checked(_local_source(source_dir, name), staged, digest, is_list)
        else:
            url = f"{base}/{urllib.parse.quote(_release_path(name))}"
            download_file(url, staged, digest, is_list=is_list, name=str(dest))
        fetched += 1
        emit(f"[{i}/{len(sums)}] {name}")
    # every file is verified: only now do they enter the final folder, marked as ours first
    # (so that a fetch killed while moving them in resumes instead of being refused)
    write_text_atomic(out / MARKER_NAME, MARKER_TEXT)
    for name in sums:
        staged = staging / name
        if staged.is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, out / name)
    shutil.rmtree(staging, ignore_errors=True)
    _write_recipe(out)
    emit(
        f"{out}: {fetched} file(s) fetched, {skipped} already present, all {len(sums)} SHA-256 checked"
    )
    return FetchSummary(fetched, skipped, out)


def _write_recipe(out: Path) -> None:
    from semiseg3d.data import convert_la
    from semiseg3d.data.convert import FORMAT, PREPROCESS_FILE

    record = {
        "format": FORMAT,
        "dataset": "la",
        "options": convert_la.default_options().to_dict(),
        "layout": "la",
        "notes": [
            "preprocessed release of yulequan/UA-MT (no spacing attribute; 0.625 mm isotropic)"
        ],
    }
    write_text_atomic(out / PREPROCESS_FILE, json.dumps(record, indent=2) + "\n")


# -- semiseg3d fetch ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d fetch``."""
    parser.add_argument("--dataset", required=True, help="dataset to fetch: la")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--source-dir",
        "--local",
        dest="source_dir",
        type=Path,
        help="copy from this local folder instead of downloading (--local is an alias)",
    )
    src.add_argument("--url-base", help=f"URL of the release's data folder (default {LA_URL_BASE})")
    parser.add_argument(
        "--checksums", type=Path, help="SHA-256 list to check against (default: the package's)"
    )


def main(args: argparse.Namespace) -> int:
    """Fetch and verify; print a summary line."""
    if args.dataset != "la":
        help_text = _REGISTRATION_HELP.get(args.dataset)
        if help_text:
            raise InputError(
                f"--dataset {args.dataset}: cannot be fetched automatically; {help_text}"
            )
        raise InputError(f"--dataset {args.dataset}: unknown; fetch supports only 'la'")
    fetch_la(args.out, source_dir=args.source_dir, url_base=args.url_base, checksums=args.checksums)
    return 0
