"""Seeds and random-number-generator states for reproducible, resumable training.

Every random source of a run is seeded here from the run's one ``seed``:

- Python's ``random``, NumPy's global generator, torch's CPU and CUDA generators
  (:func:`seed_everything`); cuDNN is put in deterministic mode (spec 4.4).
- a dedicated ``torch.Generator`` for the PGL candidate sampling and one for the
  DataLoader (:func:`make_generator`), so that creating a DataLoader iterator does not
  consume the global torch generator;
- NumPy inside each DataLoader worker is seeded from the loader's base seed and the worker
  id by :func:`semiseg3d.data.dataset.seed_worker` (the loader's base seed comes from the
  dedicated loader generator).

:func:`capture_rng_state` / :func:`restore_rng_state` turn the global states into plain
tensors, lists and numbers, so a checkpoint holding them loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "make_generator",
    "derive_seed",
    "capture_rng_state",
    "restore_rng_state",
]

#: offsets that give each dedicated generator its own stream of the run seed
_STREAMS = {"model": 0, "pgl": 1, "loader": 2, "perturbation": 3}


def derive_seed(seed: int, stream: str, *extra: int) -> int:
    """A 63-bit seed for one named random stream of a run.

    Args:
        seed: the run seed (``cfg.seed``).
        stream: one of ``"model"``, ``"pgl"``, ``"loader"``, ``"perturbation"``.
        *extra: further integers mixed in (e.g. a worker id).

    Returns:
        A non-negative integer below 2**63, the same for the same arguments on every
        machine (NumPy's SeedSequence hashing, not Python's salted ``hash``).
    """
    entropy = [int(seed) & 0xFFFFFFFF, _STREAMS[stream], *(int(e) & 0xFFFFFFFF for e in extra)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy, torch (CPU and every CUDA device) with ``seed``.

    Args:
        seed: the run seed.
        deterministic: set ``cudnn.deterministic = True`` and ``cudnn.benchmark = False``
            (spec 4.4; the authors' setting).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def make_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A dedicated ``torch.Generator`` on ``device`` seeded for ``stream`` of run ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, stream))
    return gen


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states as ``weights_only``-safe values.

    Returns:
        ``{"python": [version, [625 ints], gauss_next], "numpy": {...}, "torch": uint8
        tensor, "cuda": [uint8 tensor per device]}``.
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [int(version), [int(v) for v in internal], gauss],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available()
        else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states captured by :func:`capture_rng_state`.

    CUDA states are restored only when CUDA is available with the same device count.
    """
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
