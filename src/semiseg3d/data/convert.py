"""``semiseg3d convert``: a raw dataset -> a preprocessed dataset folder.

::

    semiseg3d convert --dataset {la-raw,pancreas,brats,custom} --raw PATH --out DIR
        (--format is an alias of --dataset; la_raw and own are aliases of la-raw and custom)
        [--labels DIR] [--seed S] [--options FILE] [--set KEY=VALUE ...]

``--raw`` is a folder or an archive (``.zip``, ``.tar.gz`` ...; extracted safely into a
temporary folder beside ``--out`` and removed afterwards). The recipe of each dataset is a
:class:`~semiseg3d.data.preprocess.PreprocessOptions` with the dataset's defaults;
``--options FILE`` (YAML) and ``--set KEY=VALUE`` change any of its fields.

The output folder is written atomically (complete or not at all)::

    DIR/<ID>.h5  (or DIR/<ID>/mri_norm2.h5 for la-raw)   image float32, label uint8 {0,1},
                                                          root attribute spacing (x, y, z mm)
    DIR/train.list, DIR/test.list [, val.list, unlabeled.list]
    DIR/preprocess.json   the recipe (read by ``semiseg3d predict``), per-case crop boxes

An existing ``DIR`` is replaced only if it holds a ``preprocess.json`` (a folder this
command wrote) or is empty.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import h5py
import numpy as np

from semiseg3d.cliargs import add_set_option
from semiseg3d.data import convert_brats, convert_custom, convert_la, convert_pancreas
from semiseg3d.data.archive import is_archive, safe_extract
from semiseg3d.data.convert_custom import Discovery, split_record
from semiseg3d.data.preprocess import PreprocessOptions, case_rng, load_options, prepare_case
from semiseg3d.errors import InputError
from semiseg3d.io.atomic import atomic_dir, check_output, remove_stale_temps

__all__ = [
    "PREPROCESS_FILE",
    "FORMAT",
    "DATASETS",
    "ALIASES",
    "Converter",
    "default_options",
    "convert_dataset",
    "write_h5",
    "write_preprocess_json",
    "add_arguments",
    "main",
]

#: recipe file written into every preprocessed dataset folder
PREPROCESS_FILE = "preprocess.json"
#: format tag of :data:`PREPROCESS_FILE`
FORMAT = "semiseg3d-preprocess/1"


@dataclass(frozen=True)
class Converter:
    """One raw format: its defaults, its case discovery, its output layout and help text."""

    defaults: Callable[[], PreprocessOptions]
    discover: Callable[[Path, PreprocessOptions, Path | None], Discovery]
    layout: str  #: "flat" (<ID>.h5) or "la" (<ID>/mri_norm2.h5)
    source_help: str


def _from_module(module: ModuleType) -> Converter:
    return Converter(module.default_options, module.discover, module.LAYOUT, module.SOURCE_HELP)


def _discover_custom(raw: Path, opts: PreprocessOptions, labels: Path | None) -> Discovery:
    if labels is not None:
        raise InputError("--labels is not used with --dataset custom (labels go in RAW/labelsTr/)")
    return convert_custom.discover_custom(raw, opts)


DATASETS: dict[str, Converter] = {
    "la-raw": _from_module(convert_la),
    "pancreas": _from_module(convert_pancreas),
    "brats": _from_module(convert_brats),
    "custom": Converter(
        convert_custom.custom_options, _discover_custom, "flat", convert_custom.SOURCE_HELP
    ),
}


#: other spellings of the format names (as params.yaml writes them)
ALIASES: dict[str, str] = {"la_raw": "la-raw", "own": "custom"}


def default_options(dataset: str) -> PreprocessOptions:
    """The recipe defaults of a raw format (``la-raw``, ``pancreas``, ``brats``, ``custom``)."""
    dataset = ALIASES.get(dataset, dataset)
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset format '{dataset}'; choose one of {sorted(DATASETS)}")
    return DATASETS[dataset].defaults()


def write_h5(path: Path, image: np.ndarray, label: np.ndarray | None, spacing) -> None:
    """Write one case: ``image`` float32 and ``label`` uint8 (omitted when None), gzip level
    4, no timestamps (byte-identical reruns), root attribute ``spacing`` (x, y, z mm)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", track_order=False) as f:
        arrays = {"image": image.astype(np.float32)}
        if label is not None:
            arrays["label"] = label.astype(np.uint8)
        for name, data in arrays.items():
            f.create_dataset(
                name, data=data, compression="gzip", compression_opts=4, track_times=False
            )
        f.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)


