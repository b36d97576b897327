"""Reading YAML mappings: the one reader of every YAML (and JSON) file the package takes as
input (``params.yaml`` and overlays, run configs, preprocessing recipes), with one-line
errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from semiseg3d.errors import InputError

__all__ = ["read_yaml"]


def read_yaml(
    path: str | Path, what: str = "file", *, expect: str = "a mapping at the top level"
) -> dict[str, Any]:
    """Read a YAML mapping (JSON is YAML too); an empty file is an empty mapping.

    Args:
        path: the file.
        what: what the file is, for the "not found" message (``config file``).
        expect: what the top level must be, for the "expected ..." message.

    Raises:
        InputError: ``<path>: <what> not found``, ``<path>: not valid YAML [at line N]``
            (also for a file that is not UTF-8 text), ``<path>: expected <expect>, got
            <type>``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(f"{p}: not valid YAML{line} ({exc.__class__.__name__})") from exc
    except OSError as exc:
        raise InputError(f"{p}: cannot read {what} ({exc.strerror or exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected {expect}, got {type(data).__name__}")
    return data
