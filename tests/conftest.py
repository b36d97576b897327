"""Shared pytest fixtures: paths to the read-only shared data and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from semiseg3d.paths import repo_root, shared_dir


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root."""
    return repo_root()


@pytest.fixture(scope="session")
def la_dir() -> Path:
    """The real preprocessed LA dataset (``../shared/data/LA``); skip when absent."""
    path = shared_dir() / "data" / "LA"
    if not (path / "train.list").is_file():
        pytest.skip(f"real LA data not found at {path} (set SEMISEG3D_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def fixtures_raw() -> Path:
    """The raw-format fixtures (``../shared/fixtures/raw``); skip when absent."""
    path = shared_dir() / "fixtures" / "raw"
    if not path.is_dir():
        pytest.skip(f"raw fixtures not found at {path} (set SEMISEG3D_SHARED to the shared folder)")
    return path
