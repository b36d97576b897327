"""Sliding-window inference over a whole volume (spec section 6.1).

A volume is cut into overlapping patch-sized windows; every window goes through a
probability function (usually the mean softmax of both subnets,
:func:`~semiseg3d.models.probs.softmax_ensemble`);
the probabilities of overlapping windows are averaged voxel by voxel (score / count).

Window layout per axis ``i`` (as in the authors' ``test_util.py``):

* an axis smaller than the patch is first zero-padded symmetrically to exactly the patch
  size (left = floor(pad / 2)), and the result is cropped back at the end;
* ``n_i = ceil((size_i - patch_i) / stride_i) + 1`` windows start at
  ``s_i(j) = min(stride_i * j, size_i - patch_i)``, so the last window ends at the border.

:func:`sliding_window_probs` evaluates the windows in batches on ``device``;
:func:`sliding_window_probs_loop` is the plain one-window-at-a-time reference, accumulated in
NumPy, that the batched version must match.

All arrays are in (x, y, z) order; ``patch`` and ``stride`` are (x, y, z) in voxels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from semiseg3d.models.probs import ProbFn, softmax_ensemble

__all__ = [
    "ProbFn",
    "window_starts",
    "window_grid",
    "pad_to_patch",
    "softmax_ensemble",
    "sliding_window_probs",
    "sliding_window_probs_loop",
    "predict_label",
]


def _triple(value: Sequence[int], name: str) -> tuple[int, int, int]:
    """Check that ``value`` is three positive ints and return it as a tuple."""
    out = tuple(int(v) for v in value)
    if len(out) != 3 or any(v < 1 for v in out):
        raise ValueError(f"{name} must be three positive integers, got {tuple(value)}")
    return out  # type: ignore[return-value]


def _check_covered(patch: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
    """Refuse a stride longer than the patch: the voxels between windows would be covered
    by none, and their probability would be 0 / 0."""
    for axis, (p, s) in enumerate(zip(patch, stride, strict=True)):
        if s > p:
            raise ValueError(
                f"stride {stride} exceeds the patch {patch} on axis {axis}: "
                "the voxels between windows would get no prediction"
            )


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start indices of the windows along one axis.

    Args:
        size: axis length in voxels, ``size >= patch`` (pad first with :func:`pad_to_patch`).
        patch: window length in voxels (>= 1).
        stride: step between window starts in voxels (>= 1).

    Returns:
        ``[s(0), ..., s(n-1)]`` with ``n = ceil((size - patch) / stride) + 1`` and
        ``s(j) = min(stride * j, size - patch)``.

    Raises:
        ValueError: for a non-positive patch or stride, or ``size < patch``.
    """
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be >= 1, got patch={patch}, stride={stride}")
    if size < patch:
        raise ValueError(f"axis of size {size} is smaller than the patch {patch}; pad it first")
    n = math.ceil((size - patch) / stride) + 1
    return [min(stride * j, size - patch) for j in range(n)]


def window_grid(
    shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]
) -> list[tuple[int, int, int]]:
    """All window start corners of a (padded) volume, x slowest, z fastest.

    Args:
        shape: (X, Y, Z) volume shape, every axis >= the patch.
        patch: (px, py, pz) window size in voxels.
        stride: (sx, sy, sz) step in voxels.

    Returns:
        List of (x0, y0, z0) corners; its length is the product of the per-axis counts.
    """
    patch3 = _triple(patch, "patch")
    stride3 = _triple(stride, "stride")
    if len(shape) != 3:
        raise ValueError(f"expected a 3-D shape (X, Y, Z), got {tuple(shape)}")
    axes = [window_starts(int(n), p, s) for n, p, s in zip(shape, patch3, stride3, strict=True)]
    return list(itertools.product(*axes))


