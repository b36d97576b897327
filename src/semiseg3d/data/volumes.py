"""Preprocessed volumes: locate, read, validate and downsample one case.

A preprocessed dataset folder holds one HDF5 file per case, either ``<root>/<ID>.h5`` or
``<root>/<ID>/mri_norm2.h5`` (the LA layout), each with datasets ``image`` (float32) and
``label`` (uint8 in {0, 1}) of the same 3-D shape in (x, y, z) order, and an optional root
attribute ``spacing`` (3 floats, mm, x/y/z). Every problem with such a file is raised as a
one-line :class:`~semiseg3d.errors.InputError` that names the file.

The module is also the ``semiseg3d check-data`` command, which validates every case of a
folder and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from semiseg3d.cliargs import add_xyz_option
from semiseg3d.errors import InputError

__all__ = [
    "Volume",
    "case_path",
    "read_list",
    "load_volume",
    "volume_header",
    "check_volume_headers",
    "unlabeled_ids",
    "check_min_shape",
    "downsample_volume",
    "discover_cases",
    "add_arguments",
    "main",
]

#: file name of a case in the LA layout (``<root>/<ID>/mri_norm2.h5``)
LA_FILE_NAME = "mri_norm2.h5"
_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class Volume:
    """One case in memory.

    Attributes:
        image: float32 array (X, Y, Z), intensities as stored (already normalised).
        label: uint8 array (X, Y, Z) with values in {0, 1}, or None for an unlabeled case.
        spacing: voxel size (x, y, z) in mm, or None when the file does not say.
        case_id: the case id (file stem, or the folder name in the LA layout).
        path: the file it was read from, or None for a volume made in memory.
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float] | None
    case_id: str
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (X, Y, Z) in voxels."""
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]


def _check_case_id(case_id: str, where: str) -> None:
    if not case_id or case_id != case_id.strip() or any(c.isspace() for c in case_id):
        raise InputError(f"{where}: invalid case id {case_id!r} (empty or contains whitespace)")
    if "/" in case_id or "\\" in case_id or case_id in (".", ".."):
        raise InputError(f"{where}: invalid case id {case_id!r} (must not be a path)")


def case_path(root: str | Path, case_id: str) -> Path:
    """The h5 file of ``case_id`` under ``root``.

    ``<root>/<ID>.h5`` is tried first, then ``<root>/<ID>/mri_norm2.h5`` (LA layout).

    Args:
        root: dataset folder.
        case_id: case id as written in the list files.

    Returns:
        Path of the existing h5 file.

    Raises:
        InputError: the id is not a plain name, or neither file exists.
    """
    root = Path(root)
    _check_case_id(case_id, str(root))
    for candidate in (root / f"{case_id}.h5", root / case_id / LA_FILE_NAME):
        if candidate.is_file():
            return candidate
    raise InputError(
        f"{root}: no volume for case '{case_id}' (looked for {case_id}.h5 and {case_id}/{LA_FILE_NAME})"
    )


def read_list(path: str | Path) -> list[str]:
    """Read a case list: one id per line, surrounding whitespace stripped, blank lines ignored.

    Args:
        path: text file.

    Returns:
        The ids in file order.

    Raises:
        InputError: the file is missing or unreadable, an id contains whitespace or is a
            path, or an id appears twice.
    """
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise InputError(f"{path}: case list not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read case list ({exc.__class__.__name__})") from exc
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        case_id = raw.strip()
        if not case_id:
            continue
        _check_case_id(case_id, f"{path} line {number}")
        if case_id in first_line:
            raise InputError(
                f"{path}: duplicate case id '{case_id}' on lines {first_line[case_id]} and {number}"
            )
        first_line[case_id] = number
        ids.append(case_id)
    return ids


def _case_id_of(path: Path) -> str:
    return path.parent.name if path.name == LA_FILE_NAME else path.name.removesuffix(".h5")


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def check_min_shape(shape: Sequence[int], min_shape: Sequence[int] | None, where: str) -> None:
    """Raise if ``shape`` is smaller than ``min_shape`` on any axis.

    Args:
        shape: volume shape (X, Y, Z) in voxels.
        min_shape: smallest accepted shape (X, Y, Z), or None to accept any.
        where: file or case named in the message.

    Raises:
        InputError: naming the first axis that is too small.
    """
    if min_shape is None:
        return
    if len(min_shape) != 3:
        raise InputError(f"min_shape must have 3 entries (x, y, z), got {list(min_shape)}")
    for axis, (size, least) in enumerate(zip(shape, min_shape, strict=True)):
        if size < least:
            raise InputError(
                f"{where}: volume shape {_fmt_shape(shape)} is smaller than the minimum "
                f"{_fmt_shape(min_shape)} on axis {_AXES[axis]} ({size} < {least})"
            )


def _dataset(f: h5py.File, key: str, path: Path) -> h5py.Dataset:
    if key not in f:
        raise InputError(f"{path}: missing dataset '{key}' (file has {sorted(f.keys())})")
    ds = f[key]
    if not isinstance(ds, h5py.Dataset):
        raise InputError(f"{path}: '{key}' is a group, expected a dataset")
    if ds.ndim != 3:
        raise InputError(f"{path}: '{key}' has shape {tuple(ds.shape)}, expected 3-D (x, y, z)")
    if not (np.issubdtype(ds.dtype, np.number) or ds.dtype == np.bool_) or np.issubdtype(
        ds.dtype, np.complexfloating
    ):
        raise InputError(f"{path}: '{key}' has dtype {ds.dtype}, expected real numbers")
    return ds


def _read_spacing(f: h5py.File, path: Path) -> tuple[float, float, float] | None:
    if "spacing" not in f.attrs:
        return None
    try:
        spacing = np.asarray(f.attrs["spacing"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: attribute 'spacing' is not numeric") from exc
    if spacing.size != 3 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(
            f"{path}: attribute 'spacing' must be 3 positive numbers (x, y, z mm), got {spacing.tolist()}"
        )
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _check_label_values(label: np.ndarray, path: Path) -> None:
    if label.dtype == np.bool_:
        return
    bad = (label != 0) & (label != 1)
    if bad.any():
        values = np.unique(label[bad])
        shown = ", ".join(f"{v:g}" for v in values[:10].tolist())
        more = f" and {values.size - 10} more" if values.size > 10 else ""
        raise InputError(f"{path}: label has values {{{shown}{more}}} outside {{0, 1}}")


@contextlib.contextmanager
def _open_case(
    path: Path, require_label: bool
) -> Iterator[tuple[h5py.File, h5py.Dataset, h5py.Dataset | None]]:
    """Open a case file: ``(file, image dataset, label dataset or None)``, with the image
    and the label (required, or read when present) checked for shape. Everything read
    inside the block turns HDF5 errors into one-line :class:`InputError`s naming the file."""
    if not path.is_file():
        raise InputError(f"{path}: volume file not found")
    try:
        with h5py.File(path, "r", locking=False) as f:
            image_ds = _dataset(f, "image", path)
            label_ds = _dataset(f, "label", path) if require_label or "label" in f else None
            if label_ds is not None and label_ds.shape != image_ds.shape:
                raise InputError(
                    f"{path}: image shape {_fmt_shape(image_ds.shape)} and label shape "
                    f"{_fmt_shape(label_ds.shape)} differ"
                )
            yield f, image_ds, label_ds
    except InputError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InputError(f"{path}: not a readable HDF5 file ({reason})") from exc


def volume_header(path: str | Path) -> tuple[tuple[int, int, int], bool]:
    """Shape and label presence of a case file, from its HDF5 header (no voxel is read).

    Args:
        path: the case's h5 file.

    Returns:
        (image shape (X, Y, Z), whether a ``label`` dataset exists).

    Raises:
        InputError: missing or unreadable file, ``image`` (or ``label``) not a 3-D
            numeric dataset, image and label shapes differ.
    """
    path = Path(path)
    with _open_case(path, require_label=False) as (_, image_ds, label_ds):
        has_label = label_ds is not None
        shape = tuple(int(s) for s in image_ds.shape)
    return shape, has_label  # type: ignore[return-value]


def check_volume_headers(
    data: str | Path,
    ids: Sequence[str],
    labeled: Iterable[str],
    *,
    min_shape: Sequence[int] | None = None,
    downsample: int = 1,
    why: str = "",
) -> None:
    """Check from the headers that every case exists, is large enough and, when labeled,
    has a label.

    Args:
        data: dataset folder.
        ids: case ids to check, in order (the first bad one is reported).
        labeled: the ids among them that must have a ``label`` dataset.
        min_shape: smallest accepted shape (X, Y, Z) after ``downsample`` (e.g. the
            training patch), or None.
        downsample: integer downsampling factor (each axis becomes ``size // factor``).
        why: why the labeled cases are labeled, appended to the message (e.g.
            "first 4 of train.list").

    Raises:
        InputError: naming the file: missing, unreadable, too small, or a labeled case
            without a ``label`` dataset.
    """
    need = set(labeled)
    for case_id in ids:
        path = case_path(data, case_id)
        shape, has_label = volume_header(path)
        if case_id in need and not has_label:
            reason = f" ({why})" if why else ""
            raise InputError(f"{path}: labeled case {case_id}{reason} has no 'label' dataset")
        small = tuple(s // downsample for s in shape)
        where = str(path) if downsample == 1 else f"{path} (downsampled by {downsample})"
        check_min_shape(small, min_shape, where)


def unlabeled_ids(data: str | Path) -> set[str]:
    """The ids of ``<data>/unlabeled.list`` (the cases a converter wrote without a label),
    or an empty set when there is no such file."""
    path = Path(data) / "unlabeled.list"
    return set(read_list(path)) if path.is_file() else set()


def load_volume(
    path: str | Path,
    *,
    min_shape: Sequence[int] | None = None,
    require_label: bool = True,
) -> Volume:
    """Read and validate one case file.

    Args:
        path: the case's h5 file.
        min_shape: smallest accepted shape (X, Y, Z) in voxels, e.g. the patch; None accepts
            any non-empty shape.
        require_label: when True a missing ``label`` dataset is an error; when False the
            label is read if present and ``Volume.label`` is None otherwise.

    Returns:
        The :class:`Volume`: image float32 (X, Y, Z), label uint8 (X, Y, Z) or None,
        spacing in mm or None, case id from the file name.

    Raises:
        InputError: one line naming the file: missing, unreadable/corrupt/truncated HDF5,
            missing ``image``/``label``, not 3-D, shape mismatch, label values outside
            {0, 1}, non-finite intensities, bad ``spacing`` attribute, empty or too small.
    """
    path = Path(path)
    with _open_case(path, require_label) as (f, image_ds, label_ds):
        spacing = _read_spacing(f, path)
        image = image_ds[()]
        label = label_ds[()] if label_ds is not None else None
    if min(image.shape) < 1:
        raise InputError(f"{path}: volume is empty (shape {_fmt_shape(image.shape)})")
    check_min_shape(image.shape, min_shape, str(path))
    if np.issubdtype(image.dtype, np.floating):
        n_bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if n_bad:
            raise InputError(f"{path}: image has {n_bad} non-finite intensities (NaN or inf)")
    if label is not None:
        _check_label_values(label, path)
        label = label.astype(np.uint8, copy=False)
    return Volume(
        image=image.astype(np.float32, copy=False),
        label=label,
        spacing=spacing,
        case_id=_case_id_of(path),
        path=path,
    )


def downsample_volume(vol: Volume, factor: int) -> Volume:
    """Reduce a volume by an integer factor per axis (reduced-scale runs).

    The shape is first trimmed to a multiple of ``factor`` (the remainder at the high end of
    each axis is dropped). The image becomes the mean of each factor^3 block; the label is 1
    where at least half of the block's voxels are 1 (majority, ties to foreground). The
    spacing is multiplied by ``factor``.

    Args:
        vol: the volume, shape (X, Y, Z).
        factor: integer >= 1; 1 returns ``vol`` unchanged.

    Returns:
        A new :class:`Volume` of shape (X // factor, Y // factor, Z // factor).

    Raises:
        InputError: ``factor`` < 1, or an axis shorter than ``factor``.
    """
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer) or factor < 1:
        raise InputError(f"downsample factor must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    if factor == 1:
        return vol
    where = str(vol.path) if vol.path is not None else f"case '{vol.case_id}'"
    out_shape = tuple(s // factor for s in vol.shape)
    if min(out_shape) < 1:
        raise InputError(
            f"{where}: volume shape {_fmt_shape(vol.shape)} is too small to downsample by {factor}"
        )
    f = factor

    def blocks(a: np.ndarray) -> np.ndarray:
        x, y, z = out_shape
        return a[: x * f, : y * f, : z * f].reshape(x, f, y, f, z, f)

    image = blocks(vol.image).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
    label = None
    if vol.label is not None:
        counts = blocks(vol.label).sum(axis=(1, 3, 5), dtype=np.int64)
        label = (2 * counts >= f**3).astype(np.uint8)
    spacing = None if vol.spacing is None else tuple(s * f for s in vol.spacing)
    return replace(vol, image=image, label=label, spacing=spacing)  # type: ignore[arg-type]


def discover_cases(root: str | Path) -> list[str]:
    """Every case id with a file under ``root`` (both layouts), sorted; hidden files skipped."""
    root = Path(root)
    ids = {p.name.removesuffix(".h5") for p in root.glob("*.h5") if p.is_file()}
    ids |= {p.parent.name for p in root.glob(f"*/{LA_FILE_NAME}") if p.is_file()}
    # hidden names are temporaries of unfinished writes (``.<name>.<random>.tmp.h5``)
    ids = {i for i in ids if not i.startswith(".")}
    return sorted(ids)


# -- semiseg3d check-data ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d check-data``."""
    parser.add_argument("--data", required=True, type=Path, help="dataset folder")
    parser.add_argument(
        "--list",
        dest="lists",
        nargs="+",
        action="extend",
        type=Path,
        metavar="FILE",
        help="case lists to check (default: train.list, val.list, test.list of --data that "
        "exist, else every case file found); a relative name is looked up in --data too",
    )
    add_xyz_option(
        parser, "--min-shape", "smallest accepted shape after --downsample, e.g. the training patch"
    )
    parser.add_argument(
        "--downsample", type=int, default=1, help="check the volumes downsampled by this factor"
    )


def _resolve_list(data: Path, name: Path) -> Path:
    if name.exists() or name.is_absolute():
        return name
    inside = data / name
    return inside if inside.is_file() else name


def main(args: argparse.Namespace) -> int:
    """Validate every case; print a one-line summary; stop with an InputError on the first bad one."""
    data: Path = args.data
    if not data.is_dir():
        raise InputError(f"{data}: dataset folder not found")
    if args.lists:
        lists = [_resolve_list(data, p) for p in args.lists]
    else:
        lists = [data / n for n in ("train.list", "val.list", "test.list") if (data / n).is_file()]
    if lists:
        ids = list(dict.fromkeys(i for p in lists for i in read_list(p)))
        source = ", ".join(p.name for p in lists)
    else:
        ids = discover_cases(data)
        source = "all case files"
    if not ids:
        raise InputError(f"{data}: no cases to check ({source})")
    lo = np.full(3, np.iinfo(np.int64).max)
    hi = np.zeros(3, dtype=np.int64)
    fg_lo, fg_hi, n_labeled = 1.0, 0.0, 0
    unlabeled = unlabeled_ids(data)
    for case_id in ids:
        path = case_path(data, case_id)
        # every listed case is labeled unless DATA/unlabeled.list names it
        vol = load_volume(path, require_label=False)
        if vol.label is None and case_id not in unlabeled:
            raise InputError(
                f"{path}: labeled case {case_id} has no 'label' dataset (cases without a "
                f"label must be listed in {data / 'unlabeled.list'})"
            )
        vol = downsample_volume(vol, args.downsample)
        where = str(path) if args.downsample == 1 else f"{path} (downsampled by {args.downsample})"
        check_min_shape(vol.shape, args.min_shape, where)
        lo = np.minimum(lo, vol.shape)
        hi = np.maximum(hi, vol.shape)
        if vol.label is not None:
            fg = float(np.count_nonzero(vol.label)) / vol.label.size
            fg_lo, fg_hi, n_labeled = min(fg_lo, fg), max(fg_hi, fg), n_labeled + 1
    shapes = ", ".join(f"{a} {lo[i]}-{hi[i]}" for i, a in enumerate(_AXES))
    fg_text = (
        f"foreground {100 * fg_lo:.1f}%-{100 * fg_hi:.1f}% ({n_labeled} labeled)"
        if n_labeled
        else "no labels"
    )
    scale = f" at downsample {args.downsample}" if args.downsample != 1 else ""
    print(f"{data}: {len(ids)} cases OK ({source}){scale}; shape {shapes}; {fg_text}")
    return 0
