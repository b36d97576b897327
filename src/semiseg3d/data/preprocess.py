"""Preprocessing options and the one preprocessing engine every converter runs.

Every converter (LA raw, Pancreas-CT, BraTS-2019, own data) describes its recipe as a
:class:`PreprocessOptions` record and runs the same engine, :func:`prepare_case`:

1. optional resampling to ``spacing`` (image: linear or B-spline, label: nearest);
2. the label becomes {0, 1} (``label_values``, or ``> 0``);
3. a crop box around the label (``crop: label``) or the non-zero image voxels
   (``crop: foreground``) on the axes in ``crop_axes``, with ``margin`` (+ a seeded random
   ``random_margin``) per side, the centring pad rule (``centre_pad``) and padding up to
   ``patch`` (``pad_to_patch``);
4. intensity normalisation (:class:`Normaliser`): optional upper clip at the
   ``clip_percentile`` point of the cumulative histogram, optional ``window`` [lo, hi]
   mapped to [0, 1], optional z-score over all voxels or voxels > 0, its statistics taken
   from the whole volume (``normalise_before_crop``) or from the crop. Padding gets the
   normalised value of the background (the window's lower bound, else the volume minimum).

:func:`prepare_inference` applies the same recipe to a new scan for ``semiseg3d predict``
(no label: a ``label`` crop is skipped and the statistics come from the whole volume).
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from semiseg3d.data.geometry import (
    CropBox,
    bounding_box,
    crop_box_around,
    grid_difference,
    resample_to_spacing,
    to_xyz,
)
from semiseg3d.errors import InputError
from semiseg3d.io.yamlio import read_yaml

__all__ = [
    "PreprocessOptions",
    "options_from_mapping",
    "load_options",
    "options_json",
    "Normaliser",
    "fit_normaliser",
    "binarise_label",
    "case_rng",
    "Prepared",
    "prepare_case",
    "prepare_inference",
]

_INTENSITY = ("zscore", "window", "window_zscore", "none")
_CROP = ("none", "label", "foreground")
_REGION = ("all", "positive")
_INTERP = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
}
_ALIGN = ("strict", "resample")


@dataclass(frozen=True)
class PreprocessOptions:
    """One preprocessing recipe. Every field is also a key of the ``options`` mapping in
    ``params.yaml`` (``data.<name>.options``) and of ``semiseg3d convert --options FILE``.

    Spatial triples are (x, y, z): ``spacing`` in mm, ``margin`` / ``patch`` in voxels.
    """

    spacing: tuple[float, float, float] | None = None  #: resample to this voxel size (mm)
    interpolation: str = "linear"  #: image interpolator when resampling: linear | bspline
    intensity: str = "zscore"  #: zscore | window | window_zscore | none
    window: tuple[float, float] | None = None  #: [lo, hi] clip, mapped to [0, 1]
    clip_percentile: float | None = None  #: upper clip at this cumulative-histogram point (%)
    zscore_region: str = "all"  #: z-score statistics over all voxels or voxels > 0 (positive)
    normalise_before_crop: bool = True  #: statistics from the whole volume (else the crop)
    crop: str = "none"  #: none | label | foreground (non-zero image voxels)
    crop_axes: str = "xyz"  #: which axes are cropped, e.g. "xy"
    margin: tuple[int, int, int] = (0, 0, 0)  #: voxels added on each side of the box
    random_margin: tuple[int, int] | None = None  #: extra [lo, hi) voxels per side, seeded
    centre_pad: bool = False  #: widen the box by max(patch - extent, 0) // 2 per side
    crop_end_inclusive: bool = True  #: keep the box's last plane (False: public scripts' rule)
    patch: tuple[int, int, int] = (96, 96, 96)  #: training patch (centre pad, minimum size)
    pad_to_patch: bool = True  #: pad every axis up to the patch
    label_values: tuple[int, ...] | None = None  #: foreground label values (None: > 0)
    align_label: str = "strict"  #: strict: label grid must equal the image's; resample
    split: str = "random"  #: official | random | path of a split file (YAML)
    test_fraction: float = 0.2  #: random split: share of test cases
    val_fraction: float = 0.0  #: random split: share of validation cases
    exclude: tuple[str, ...] = ()  #: case ids left out
    seed: int = 0  #: random margins and random split

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-able mapping (tuples as lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _num_list(value: Any, n: int, where: str, integer: bool) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple) or len(value) != n:
        raise InputError(f"{where} must be a list of {n} numbers, got {value!r}")
    kinds = (int,) if integer else (int, float)
    if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value):
        kind = "integers" if integer else "numbers"
        raise InputError(f"{where} must be a list of {n} {kind}, got {value!r}")
    return tuple(int(v) if integer else float(v) for v in value)


def _coerce_option(name: str, value: Any, where: str) -> Any:
    """Check one option's type and range; return the stored value."""
    if name == "spacing":
        if value is None:
            return None
        out = _num_list(value, 3, where, integer=False)
        if any(not math.isfinite(v) or v <= 0 for v in out):
            raise InputError(f"{where} must be 3 positive numbers (mm), got {value!r}")
        return out
    if name in ("margin", "patch"):
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value] * 3
        out = _num_list(value, 3, where, integer=True)
        low = 1 if name == "patch" else 0
        if any(v < low for v in out):
            raise InputError(f"{where} must be >= {low} per axis, got {value!r}")
        return out
    if name == "window":
        if value is None:
            return None
        out = _num_list(value, 2, where, integer=False)
        if not out[0] < out[1]:
            raise InputError(f"{where} must be [lo, hi] with lo < hi, got {value!r}")
        return out
    if name == "random_margin":
        if value is None:
            return None
        out = _num_list(value, 2, where, integer=True)
        if not 0 <= out[0] < out[1]:
            raise InputError(f"{where} must be [lo, hi) with 0 <= lo < hi, got {value!r}")
        return out
    if name == "label_values":
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple) or not value:
            raise InputError(f"{where} must be a non-empty list of integers or null, got {value!r}")
        return _num_list(value, len(value), where, integer=True)
    if name == "exclude":
        if value is None:
            return ()
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{where} must be a list of case ids, got {value!r}")
        return tuple(value)
    if name == "clip_percentile":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
            raise InputError(f"{where} must be a number in (0, 100] or null, got {value!r}")
        return float(value)
    if name in ("test_fraction", "val_fraction"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise InputError(f"{where} must be a number in [0, 1), got {value!r}")
        return float(value)
    if name == "seed":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{where} must be a non-negative integer, got {value!r}")
        return value
    if name in ("normalise_before_crop", "centre_pad", "crop_end_inclusive", "pad_to_patch"):
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value
    choices = {
        "interpolation": ("linear", "bspline"),
        "intensity": _INTENSITY,
        "zscore_region": _REGION,
        "crop": _CROP,
        "align_label": _ALIGN,
    }
    if name in choices:
        if value not in choices[name]:
            raise InputError(f"{where} must be one of {list(choices[name])}, got {value!r}")
        return value
    if name == "crop_axes":
        if (
            not isinstance(value, str)
            or not value
            or set(value) - set("xyz")
            or len(set(value)) != len(value)
        ):
            raise InputError(f"{where} must be a string of distinct axes from 'xyz', got {value!r}")
        return "".join(a for a in "xyz" if a in value)
    if name == "split":
        if not isinstance(value, str) or not value:
            raise InputError(
                f"{where} must be 'official', 'random' or a split file path, got {value!r}"
            )
        return value
    raise InputError(f"{where}: unknown option")  # pragma: no cover - guarded by the caller


def options_from_mapping(
    data: Mapping[str, Any], base: PreprocessOptions, source: str = "options"
) -> PreprocessOptions:
    """``base`` with the keys of ``data`` replaced, each checked.

    Args:
        data: option name -> value (YAML types: lists for tuples, null for None).
        base: the defaults (a dataset's recipe).
        source: named in errors (a file, or ``--set``).

    Returns:
        The validated options.

    Raises:
        InputError: an unknown key, or a value of the wrong type or out of range, naming it.
    """
    fields = {f.name for f in dataclasses.fields(PreprocessOptions)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise InputError(
            f"{source}: unknown preprocessing option(s) {unknown}; known: {sorted(fields)}"
        )
    changes = {k: _coerce_option(k, v, f"{source}: option '{k}'") for k, v in data.items()}
    opts = dataclasses.replace(base, **changes)
    if opts.intensity in ("window", "window_zscore") and opts.window is None:
        raise InputError(
            f"{source}: option 'intensity' = {opts.intensity} needs 'window: [lo, hi]'"
        )
    return opts


def load_options(
    path: str | Path | None, overrides: Mapping[str, Any] | None, base: PreprocessOptions
) -> PreprocessOptions:
    """Read options from a YAML/JSON file (a mapping; an ``options:`` or ``preprocess:``
    sub-mapping is used when present), then apply ``overrides`` (e.g. from ``--set``)."""
    data: dict[str, Any] = {}
    opts = base
    if path is not None:
        p = Path(path)
        loaded = read_yaml(p, "options file", expect="a mapping of preprocessing options")
        for key in ("options", "preprocess"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
        data.update(loaded)
        opts = options_from_mapping(data, base, str(p))
    if overrides:
        opts = options_from_mapping(dict(overrides), opts, "--set")
    return opts


# -- intensities ------------------------------------------------------------------------------


def _cdf_point(values: np.ndarray, percent: float) -> float:
    """Smallest value v with (fraction of voxels <= v) >= percent / 100.

    For integer-valued images this equals the histogram rule of SSL4MIS's BraTS script
    (skimage ``cumulative_distribution``, one bin per integer value)."""
    uniq, counts = np.unique(values, return_counts=True)
    cdf = np.cumsum(counts, dtype=np.float64) / float(values.size)
    idx = int(np.searchsorted(cdf, percent / 100.0 - 1e-12, side="left"))
    return float(uniq[min(idx, uniq.size - 1)])


@dataclass(frozen=True)
class Normaliser:
    """An intensity map fitted on one volume: ``clip -> (window to [0, 1]) -> (z-score)``.

    Attributes:
        clip_lo: lower clip (source units) or None.
        clip_hi: upper clip (source units) or None.
        window: (lo, hi) mapped to [0, 1], or None.
        mean: z-score mean (after the window), or None for no z-score.
        std: z-score standard deviation, or None.
        background: source value used for padding (window lo, else the volume minimum).
    """

    clip_lo: float | None
    clip_hi: float | None
    window: tuple[float, float] | None
    mean: float | None
    std: float | None
    background: float

    def _pre(self, array: np.ndarray) -> np.ndarray:
        out = np.asarray(array, dtype=np.float32)
        if self.clip_lo is not None or self.clip_hi is not None:
            out = np.clip(out, self.clip_lo, self.clip_hi)
        if self.window is not None:
            lo, hi = self.window
            out = (out - np.float32(lo)) / np.float32(hi - lo)
        return out.astype(np.float32, copy=False)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Normalise ``array`` (any shape); float32 result."""
        out = self._pre(array)
        if self.mean is not None and self.std is not None:
            out = ((out.astype(np.float64) - self.mean) / self.std).astype(np.float32)
        return out

    def background_value(self) -> float:
        """The normalised value of :attr:`background` (used to pad)."""
        return float(self.apply(np.array([self.background], dtype=np.float32))[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record."""
        return dataclasses.asdict(self)


def fit_normaliser(array: np.ndarray, opts: PreprocessOptions, where: str) -> Normaliser:
    """Fit the intensity map of ``opts`` on ``array`` (source intensities, any shape).

    Raises:
        InputError: non-finite intensities, or a z-score over a constant / empty region.
    """
    values = np.asarray(array)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{where}: image has non-finite intensities (NaN or inf)")
    clip_lo: float | None = None
    clip_hi: float | None = None
    if opts.clip_percentile is not None:
        clip_lo, clip_hi = float(values.min()), _cdf_point(values, opts.clip_percentile)
    window = opts.window if opts.intensity in ("window", "window_zscore") else None
    if window is not None:
        clip_lo = window[0] if clip_lo is None else max(clip_lo, window[0])
        clip_hi = window[1] if clip_hi is None else min(clip_hi, window[1])
    background = float(window[0]) if window is not None else float(values.min())
    base = Normaliser(clip_lo, clip_hi, window, None, None, background)
    if opts.intensity not in ("zscore", "window_zscore"):
        return base
    pre = base._pre(values)
    region = pre[pre > 0] if opts.zscore_region == "positive" else pre
    if region.size == 0:
        raise InputError(f"{where}: no voxels > 0 to compute the z-score statistics")
    mean = float(region.mean(dtype=np.float64))
    std = float(region.std(dtype=np.float64))
    if not std > 0:
        raise InputError(f"{where}: image intensities are constant; cannot z-score")
    return dataclasses.replace(base, mean=mean, std=std)


def binarise_label(label: np.ndarray, values: Sequence[int] | None, where: str) -> np.ndarray:
    """Foreground mask (uint8 {0, 1}) of a label array: voxels whose value is in ``values``,
    or ``> 0`` when ``values`` is None.

    Raises:
        InputError: non-integer label values, or ``values`` given and the label has
            foreground-like values but none of ``values``.
    """
    label = np.asarray(label)
    if np.issubdtype(label.dtype, np.floating):
        if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
            raise InputError(
                f"{where}: label has non-integer values; expected an integer label map"
            )
    if values is None:
        return (label > 0).astype(np.uint8)
    mask = np.isin(label, np.asarray(values))
    if not mask.any() and np.any(label != 0):
        present = np.unique(label)[:10].tolist()
        raise InputError(
            f"{where}: label has values {present}, none of the foreground value(s) {list(values)}"
        )
    return mask.astype(np.uint8)


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """The random generator of one case, from ``(seed, case id)`` (stable across runs and
    machines, independent of the order in which cases are converted)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(case_id.encode())]))


# -- the engine ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One preprocessed case.

    Attributes:
        image: float32 (X, Y, Z), normalised, cropped and padded.
        label: uint8 (X, Y, Z) in {0, 1}, or None (unlabeled).
        spacing: (x, y, z) mm of the (resampled) grid.
        box: the crop of the (resampled) grid.
        normaliser: the fitted intensity map.
        grid: the (resampled) full-volume image before cropping (geometry reference).
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    box: CropBox
    normaliser: Normaliser
    grid: sitk.Image


def _axes_mask(opts: PreprocessOptions) -> tuple[bool, bool, bool]:
    return tuple(a in opts.crop_axes for a in "xyz")  # type: ignore[return-value]


def _resample(image: sitk.Image, label: sitk.Image | None, opts: PreprocessOptions):
    image = sitk.Cast(image, sitk.sitkFloat32)
    if opts.spacing is None:
        return image, label
    image = resample_to_spacing(image, opts.spacing, _INTERP[opts.interpolation], 0.0)
    if label is not None:
        label = resample_to_spacing(label, opts.spacing, sitk.sitkNearestNeighbor, 0)
    return image, label


def _normalise_crop(
    array: np.ndarray, box: CropBox, opts: PreprocessOptions, fit_on_crop: bool, where: str
) -> tuple[np.ndarray, Normaliser]:
    inner = CropBox(box.source_shape, box.start, box.stop)
    fit_source = inner.apply(array) if fit_on_crop else array
    norm = fit_normaliser(fit_source, opts, where)
    cropped = box.apply(array, pad_value=norm.background)
    return norm.apply(cropped), norm


def prepare_case(
    image: sitk.Image,
    label: sitk.Image | None,
    opts: PreprocessOptions,
    *,
    rng: np.random.Generator | None = None,
    where: str = "case",
    label_where: str | None = None,
) -> Prepared:
    """Run the recipe ``opts`` on one case.

    Args:
        image: the scan.
        label: its label map ON THE SAME GRID (see :func:`~semiseg3d.data.geometry.label_onto_grid`),
            or None for an unlabeled image.
        opts: the recipe.
        rng: draws the random margins (x lo, x hi, y lo, y hi, z lo, z hi); required when
            ``opts.random_margin`` is set.
        where: names the image in errors.
        label_where: names the label in errors (default ``where``).

    Returns:
        The :class:`Prepared` case.

    Raises:
        InputError: an empty label with ``crop: label``, an all-zero image with
            ``crop: foreground``, bad label values, or a degenerate intensity range.
    """
    label_where = label_where or where
    if label is not None and grid_difference(image, label) is not None:
        raise ValueError("prepare_case needs the label on the image grid")
    image, label = _resample(image, label, opts)
    array = to_xyz(image).astype(np.float32, copy=False)
    mask = (
        binarise_label(to_xyz(label), opts.label_values, label_where) if label is not None else None
    )
    box_src = None
    if opts.crop == "label" and mask is not None:
        box_src = bounding_box(mask)
        if box_src is None:
            raise InputError(
                f"{label_where}: label has no foreground voxels (crop: label needs one)"
            )
    elif opts.crop == "foreground":
        box_src = bounding_box(array != 0)
        if box_src is None:
            raise InputError(f"{where}: image is all zero (crop: foreground needs non-zero voxels)")
    before = list(opts.margin)
    after = list(opts.margin)
    if opts.random_margin is not None:
        if rng is None:
            raise ValueError("random_margin needs an rng")
        draws = rng.integers(opts.random_margin[0], opts.random_margin[1], size=6)
        before = [m + int(d) for m, d in zip(before, draws[0::2], strict=True)]
        after = [m + int(d) for m, d in zip(after, draws[1::2], strict=True)]
    box = crop_box_around(
        box_src,
        array.shape,
        axes=_axes_mask(opts),
        margin_before=before,
        margin_after=after,
        centre_pad=opts.patch if opts.centre_pad else None,
        inclusive_end=opts.crop_end_inclusive,
        min_size=opts.patch if opts.pad_to_patch else None,
    )
    fit_on_crop = not opts.normalise_before_crop and box_src is not None
    out, norm = _normalise_crop(array, box, opts, fit_on_crop, where)
    out_label = box.apply(mask, pad_value=0).astype(np.uint8) if mask is not None else None
    spacing = tuple(float(s) for s in image.GetSpacing())
    return Prepared(out, out_label, spacing, box, norm, image)  # type: ignore[arg-type]


def prepare_inference(
    image: sitk.Image,
    opts: PreprocessOptions,
    where: str = "scan",
    min_size: Sequence[int] | None = None,
) -> Prepared:
    """Apply the recipe to a new scan (no label) for prediction.

    Same resampling and intensity map as training. A ``foreground`` crop is applied (with the
    fixed ``margin``; random margins are not drawn); a ``label`` crop is impossible without a
    label, so the whole volume is kept and the statistics come from the whole volume. Every
    axis is padded up to ``min_size`` (default: the recipe's patch) with the normalised
    background.

    Returns:
        :class:`Prepared` with ``label`` None; ``box`` maps the result back to ``grid``.
    """
    image, _ = _resample(image, None, opts)
    array = to_xyz(image).astype(np.float32, copy=False)
    box_src = None
    if opts.crop == "foreground":
        box_src = bounding_box(array != 0)
        if box_src is None:
            raise InputError(f"{where}: image is all zero (crop: foreground needs non-zero voxels)")
    box = crop_box_around(
        box_src,
        array.shape,
        axes=_axes_mask(opts),
        margin_before=opts.margin,
        margin_after=opts.margin,
        centre_pad=opts.patch if opts.centre_pad else None,
        inclusive_end=opts.crop_end_inclusive,
        min_size=opts.patch if min_size is None else min_size,
    )
    fit_on_crop = not opts.normalise_before_crop and box_src is not None
    out, norm = _normalise_crop(array, box, opts, fit_on_crop, where)
    spacing = tuple(float(s) for s in image.GetSpacing())
    return Prepared(out, None, spacing, box, norm, image)  # type: ignore[arg-type]


# -- case discovery and split lists -------------------------------------------------------------


def options_json(opts: PreprocessOptions) -> str:
    """The options as pretty JSON (for messages and ``preprocess.json``)."""
    return json.dumps(opts.to_dict(), indent=2)
