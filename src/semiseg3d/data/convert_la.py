"""LA raw challenge data (lgemri.nrrd + laendo.nrrd per case) -> preprocessed h5 (spec 5.1).

The recipe of yulequan/UA-MT ``code/dataloaders/la_heart_processing.py``, with its random
margins seeded per case so that a conversion is reproducible:

* label = ``laendo == 255``;
* the image is z-scored with the mean / std of the WHOLE raw volume;
* x and y are cropped to the label's bounding box ``[lo, hi]`` widened by the centring pad
  ``p = max(112 - (hi - lo), 0) // 2`` and a random 10-19 voxel margin per side
  (``start = max(lo - m - p, 0)``, ``stop = min(hi + m + p, size)``, stop exclusive as in
  the public script); all z slices are kept;
* an axis still shorter than the patch (112, 112, 80) is padded, centred (never on the real
  data, whose crops are at least 148 x 132 x 88).

The margins come from :func:`~semiseg3d.data.preprocess.case_rng` ``(seed, case id)``.
Output: ``<out>/<ID>/mri_norm2.h5`` (the LA layout), ``train.list`` / ``test.list`` from the
published fold 0 restricted to the cases present.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from semiseg3d.data.convert_custom import CaseSource, Discovery, make_lists, pair_loader
from semiseg3d.data.preprocess import PreprocessOptions
from semiseg3d.data.splits_official import la_lists
from semiseg3d.errors import InputError

__all__ = ["SOURCE_HELP", "LAYOUT", "default_options", "discover"]

SOURCE_HELP = (
    "the 2018 Atrial Segmentation Challenge training set (100 LGE-MRI cases) is distributed "
    "by the challenge organisers (STACOM 2018, University of Utah / CARMA; Cardiac Atlas "
    "Project, registration needed); expected layout RAW/Training Set/<ID>/lgemri.nrrd + "
    "laendo.nrrd (or RAW/2018LA_Seg_Training Set/<ID>/...). The preprocessed release needs no "
    "registration: semiseg3d fetch --dataset la"
)

#: output layout: ``<ID>/mri_norm2.h5``
LAYOUT = "la"

IMAGE_NAME = "lgemri.nrrd"
LABEL_NAME = "laendo.nrrd"


def default_options() -> PreprocessOptions:
    """The UA-MT recipe (see the module docstring)."""
    return PreprocessOptions(
        spacing=None,
        intensity="zscore",
        zscore_region="all",
        normalise_before_crop=True,
        crop="label",
        crop_axes="xy",
        margin=(0, 0, 0),
        random_margin=(10, 20),
        centre_pad=True,
        crop_end_inclusive=False,
        patch=(112, 112, 80),
        pad_to_patch=True,
        label_values=(255,),
        align_label="strict",
        split="official",
    )


def _training_roots(raw: Path) -> list[Path]:
    """The training-set folders to search: ``raw`` itself when its name says "Training Set",
    else the outermost folders below it whose name does (so the unlabeled challenge
    "Testing Set" beside them is not read), else ``raw``."""
    if "training set" in raw.name.lower():
        return [raw]
    found = sorted(p for p in raw.rglob("*") if p.is_dir() and "training set" in p.name.lower())
    outer = [p for p in found if not any(q in p.parents for q in found)]
    return outer or [raw]


def discover(raw: Path, opts: PreprocessOptions, labels: Path | None = None) -> Discovery:
    """Find the LA cases under ``raw``: every folder holding ``lgemri.nrrd`` (searched
    recursively, inside the "Training Set" folder when there is one); its name is the case id.

    Raises:
        InputError: no case found, a case without ``laendo.nrrd`` (naming the expected file),
            a ``laendo.nrrd`` without its image, the same case id twice.
    """
    del labels  # LA keeps the label beside the image
    roots = _training_roots(raw)
    images = sorted(p for r in roots for p in r.rglob(IMAGE_NAME) if p.is_file())
    label_files = sorted(p for r in roots for p in r.rglob(LABEL_NAME) if p.is_file())
    if not images and not label_files:
        raise InputError(f"{raw}: no LA cases found (no {IMAGE_NAME}); {SOURCE_HELP}")
    for lab in label_files:
        if not (lab.parent / IMAGE_NAME).is_file():
            raise InputError(f"{lab.parent / IMAGE_NAME}: image missing for label {lab.name}")
    counts = Counter(p.parent.name for p in images)
    dup = [c for c, n in counts.items() if n > 1]
    if dup:
        raise InputError(f"{raw}: case id '{dup[0]}' appears in {counts[dup[0]]} folders")
    cases = []
    for img in images:
        lab = img.parent / LABEL_NAME
        if not lab.is_file():
            raise InputError(
                f"{lab}: label file missing (every case needs {IMAGE_NAME} and {LABEL_NAME})"
            )
        case_id = img.parent.name
        if case_id in opts.exclude:
            continue
        cases.append(CaseSource(case_id, pair_loader(img, lab, opts), str(img), str(lab)))
    if not cases:
        raise InputError(f"{raw}: every LA case is excluded")
    lists, notes = make_lists([c.case_id for c in cases], opts, official=la_lists())
    return Discovery(cases, lists, notes)
