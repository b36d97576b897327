"""Shared pytest fixtures: paths to the read-only shared data and small helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def tiny_overlay(variants: list[str]) -> dict[str, Any]:
    """The demo overlay cut down to cheap runs (2 iterations, 16^3 patches, one seed) of
    ``variants`` at 50 % labeled on a 6 + 2 case synthetic dataset."""
    return {
        "data": {"synthetic": {"synth": {"cases": 6, "test": 2, "shape": [32, 32, 16]}}},
        "train": {
            "synthetic": {
                "iterations": 2,
                "lr_steps": [1],
                "patch": [16, 16, 16],
                "stride": [16, 16, 16],
                "checkpoint_every": 1,
            }
        },
        "grid": {
            "seeds": [1337],
            "datasets": ["synthetic"],
            "experiments": [{"name": "tiny", "ratios": [50], "variants": variants}],
        },
    }


@pytest.fixture(scope="session", autouse=True)
def bf16_verdict_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bf16 self-check cache for the whole session (tests and the commands they start),
    kept out of the user's ``~/.cache``: each shape is checked once per test session."""
    import os

    folder = tmp_path_factory.mktemp("bf16-cache")
    old = os.environ.get("SEMISEG3D_CACHE_DIR")
    os.environ["SEMISEG3D_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("SEMISEG3D_CACHE_DIR", None)
    else:
        os.environ["SEMISEG3D_CACHE_DIR"] = old


def cpu_bf16_trains(cfg: Any) -> bool:
    """Whether this CPU passes the bf16 self-check for a training run of ``cfg`` (the check
    a test that forces ``amp: bf16`` asks first; cached for the session)."""
    from semiseg3d.bf16check import bf16_verdict
    from semiseg3d.training.runtime import training_probe

    return bf16_verdict(training_probe(cfg), True).ok
