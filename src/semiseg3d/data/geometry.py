"""Image grids: reading scans, moving labels between grids, resampling, crop boxes.

Everything here works on SimpleITK images (which carry size, spacing, origin and direction)
or on NumPy arrays in (x, y, z) order. SimpleITK's own arrays are (z, y, x); :func:`to_xyz`
and :func:`from_xyz` convert. Spacing tuples are (x, y, z) in mm, physical coordinates are
LPS in mm (ITK's convention).

Reading a scan (:func:`read_image`) accepts a NIfTI or NRRD file (or MetaImage) or a folder
of DICOM files. A DICOM series is ordered by ``ImagePositionPatient`` projected on the slice
normal (not by file name or ``InstanceNumber``), and its slice spacing is taken from those
positions (not from ``SliceThickness``), so overlapping reconstructions and blank UIDs are
read correctly.

A crop box (:class:`CropBox`) records the voxel range kept from a volume and the padding added
around it, so that a prediction on the cropped volume can be put back on the full grid
(:meth:`CropBox.uncrop`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from semiseg3d.errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "is_image_file",
    "image_stem",
    "to_xyz",
    "from_xyz",
    "read_image",
    "read_dicom_series",
    "grid_difference",
    "physical_bounds",
    "resample_to_spacing",
    "resample_like",
    "label_onto_grid",
    "bounding_box",
    "CropBox",
    "crop_box_around",
    "write_nifti",
    "write_image",
]

#: file endings read as images (lower case, longest first)
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_DICOM_TAG_POSITION = "0020|0032"
_DICOM_TAG_ORIENTATION = "0020|0037"
_DICOM_TAG_SERIES = "0020|000e"
_DICOM_TAG_MODALITY = "0008|0060"


def is_image_file(path: Path) -> bool:
    """True for a file whose name ends in one of :data:`IMAGE_SUFFIXES`."""
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) and len(name) > len(s) for s in IMAGE_SUFFIXES)


def image_stem(path: Path) -> str:
    """The file name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def to_xyz(image: sitk.Image) -> np.ndarray:
    """The voxel array of ``image`` in (x, y, z) order (a C-contiguous copy)."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def from_xyz(array: np.ndarray, reference: sitk.Image | None = None) -> sitk.Image:
    """A SimpleITK image from an (x, y, z) array, with the geometry of ``reference`` if given.

    Args:
        array: (X, Y, Z) voxel values.
        reference: image whose spacing, origin and direction are copied; its size must be
            (X, Y, Z).

    Returns:
        The image (pixel type from the array's dtype).
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    if reference is not None:
        if tuple(reference.GetSize()) != tuple(array.shape):
            raise ValueError(f"array shape {array.shape} != reference size {reference.GetSize()}")
        image.CopyInformation(reference)
    return image


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK warnings (printed to stderr) inside the block."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


@contextlib.contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null inside the block: the NIfTI C library prints
    its write errors there (``** ERROR: NWAD: ...``), which the caller reports itself."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _first_line(exc: BaseException, path: Path | None = None) -> str:
    """The informative line of an ITK exception, without the file name it repeats."""
    text = str(exc)
    if path is not None:
        text = text.replace(f' for "{path}"', "").replace(f'"{path}"', "the file")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # ITK messages put the useful part after "Description:" or on the last line
    for ln in lines:
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()[:200]
    if not lines:
        return exc.__class__.__name__
    return lines[-1].removeprefix("sitk::ERROR:").strip()[:200]


def _check_3d(image: sitk.Image, where: Path) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{where}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel, "
            "expected a scalar volume"
        )
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"{where}: image is {image.GetDimension()}-D, expected a 3-D volume")
    if min(image.GetSize()) < 1:
        raise InputError(f"{where}: image is empty (size {image.GetSize()})")
    return image


