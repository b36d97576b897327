"""Reading and writing masks and images in NIfTI, NRRD and h5, chosen by file extension.

Every array is returned in (x, y, z) order, like the LA h5 files, and every spacing as
(x, y, z) in mm:

* ``.nii`` / ``.nii.gz``: nibabel; the array in the file's voxel index order; spacing =
  the first three header zooms.
* ``.nrrd`` / ``.nhdr``: SimpleITK; its (z, y, x) array is transposed to (x, y, z);
  spacing = ``GetSpacing()``.
* ``.h5``: h5py; a mask is read from the first of ``h5_keys`` present in the file
  (default: ``pred``, then ``label``), an image from ``image``; spacing = the root
  attribute ``spacing`` (3 floats, x/y/z) or None when absent.

The case id of a file is its name without the extension; a preprocessed LA-layout file
``<ID>/mri_norm2.h5`` has the id ``<ID>`` (its folder). Masks must hold only the values 0
and 1. An unreadable or malformed file is an :class:`~semiseg3d.errors.InputError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semiseg3d.errors import InputError, format_numbers
from semiseg3d.io.atomic import atomic_path

__all__ = [
    "MASK_EXTENSIONS",
    "LA_FILENAME",
    "PRED_KEYS",
    "GT_KEYS",
    "Spacing",
    "case_id_from_path",
    "read_mask",
    "read_image",
    "write_nifti_mask",
    "list_masks",
]

#: recognised extensions (longest first, so ``.nii.gz`` wins over ``.gz``)
MASK_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".h5")
#: file name of a case in the LA layout ``<ID>/mri_norm2.h5``
LA_FILENAME = "mri_norm2.h5"
#: h5 keys tried, in order, for a predicted mask
PRED_KEYS: tuple[str, ...] = ("pred", "label")
#: h5 keys tried for a ground-truth mask
GT_KEYS: tuple[str, ...] = ("label",)

Spacing = tuple[float, float, float]
PathLike = str | os.PathLike[str]


def _extension(path: Path) -> str | None:
    """The recognised extension of ``path`` (lower case), or None."""
    name = path.name.lower()
    for ext in MASK_EXTENSIONS:
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    return None


def case_id_from_path(path: PathLike) -> str:
    """The case id a file stands for.

    Args:
        path: a mask or image file.

    Returns:
        ``<ID>`` for ``<ID>.nii.gz``, ``<ID>.nii``, ``<ID>.nrrd``, ``<ID>.nhdr``, ``<ID>.h5``,
        and for ``<ID>/mri_norm2.h5`` (the LA layout).

    Raises:
        InputError: the extension is not one of :data:`MASK_EXTENSIONS`.
    """
    p = Path(path)
    if p.name == LA_FILENAME:
        return p.parent.name
    ext = _extension(p)
    if ext is None:
        raise InputError(f"{p}: unknown extension, expected one of {', '.join(MASK_EXTENSIONS)}")
    return p.name[: -len(ext)]


def _check_spacing(path: Path, values: Sequence[float]) -> Spacing:
    """Three finite positive floats, else an InputError naming ``path``."""
    spacing = tuple(float(v) for v in values)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{path}: spacing {format_numbers(values)} is not three positive numbers")
    return spacing  # type: ignore[return-value]


def _as_3d(path: Path, array: np.ndarray) -> np.ndarray:
    """Drop trailing singleton axes (e.g. NIfTI (X, Y, Z, 1)); require three axes."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"{path}: expected a 3-D volume, got shape {array.shape}")
    return array


def _read_nifti(path: Path) -> tuple[np.ndarray, Spacing]:
    import nibabel as nib

    image = nib.load(str(path))
    array = np.asarray(image.dataobj)
    zooms = image.header.get_zooms()[:3]
    return _as_3d(path, array), _check_spacing(path, zooms)


def _read_nrrd(path: Path) -> tuple[np.ndarray, Spacing]:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: expected one value per voxel, got a vector image")
    if image.GetDimension() != 3:
        raise InputError(f"{path}: expected a 3-D volume, got {image.GetDimension()}-D")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return np.ascontiguousarray(array), _check_spacing(path, image.GetSpacing())


def _read_h5(path: Path, keys: Sequence[str]) -> tuple[np.ndarray, Spacing | None]:
    import h5py

    with h5py.File(path, "r") as f:
        key = next((k for k in keys if k in f), None)
        if key is None:
            raise InputError(f"{path}: none of the datasets {list(keys)} found (has {sorted(f)})")
        array = np.asarray(f[key][()])
        spacing = f.attrs.get("spacing")
        spacing = None if spacing is None else _check_spacing(path, np.ravel(spacing))
    return _as_3d(path, array), spacing


