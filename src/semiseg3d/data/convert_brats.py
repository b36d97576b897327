"""BraTS-2019 training data -> preprocessed h5 (spec 5.3; SSL4MIS / AC-MT recipe).

Input: ``MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/<ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii.gz``
(any folder holding ``<ID>_flair`` / ``<ID>_seg`` files is a case; ``LGG/`` and the CSV files
are optional). Only FLAIR and the segmentation are used. Per case, as SSL4MIS
``code/dataloaders/brats_proprecessing.py`` does:

* crop FLAIR and label to the bounding box of the non-zero FLAIR voxels (its stop index is
  exclusive: the last non-zero plane per axis is dropped, as in the public script);
* clip the intensities at the 99.9 % point of the cumulative histogram of the crop;
* z-score with the mean / std of the voxels > 0 (the background becomes negative);
* label = seg > 0 (whole tumour); no resampling.

Output ``<out>/<ID>.h5``; ``train.list`` (250), ``val.list`` (25), ``test.list`` (60) from
SSL4MIS ``data/BraTS2019``, restricted to the cases present.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from semiseg3d.data.convert_custom import CaseSource, Discovery, make_lists, pair_loader
from semiseg3d.data.preprocess import PreprocessOptions
from semiseg3d.data.splits_official import brats_lists
from semiseg3d.errors import InputError

__all__ = ["SOURCE_HELP", "LAYOUT", "MODALITIES", "default_options", "discover"]

SOURCE_HELP = (
    "BraTS-2019 is distributed after registration through the CBICA Image Processing Portal "
    "and IEEE DataPort ('BraTS MICCAI Brain Tumor Dataset', doi:10.21227/hdtd-5j88); expected "
    "layout RAW/MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/<ID>/<ID>_flair.nii.gz + <ID>_seg.nii.gz"
)

#: output layout: ``<ID>.h5``
LAYOUT = "flat"

#: modality suffixes of a BraTS case folder
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair", "seg")
_MEMBER = re.compile(r"^(?P<case>.+)_(?P<mod>t1|t1ce|t2|flair|seg)\.nii(\.gz)?$")


def default_options() -> PreprocessOptions:
    """The SSL4MIS recipe (see the module docstring)."""
    return PreprocessOptions(
        spacing=None,
        intensity="zscore",
        clip_percentile=99.9,
        zscore_region="positive",
        normalise_before_crop=False,
        crop="foreground",
        crop_axes="xyz",
        margin=(0, 0, 0),
        random_margin=None,
        centre_pad=False,
        crop_end_inclusive=False,
        patch=(96, 96, 96),
        pad_to_patch=True,
        label_values=None,
        align_label="strict",
        split="official",
    )


def discover(raw: Path, opts: PreprocessOptions, labels: Path | None = None) -> Discovery:
    """Find the BraTS case folders under ``raw``.

    Raises:
        InputError: no case folder; a case folder without its FLAIR or segmentation file, or
            with files of another case (naming the folder); the same case id twice.
    """
    del labels
    found: dict[str, Path] = {}
    cases = []
    for dirpath, dirnames, filenames in os.walk(raw):
        dirnames.sort()
        members = {}
        for name in filenames:
            m = _MEMBER.match(name)
            if m:
                members.setdefault(m.group("mod"), []).append(
                    (m.group("case"), Path(dirpath) / name)
                )
        if not members:
            continue
        folder = Path(dirpath)
        case_id = folder.name
        others = sorted({c for files in members.values() for c, _ in files if c != case_id})
        if others:
            raise InputError(
                f"{folder}: holds files of case '{others[0]}', expected only {case_id}_*.nii.gz"
            )
        missing = [m for m in ("flair", "seg") if m not in members]
        if missing:
            present = sorted(members)
            raise InputError(
                f"{folder}: wrong modality set, missing {' and '.join(missing)} (found {present}; "
                f"need {case_id}_flair.nii.gz and {case_id}_seg.nii.gz)"
            )
        for mod, files in members.items():
            if len(files) > 1:
                raise InputError(f"{folder}: {len(files)} files for modality '{mod}'")
        if case_id in found:
            raise InputError(f"{folder}: case {case_id} found twice (also {found[case_id]})")
        found[case_id] = folder
        if case_id in opts.exclude:
            continue
        flair, seg = members["flair"][0][1], members["seg"][0][1]
        cases.append(CaseSource(case_id, pair_loader(flair, seg, opts), str(flair), str(seg)))
    if not found:
        raise InputError(f"{raw}: no BraTS case folders found; {SOURCE_HELP}")
    if not cases:
        raise InputError(f"{raw}: every BraTS case is excluded")
    cases.sort(key=lambda c: c.case_id)
    lists, notes = make_lists([c.case_id for c in cases], opts, official=brats_lists())
    return Discovery(cases, lists, notes)
