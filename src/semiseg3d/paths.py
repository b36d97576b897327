"""Where things are: the repository root and the read-only shared folder beside it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "shared_dir"]


def repo_root() -> Path:
    """The checkout root (the folder holding ``pyproject.toml``), for an editable install."""
    return Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """The shared data folder: ``$SEMISEG3D_SHARED`` if set, else ``<repo>/../shared``."""
    env = os.environ.get("SEMISEG3D_SHARED")
    return Path(env) if env else repo_root().parent / "shared"
