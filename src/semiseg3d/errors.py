"""User-facing errors.

Every error a user can cause with a bad file or a bad parameter is raised as
:class:`InputError` with a one-line message that names the file or parameter and says
what is wrong. The command-line entry point prints it on one line and exits with code 2.
"""

from __future__ import annotations

__all__ = ["Semiseg3dError", "InputError", "TrainingError"]


class Semiseg3dError(Exception):
    """Base of the errors the command line reports as one line (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class InputError(Semiseg3dError, ValueError):
    """A bad input file, folder or parameter. The message is one line: where, then what."""


class TrainingError(Semiseg3dError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss term); the message names term and iteration."""
