"""Tiny h5 datasets for the trainer tests: one ellipsoid (label 1) brighter than Gaussian noise
per case, ``<ID>.h5`` files and ``train.list`` / ``test.list``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np


def write_ellipsoids(
    root: Path,
    shape: Sequence[int],
    *,
    centre: Sequence[float] | None = None,
    jitter: int = 3,
    radii: Sequence[float] = (6.0, 5.0, 4.0),
    radius_scale: tuple[float, float] | None = None,
    noise: float = 0.3,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    n_train: int = 6,
    n_test: int = 2,
    seed: int = 0,
) -> Path:
    """Write ``n_train + n_test`` cases ``case00.h5`` ... to ``root`` and the two lists.

    Per case, in this order of draws from ``numpy.random.default_rng(seed)``: the centre
    (``centre``, default the middle of ``shape``, plus an integer offset in [-jitter,
    jitter] per axis), a factor on ``radii`` drawn from ``radius_scale`` (when given), then
    the noise (SD ``noise``) added to the 0/1 label to make the image.

    Args:
        shape: volume shape (x, y, z) in voxels; ``radii`` and ``centre`` in voxels too.
        spacing: the ``spacing`` attribute of each file (mm).

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(np.float32)
    middle = np.array(shape) / 2 if centre is None else np.array(centre)
    ids = []
    for i in range(n_train + n_test):
        at = middle + rng.integers(-jitter, jitter + 1, 3)
        r = np.array(radii) * (1.0 if radius_scale is None else rng.uniform(*radius_scale))
        dist = (((grid - at[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0)
        label = (dist <= 1.0).astype(np.uint8)
        image = (label + rng.normal(0.0, noise, tuple(shape))).astype(np.float32)
        case = f"case{i:02d}"
        with h5py.File(root / f"{case}.h5", "w") as f:
            f["image"] = image
            f["label"] = label
            f.attrs["spacing"] = list(spacing)
        ids.append(case)
    (root / "train.list").write_text("\n".join(ids[:n_train]) + "\n")
    (root / "test.list").write_text("\n".join(ids[n_train:]) + "\n")
    return root
