"""Torch dataset over a preprocessed dataset folder, and its DataLoader.

An access reads the case's h5 file, validates it
(:func:`~semiseg3d.data.volumes.load_volume`), optionally downsamples it, and - for a
training item - cuts a random patch with a generator seeded by the item's crop seed. The
output of an access is therefore a pure function of ``(case, crop_seed)``; with the
stateless :class:`~semiseg3d.data.sampler.TwoStreamBatchSampler` this makes a resumed run
see exactly the batches of an uninterrupted one.

With ``cache=True`` the validated, downsampled volumes stay in memory after their first
read (the released code re-reads the h5 file at every access, spec 4.2; the patches are
the same either way). Reading and downsampling one LA volume takes about 0.09 s on a
CPU core, i.e. about 0.36 s per 4-patch iteration without the cache.
:func:`cache_fits` decides the ``auto`` setting from the arrays' sizes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from semiseg3d.data.transforms import random_crop, random_rot_flip
from semiseg3d.data.volumes import (
    Volume,
    case_path,
    check_min_shape,
    downsample_volume,
    load_volume,
    volume_header,
)
from semiseg3d.errors import InputError

__all__ = ["VolumeDataset", "make_loader", "seed_worker", "cache_fits", "CACHE_LIMIT_BYTES"]

#: ``cache_volumes: auto`` keeps the volumes in memory when they need at most this much
CACHE_LIMIT_BYTES = 4 * 2**30

#: label value returned for a case that has no label (only with ``with_label=False``)
NO_LABEL = -1


class VolumeDataset(Dataset):
    """Cases of one dataset folder, as random patches (training) or whole volumes.

    Args:
        root: dataset folder (``<root>/<ID>.h5`` or ``<root>/<ID>/mri_norm2.h5``).
        case_ids: ids in dataset-index order (e.g. the training list: labeled first).
        patch: training patch (PX, PY, PZ) in voxels (after downsampling).
        downsample: integer factor applied on load (:func:`downsample_volume`); 1 = none.
        min_shape: smallest accepted volume shape (X, Y, Z) after downsampling, or None.
        with_label: True: every case must have a label. False: a missing label is allowed
            and returned filled with ``NO_LABEL`` (-1); a present one is still returned.
        labeled_indices: with ``with_label=False``, the dataset indices that must still have
            a label (the labeled stream), e.g. ``range(n_labeled)``.
        augment: ``none`` (random crop only, the paper's) or ``rotflip``
            (:func:`~semiseg3d.data.transforms.random_rot_flip` before the crop, from the
            same generator; the baselines' ``own`` recipes).

    Items:
        ``ds[(index, crop_seed)]`` -> ``{"image": float32 (1, PX, PY, PZ), "label": int64
        (PX, PY, PZ), "case": id}``, a random patch drawn with
        ``numpy.random.default_rng(crop_seed)``.
        ``ds[index]`` -> the same keys for the whole (downsampled) volume, (1, X, Y, Z) and
        (X, Y, Z), without cropping (evaluation).

    Raises:
        InputError: at construction if a case file is missing; at access if it is invalid.
    """

    def __init__(
        self,
        root: str | Path,
        case_ids: Sequence[str],
        patch: Sequence[int],
        *,
        downsample: int = 1,
        min_shape: Sequence[int] | None = None,
        with_label: bool = True,
        labeled_indices: Iterable[int] | None = None,
        cache: bool = False,
        augment: str = "none",
    ) -> None:
        patch = tuple(int(p) for p in patch)
        if len(patch) != 3 or any(p < 1 for p in patch):
            raise ValueError(f"patch must be 3 positive sizes (x, y, z), got {list(patch)}")
        if isinstance(downsample, bool) or int(downsample) != downsample or downsample < 1:
            raise ValueError(f"downsample must be an integer >= 1, got {downsample!r}")
        self.root = Path(root)
        self.case_ids = list(case_ids)
        self.paths = [case_path(self.root, c) for c in self.case_ids]
        self.patch = patch
        self.downsample = int(downsample)
        self.min_shape = tuple(min_shape) if min_shape is not None else None
        self.with_label = bool(with_label)
        self.labeled_indices = frozenset(int(i) for i in labeled_indices or ())
        self.cache = bool(cache)
        if augment not in ("none", "rotflip"):
            raise ValueError(f"augment must be none or rotflip, got {augment!r}")
        self.augment = augment
        self._volumes: dict[int, Volume] = {}

    def __len__(self) -> int:
        return len(self.case_ids)

    def volume(self, index: int) -> Volume:
        """Read, validate and downsample case ``index`` (numpy arrays, spacing kept).

        With ``cache`` the result is kept and returned again on the next access (treat
        its arrays as read-only).
        """
        cached = self._volumes.get(index)
        if cached is not None:
            return cached
        vol = self._read(index)
        if self.cache:
            self._volumes[index] = vol
        return vol

    def preload(self) -> None:
        """Read every case into the cache now (before DataLoader workers fork, so they
        share it); a bad case raises here, before training starts. No-op without cache."""
        if self.cache:
            for index in range(len(self)):
                self.volume(index)

    def check_all(self) -> None:
        """Read and validate every case now, so that a bad file (NaN intensities, label
        values outside {0, 1}, ...) stops a run before it starts. With ``cache`` this is
        :meth:`preload`; without it each case is read, checked and dropped (one extra read
        of the data, against an error found hours into training)."""
        if self.cache:
            self.preload()
            return
        for index in range(len(self)):
            self._read(index)

    def _read(self, index: int) -> Volume:
        path = self.paths[index]
        need_label = self.with_label or index in self.labeled_indices
        vol = downsample_volume(load_volume(path, require_label=need_label), self.downsample)
        where = str(path) if self.downsample == 1 else f"{path} (downsampled by {self.downsample})"
        check_min_shape(vol.shape, self.min_shape, where)
        return vol

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple | list):
            index, crop_seed = (int(k) for k in key)
            vol = self.volume(index)
            rng = np.random.default_rng(crop_seed)
            image, label = vol.image, vol.label
            if self.augment == "rotflip":
                image, label = random_rot_flip(image, label, rng)
            image, label = random_crop(image, label, self.patch, rng)
        else:
            vol = self.volume(int(key))
            image, label = vol.image, vol.label
        image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        if label is None:
            label_t = torch.full(image.shape, NO_LABEL, dtype=torch.int64)
        else:
            label_t = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
        return {"image": image_t, "label": label_t, "case": vol.case_id}


def cache_fits(paths: Sequence[Path], downsample: int, limit: int = CACHE_LIMIT_BYTES) -> bool:
    """True when the image and label arrays of ``paths``, downsampled, need <= ``limit`` bytes.

    Reads only the h5 headers (:func:`~semiseg3d.data.volumes.volume_header`). Image is
    counted as float32, label as one byte per voxel, divided by ``downsample**3``.
    """
    total = 0
    for path in paths:
        try:
            shape, _ = volume_header(path)
        except InputError:
            return False  # let the real read report the problem
        total += int(np.prod(shape)) * 5 // max(1, downsample) ** 3
        if total > limit:
            return False
    return True


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    Torch gives each worker the seed ``base_seed + worker_id``, where ``base_seed`` comes
    from the loader's generator; crops do not depend on it (they use the crop seed), but any
    other randomness in a worker is then seeded and distinct per worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    sampler_iterable: Iterable[list[Any]],
    num_workers: int,
    *,
    seed: int = 0,
) -> DataLoader:
    """DataLoader over ``dataset`` with ``batch_sampler=sampler_iterable``.

    ``pin_memory`` is on when CUDA is available. The loader has its own
    :class:`torch.Generator` seeded by ``seed``, so creating an iterator does not draw from
    torch's global generator (which would break exact resume), and workers are seeded by
    :func:`seed_worker`.

    Args:
        dataset: e.g. a :class:`VolumeDataset`.
        sampler_iterable: the batches, e.g. ``TwoStreamBatchSampler.with_iterations(n, t)``
            (needs ``__iter__``; ``__len__`` gives the loader a length).
        num_workers: worker processes (0 = load in the main process).
        seed: seed of the loader's generator (worker base seeds).

    Returns:
        The DataLoader; batches are dicts of stacked tensors plus a list of case ids.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_sampler=sampler_iterable,  # type: ignore[arg-type]
        num_workers=int(num_workers),
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=False,
    )
