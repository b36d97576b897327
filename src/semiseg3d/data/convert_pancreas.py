"""NIH Pancreas-CT (TCIA) -> preprocessed h5 (spec 5.2).

Input: the TCIA download (DICOM series per ``PANCREAS_XXXX`` folder, whatever the study and
series folder names below it) and the label NIfTI files ``labelXXXX.nii.gz``
(``TCIA_pancreas_labels-02-05-2017``). Per case:

1. the series is read with slices ordered by ``ImagePositionPatient`` and the slice spacing
   taken from the positions (:func:`~semiseg3d.data.geometry.read_dicom_series`);
2. the label is put on the CT grid by physical geometry (identity transform, nearest
   neighbour), never by index flips; a label that does not overlap the CT is refused;
3. then the recipe of MC-Net's public ``Pre-processing.ipynb`` with the paper's window
   (spec 5.2 recommendation; every step configurable through the options):
   resample to 1 mm isotropic (B-spline image, nearest label) -> clip to [-120, 240] HU
   and map to [0, 1] -> crop all three axes to the label box + the centring pad to 96 +
   25 voxels per side (stop exclusive, as in the public script) -> pad any axis still
   shorter than 96 -> z-score over the crop.

Output ``<out>/PANCREAS_XXXX.h5``; ``train.list`` = PANCREAS_0001-0062 and ``test.list`` =
PANCREAS_0063-0082 (fold 0 of the published lists), restricted to the cases present. The two
cases TCIA flagged as duplicates (reportedly 0025 and 0070) are kept, as the lists keep
them; ``exclude: [PANCREAS_0025, PANCREAS_0070]`` drops them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import SimpleITK as sitk

from semiseg3d.data.convert_custom import CaseSource, Discovery, make_lists
from semiseg3d.data.geometry import label_onto_grid, read_dicom_series, read_image
from semiseg3d.data.preprocess import PreprocessOptions
from semiseg3d.data.splits_official import PANCREAS_DUPLICATES, pancreas_lists
from semiseg3d.errors import InputError

__all__ = ["SOURCE_HELP", "LAYOUT", "default_options", "discover", "load_case"]

SOURCE_HELP = (
    "NIH Pancreas-CT is distributed by The Cancer Imaging Archive (TCIA), collection "
    "'Pancreas-CT' (doi:10.7937/K9/TCIA.2016.tNB1kqBU; download the DICOM series with the NBIA "
    "Data Retriever and the label archive TCIA_pancreas_labels-02-05-2017); expected layout "
    "RAW/.../PANCREAS_0001/**/*.dcm and labels RAW/.../label0001.nii.gz (or --labels DIR)"
)

#: output layout: ``<ID>.h5``
LAYOUT = "flat"

_CASE_DIR = re.compile(r"^PANCREAS_(\d{4})$")
_LABEL_FILE = re.compile(r"^label(\d{4})\.nii(\.gz)?$")


def default_options() -> PreprocessOptions:
    """The spec 5.2 recommendation (MC-Net's recipe with the window [-120, 240] HU)."""
    return PreprocessOptions(
        spacing=(1.0, 1.0, 1.0),
        interpolation="bspline",
        intensity="window_zscore",
        window=(-120.0, 240.0),
        zscore_region="all",
        normalise_before_crop=False,
        crop="label",
        crop_axes="xyz",
        margin=(25, 25, 25),
        random_margin=None,
        centre_pad=True,
        crop_end_inclusive=False,
        patch=(96, 96, 96),
        pad_to_patch=True,
        label_values=None,
        align_label="resample",
        split="official",
    )


def load_case(case_dir: Path, label_path: Path) -> tuple[sitk.Image, sitk.Image]:
    """The CT (HU, as stored) and its label on the CT grid, before any preprocessing.

    Args:
        case_dir: a ``PANCREAS_XXXX`` folder (the DICOM files anywhere below it).
        label_path: its ``labelXXXX.nii.gz``.

    Returns:
        ``(ct, label)``, both on the CT grid.

    Raises:
        InputError: unreadable DICOM or label, or a label outside the CT.
    """
    ct = read_dicom_series(case_dir)
    label = read_image(label_path)
    return ct, label_onto_grid(label, ct, label_path)


def _walk_dirs(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        out.extend(Path(dirpath) / d for d in dirnames)
    return out


def discover(raw: Path, opts: PreprocessOptions, labels: Path | None = None) -> Discovery:
    """Find the ``PANCREAS_XXXX`` case folders under ``raw`` and their label files (under
    ``labels`` when given, else anywhere under ``raw``).

    Raises:
        InputError: no case folder, a case without its label file (naming the expected
            file), a case folder or label found twice, a missing ``labels`` folder.
    """
    if labels is not None and not labels.is_dir():
        raise InputError(f"{labels}: label folder not found (expected label0001.nii.gz ...)")
    case_dirs: dict[str, Path] = {}
    for d in _walk_dirs(raw):
        m = _CASE_DIR.match(d.name)
        if not m:
            continue
        case_id = d.name
        if case_id in case_dirs:
            raise InputError(f"{d}: case {case_id} found twice (also {case_dirs[case_id]})")
        case_dirs[case_id] = d
    if not case_dirs:
        raise InputError(f"{raw}: no PANCREAS_XXXX case folders found; {SOURCE_HELP}")
    label_files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(labels or raw):
        dirnames.sort()
        for name in sorted(filenames):
            m = _LABEL_FILE.match(name)
            if not m:
                continue
            case_id = f"PANCREAS_{m.group(1)}"
            path = Path(dirpath) / name
            if case_id in label_files:
                raise InputError(
                    f"{path}: second label file for {case_id} (also {label_files[case_id]})"
                )
            label_files[case_id] = path
    notes = []
    extra = sorted(set(label_files) - set(case_dirs))
    if extra:
        notes.append(
            f"{len(extra)} label file(s) without a CT folder were skipped: {', '.join(extra[:5])}"
        )
    cases = []
    for case_id in sorted(case_dirs):
        if case_id in opts.exclude:
            continue
        if case_id not in label_files:
            number = case_id.split("_")[1]
            raise InputError(
                f"{case_dirs[case_id]}: no label file label{number}.nii.gz found under {labels or raw}"
            )
        lab = label_files[case_id]
        d = case_dirs[case_id]
        cases.append(
            CaseSource(case_id, (lambda d=d, lab=lab: load_case(d, lab)), str(d), str(lab))
        )
    if not cases:
        raise InputError(f"{raw}: every Pancreas-CT case is excluded")
    kept_dups = [c for c in PANCREAS_DUPLICATES if c in {x.case_id for x in cases}]
    if kept_dups:
        notes.append(
            f"kept {', '.join(kept_dups)} (reported duplicates; the published lists keep them; "
            "option exclude drops them)"
        )
    lists, list_notes = make_lists([c.case_id for c in cases], opts, official=pancreas_lists())
    return Discovery(cases, lists, notes + list_notes)
