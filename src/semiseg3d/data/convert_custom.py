"""The own-data converter (``semiseg3d convert --dataset custom``) and what every converter
shares: a raw case (:class:`CaseSource`), what a converter found (:class:`Discovery`) and
its split lists (:func:`make_lists`). The preprocessing itself is
:mod:`semiseg3d.data.preprocess`.

The own-data layout (``semiseg3d convert --dataset custom``)::

    RAW/imagesTr/<ID>.nii.gz   (or <ID>_0000.nii.gz; .nii, .nrrd, .nhdr, .mha also read)
    RAW/labelsTr/<ID>.nii.gz   label of the same case (same grid unless align_label: resample)
    RAW/imagesUnlabeled/<ID>.nii.gz   optional images without labels
    RAW/split.yaml             optional: {train: [...], test: [...], val: [...]}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from semiseg3d.data.geometry import (
    grid_difference,
    image_stem,
    is_image_file,
    label_onto_grid,
    read_image,
)
from semiseg3d.data.preprocess import PreprocessOptions
from semiseg3d.errors import InputError
from semiseg3d.io.yamlio import read_yaml

__all__ = [
    "CaseSource",
    "Discovery",
    "split_record",
    "make_lists",
    "discover_custom",
    "custom_options",
    "SOURCE_HELP",
    "pair_loader",
]

SOURCE_HELP = (
    "expected RAW/imagesTr/<ID>.nii.gz (or <ID>_0000.nii.gz; .nii/.nrrd/.nhdr/.mha) with "
    "RAW/labelsTr/<ID>.nii.gz, optional RAW/imagesUnlabeled/ and RAW/split.yaml "
    "(see docs/own-data.md)"
)


@dataclass(frozen=True)
class CaseSource:
    """One raw case: how to load it and what to call it.

    Attributes:
        case_id: output case id.
        load: returns ``(image, label on the image grid or None)``; raises InputError.
        where: the image file or folder (named in messages).
        label_where: the label file, or None for an unlabeled case.
    """

    case_id: str
    load: Callable[[], tuple[sitk.Image, sitk.Image | None]]
    where: str
    label_where: str | None = None


@dataclass(frozen=True)
class Discovery:
    """What a converter found in a raw folder: cases in output order, split lists, notes."""

    cases: list[CaseSource]
    lists: dict[str, list[str]]
    notes: list[str]
    #: the split actually used when it differs from option 'split' (see :func:`split_record`)
    split: dict[str, Any] | None = None


def split_record(opts: PreprocessOptions) -> dict[str, Any]:
    """Where the split lists of a conversion came from, for ``preprocess.json``.

    ``{"source": "official"}``, ``{"source": "random", "seed", "test_fraction",
    "val_fraction"}`` or ``{"source": "file", "file": PATH}``.
    """
    if opts.split == "official":
        return {"source": "official"}
    if opts.split == "random":
        return {
            "source": "random",
            "seed": opts.seed,
            "test_fraction": opts.test_fraction,
            "val_fraction": opts.val_fraction,
        }
    return {"source": "file", "file": str(opts.split)}


def _read_split_file(path: Path, present: set[str]) -> dict[str, list[str]]:
    expect = "a mapping with 'train' and 'test' lists"
    data = read_yaml(path, "split file", expect=expect)
    if "train" not in data or "test" not in data:
        raise InputError(f"{path}: split file must be a mapping with 'train' and 'test' lists")
    unknown = sorted(set(data) - {"train", "test", "val"})
    if unknown:
        raise InputError(f"{path}: unknown split key(s) {unknown}; use train, test, val")
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for key, ids in data.items():
        if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
            raise InputError(f"{path}: '{key}' must be a list of case ids")
        ids = [str(i) for i in ids]
        for i in ids:
            if i in seen:
                raise InputError(f"{path}: case '{i}' is in both '{seen[i]}' and '{key}'")
            if i not in present:
                raise InputError(f"{path}: case '{i}' in '{key}' has no image in the raw folder")
            seen[i] = key
        out[key] = ids
    return out


def make_lists(
    labeled_ids: Sequence[str],
    opts: PreprocessOptions,
    *,
    official: Mapping[str, Sequence[str]] | None = None,
    unlabeled_ids: Sequence[str] = (),
) -> tuple[dict[str, list[str]], list[str]]:
    """The split lists for the converted cases.

    ``opts.split``: ``official`` keeps the published lists (``official``) restricted to the
    cases present, in their order; ``random`` shuffles the labeled cases with ``opts.seed``
    and takes ``test_fraction`` (and ``val_fraction``) of them, rounded, at least one test case
    when there are two or more cases; anything else is a YAML split file. Unlabeled cases are
    appended to ``train`` after the labeled ones (and listed in ``unlabeled``).

    Returns:
        ``({"train": [...], "test": [...], ["val": [...],] ["unlabeled": [...]]}, notes)``.
    """
    notes: list[str] = []
    present = list(labeled_ids)
    if opts.split == "official":
        if official is None:
            raise InputError(
                "option 'split' = official: this dataset has no published split; use random or a file"
            )
        present_set = set(present)
        lists = {k: [i for i in v if i in present_set] for k, v in official.items()}
        listed = {i for v in lists.values() for i in v}
        unlisted = [i for i in present if i not in listed]
        if unlisted:
            shown = ", ".join(unlisted[:5]) + (
                f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
            )
            notes.append(
                f"{len(unlisted)} case(s) are not in the published split and are in no list: {shown}"
            )
        for key, ids in official.items():
            missing = len(ids) - len(lists[key])
            if missing:
                notes.append(
                    f"published {key} list: {len(lists[key])} of {len(ids)} cases present "
                    "(the missing ones are skipped)"
                )
    elif opts.split == "random":
        order = list(present)
        case_order = np.random.default_rng(opts.seed).permutation(len(order))
        order = [order[i] for i in case_order]
        n = len(order)
        n_test = int(round(opts.test_fraction * n))
        if opts.test_fraction > 0 and n >= 2:
            n_test = max(n_test, 1)
        n_val = int(round(opts.val_fraction * n))
        lists = {
            "test": order[:n_test],
            "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :],
        }
        if not lists["val"]:
            del lists["val"]
    else:
        lists = _read_split_file(Path(opts.split), set(present))
    lists = {
        "train": lists.get("train", []),
        "test": lists.get("test", []),
        **{k: v for k, v in lists.items() if k not in ("train", "test")},
    }
    if unlabeled_ids:
        lists["train"] = lists["train"] + list(unlabeled_ids)
        lists["unlabeled"] = list(unlabeled_ids)
    return lists, notes


# -- own data -------------------------------------------------------------------------------------


def custom_options() -> PreprocessOptions:
    """Defaults for own data: z-score over the whole volume, no crop, no resampling, pad to
    96^3, random 80/20 split (seed 0), strict label grids."""
    return PreprocessOptions()


def _index_images(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not is_image_file(p):
            continue
        stem = image_stem(p)
        case_id = stem[: -len("_0000")] if stem.endswith("_0000") else stem
        if case_id in out:
            raise InputError(f"{p}: second image for case '{case_id}' (also {out[case_id].name})")
        out[case_id] = p
    return out


def pair_loader(image_path: Path, label_path: Path | None, opts: PreprocessOptions):
    """A deferred reader of one case: ``load() -> (image, label or None)``.

    The label must be on the image's grid; with ``opts.align_label == "resample"`` a label on
    another grid is mapped onto it by physical position instead (nearest neighbour).

    Raises (from ``load``):
        InputError: unreadable file, or a label on another grid in ``strict`` mode.
    """

    def load() -> tuple[sitk.Image, sitk.Image | None]:
        image = read_image(image_path)
        if label_path is None:
            return image, None
        label = read_image(label_path)
        diff = grid_difference(image, label)
        if diff is not None:
            if opts.align_label == "strict":
                raise InputError(
                    f"{label_path}: label grid differs from its image {image_path.name} ({diff}); "
                    "fix the file or set option align_label: resample"
                )
            label = label_onto_grid(label, image, label_path)
        return image, label

    return load


def discover_custom(raw: Path, opts: PreprocessOptions) -> Discovery:
    """Find the own-data cases under ``raw`` (layout in the module docstring).

    Raises:
        InputError: no ``imagesTr`` folder or no images, an image without a label or a
            label without an image (naming the file), an unlabeled id that is also labeled.
    """
    images_dir, labels_dir = raw / "imagesTr", raw / "labelsTr"
    if not images_dir.is_dir():
        raise InputError(f"{raw}: no imagesTr/ folder; {SOURCE_HELP}")
    images = _index_images(images_dir)
    if not images:
        raise InputError(f"{images_dir}: no images found; {SOURCE_HELP}")
    if not labels_dir.is_dir():
        raise InputError(f"{raw}: no labelsTr/ folder; {SOURCE_HELP}")
    labels = _index_images(labels_dir)
    for case_id, path in images.items():
        if case_id not in labels:
            raise InputError(f"{path}: no label for case '{case_id}' in {labels_dir}")
    for case_id, path in labels.items():
        if case_id not in images:
            raise InputError(f"{path}: label without an image (no {case_id}.* in {images_dir})")
    unl_dir = raw / "imagesUnlabeled"
    unlabeled = _index_images(unl_dir) if unl_dir.is_dir() else {}
    both = sorted(set(unlabeled) & set(images))
    if both:
        raise InputError(f"{unl_dir / both[0]}: case '{both[0]}' is both labeled and unlabeled")
    excluded = set(opts.exclude)
    labeled_ids = [i for i in images if i not in excluded]
    unlabeled_ids = [i for i in unlabeled if i not in excluded]
    if not labeled_ids:
        raise InputError(f"{images_dir}: every case is excluded")
    split_opts = opts
    split_file = raw / "split.yaml"
    split_used = None
    if opts.split == "random" and split_file.is_file():
        split_opts = dataclasses.replace(opts, split=str(split_file))
        split_used = {"source": "file", "file": "split.yaml", "found_in": "raw folder"}
    lists, notes = make_lists(labeled_ids, split_opts, unlabeled_ids=unlabeled_ids)
    if split_used is not None:
        notes = [*notes, "split: split.yaml of the raw folder (option 'split' left at random)"]
    cases = [
        CaseSource(i, pair_loader(images[i], labels[i], opts), str(images[i]), str(labels[i]))
        for i in labeled_ids
    ]
    cases += [
        CaseSource(i, pair_loader(unlabeled[i], None, opts), str(unlabeled[i]))
        for i in unlabeled_ids
    ]
    return Discovery(cases, lists, notes, split=split_used)
