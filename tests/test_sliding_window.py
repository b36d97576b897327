"""Sliding-window inference (spec 6.1) and largest-connected-component post-processing."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from semiseg3d.data.postprocess import largest_connected_component
from semiseg3d.inference.sliding_window import (
    pad_to_patch,
    predict_label,
    sliding_window_probs,
    sliding_window_probs_loop,
    softmax_ensemble,
    window_grid,
    window_starts,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convolutions run faster on one thread, and the CI machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("size", "patch", "stride", "starts"),
    [
        (10, 4, 3, [0, 3, 6]),  # n = ceil(6/3) + 1 = 3, last start 6 = 10 - 4
        (11, 4, 3, [0, 3, 6, 7]),  # n = ceil(7/3) + 1 = 4, last start clipped to 11 - 4 = 7
        (4, 4, 3, [0]),  # size == patch: one window
        (190, 112, 18, [0, 18, 36, 54, 72, 78]),  # LA x: ceil(78/18) + 1 = 6
        (142, 112, 18, [0, 18, 30]),  # LA y: ceil(30/18) + 1 = 3
        (88, 80, 4, [0, 4, 8]),  # LA z: ceil(8/4) + 1 = 3
    ],
)
def test_window_starts_by_hand(size: int, patch: int, stride: int, starts: list[int]) -> None:
    assert window_starts(size, patch, stride) == starts


@pytest.mark.parametrize(("size", "patch", "stride"), [(3, 4, 1), (10, 0, 1), (10, 4, 0)])
def test_window_starts_rejects_bad_input(size: int, patch: int, stride: int) -> None:
    with pytest.raises(ValueError):
        window_starts(size, patch, stride)


def test_la_volume_has_54_windows() -> None:
    # Spec 6.1 / 10: 190 x 142 x 88 with patch 112 x 112 x 80, stride (18, 18, 4) -> 6 x 3 x 3.
    shape, patch, stride = (190, 142, 88), (112, 112, 80), (18, 18, 4)
    assert len(window_grid(shape, patch, stride)) == 54

    seen: list[int] = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return torch.full((x.shape[0], 2, *x.shape[2:]), 0.5)

    probs = sliding_window_probs(counting, np.zeros(shape, np.float32), patch, stride, batch_size=8)
    assert sum(seen) == 54
    assert seen == [8] * 6 + [6]  # ceil(54 / 8) = 7 forward passes
    assert probs.shape == (2, *shape)
    assert np.all(probs == 0.5)


def test_pad_to_patch_by_hand() -> None:
    image = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2) + 1
    padded, widths = pad_to_patch(image, (4, 4, 5))
    # x: pad 1 -> (0, 1); y: 5 >= 4 -> none; z: pad 3 -> (1, 2)
    assert widths == ((0, 1), (0, 0), (1, 2))
    assert padded.shape == (4, 5, 5)
    np.testing.assert_array_equal(padded[0:3, :, 1:3], image)
    assert padded.sum() == image.sum()  # everything else is zero
    same, none = pad_to_patch(image, (2, 2, 2))
    assert none == ((0, 0), (0, 0), (0, 0)) and same is image


def _pointwise(x: torch.Tensor) -> torch.Tensor:
    """Probabilities that depend on the voxel's own value only: (sigmoid(-v), sigmoid(v))."""
    return torch.cat([torch.sigmoid(-x), torch.sigmoid(x)], dim=1)


@pytest.mark.parametrize(
    ("shape", "patch", "stride"),
    [
        ((21, 17, 13), (8, 8, 8), (5, 4, 3)),  # overlapping windows, uneven tiling
        ((6, 19, 5), (8, 8, 8), (3, 3, 3)),  # x and z smaller than the patch: padding path
        ((3, 4, 2), (8, 8, 8), (4, 4, 4)),  # every axis smaller than the patch
    ],
)
def test_pointwise_function_is_reproduced_exactly(
    shape: tuple[int, int, int], patch: tuple[int, int, int], stride: tuple[int, int, int]
) -> None:
    # Averaging identical per-voxel values gives those values back, so any misplaced window,
    # wrong count or off-by-one crop shows up as a mismatch with the direct computation.
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape).astype(np.float32)
    expected = _pointwise(torch.from_numpy(image)[None, None])[0].numpy()
    for fn in (sliding_window_probs, sliding_window_probs_loop):
        probs = fn(_pointwise, image, patch, stride)
        assert probs.shape == (2, *shape) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, expected, atol=1e-6)