def _check_nifti_complete(path: Path) -> None:
    """Refuse a truncated NIfTI file (ITK silently zero-fills a short gzip stream)."""
    import gzip
    import zlib

    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        need = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * int(
            np.dtype(header.get_data_dtype()).itemsize
        )
    except Exception as exc:  # nibabel raises many types for a broken header
        raise InputError(f"{path}: not a readable NIfTI file ({exc.__class__.__name__})") from exc
    if path.name.lower().endswith(".gz"):
        have = 0
        try:
            with gzip.open(path, "rb") as f:
                while block := f.read(1 << 22):
                    have += len(block)
        except (EOFError, OSError, zlib.error) as exc:
            raise InputError(
                f"{path}: compressed data is truncated or corrupt ({exc.__class__.__name__})"
            ) from exc
    else:
        have = path.stat().st_size
    if have < need:
        raise InputError(f"{path}: file is truncated ({have} of {need} bytes)")


def _nonfinite_message(where: Path, n_bad: int) -> str:
    return f"{where}: {n_bad} voxel value(s) are not finite (NaN or inf) as stored in the file"


def _check_nifti_finite(path: Path) -> None:
    """Refuse NaN / inf voxels as the NIfTI file stores them: ITK's NIfTI reader turns NaN
    into 0, so the image SimpleITK returns cannot show them (nibabel reads them as stored)."""
    import nibabel as nib

    image = nib.load(str(path))
    if not np.issubdtype(image.header.get_data_dtype(), np.inexact):
        return  # integers cannot hold NaN
    stored = np.asanyarray(image.dataobj.get_unscaled())
    n_bad = int(stored.size - np.count_nonzero(np.isfinite(stored)))
    if n_bad:
        raise InputError(_nonfinite_message(path, n_bad))


def _check_finite(image: sitk.Image, where: Path) -> sitk.Image:
    """Refuse NaN / inf voxels of a floating-point image as read (NRRD, MetaImage, DICOM:
    their readers keep them)."""
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return image
    view = sitk.GetArrayViewFromImage(image)
    n_bad = int(view.size - np.count_nonzero(np.isfinite(view)))
    if n_bad:
        raise InputError(_nonfinite_message(where, n_bad))
    return image


