"""Crops (spec 4.3 padding rule, bounds, alignment) and perturbations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semiseg3d.data.transforms import (
    center_crop,
    crop_padding,
    gaussian_perturbation,
    random_crop,
    random_rot_flip,
)


def coded(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """image = 10000 x + 100 y + z + 1 (never 0, so zero padding is recognisable);
    label = f(image) = 1 where (x + y + z) is odd."""
    x, y, z = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    return (10000 * x + 100 * y + z + 1).astype(np.float32), ((x + y + z) % 2).astype(np.uint8)


def decode(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = image.astype(np.int64) - 1
    return v // 10000, (v // 100) % 100, v % 100


def check_aligned(image: np.ndarray, label: np.ndarray) -> None:
    """Label equals f(image) voxel by voxel; padded voxels are 0 in both."""
    pad = image == 0
    assert np.all(label[pad] == 0)
    x, y, z = decode(image[~pad])
    np.testing.assert_array_equal(label[~pad], (x + y + z) % 2)


@pytest.mark.parametrize(
    ("shape", "patch", "expected"),
    [
        # z = 6 <= 8 triggers padding of EVERY axis:
        # x: (8 - 10) // 2 + 3 = -1 + 3 = 2; y: (8 - 20) // 2 + 3 = -6 + 3 = -3 -> 0; z: 1 + 3 = 4
        ((10, 20, 6), (8, 8, 8), (2, 0, 4)),
        # x == patch ("<=") triggers padding: x: 0 + 3; y, z: (8 - 9) // 2 + 3 = -1 + 3 = 2
        ((8, 9, 9), (8, 8, 8), (3, 2, 2)),
        # every axis > patch: no padding, even for y where (8 - 9) // 2 + 3 would be 2
        ((9, 9, 9), (8, 8, 8), (0, 0, 0)),
        # LA: every volume >= 148x132x88 > 112x112x80
        ((148, 132, 88), (112, 112, 80), (0, 0, 0)),
    ],
)
def test_crop_padding_rule(shape, patch, expected) -> None:
    assert crop_padding(shape, patch) == expected


def test_random_crop_pads_then_crops_aligned() -> None:
    image, label = coded((10, 20, 6))
    # pads (2, 0, 4) worked out above -> padded shape (14, 20, 14)
    padded = np.pad(image, ((2, 2), (0, 0), (4, 4)))
    padded_label = np.pad(label, ((2, 2), (0, 0), (4, 4)))
    for seed in range(20):
        img, lab = random_crop(image, label, (8, 8, 8), np.random.default_rng(seed))
        assert img.shape == (8, 8, 8) and lab.shape == (8, 8, 8)
        assert img.dtype == np.float32 and lab.dtype == np.uint8
        check_aligned(img, lab)
        g = np.random.default_rng(seed)
        ox, oy, oz = int(g.integers(0, 6)), int(g.integers(0, 12)), int(g.integers(0, 6))
        np.testing.assert_array_equal(img, padded[ox : ox + 8, oy : oy + 8, oz : oz + 8])
        np.testing.assert_array_equal(lab, padded_label[ox : ox + 8, oy : oy + 8, oz : oz + 8])


@pytest.mark.parametrize(
    ("shape", "patch", "ranges"),
    [
        ((10, 12, 9), (8, 8, 8), ({0, 1}, {0, 1, 2, 3}, {0})),  # no padding, size - patch = 2, 4, 1
        ((8, 8, 8), (8, 8, 8), (set(range(6)),) * 3),  # size == patch: padded to 14, [0, 6)
    ],
)
def test_random_crop_offsets_cover_exactly_the_half_open_range(shape, patch, ranges) -> None:
    image, label = coded(shape)
    pads = crop_padding(shape, patch)
    observed: list[set[int]] = [set(), set(), set()]
    for seed in range(300):
        img, lab = random_crop(image, label, patch, np.random.default_rng(seed))
        check_aligned(img, lab)
        # recover the offset from the first non-padding voxel of the crop
        nz = np.argwhere(img != 0)[0]
        coords = decode(img[tuple(nz)])
        for axis in range(3):
            observed[axis].add(int(coords[axis]) + pads[axis] - int(nz[axis]))
    assert [set(o) for o in observed] == [set(r) for r in ranges]


def test_random_crop_draws_offsets_in_axis_order() -> None:
    image, label = coded((13, 17, 11))
    img, lab = random_crop(image, label, (8, 8, 8), np.random.default_rng(99))
    g = np.random.default_rng(99)
    ox, oy, oz = int(g.integers(0, 5)), int(g.integers(0, 9)), int(g.integers(0, 3))
    np.testing.assert_array_equal(img, image[ox : ox + 8, oy : oy + 8, oz : oz + 8])
    np.testing.assert_array_equal(lab, label[ox : ox + 8, oy : oy + 8, oz : oz + 8])


def test_random_crop_without_label() -> None:
    image, _ = coded((10, 10, 10))
    img, lab = random_crop(image, None, (8, 8, 8), np.random.default_rng(0))
    assert img.shape == (8, 8, 8) and lab is None


def test_center_crop() -> None:
    image, label = coded((10, 12, 9))
    img, lab = center_crop(image, label, (8, 8, 8))
    # offsets (10 - 8) // 2 = 1, (12 - 8) // 2 = 2, (9 - 8) // 2 = 0
    assert img[0, 0, 0] == 10000 * 1 + 100 * 2 + 0 + 1
    check_aligned(img, lab)
    img, lab = center_crop(*coded((8, 8, 8)), (8, 8, 8))
    # padded by 3 to 14: offset (14 - 8) // 2 = 3, i.e. exactly the original volume
    np.testing.assert_array_equal(img, coded((8, 8, 8))[0])


def test_random_rot_flip_keeps_alignment() -> None:
    image, label = coded((6, 4, 3))
    shapes = set()
    for seed in range(20):
        img, lab = random_rot_flip(image, label, np.random.default_rng(seed))
        shapes.add(img.shape)
        check_aligned(img, lab)
        assert sorted(img.ravel().tolist()) == sorted(image.ravel().tolist())
    assert shapes == {(6, 4, 3), (4, 6, 3)}


def test_gaussian_perturbation_numpy() -> None:
    x = np.zeros(200_000, np.float32)
    out = gaussian_perturbation(x, 0.1, 0.2, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.abs(out).max() <= 0.2 + 1e-7
    # P(|N(0, 0.1^2)| > 0.2) = P(|Z| > 2) = 4.55 %: that many samples sit exactly on the clip
    clipped = np.mean(np.isclose(np.abs(out), 0.2))
    assert 0.040 < clipped < 0.051
    assert 0.09 < out.std() < 0.1


def test_gaussian_perturbation_torch_seeded() -> None:
    x = torch.ones(4, 1, 8, 8, 8, dtype=torch.float32)
    a = gaussian_perturbation(x, 0.1, 0.2, torch.Generator().manual_seed(5))
    b = gaussian_perturbation(x, 0.1, 0.2, torch.Generator().manual_seed(5))
    c = gaussian_perturbation(x, 0.1, 0.2, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == x.dtype and a.shape == x.shape
    assert (a - 1).abs().max().item() <= 0.2 + 1e-6
    assert torch.equal(gaussian_perturbation(x, 0.0, 0.2, None), x)