class TinyNet(nn.Module):
    """A small random segmentation net returning (logits, features) like the real ones."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv3d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(features), features


@pytest.fixture(scope="module")
def nets() -> list[nn.Module]:
    return [TinyNet(1).eval(), TinyNet(2).eval()]


def test_softmax_ensemble_is_mean_of_softmaxes(nets: list[nn.Module]) -> None:
    x = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        manual = (torch.softmax(nets[0](x)[0], 1) + torch.softmax(nets[1](x)[0], 1)) / 2
        np.testing.assert_allclose(softmax_ensemble(nets)(x).numpy(), manual.numpy(), atol=1e-6)
        single = softmax_ensemble(nets[:1])(x)
        np.testing.assert_allclose(single.numpy(), torch.softmax(nets[0](x)[0], 1).numpy())
    with pytest.raises(ValueError):
        softmax_ensemble([])


@pytest.mark.parametrize(
    ("shape", "patch", "stride", "batch_size"),
    [
        ((15, 13, 11), (8, 8, 8), (3, 4, 2), 3),  # 4 x 3 x 3 windows, last ones clipped
        ((15, 13, 11), (8, 8, 8), (3, 4, 2), 1),
        ((6, 9, 5), (8, 8, 8), (2, 2, 2), 4),  # padding path
    ],
)
def test_batched_equals_loop(
    nets: list[nn.Module],
    shape: tuple[int, int, int],
    patch: tuple[int, int, int],
    stride: tuple[int, int, int],
    batch_size: int,
) -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape).astype(np.float32)
    fn = softmax_ensemble(nets)
    batched = sliding_window_probs(fn, image, patch, stride, batch_size=batch_size)
    loop = sliding_window_probs_loop(fn, image, patch, stride)
    assert batched.shape == loop.shape == (2, *shape)
    np.testing.assert_allclose(batched, loop, atol=1e-5)
    np.testing.assert_allclose(batched.sum(axis=0), 1.0, atol=1e-5)


def test_corner_voxel_comes_from_the_first_window_alone(nets: list[nn.Module]) -> None:
    # Voxel (0, 0, 0) is covered only by the window starting at (0, 0, 0).
    rng = np.random.default_rng(2)
    image = rng.normal(size=(20, 17, 13)).astype(np.float32)
    fn = softmax_ensemble(nets)
    probs = sliding_window_probs(fn, image, (8, 8, 8), (5, 4, 3), batch_size=4)
    with torch.no_grad():
        direct = fn(torch.from_numpy(image[:8, :8, :8].copy())[None, None])[0, :, 0, 0, 0]
    np.testing.assert_allclose(probs[:, 0, 0, 0], direct.numpy(), atol=1e-6)


def test_autocast_bfloat16_is_close(nets: list[nn.Module]) -> None:
    image = np.random.default_rng(3).normal(size=(12, 10, 9)).astype(np.float32)
    fn = softmax_ensemble(nets)
    full = sliding_window_probs(fn, image, (8, 8, 8), (4, 2, 1))
    half = sliding_window_probs(fn, image, (8, 8, 8), (4, 2, 1), amp_dtype=torch.bfloat16)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, atol=3e-2)


def test_wrong_prob_fn_shape_is_an_error() -> None:
    def three_classes(x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3, *x.shape[2:]), 1 / 3)

    with pytest.raises(ValueError, match="expected"):
        sliding_window_probs(three_classes, np.zeros((8, 8, 8)), (8, 8, 8), (4, 4, 4))
    out = sliding_window_probs(
        three_classes, np.zeros((8, 8, 8)), (8, 8, 8), (4, 4, 4), n_classes=3
    )
    assert out.shape == (3, 8, 8, 8)


@pytest.mark.parametrize("fn", [sliding_window_probs, sliding_window_probs_loop])
def test_stride_longer_than_the_patch_is_an_error(fn) -> None:
    # patch 4 with stride 5 on a 9-voxel axis: windows at 0 and 5 leave voxel 4 uncovered,
    # whose probability would be 0 / 0
    def half(x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2, *x.shape[2:]), 0.5)

    with pytest.raises(ValueError, match="axis 0"):
        fn(half, np.zeros((9, 4, 4)), (4, 4, 4), (5, 4, 4))
    # stride equal to the patch tiles the axis exactly: every voxel covered once
    out = fn(half, np.zeros((8, 4, 4)), (4, 4, 4), (4, 4, 4))
    assert np.isfinite(out).all() and np.allclose(out, 0.5)


def test_predict_label() -> None:
    probs = np.array([[[[0.2, 0.8]]], [[[0.8, 0.2]]]], dtype=np.float32)  # (2, 1, 1, 2)
    label = predict_label(probs)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, [[[1, 0]]])


def _two_blobs() -> np.ndarray:
    """Two 2^3 cubes touching only at a corner (16 voxels) and a separate 10-voxel bar."""
    mask = np.zeros((8, 10, 8), dtype=np.uint8)
    mask[0:2, 0:2, 0:2] = 1
    mask[2:4, 2:4, 2:4] = 1  # corner (1, 1, 1) touches corner (2, 2, 2)
    mask[6, 0:10, 6] = 1
    return mask


def test_lcc_26_connectivity_joins_corner_neighbours() -> None:
    mask = _two_blobs()
    out = largest_connected_component(mask)  # default 26: the cubes form one 16-voxel blob
    expected = mask.copy()
    expected[6, :, 6] = 0
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == mask.dtype


@pytest.mark.parametrize("connectivity", [6, 18])
def test_lcc_face_connectivity_keeps_the_bar(connectivity: int) -> None:
    # Corner contact does not connect under 6 or 18: cubes of 8 each lose to the bar of 10.
    out = largest_connected_component(_two_blobs(), connectivity=connectivity)
    expected = np.zeros_like(out)
    expected[6, :, 6] = 1
    np.testing.assert_array_equal(out, expected)


def test_lcc_edge_cases() -> None:
    empty = np.zeros((4, 4, 4), dtype=np.uint8)
    assert not largest_connected_component(empty).any()
    tie = np.zeros((5, 1, 1), dtype=np.uint8)
    tie[0], tie[4] = 1, 1  # two single voxels: the first in raster order wins
    np.testing.assert_array_equal(largest_connected_component(tie)[:, 0, 0], [1, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        largest_connected_component(empty, connectivity=8)
    assert math.isclose(largest_connected_component(_two_blobs()).sum(), 16)