def read_image(path: str | Path) -> sitk.Image:
    """Read a 3-D scalar volume: NIfTI / NRRD / MetaImage file, or a DICOM folder.

    Args:
        path: an image file, or a folder holding one DICOM series (searched recursively).

    Returns:
        The image with its physical geometry.

    Raises:
        InputError: missing path, unreadable / truncated / corrupt file, not a 3-D scalar
            volume, NaN or inf voxels (checked as stored, whichever reader would hide
            them), or (DICOM) no usable series.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
        _check_nifti_finite(path)
    try:
        with _quiet_itk():
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read image ({_first_line(exc, path)})") from exc
    return _check_finite(_check_3d(image, path), path)


def _floats(text: str, n: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in text.replace(" ", "").split("\\") if v], dtype=float)
    except ValueError:
        return None
    return values if values.size == n and np.all(np.isfinite(values)) else None


def read_dicom_series(folder: str | Path) -> sitk.Image:
    """Read the one DICOM series found under ``folder`` (all ``*.dcm`` files, recursively;
    files without that suffix are tried when there are none).

    Slices are sorted by their ``ImagePositionPatient`` projected on the slice normal
    (the cross product of the two ``ImageOrientationPatient`` vectors); the z spacing is
    the median step between those positions, and the origin and direction are set from
    the first slice's position and the orientation. Blank UIDs are accepted.

    Args:
        folder: folder holding the series.

    Returns:
        The volume with HU values as SimpleITK decodes them (rescale slope/intercept applied).

    Raises:
        InputError: no DICOM files, an unreadable file, several series, missing or
            inconsistent position/orientation tags, two slices at one position, or slice
            steps that vary by more than 5 % (missing slices).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: DICOM folder not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".dcm")
    if not files:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no DICOM files found (expected *.dcm files in this folder)")
    headers: list[tuple[Path, np.ndarray, np.ndarray, str]] = []
    for f in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        reader.SetImageIO("GDCMImageIO")
        try:
            with _quiet_itk():
                reader.ReadImageInformation()
        except RuntimeError as exc:
            raise InputError(f"{f}: not a readable DICOM file ({_first_line(exc, f)})") from exc
        keys = set(reader.GetMetaDataKeys())
        pos = (
            _floats(reader.GetMetaData(_DICOM_TAG_POSITION), 3)
            if _DICOM_TAG_POSITION in keys
            else None
        )
        ori = (
            _floats(reader.GetMetaData(_DICOM_TAG_ORIENTATION), 6)
            if _DICOM_TAG_ORIENTATION in keys
            else None
        )
        if pos is None or ori is None:
            raise InputError(
                f"{f}: DICOM file lacks a valid ImagePositionPatient / ImageOrientationPatient"
            )
        series = reader.GetMetaData(_DICOM_TAG_SERIES).strip() if _DICOM_TAG_SERIES in keys else ""
        modality = (
            reader.GetMetaData(_DICOM_TAG_MODALITY).strip() if _DICOM_TAG_MODALITY in keys else ""
        )
        if modality and modality not in ("CT", "MR", "PT"):
            continue  # e.g. a SEG, RTSTRUCT or secondary capture stored beside the series
        headers.append((f, pos, ori, series))
    if not headers:
        raise InputError(f"{folder}: no CT/MR image slices found among {len(files)} files")
    groups: dict[tuple[str, tuple[float, ...]], list[tuple[Path, np.ndarray, np.ndarray, str]]] = {}
    for h in headers:
        groups.setdefault((h[3], tuple(np.round(h[2], 3))), []).append(h)
    if len(groups) > 1:
        sizes = ", ".join(f"{len(v)} slices (series '{k[0]}')" for k, v in groups.items())
        raise InputError(f"{folder}: holds {len(groups)} DICOM series ({sizes}); keep only one")
    (slices,) = groups.values()
    ori = slices[0][2]
    row, col = ori[:3], ori[3:]
    normal = np.cross(row, col)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputError(f"{slices[0][0]}: ImageOrientationPatient is not orthonormal")
    order = sorted(slices, key=lambda h: float(np.dot(h[1], normal)))
    proj = np.array([float(np.dot(h[1], normal)) for h in order])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(h[0]) for h in order])
    try:
        with _quiet_itk():
            image = reader.Execute()
    except RuntimeError as exc:
        for h in order:  # name the slice that fails, when one does on its own
            try:
                with _quiet_itk():
                    sitk.ReadImage(str(h[0]))
            except RuntimeError as one:
                raise InputError(
                    f"{h[0]}: cannot read DICOM slice ({_first_line(one, h[0])})"
                ) from exc
        raise InputError(f"{folder}: cannot read the DICOM series ({_first_line(exc)})") from exc
    image = _check_finite(_check_3d(image, folder), folder)
    if len(order) > 1:
        steps = np.diff(proj)
        if np.any(steps < 1e-4):
            i = int(np.argmin(steps))
            raise InputError(
                f"{folder}: slices {order[i][0].name} and {order[i + 1][0].name} are at the same position"
            )
        dz = float(np.median(steps))
        if np.any(np.abs(steps - dz) > 0.05 * dz):
            raise InputError(
                f"{folder}: slice positions are not evenly spaced (steps {steps.min():.3g}-"
                f"{steps.max():.3g} mm; missing slices?)"
            )
    else:
        dz = float(image.GetSpacing()[2])
    sx, sy = image.GetSpacing()[:2]
    image.SetSpacing((float(sx), float(sy), dz))
    image.SetOrigin(tuple(float(v) for v in order[0][1]))
    direction = np.stack([row, col, normal], axis=1)  # columns = axis directions
    image.SetDirection(tuple(float(v) for v in direction.reshape(-1)))
    return image


