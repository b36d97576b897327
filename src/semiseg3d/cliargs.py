"""Command-line options that several ``semiseg3d`` commands share the shape of."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_xyz_option", "add_path_options", "add_set_option"]


def add_xyz_option(
    parser: argparse.ArgumentParser,
    flag: str,
    help: str,
    *,
    kind: type = int,
    metavar: tuple[str, str, str] = ("X", "Y", "Z"),
    default: Sequence[float] | None = None,
) -> None:
    """An option taking three values, one per axis (x, y, z), e.g. ``--patch 112 112 80``.

    Args:
        parser: the command's parser.
        flag: the option, ``--name``.
        help: its help text.
        kind: ``int`` (voxels) or ``float`` (millimetres).
        metavar: the three names shown in the usage line.
        default: the value when the option is absent (None: absent stays None).
    """
    parser.add_argument(
        flag,
        nargs=3,
        type=kind,
        metavar=metavar,
        default=list(default) if default is not None else None,
        help=help,
    )


def add_path_options(
    parser: argparse.ArgumentParser, options: Sequence[tuple[str, str, str]], required: bool
) -> None:
    """Options that each take one path: ``(flag, metavar, help)`` each, read as ``Path``.

    Args:
        parser: the command's parser.
        options: the options, in the order of the usage line.
        required: whether they must be given.
    """
    for flag, metavar, help in options:
        parser.add_argument(flag, required=required, type=Path, metavar=metavar, help=help)


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option, collected in ``args.overrides`` (a list of
    strings; :func:`semiseg3d.config.run.parse_overrides` reads them).

    Args:
        parser: the command's parser.
        help: what ``--set`` changes for this command.
    """
    parser.add_argument(
        "--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides", help=help
    )
