"""User-facing errors.

Every error a user can cause with a bad file or a bad parameter is raised as
:class:`InputError` with a one-line message that names the file or parameter and says
what is wrong. The command-line entry point prints it on one line and exits with code 2.
"""

from __future__ import annotations

import re

__all__ = ["Semiseg3dError", "InputError", "TrainingError", "format_numbers"]


class Semiseg3dError(Exception):
    """Base of the errors the command line reports as one line (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(_from_worker(str(message)).split()))


#: the first line of the message torch's DataLoader re-raises a worker's exception with
_WORKER_HEADER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")
#: the last line of the worker's traceback: ``package.module.ClassName: message``
_TRACEBACK_TAIL = re.compile(r"^[\w.]+: (.*)$")


def _from_worker(message: str) -> str:
    """The original message of an error re-raised from a DataLoader worker, else ``message``.

    torch re-raises a worker's exception in the main process as ``type(exc)(text)``, where
    ``text`` is "Caught X in DataLoader worker process N." plus the worker's whole
    traceback. The user should see the same one line as with ``num_workers: 0``: the last
    traceback line, without its class name.
    """
    if not _WORKER_HEADER.match(message):
        return message
    lines = [line for line in message.rstrip().splitlines() if line.strip()]
    tail = _TRACEBACK_TAIL.match(lines[-1]) if lines else None
    return tail.group(1) if tail else message


class InputError(Semiseg3dError, ValueError):
    """A bad input file, folder or parameter. The message is one line: where, then what."""


class TrainingError(Semiseg3dError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss term); the message names term and iteration."""


def format_numbers(values: object) -> str:
    """Numbers for a message as a person writes them: ``(1, 1, 0.5)``, never
    ``(np.float64(1.0), ...)``. A scalar gives ``1.5``; other values their ``str``."""
    if isinstance(values, str | bytes):
        return str(values)
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        items = None
    if items is None:
        try:
            return f"{float(values):g}"  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(values)
    return "(" + ", ".join(format_numbers(v) for v in items) + ")"