def grid_difference(a: sitk.Image, b: sitk.Image, tol_mm: float = 1e-3) -> str | None:
    """Describe how the voxel grids of ``a`` and ``b`` differ, or None when they match.

    Sizes must be equal, spacings and origins equal within ``tol_mm`` (relative 1e-4 for
    spacing), directions within 1e-4.
    """
    if tuple(a.GetSize()) != tuple(b.GetSize()):
        return f"size {tuple(a.GetSize())} vs {tuple(b.GetSize())}"
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if not np.allclose(sa, sb, rtol=1e-4, atol=tol_mm):
        return f"spacing {tuple(np.round(sa, 4))} vs {tuple(np.round(sb, 4))} mm"
    oa, ob = np.array(a.GetOrigin()), np.array(b.GetOrigin())
    if not np.allclose(oa, ob, atol=max(tol_mm, 1e-3 * float(sa.min()))):
        return f"origin {tuple(np.round(oa, 3))} vs {tuple(np.round(ob, 3))} mm"
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4):
        return f"direction {tuple(np.round(a.GetDirection(), 4))} vs {tuple(np.round(b.GetDirection(), 4))}"
    return None


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical box (mm) covered by the voxels of ``image`` (voxel edges,
    i.e. half a voxel beyond the outer voxel centres). Returns (low corner, high corner)."""
    size = np.array(image.GetSize(), dtype=float)
    corners = []
    for i in (-0.5, size[0] - 0.5):
        for j in (-0.5, size[1] - 0.5):
            for k in (-0.5, size[2] - 0.5):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))
    c = np.array(corners)
    return c.min(axis=0), c.max(axis=0)


def resample_to_spacing(
    image: sitk.Image, spacing: Sequence[float], interpolator: int, default: float = 0.0
) -> sitk.Image:
    """Resample ``image`` to a new voxel size, keeping origin, direction and physical extent.

    The new size per axis is ``max(1, round(size * old_spacing / new_spacing))``; the first
    voxel centre stays at the origin.

    Args:
        image: input volume.
        spacing: target (x, y, z) spacing in mm.
        interpolator: a SimpleITK interpolator (``sitk.sitkLinear``, ``sitk.sitkBSpline``,
            ``sitk.sitkNearestNeighbor`` for labels).
        default: value outside the input.

    Returns:
        The resampled image (same pixel type).
    """
    old_size = np.array(image.GetSize(), dtype=float)
    old_spacing = np.array(image.GetSpacing(), dtype=float)
    new_spacing = np.array([float(s) for s in spacing])
    new_size = [max(1, int(round(v))) for v in old_size * old_spacing / new_spacing]
    return sitk.Resample(
        image,
        new_size,
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        tuple(new_spacing.tolist()),
        image.GetDirection(),
        default,
        image.GetPixelID(),
    )


def resample_like(
    image: sitk.Image, reference: sitk.Image, interpolator: int, default: float = 0.0
) -> sitk.Image:
    """Resample ``image`` onto the grid of ``reference`` by physical position (identity
    transform). The pixel type of ``image`` is kept."""
    return sitk.Resample(
        image, reference, sitk.Transform(), interpolator, default, image.GetPixelID()
    )


def label_onto_grid(label: sitk.Image, reference: sitk.Image, where: str | Path) -> sitk.Image:
    """Put a label map on the grid of ``reference`` by physical geometry (nearest neighbour).

    This handles any difference of axis order, flips, origin or spacing between the two
    files without hard-coded flips. It refuses a label that does not overlap the reference
    volume, and one that loses more than half of its foreground volume (mm^3) on the way
    (mostly outside the reference).

    Args:
        label: the label image (integer values, 0 = background).
        reference: the image whose grid the label must take.
        where: the label file, named in errors.

    Returns:
        The label resampled on ``reference``'s grid (same pixel type as ``label``).

    Raises:
        InputError: no physical overlap, or most of the foreground falls outside.
    """
    lo_l, hi_l = physical_bounds(label)
    lo_r, hi_r = physical_bounds(reference)
    if np.any(hi_l <= lo_r) or np.any(hi_r <= lo_l):
        raise InputError(
            f"{where}: label does not overlap the image physically (label spans "
            f"{np.round(lo_l, 1).tolist()}..{np.round(hi_l, 1).tolist()} mm, image spans "
            f"{np.round(lo_r, 1).tolist()}..{np.round(hi_r, 1).tolist()} mm)"
        )
    if grid_difference(label, reference) is None:
        out = sitk.Image(label)
        out.CopyInformation(reference)
        return out
    out = resample_like(label, reference, sitk.sitkNearestNeighbor, 0)
    before = float(np.count_nonzero(sitk.GetArrayViewFromImage(label))) * float(
        np.prod(label.GetSpacing())
    )
    after = float(np.count_nonzero(sitk.GetArrayViewFromImage(out))) * float(
        np.prod(reference.GetSpacing())
    )
    if before > 0 and after < 0.5 * before:
        raise InputError(
            f"{where}: only {100 * after / before:.0f}% of the labelled volume falls inside the "
            "image grid (label and image do not cover the same region)"
        )
    return out


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """Inclusive index range ``((min, max), ...)`` of the non-zero voxels per axis, or None
    when the mask is empty."""
    if not np.any(mask):
        return None
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(np.any(mask, axis=other))
        out.append((int(idx[0]), int(idx[-1])))
    return tuple(out)


@dataclass(frozen=True)
class CropBox:
    """A crop of a volume of shape ``source_shape`` plus padding, per axis (x, y, z).

    The output is ``pad(volume[start:stop], (pad_before, pad_after))``; its shape is
    ``stop - start + pad_before + pad_after`` per axis.
    """

    source_shape: tuple[int, int, int]
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    pad_before: tuple[int, int, int] = (0, 0, 0)
    pad_after: tuple[int, int, int] = (0, 0, 0)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the cropped and padded output (X, Y, Z)."""
        return tuple(  # type: ignore[return-value]
            b - a + p + q
            for a, b, p, q in zip(
                self.start, self.stop, self.pad_before, self.pad_after, strict=True
            )
        )

    def apply(self, array: np.ndarray, pad_value: float = 0.0) -> np.ndarray:
        """Crop and pad the last three axes of ``array`` (shape (..., X, Y, Z))."""
        index = (Ellipsis, *(slice(a, b) for a, b in zip(self.start, self.stop, strict=True)))
        out = array[index]
        widths = [(0, 0)] * (array.ndim - 3) + list(
            zip(self.pad_before, self.pad_after, strict=True)
        )
        if any(p or q for p, q in widths):
            out = np.pad(out, widths, mode="constant", constant_values=pad_value)
        return np.ascontiguousarray(out)

    def uncrop(self, array: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Put a cropped array (..., *shape) back on the source grid (..., *source_shape);
        voxels outside the crop get ``fill`` and the padding is dropped."""
        lead = array.shape[:-3]
        out = np.full((*lead, *self.source_shape), fill, dtype=array.dtype)
        inner = (
            Ellipsis,
            *(
                slice(p, p + (b - a))
                for a, b, p in zip(self.start, self.stop, self.pad_before, strict=True)
            ),
        )
        target = (Ellipsis, *(slice(a, b) for a, b in zip(self.start, self.stop, strict=True)))
        out[target] = array[inner]
        return out

    def to_dict(self) -> dict[str, list[int]]:
        """Plain JSON-able record."""
        return {
            "source_shape": list(self.source_shape),
            "start": list(self.start),
            "stop": list(self.stop),
            "pad_before": list(self.pad_before),
            "pad_after": list(self.pad_after),
        }


def crop_box_around(
    box: Sequence[tuple[int, int]] | None,
    shape: Sequence[int],
    *,
    axes: Sequence[bool] = (True, True, True),
    margin_before: Sequence[int] = (0, 0, 0),
    margin_after: Sequence[int] = (0, 0, 0),
    centre_pad: Sequence[int] | None = None,
    inclusive_end: bool = False,
    min_size: Sequence[int] | None = None,
) -> CropBox:
    """The crop around a bounding box, with margins, the centring pad rule and a minimum size.

    Per cropped axis, with the box ``(lo, hi)`` (inclusive indices) and ``p =
    max(centre_pad - (hi - lo), 0) // 2`` (0 without ``centre_pad``)::

        start = max(lo - p - margin_before, 0)
        stop  = min(hi + p + margin_after + (1 if inclusive_end else 0), size)

    This is the rule of the public LA (UA-MT), Pancreas (MC-Net) and BraTS (SSL4MIS)
    scripts when ``inclusive_end`` is False (their ``stop`` is exclusive, so the last box
    plane is kept only through the margin). Axes not cropped keep their full range. Then
    every axis shorter than ``min_size`` is padded to it, centred (``before = pad // 2``).

    Args:
        box: inclusive (lo, hi) per axis, or None to keep the whole volume.
        shape: volume shape (X, Y, Z).
        axes: which axes are cropped.
        margin_before: voxels added below the box per axis.
        margin_after: voxels added above the box per axis.
        centre_pad: the patch size used by the centring pad rule, or None.
        inclusive_end: add one to ``stop`` so the last box plane is always kept.
        min_size: pad each axis up to this size, or None.

    Returns:
        The :class:`CropBox`.
    """
    shape3 = tuple(int(s) for s in shape)
    start, stop = [0, 0, 0], list(shape3)
    if box is not None:
        for i in range(3):
            if not axes[i]:
                continue
            lo, hi = box[i]
            p = max(int(centre_pad[i]) - (hi - lo), 0) // 2 if centre_pad is not None else 0
            start[i] = max(lo - p - int(margin_before[i]), 0)
            stop[i] = min(hi + p + int(margin_after[i]) + (1 if inclusive_end else 0), shape3[i])
    before, after = [0, 0, 0], [0, 0, 0]
    if min_size is not None:
        for i in range(3):
            pad = max(int(min_size[i]) - (stop[i] - start[i]), 0)
            before[i], after[i] = pad // 2, pad - pad // 2
    return CropBox(shape3, tuple(start), tuple(stop), tuple(before), tuple(after))  # type: ignore[arg-type]


def write_nifti(array: np.ndarray, reference: sitk.Image, path: str | Path) -> None:
    """Write an (x, y, z) array as NIfTI (or any SimpleITK format by extension) with the
    geometry of ``reference``. The caller handles atomicity."""
    write_image(from_xyz(array, reference), path)


def write_image(image: sitk.Image, path: str | Path, *, name: str | Path | None = None) -> None:
    """Write ``image`` with SimpleITK (compressed) and check that it reads back intact.

    ITK's NIfTI writer ignores a failed write: on a full disk it leaves an empty or
    truncated ``.nii.gz`` (which ITK even reads back, zero-filled) and reports success.
    So the file is read back and compared voxel by voxel. The caller handles atomicity
    (``path`` is usually the temporary of :func:`semiseg3d.io.atomic.atomic_path`).

    Args:
        image: a scalar image.
        path: where to write (the format follows the extension).
        name: the output as the user knows it, for messages (default ``path``).

    Raises:
        OSError: the write failed or the file does not read back intact, naming ``name``;
            ``ENOSPC`` when the disk has less free space than the image's raw size.
    """
    where = str(name if name is not None else path)
    expected = sitk.GetArrayViewFromImage(image)
    try:
        with _quiet_itk(), _quiet_stderr_fd():
            sitk.WriteImage(image, str(path), useCompression=True)
            written = sitk.ReadImage(str(path))  # kept alive: the view below borrows it
            back = sitk.GetArrayViewFromImage(written)
        intact = back.shape == expected.shape and np.array_equal(
            back, expected, equal_nan=np.issubdtype(expected.dtype, np.floating)
        )
    except RuntimeError:  # ITK's report of a failed write or an unreadable result
        intact = False
    if intact:
        return
    import errno
    import os
    import shutil

    if shutil.disk_usage(Path(path).parent).free < expected.nbytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)
    raise OSError(errno.EIO, "the written file does not read back intact", where)