def _read(path: PathLike, h5_keys: Sequence[str]) -> tuple[np.ndarray, Spacing | None]:
    """Dispatch on the extension; turn any reader failure into an InputError naming ``path``."""
    p = Path(path)
    ext = _extension(p)
    if ext is None:
        raise InputError(f"{p}: unknown extension, expected one of {', '.join(MASK_EXTENSIONS)}")
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        if ext in (".nii", ".nii.gz"):
            return _read_nifti(p)
        if ext in (".nrrd", ".nhdr"):
            return _read_nrrd(p)
        return _read_h5(p, h5_keys)
    except InputError:
        raise
    except Exception as exc:  # nibabel, SimpleITK, h5py and zlib raise many kinds
        raise InputError(f"{p}: cannot read ({type(exc).__name__}: {exc})") from exc


def read_mask(
    path: PathLike, *, h5_keys: Sequence[str] = PRED_KEYS
) -> tuple[np.ndarray, Spacing | None]:
    """Read a binary mask.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr`` or ``.h5`` file.
        h5_keys: for h5 files, the datasets tried in order (default ``pred``, then
            ``label``; pass :data:`GT_KEYS` for ground truth).

    Returns:
        ``(mask, spacing)``: mask (x, y, z) uint8 in {0, 1}; spacing (x, y, z) in mm, or
        None for an h5 file without a ``spacing`` attribute.

    Raises:
        InputError: unreadable file, unknown extension, not 3-D, or values other than 0/1.
    """
    array, spacing = _read(path, h5_keys)
    if array.dtype == np.bool_:
        return array.astype(np.uint8), spacing
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{path}: mask has dtype {array.dtype}, expected numbers")
    binary = (array == 0) | (array == 1)
    if not binary.all():
        bad = np.unique(array[~binary])
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise InputError(f"{path}: mask has values {{{shown}}} besides 0 and 1, expected {{0, 1}}")
    return array.astype(np.uint8), spacing


def read_image(path: PathLike) -> tuple[np.ndarray, Spacing | None]:
    """Read an intensity volume.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr`` or ``.h5`` (dataset ``image``).

    Returns:
        ``(image, spacing)``: image (x, y, z) float32; spacing (x, y, z) in mm or None
        (h5 without a ``spacing`` attribute).

    Raises:
        InputError: unreadable file, unknown extension, not 3-D, or non-finite values.
    """
    array, spacing = _read(path, ("image",))
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{path}: image has dtype {array.dtype}, expected numbers")
    image = array.astype(np.float32)
    if not np.isfinite(image).all():
        raise InputError(f"{path}: image has non-finite values")
    return image, spacing


def write_nifti_mask(
    array: np.ndarray,
    path: PathLike,
    spacing: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
) -> None:
    """Write a mask as NIfTI (uint8), atomically.

    Args:
        array: (x, y, z) mask.
        path: ``.nii`` or ``.nii.gz`` output file.
        spacing: (x, y, z) voxel size in mm; the affine becomes diag(spacing, 1).
        affine: a full 4x4 voxel-to-world affine instead of ``spacing``. With neither,
            the identity affine (1 mm voxels) is written.

    Raises:
        ValueError: both ``spacing`` and ``affine`` given, a bad affine, a non-3-D array,
            or a path that is not ``.nii`` / ``.nii.gz``.
    """
    import nibabel as nib

    p = Path(path)
    if _extension(p) not in (".nii", ".nii.gz"):
        raise ValueError(f"{p}: a NIfTI mask path must end in .nii or .nii.gz")
    if array.ndim != 3:
        raise ValueError(f"expected a 3-D mask (x, y, z), got shape {array.shape}")
    if spacing is not None and affine is not None:
        raise ValueError("give spacing or affine, not both")
    if affine is not None:
        matrix = np.asarray(affine, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {matrix.shape}")
    elif spacing is not None:
        matrix = np.diag([*(float(s) for s in spacing), 1.0])
        if matrix.shape != (4, 4):
            raise ValueError(f"spacing must have three values, got {tuple(spacing)}")
    else:
        matrix = np.eye(4)
    image = nib.Nifti1Image(np.ascontiguousarray(array, dtype=np.uint8), matrix)
    image.header.set_xyzt_units("mm")
    with atomic_path(p) as tmp:
        nib.save(image, str(tmp))


def list_masks(folder: PathLike) -> dict[str, Path]:
    """Every mask file of a folder, by case id.

    Files directly in ``folder`` with a recognised extension count, and
    ``<folder>/<ID>/mri_norm2.h5`` (the LA dataset layout). Hidden files (names starting
    with ``.``, e.g. unfinished atomic writes) are ignored.

    Args:
        folder: a folder of masks, or a preprocessed dataset folder.

    Returns:
        ``{case_id: path}`` sorted by case id.

    Raises:
        InputError: the folder does not exist, or two files map to the same case id.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: folder not found")
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            candidate = entry / LA_FILENAME
            if not candidate.is_file():
                continue
        elif entry.is_file() and _extension(entry) is not None:
            candidate = entry
        else:
            continue
        case = case_id_from_path(candidate)
        if case in found:
            raise InputError(f"{root}: case {case} has two files, {found[case]} and {candidate}")
        found[case] = candidate
    return dict(sorted(found.items()))
