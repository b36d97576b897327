"""Crops and perturbations of (x, y, z) volumes (spec 4.3).

All randomness comes from an explicit generator argument, never from global state, so a
crop is a pure function of the volume and its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import torch

__all__ = [
    "crop_padding",
    "pad_for_crop",
    "random_crop",
    "center_crop",
    "random_rot_flip",
    "gaussian_perturbation",
]


def _check_patch(patch: Sequence[int], ndim: int) -> tuple[int, ...]:
    patch = tuple(int(p) for p in patch)
    if len(patch) != ndim or any(p < 1 for p in patch):
        raise ValueError(f"patch must be {ndim} positive sizes, got {list(patch)}")
    return patch


def crop_padding(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Zero padding per side and axis before a crop (the UA-MT RandomCrop rule).

    If any axis is <= its patch size (note "<="), every axis is padded on both sides by
    ``max((patch - size) // 2 + 3, 0)`` (floor division, so an axis well above its patch
    gets 0); otherwise nothing is padded. After padding every axis is > its patch size.

    Args:
        shape: volume shape (X, Y, Z).
        patch: patch shape (X, Y, Z).

    Returns:
        Pad width per axis (the same on both sides), in voxels.
    """
    patch = _check_patch(patch, len(shape))
    if all(s > p for s, p in zip(shape, patch, strict=True)):
        return tuple(0 for _ in shape)
    return tuple(max((p - s) // 2 + 3, 0) for s, p in zip(shape, patch, strict=True))


def pad_for_crop(
    image: np.ndarray, label: np.ndarray | None, patch: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply :func:`crop_padding` with zeros to the image and (if given) the label."""
    pads = crop_padding(image.shape, patch)
    if not any(pads):
        return image, label
    widths = [(w, w) for w in pads]
    image = np.pad(image, widths, mode="constant", constant_values=0)
    if label is not None:
        label = np.pad(label, widths, mode="constant", constant_values=0)
    return image, label


def _crop(
    image: np.ndarray, label: np.ndarray | None, start: Sequence[int], patch: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    window = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
    return image[window], (label[window] if label is not None else None)


def _check_pair(image: np.ndarray, label: np.ndarray | None) -> None:
    if label is not None and label.shape != image.shape:
        raise ValueError(f"image shape {image.shape} and label shape {label.shape} differ")


def random_crop(
    image: np.ndarray,
    label: np.ndarray | None,
    patch: Sequence[int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random patch of an image and its label, cut at the same place (spec 4.3).

    The pair is first zero-padded by :func:`crop_padding`; then each offset is drawn
    uniformly from ``[0, size - patch)`` (exclusive upper bound, as numpy's ``randint`` in
    the reference code), one ``rng.integers`` call per axis in axis order.

    Args:
        image: (X, Y, Z) array.
        label: (X, Y, Z) array or None.
        patch: patch shape (PX, PY, PZ).
        rng: the generator that draws the offsets.

    Returns:
        (image patch, label patch or None), each of shape ``patch``; views into the (padded)
        inputs.
    """
    _check_pair(image, label)
    patch = _check_patch(patch, image.ndim)
    image, label = pad_for_crop(image, label, patch)
    # After padding every axis is > its patch, so each upper bound is >= 1.
    start = [int(rng.integers(0, s - p)) for s, p in zip(image.shape, patch, strict=True)]
    return _crop(image, label, start, patch)


def center_crop(
    image: np.ndarray, label: np.ndarray | None, patch: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Central patch of an image and its label, with the padding rule of :func:`random_crop`.

    The offset per axis is ``(size - patch) // 2`` after padding.

    Args:
        image: (X, Y, Z) array.
        label: (X, Y, Z) array or None.
        patch: patch shape (PX, PY, PZ).

    Returns:
        (image patch, label patch or None), each of shape ``patch``.
    """
    _check_pair(image, label)
    patch = _check_patch(patch, image.ndim)
    image, label = pad_for_crop(image, label, patch)
    start = [(s - p) // 2 for s, p in zip(image.shape, patch, strict=True)]
    return _crop(image, label, start, patch)


def random_rot_flip(
    image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Optional augmentation (SSL4MIS RandomRotFlip): rotate by k x 90 degrees in the plane of
    axes 0 and 1 (k uniform in 0..3), then flip axis 0 or 1 (uniform). Off in the paper.

    Args:
        image: (X, Y, Z) array.
        label: (X, Y, Z) array or None.
        rng: the generator (two draws: k, then the flip axis).

    Returns:
        (image, label or None), contiguous copies; X and Y swap when k is odd.
    """
    _check_pair(image, label)
    k = int(rng.integers(0, 4))
    axis = int(rng.integers(0, 2))
    image = np.ascontiguousarray(np.flip(np.rot90(image, k, axes=(0, 1)), axis=axis))
    if label is not None:
        label = np.ascontiguousarray(np.flip(np.rot90(label, k, axes=(0, 1)), axis=axis))
    return image, label


@overload
def gaussian_perturbation(
    x: np.ndarray, std: float, clip: float, rng: np.random.Generator
) -> np.ndarray: ...


@overload
def gaussian_perturbation(
    x: torch.Tensor, std: float, clip: float, rng: torch.Generator | None
) -> torch.Tensor: ...


def gaussian_perturbation(x, std, clip, rng):  # type: ignore[no-untyped-def]
    """Add clipped Gaussian noise (UA-MT style): ``x + clamp(N(0, std^2), -clip, clip)``.

    Used as the optional per-net input perturbation (spec 4.3: std 0.1, clip 0.2). Works on
    numpy arrays (with a ``numpy.random.Generator``) and on torch tensors of any device
    (with a ``torch.Generator`` or None for torch's global generator; the noise is drawn on
    the generator's device and moved to ``x``'s).

    Args:
        x: array or tensor of any shape, floating point.
        std: noise standard deviation (same units as ``x``), >= 0.
        clip: noise is clipped to [-clip, clip], >= 0.
        rng: generator for the noise.

    Returns:
        A new array/tensor of ``x``'s shape and dtype.
    """
    if std < 0 or clip < 0:
        raise ValueError(f"std and clip must be >= 0, got std={std}, clip={clip}")
    if isinstance(x, torch.Tensor):
        device = rng.device if rng is not None else x.device
        noise = torch.randn(x.shape, generator=rng, device=device, dtype=torch.float32)
        noise = (noise * std).clamp_(-clip, clip).to(device=x.device, dtype=x.dtype)
        return x + noise
    x = np.asarray(x)
    noise = np.clip(rng.standard_normal(x.shape) * std, -clip, clip)
    return (x + noise).astype(x.dtype, copy=False)
