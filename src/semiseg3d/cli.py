"""The ``semiseg3d`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``main(args) -> int``. Modules are imported only when their subcommand runs, so
``semiseg3d --help`` is fast and does not import torch.

A :class:`~semiseg3d.errors.Semiseg3dError` (bad input, failed training) raised anywhere
below is printed as one line, ``semiseg3d <command>: error: <message>``, and the process
exits with code 2. So is an :class:`OSError` (an output path under a regular file, no
permission, disk full): ``<path>: <reason>``. So is a usage error (an unknown option, a
value of the wrong type): ``semiseg3d <command>: error: <message>; see 'semiseg3d <command>
--help'``, without argparse's usage block.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from semiseg3d.errors import Semiseg3dError

__all__ = ["COMMANDS", "main", "build_parser", "os_error_line", "OneLineParser"]

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "complexity": ("semiseg3d.reporting.complexity", "parameter and MAC counts of a network"),
    "split": ("semiseg3d.data.splits", "write labeled/unlabeled/test case lists"),
    "check-data": ("semiseg3d.data.volumes", "validate every volume of a dataset folder"),
    "fetch": ("semiseg3d.data.download", "download or copy a preprocessed dataset, checksummed"),
    "convert": (
        "semiseg3d.data.convert",
        "convert a raw dataset (LA, Pancreas-CT, BraTS, own data) to h5",
    ),
    "synth": ("semiseg3d.data.synthetic", "generate the small synthetic demo dataset"),
    "run-config": ("semiseg3d.grid.run_config", "write the training config of one grid point"),
    "train": ("semiseg3d.training.cli", "train (or resume) one run of any method"),
    "test": ("semiseg3d.evaluation.test_run", "predict and score the test list of a run"),
    "predict": ("semiseg3d.inference.predict", "segment a new scan with a trained run"),
    "evaluate": ("semiseg3d.evaluation.evaluate", "score predicted masks against ground truth"),
    "report": ("semiseg3d.reporting.cli", "build the paper's tables and figures from run metrics"),
    "doctor": ("semiseg3d.doctor", "check the installation and the workspace, one line per check"),
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit code 2 (as every other
    error of the command line): the message, then where the usage is."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(f"{self.prog}: error: {message}".split())
        self.exit(2, f"{text}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one (lazily filled) sub-parser per command."""
    parser = OneLineParser(
        prog="semiseg3d",
        description="Semi-supervised 3D medical image segmentation pipeline.",
    )
    from semiseg3d import __version__

    parser.add_argument("--version", action="version", version=f"semiseg3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``semiseg3d`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help / usage errors and exits
        parser.print_help()
        return 2
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = OneLineParser(prog=f"semiseg3d {name}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except Semiseg3dError as exc:
        print(f"semiseg3d {name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"semiseg3d {name}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2


def os_error_line(exc: OSError) -> str:
    """One line for an OS error: ``<path>: <reason>`` (``<path> -> <path2>`` for a rename)."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    where = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    text = f"{' -> '.join(where)}: {reason}" if where else reason
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
