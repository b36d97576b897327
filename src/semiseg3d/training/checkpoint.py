"""Checkpoint files of a run folder: written atomically, read with ``weights_only=True``.

A run folder ``DIR`` holds

- ``DIR/checkpoint.pt``: the latest complete training state (:func:`save_checkpoint`),
  removed when the run finishes unless the config says ``keep_checkpoint: true``:
  ``{"format", "iteration", "config", "models", "optimizers", "scaler", "rng",
  "pgl_generator", "loader_generator", "logger"}``, where ``models`` and ``optimizers`` map a
  subnet name (``"resnet"`` = Subnet A, ``"vnet"`` = Subnet B) to its state dict and
  ``iteration`` counts the optimizer steps done;
- ``DIR/model_final.pt``: the final weights, ``{"format", "iteration", "config", "models"}``
  (:func:`save_final`), written last; its existence means the run is done.

Every value is a tensor, a number, a string, a list or a dict, so both files load with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from semiseg3d.errors import InputError
from semiseg3d.io.atomic import atomic_path

__all__ = [
    "CHECKPOINT_NAME",
    "FINAL_NAME",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "RESUME_IGNORED_KEYS",
    "save_checkpoint",
    "load_checkpoint",
    "save_final",
    "load_final",
    "config_differences",
]

CHECKPOINT_NAME = "checkpoint.pt"
FINAL_NAME = "model_final.pt"
CONFIG_NAME = "config.yaml"
FORMAT_VERSION = 1

#: config keys that may change between a run and its resumption: they do not change what
#: the run computes (the data order and crops come from the sampler, not from the workers;
#: whether checkpoint.pt is kept at the end is housekeeping; compile changes only the
#: floating-point order of fused kernels, and the state dicts are the eager modules')
RESUME_IGNORED_KEYS = frozenset({"num_workers", "keep_checkpoint", "compile"})

_CHECKPOINT_KEYS = (
    "format",
    "iteration",
    "config",
    "models",
    "optimizers",
    "scaler",
    "rng",
    "pgl_generator",
    "loader_generator",
    "logger",
)


def _save(path: Path, obj: dict[str, Any]) -> None:
    # through a Python file object: a full disk is then OSError(ENOSPC), which atomic_path
    # reports against ``path`` (torch.save to a file name says only "unexpected pos ...")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def _load(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise InputError(
            f"{path}: cannot read checkpoint ({exc.__class__.__name__}: {exc})"
        ) from exc
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a semiseg3d checkpoint (got {type(obj).__name__})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise InputError(f"{path}: not a semiseg3d checkpoint (missing {missing})")
    if obj["format"] != FORMAT_VERSION:
        raise InputError(f"{path}: checkpoint format {obj['format']}, expected {FORMAT_VERSION}")
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a full training state atomically.

    Args:
        path: usually ``DIR/checkpoint.pt``.
        state: a dict with every key of the module docstring (``format`` is filled in).

    Raises:
        ValueError: when a key is missing (a programming error, not a user error).
    """
    state = {"format": FORMAT_VERSION, **state}
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    _save(Path(path), state)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on CPU).

    Raises:
        InputError: when the file is unreadable or not a semiseg3d checkpoint.
    """
    return _load(Path(path), _CHECKPOINT_KEYS)


def save_final(
    path: str | Path,
    models: dict[str, dict[str, torch.Tensor]],
    config: dict[str, Any],
    iteration: int,
) -> None:
    """Write the final weights of a run atomically.

    Args:
        path: usually ``DIR/model_final.pt``.
        models: subnet name (``"resnet"``, ``"vnet"``) -> state dict.
        config: the run's resolved config (``TrainConfig.to_dict()``).
        iteration: optimizer steps done.
    """
    models = {name: {k: v.detach().cpu() for k, v in sd.items()} for name, sd in models.items()}
    _save(
        Path(path),
        {"format": FORMAT_VERSION, "iteration": int(iteration), "config": config, "models": models},
    )


def load_final(path: str | Path) -> dict[str, Any]:
    """Read final weights written by :func:`save_final` (``weights_only=True``, on CPU).

    Raises:
        InputError: when the file is missing, unreadable or not a semiseg3d model file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: final model not found (has the run finished training?)")
    return _load(p, ("format", "iteration", "config", "models"))


def config_differences(
    old: dict[str, Any], new: dict[str, Any], ignore: frozenset[str] = RESUME_IGNORED_KEYS
) -> list[str]:
    """Keys whose values differ between two config dicts (lists and tuples compare equal).

    Args:
        old: e.g. the config stored in ``DIR/config.yaml`` or in a checkpoint.
        new: the config of the command being run.
        ignore: keys not compared.

    Returns:
        Sorted key names present in either dict with different values.
    """

    def norm(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    keys = (set(old) | set(new)) - set(ignore)
    return sorted(k for k in keys if norm(old.get(k, None)) != norm(new.get(k, None)))