def write_preprocess_json(
    folder: Path, dataset: str, opts: PreprocessOptions, **extra: Any
) -> None:
    """Write ``folder/preprocess.json`` (the recipe the predictor re-applies)."""
    record = {"format": FORMAT, "dataset": dataset, "options": opts.to_dict(), **extra}
    (folder / PREPROCESS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _check_out(out: Path) -> None:
    """A file or a foreign folder at ``out`` is refused; a dataset folder semiseg3d wrote
    (marker or ``preprocess.json``) is replaced once the new one is complete."""
    check_output(out, folder=True, ours=(PREPROCESS_FILE,))


def _case_file(root: Path, case_id: str, layout: str) -> Path:
    return root / case_id / "mri_norm2.h5" if layout == "la" else root / f"{case_id}.h5"


def _fmt(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def convert_dataset(
    dataset: str,
    raw: str | Path,
    out: str | Path,
    *,
    opts: PreprocessOptions | None = None,
    labels: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Convert the raw dataset at ``raw`` into the preprocessed folder ``out``.

    Args:
        dataset: raw format, one of :data:`DATASETS`.
        raw: raw folder, or an archive of it.
        out: output folder (written atomically).
        opts: the recipe (default: the format's defaults).
        labels: Pancreas-CT only: folder of ``labelXXXX.nii.gz`` (default: searched in ``raw``).
        log: receives one line per case and the notes (None: silent).

    Returns:
        Summary: ``{"cases": n, "lists": {name: n}, "notes": [...], "out": path}``.

    Raises:
        InputError: a missing raw path (saying where the data is obtained), an empty or
            malformed raw folder, a bad case (naming its file); nothing is left in ``out``.
    """
    dataset = ALIASES.get(dataset, dataset)
    conv = DATASETS.get(dataset)
    if conv is None:
        raise InputError(f"unknown dataset format '{dataset}'; choose one of {sorted(DATASETS)}")
    opts = opts or conv.defaults()
    raw, out = Path(raw), Path(out)
    labels_path = Path(labels) if labels is not None else None
    if not raw.exists():
        raise InputError(f"{raw}: raw data not found; {conv.source_help}")
    _check_out(out)
    # what a killed earlier run left: unfinished output and extraction folders
    remove_stale_temps(out)
    if out.parent.is_dir():
        for stale in out.parent.glob(f".{glob.escape(out.name)}.extract.*"):
            shutil.rmtree(stale, ignore_errors=True)
    emit = log or (lambda _line: None)
    scratch: Path | None = None
    try:
        if is_archive(raw):
            out.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.extract.", dir=out.parent))
            emit(f"extracting {raw} ...")
            raw = safe_extract(raw, scratch)
        elif not raw.is_dir():
            raise InputError(f"{raw}: not a folder or a supported archive; {conv.source_help}")
        found = conv.discover(raw, opts, labels_path)
        records: dict[str, Any] = {}
        with atomic_dir(out, ours=(PREPROCESS_FILE,)) as tmp:
            for case in found.cases:
                image, label = case.load()
                prep = prepare_case(
                    image,
                    label,
                    opts,
                    rng=case_rng(opts.seed, case.case_id),
                    where=case.where,
                    label_where=case.label_where,
                )
                write_h5(
                    _case_file(tmp, case.case_id, conv.layout), prep.image, prep.label, prep.spacing
                )
                fg = int(prep.label.sum()) if prep.label is not None else None
                records[case.case_id] = {
                    "source_size": list(image.GetSize()),
                    "source_spacing": [float(s) for s in image.GetSpacing()],
                    "grid_shape": list(prep.box.source_shape),
                    "spacing": list(prep.spacing),
                    "crop": prep.box.to_dict(),
                    "shape": list(prep.image.shape),
                    "normaliser": prep.normaliser.to_dict(),
                    "foreground_voxels": fg,
                }
                fg_text = f", foreground {fg}" if fg is not None else ", unlabeled"
                emit(
                    f"{case.case_id}: {_fmt(image.GetSize())} -> {_fmt(prep.image.shape)}{fg_text}"
                )
            for name, ids in found.lists.items():
                (tmp / f"{name}.list").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
            n_labeled_train = len(
                [
                    i
                    for i in found.lists.get("train", [])
                    if i not in set(found.lists.get("unlabeled", []))
                ]
            )
            write_preprocess_json(
                tmp,
                dataset,
                opts,
                layout=conv.layout,
                lists={k: len(v) for k, v in found.lists.items()},
                split=found.split or split_record(opts),
                n_labeled_train=n_labeled_train,
                notes=found.notes,
                cases=records,
            )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    for note in found.notes:
        emit(f"note: {note}")
    summary = {
        "cases": len(found.cases),
        "lists": {k: len(v) for k, v in found.lists.items()},
        "notes": list(found.notes),
        "out": str(out),
    }
    emit(
        f"{out}: {len(found.cases)} cases; "
        + ", ".join(f"{k}.list {v}" for k, v in summary["lists"].items())
    )
    return summary


# -- semiseg3d convert ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d convert``."""
    parser.add_argument(
        "--dataset",
        "--format",
        dest="dataset",
        required=True,
        choices=sorted([*DATASETS, *ALIASES]),
        help="raw format (la_raw = la-raw, own = custom)",
    )
    parser.add_argument("--raw", required=True, type=Path, help="raw data folder or archive")
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument(
        "--labels", type=Path, help="pancreas: folder of labelXXXX.nii.gz (default: under --raw)"
    )
    parser.add_argument(
        "--seed", type=int, help="seed of random margins / random split (option 'seed')"
    )
    parser.add_argument(
        "--options", type=Path, metavar="FILE", help="YAML file of preprocessing options"
    )
    add_set_option(
        parser,
        "change one preprocessing option (value read as YAML), e.g. --set window=[-100,240]",
    )


def main(args: argparse.Namespace) -> int:
    """Run the conversion; print one line per case and a summary."""
    from semiseg3d.config.run import parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.seed is not None:
        overrides["seed"] = args.seed
    opts = load_options(args.options, overrides, default_options(args.dataset))
    convert_dataset(args.dataset, args.raw, args.out, opts=opts, labels=args.labels)
    return 0
