"""Labeled / unlabeled / test case lists for one label count (spec 4.2 and 5.1).

The labeled cases are the FIRST N lines of the dataset's ``train.list`` in file order, the
unlabeled cases are the rest of it, and the test cases are ``test.list`` unchanged. The
module is also the ``semiseg3d split`` command, which writes the three lists as plain text
(one id per line), byte-identical on every rerun.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from semiseg3d.config.run import labeled_from_ratio
from semiseg3d.data.volumes import case_path, check_volume_headers, read_list
from semiseg3d.errors import InputError
from semiseg3d.io.atomic import write_text_atomic

__all__ = [
    "split_labeled",
    "labeled_from_ratio",
    "format_list",
    "write_split",
    "add_arguments",
    "main",
]


def split_labeled(train_ids: Sequence[str], n: int) -> tuple[list[str], list[str]]:
    """Split a training list into labeled (first ``n``) and unlabeled (the rest) cases.

    Args:
        train_ids: training case ids in file order.
        n: number of labeled cases, 1 <= n <= len(train_ids) (n == len gives no unlabeled
            cases: the fully supervised setting).

    Returns:
        (labeled, unlabeled), both in file order.

    Raises:
        InputError: ``n`` is out of range.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(train_ids):
        raise InputError(
            f"labeled count {n!r} is outside [1, {len(train_ids)}] (training list size)"
        )
    return list(train_ids[:n]), list(train_ids[n:])


def format_list(ids: Sequence[str]) -> str:
    """The text of a list file: one id per line, each line ending in a newline ('' if empty)."""
    return "".join(f"{i}\n" for i in ids)


def _check_volumes(data: Path, ids: Sequence[str], list_path: Path) -> None:
    missing = []
    for case_id in ids:
        try:
            case_path(data, case_id)
        except InputError:
            missing.append(case_id)
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise InputError(
            f"{list_path}: {len(missing)} case id(s) have no volume in {data}: {shown}"
        )


def _check_disjoint(a: Sequence[str], a_path: Path, b: Sequence[str], b_path: Path) -> None:
    in_b = set(b)
    common = [i for i in a if i in in_b]
    if common:
        shown = ", ".join(common[:5]) + (f" and {len(common) - 5} more" if len(common) > 5 else "")
        raise InputError(f"{a_path} and {b_path} share {len(common)} case id(s): {shown}")


def write_split(
    data: str | Path,
    out: str | Path,
    *,
    labeled: int | None = None,
    ratio: float | None = None,
    train_list: str | Path | None = None,
    test_list: str | Path | None = None,
) -> dict[str, list[str]]:
    """Validate a dataset's lists and write ``labeled.list``, ``unlabeled.list``, ``test.list``.

    Everything is checked before anything is written; each file is written atomically. When
    ``<data>/val.list`` exists (and no explicit lists are given) it is checked too and copied
    to ``<out>/val.list``.

    Args:
        data: dataset folder (case files plus ``train.list`` / ``test.list``).
        out: output folder (created).
        labeled: labeled count N (first N of the training list); exclusive with ``ratio``.
        ratio: label ratio, converted with :func:`labeled_from_ratio`.
        train_list: training list (default ``<data>/train.list``).
        test_list: test list (default ``<data>/test.list``).

    Returns:
        Mapping file stem -> ids written (``labeled``, ``unlabeled``, ``test`` [, ``val``]).

    Raises:
        InputError: N or ratio out of range / both or neither given, a list missing or with
            duplicates, an id without a volume, overlap between training, validation and
            test lists, an empty training or test list, a labeled, validation or test case
            whose file has no ``label``.
    """
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise InputError(f"{data}: dataset folder not found")
    if (labeled is None) == (ratio is None):
        raise InputError("give exactly one of the labeled count and the label ratio")
    train_path = Path(train_list) if train_list is not None else data / "train.list"
    test_path = Path(test_list) if test_list is not None else data / "test.list"
    val_path = data / "val.list"
    use_val = train_list is None and test_list is None and val_path.is_file()
    lists = {
        "train": (train_path, read_list(train_path)),
        "test": (test_path, read_list(test_path)),
    }
    if use_val:
        lists["val"] = (val_path, read_list(val_path))
    for name in ("train", "test"):
        path, ids = lists[name]
        if not ids:
            raise InputError(f"{path}: {name} list is empty")
    names = list(lists)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            _check_disjoint(lists[a][1], lists[a][0], lists[b][1], lists[b][0])
    for path, ids in lists.values():
        _check_volumes(data, ids, path)
    train_ids = lists["train"][1]
    n = labeled if labeled is not None else labeled_from_ratio(ratio, len(train_ids))  # type: ignore[arg-type]
    lab, unlab = split_labeled(train_ids, n)
    check_volume_headers(data, lab, lab, why=f"first {n} of {train_path}")
    for name in ("test", "val"):
        if name in lists:
            path, ids = lists[name]
            check_volume_headers(data, ids, ids, why=f"listed in {path}")
    result = {"labeled": lab, "unlabeled": unlab, "test": lists["test"][1]}
    if use_val:
        result["val"] = lists["val"][1]
    out.mkdir(parents=True, exist_ok=True)
    for stem, ids in result.items():
        write_text_atomic(out / f"{stem}.list", format_list(ids))
    return result


# -- semiseg3d split ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d split``."""
    parser.add_argument("--data", required=True, type=Path, help="dataset folder")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--labeled", type=int, metavar="N", help="labeled count: first N of train.list"
    )
    how.add_argument(
        "--ratio",
        type=float,
        metavar="R",
        help="label ratio in (0, 1], N = R x train size, half up",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder for the lists")
    parser.add_argument("--train-list", type=Path, help="training list (default DATA/train.list)")
    parser.add_argument("--test-list", type=Path, help="test list (default DATA/test.list)")


def main(args: argparse.Namespace) -> int:
    """Write the split files and print one summary line."""
    result = write_split(
        args.data,
        args.out,
        labeled=args.labeled,
        ratio=args.ratio,
        train_list=args.train_list,
        test_list=args.test_list,
    )
    counts = ", ".join(f"{len(ids)} {stem}" for stem, ids in result.items())
    print(f"{args.out}: {counts}")
    return 0
