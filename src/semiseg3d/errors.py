"""User-facing errors.

Every error a user can cause with a bad file or a bad parameter is raised as
:class:`InputError` with a one-line message that names the file or parameter and says
what is wrong. The command-line entry point prints it on one line and exits with code 2.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A bad input file, folder or parameter. The message is one line: where, then what."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