def pad_to_patch(
    image: np.ndarray, patch: Sequence[int]
) -> tuple[np.ndarray, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """Zero-pad every axis that is smaller than the patch, symmetrically, to the patch size.

    Args:
        image: (X, Y, Z) volume.
        patch: (px, py, pz) in voxels.

    Returns:
        ``(padded, pad_widths)``: ``padded`` has axis ``i`` of length ``max(size_i, patch_i)``;
        ``pad_widths[i] = (left, right)`` with ``left = floor(pad_i / 2)``,
        ``right = pad_i - left`` and ``pad_i = max(patch_i - size_i, 0)``. When nothing is
        padded the input array itself is returned.
    """
    patch3 = _triple(patch, "patch")
    if image.ndim != 3:
        raise ValueError(f"expected a 3-D volume (X, Y, Z), got shape {image.shape}")
    widths = []
    for size, p in zip(image.shape, patch3, strict=True):
        pad = max(p - size, 0)
        widths.append((pad // 2, pad - pad // 2))
    pad_widths = (widths[0], widths[1], widths[2])
    if not any(left or right for left, right in pad_widths):
        return image, pad_widths
    return np.pad(image, pad_widths, mode="constant", constant_values=0), pad_widths


def _crop(array: np.ndarray, pad_widths: Sequence[tuple[int, int]]) -> np.ndarray:
    """Undo :func:`pad_to_patch` on the last three axes of ``array``."""
    index = [slice(None)] * (array.ndim - 3)
    for (left, right), n in zip(pad_widths, array.shape[-3:], strict=True):
        index.append(slice(left, n - right))
    return array[tuple(index)]


def _batches(items: list[tuple[int, int, int]], size: int) -> Iterator[list[tuple[int, int, int]]]:
    """Consecutive chunks of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sliding_window_probs(
    prob_fn: ProbFn,
    image: np.ndarray,
    patch: Sequence[int],
    stride: Sequence[int],
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    n_classes: int = 2,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Class probabilities of a whole volume by overlapping windows evaluated in batches.

    Windows are copied ``batch_size`` at a time into one preallocated (b, 1, px, py, pz)
    tensor on ``device`` and evaluated under :func:`torch.inference_mode` (and
    :func:`torch.autocast` with ``amp_dtype`` when given). The probabilities are summed
    into a (C, X, Y, Z) float32 score map on ``device``, a count map records how many
    windows cover each voxel, and the result is score / count, cropped back to the input.
    Every window has the same weight (constant weighting, as the authors' ``test_util.py``;
    no Gaussian importance map), so the result is the plain mean of the overlapping
    windows' probabilities.

    Args:
        prob_fn: (b, 1, px, py, pz) -> (b, C, px, py, pz) probabilities, e.g.
            :func:`softmax_ensemble`.
        image: (X, Y, Z) intensities (any real dtype; converted to float32).
        patch: (px, py, pz) window size in voxels.
        stride: (sx, sy, sz) step between windows in voxels.
        batch_size: windows per forward pass (>= 1).
        device: where the windows and the accumulators live.
        n_classes: C, the number of probability channels ``prob_fn`` returns.
        amp_dtype: autocast dtype (``torch.bfloat16`` or ``torch.float16``) or None for
            full precision. Accumulation is always float32.
        channels_last: feed the windows in ``torch.channels_last_3d`` (use it when the
            models are in that format).

    Returns:
        (C, X, Y, Z) float32 probabilities, same spatial shape as ``image``.

    Raises:
        ValueError: bad shapes or parameters (a stride longer than the patch on any axis
            included), or ``prob_fn`` output of the wrong shape.
    """
    patch3 = _triple(patch, "patch")
    stride3 = _triple(stride, "stride")
    _check_covered(patch3, stride3)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    padded, pad_widths = pad_to_patch(np.asarray(image), patch3)
    device = torch.device(device)
    corners = window_grid(padded.shape, patch3, stride3)
    px, py, pz = patch3
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    with torch.inference_mode():
        volume = torch.as_tensor(np.ascontiguousarray(padded, dtype=np.float32), device=device)
        # accumulators and the window batch are allocated once per volume
        score = torch.zeros((n_classes, *padded.shape), dtype=torch.float32, device=device)
        count = torch.zeros(padded.shape, dtype=torch.float32, device=device)
        buffer = torch.empty(
            (min(batch_size, len(corners)), 1, px, py, pz), dtype=torch.float32, device=device
        )
        for chunk in _batches(corners, batch_size):
            for i, (a, b, c) in enumerate(chunk):
                buffer[i, 0].copy_(volume[a : a + px, b : b + py, c : c + pz])
            x = buffer[: len(chunk)].contiguous(memory_format=memory_format)
            if amp_dtype is not None:
                with torch.autocast(device_type=device.type, dtype=amp_dtype):
                    probs = prob_fn(x)
            else:
                probs = prob_fn(x)
            expected = (len(chunk), n_classes, px, py, pz)
            if tuple(probs.shape) != expected:
                raise ValueError(
                    f"prob_fn returned shape {tuple(probs.shape)}, expected {expected}"
                )
            probs = probs.float()
            for i, (a, b, c) in enumerate(chunk):
                score[:, a : a + px, b : b + py, c : c + pz] += probs[i]
                count[a : a + px, b : b + py, c : c + pz] += 1.0
        result = (score / count).cpu().numpy()
    return np.ascontiguousarray(_crop(result, pad_widths), dtype=np.float32)


def sliding_window_probs_loop(
    prob_fn: ProbFn,
    image: np.ndarray,
    patch: Sequence[int],
    stride: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    n_classes: int = 2,
) -> np.ndarray:
    """Reference implementation: one window at a time, accumulated in NumPy (float64).

    Same arguments and result as :func:`sliding_window_probs` (without batching or
    autocast); slow but simple, it mirrors the nested loops of the authors' code.

    Returns:
        (C, X, Y, Z) float32 probabilities.
    """
    patch3 = _triple(patch, "patch")
    stride3 = _triple(stride, "stride")
    _check_covered(patch3, stride3)
    padded, pad_widths = pad_to_patch(np.asarray(image, dtype=np.float32), patch3)
    px, py, pz = patch3
    score = np.zeros((n_classes, *padded.shape), dtype=np.float64)
    count = np.zeros(padded.shape, dtype=np.float64)
    xs, ys, zs = (
        window_starts(n, p, s) for n, p, s in zip(padded.shape, patch3, stride3, strict=True)
    )
    with torch.inference_mode():
        for a in xs:
            for b in ys:
                for c in zs:
                    window = np.ascontiguousarray(padded[a : a + px, b : b + py, c : c + pz])
                    x = torch.from_numpy(window)[None, None].to(device)
                    probs = prob_fn(x)[0].float().cpu().numpy()
                    score[:, a : a + px, b : b + py, c : c + pz] += probs
                    count[a : a + px, b : b + py, c : c + pz] += 1.0
    return np.ascontiguousarray(_crop(score / count, pad_widths), dtype=np.float32)


def predict_label(probs: np.ndarray) -> np.ndarray:
    """Label map from class probabilities: argmax over the class axis.

    Args:
        probs: (C, X, Y, Z) probabilities.

    Returns:
        (X, Y, Z) uint8 labels (ties go to the lower class index).
    """
    if probs.ndim != 4:
        raise ValueError(f"expected probabilities (C, X, Y, Z), got shape {probs.shape}")
    return np.argmax(probs, axis=0).astype(np.uint8)
