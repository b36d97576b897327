"""Per-case metrics and summaries on hand-made masks with hand-worked answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from semiseg3d.evaluation.metrics import case_metrics, metrics_table, summarize


def cube(shape: tuple[int, int, int], start: tuple[int, int, int], size: int) -> np.ndarray:
    """uint8 mask with a size^3 cube whose lowest corner is ``start``."""
    mask = np.zeros(shape, dtype=np.uint8)
    x, y, z = start
    mask[x : x + size, y : y + size, z : z + size] = 1
    return mask


SHAPE = (20, 16, 16)
# G: 10^3 cube at x, y, z in [3, 13); P: the same cube moved by +2 along x.
GT_CUBE = cube(SHAPE, (3, 3, 3), 10)
PRED_SHIFTED = cube(SHAPE, (5, 3, 3), 10)

# Hand derivation for the shifted cubes (coordinates relative to G's corner, G = [0, 10)^3,
# P = [2, 12) x [0, 10)^2).
#   |P & G| = 8 * 10 * 10 = 800, |P| = |G| = 1000
#   Dice = 2 * 800 / 2000 = 0.8; Jaccard = 800 / (2000 - 800) = 2/3.
# Surfaces (mask XOR 6-connectivity erosion) of a 10^3 cube: 1000 - 8^3 = 488 voxels.
# Directed distances P-surface -> G-surface (the nearest G-surface voxel of an axis-aligned
# box is found along the axes, so a distance is a minimum of axis distances):
#   * x = 11 face of P (100 voxels): nearest is (9, y, z) on G's x = 9 face -> 2
#   * x = 10 rim of P (y or z in {0, 9}; 100 - 64 = 36 voxels): -> 1
#   * x in 2..9 with y or z in {0, 9} (8 * 36 = 288 voxels): they lie on G's surface -> 0
#   * x = 2 face, y, z in 1..8 (64 voxels, inside G): min(2, m(y), m(z)) with
#     m(c) = min(c, 9 - c); m = 1 for c in {1, 8}, so 64 - 6 * 6 = 28 voxels at 1, 36 at 2
#   => 288 x 0, 64 x 1, 136 x 2: ASD(P -> G) = (64 + 272) / 488 = 336 / 488.
# G -> P is the mirror image (same multiset). Pooled 976 values: 576 x 0, 128 x 1, 272 x 2;
# the 95th percentile sits at sorted index 0.95 * 975 = 926.25, inside the 2s -> HD95 = 2.
# With spacing (0.5, 1, 2) mm the same voxel pairs give (x distances halve; the interior
# face values become min(2 * 0.5, m(y) * 1, m(z) * 2) = 1.0 for every voxel):
#   288 x 0, 36 x 0.5, (100 + 64) x 1.0 => ASD_mm = (18 + 164) / 488 = 182 / 488;
#   pooled: 576 x 0, 72 x 0.5, 328 x 1.0 -> HD95_mm = 1.0.
SHIFTED_EXPECTED = {
    "dice": 0.8,
    "jaccard": 2 / 3,
    "hd95": 2.0,
    "asd": 336 / 488,
    "hd95_mm": 1.0,
    "asd_mm": 182 / 488,
}

# Nested cubes: P = 6^3 cube centred in G = 10^3 cube (P = [2, 8)^3 inside G = [0, 10)^3).
#   |P & G| = 216: Dice = 432 / 1216, Jaccard = 216 / 1000.
#   Every P-surface voxel has a coordinate in {2, 7} and the others in 2..7, so its distance
#   to G's shell min_c min(c, 9 - c) is exactly 2: 152 (= 216 - 64) values of 2, ASD = 2.
#   G -> P: the nearest P-surface voxel of a G-shell voxel g is g clamped to [2, 7]^3, so
#   d^2 = sum of per-axis d_a^2 with d_a^2 = 4 (c in {0, 9}), 1 (c in {1, 8}), 0 (c in 2..7).
#   Counting shell voxels by how many axes are of each kind (at least one of the first):
#   216 x 2, 144 x sqrt(5), 24 x sqrt(6), 72 x sqrt(8), 24 x 3, 8 x sqrt(12) (488 in all).
#   Pooled 640 values sorted: 368 x 2, 144 x sqrt5, 24 x sqrt6, 72 x sqrt8 (indices 536..607),
#   24 x 3 (608..631), 8 x sqrt12; 95th percentile at index 0.95 * 639 = 607.05:
#   HD95 = sqrt(8) + 0.05 * (3 - sqrt(8)).
#   The symmetric ASSD would be (152 * 2 + sum of the G -> P values) / 640 != 2, so ASD = 2
#   shows that the direction is P -> G only.
NESTED_EXPECTED = {
    "dice": 432 / 1216,
    "jaccard": 0.216,
    "hd95": math.sqrt(8) + 0.05 * (3 - math.sqrt(8)),
    "asd": 2.0,
}


def test_shifted_cubes_by_hand() -> None:
    result = case_metrics(PRED_SHIFTED, GT_CUBE, spacing=(0.5, 1.0, 2.0))
    for key, value in SHIFTED_EXPECTED.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert result["empty_pred"] is False


def test_no_mm_columns_without_spacing() -> None:
    result = case_metrics(PRED_SHIFTED, GT_CUBE)
    assert set(result) == {"dice", "jaccard", "hd95", "asd", "empty_pred"}
    assert result["hd95"] == pytest.approx(2.0)


def test_isotropic_spacing_scales_distances() -> None:
    # 2 mm isotropic voxels: every distance doubles, overlap metrics do not change.
    result = case_metrics(PRED_SHIFTED, GT_CUBE, spacing=(2.0, 2.0, 2.0))
    assert result["hd95_mm"] == pytest.approx(4.0)
    assert result["asd_mm"] == pytest.approx(2 * 336 / 488)
    assert result["dice"] == pytest.approx(0.8)


def test_nested_cubes_asd_is_one_directional() -> None:
    gt = cube(SHAPE, (3, 3, 3), 10)
    pred = cube(SHAPE, (5, 5, 5), 6)
    result = case_metrics(pred, gt)
    for key, value in NESTED_EXPECTED.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    # Swapping the roles measures G -> P: mean of the counted values above.
    g_to_p = (
        216 * 2 + 144 * math.sqrt(5) + 24 * math.sqrt(6) + 72 * math.sqrt(8) + 24 * 3
    ) + 8 * math.sqrt(12)
    assert case_metrics(gt, pred)["asd"] == pytest.approx(g_to_p / 488, abs=1e-12)


def test_identical_masks_are_perfect() -> None:
    result = case_metrics(GT_CUBE, GT_CUBE, spacing=(1.0, 2.0, 3.0))
    assert (result["dice"], result["jaccard"], result["hd95"], result["asd"]) == (1, 1, 0, 0)
    assert (result["hd95_mm"], result["asd_mm"]) == (0, 0)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Coordinates of voxels of ``mask`` with a face neighbour outside it (or outside the volume)."""
    padded = np.pad(mask.astype(bool), 1)
    inner = padded[1:-1, 1:-1, 1:-1]
    all_in = np.ones_like(inner)
    for axis in range(3):
        for step in (-1, 1):
            all_in &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(inner & ~all_in).astype(float)


def _directed(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """For each surface point of ``a``, the Euclidean distance to the nearest of ``b`` (brute force)."""
    diff = (a[:, None, :] - b[None, :, :]) * spacing
    return np.sqrt((diff**2).sum(axis=-1)).min(axis=1)


@pytest.mark.parametrize("spacing", [None, (1.0, 0.8, 2.5)])
def test_shifted_sphere_matches_brute_force(spacing: tuple[float, float, float] | None) -> None:
    grid = np.indices((28, 26, 24)).astype(float)

    def ball(center: tuple[float, float, float], radius: float) -> np.ndarray:
        d2 = sum((grid[i] - center[i]) ** 2 for i in range(3))
        return (d2 <= radius**2).astype(np.uint8)

    gt = ball((13.0, 12.0, 11.0), 7.0)
    pred = ball((15.0, 13.0, 11.5), 6.5)
    # Independent reference: counts for the overlaps, brute-force nearest surface points.
    inter = float((pred & gt).sum())
    dice = 2 * inter / (pred.sum() + gt.sum())
    jaccard = inter / float((pred | gt).sum())
    sp = np.ones(3) if spacing is None else np.asarray(spacing)
    sp_pred, sp_gt = _surface(pred), _surface(gt)
    p_to_g = _directed(sp_pred, sp_gt, sp)
    g_to_p = _directed(sp_gt, sp_pred, sp)
    hd95 = np.percentile(np.concatenate([p_to_g, g_to_p]), 95)
    asd = p_to_g.mean()

    result = case_metrics(pred, gt, spacing=spacing)
    assert result["dice"] == pytest.approx(dice)
    assert result["jaccard"] == pytest.approx(jaccard)
    if spacing is None:
        assert result["hd95"] == pytest.approx(hd95)
        assert result["asd"] == pytest.approx(asd)
    else:
        assert result["hd95_mm"] == pytest.approx(hd95)
        assert result["asd_mm"] == pytest.approx(asd)
        assert result["hd95_mm"] != pytest.approx(result["hd95"])


def test_empty_prediction_rule() -> None:
    # Paper-parity rule (spec 6.2): all four metrics 0, flagged; mm columns 0 as well.
    empty = np.zeros(SHAPE, dtype=np.uint8)
    result = case_metrics(empty, GT_CUBE, spacing=(1.0, 1.0, 1.0))
    assert result == {
        "dice": 0.0,
        "jaccard": 0.0,
        "hd95": 0.0,
        "asd": 0.0,
        "hd95_mm": 0.0,
        "asd_mm": 0.0,
        "empty_pred": True,
    }


def test_empty_ground_truth_rules() -> None:
    empty = np.zeros(SHAPE, dtype=np.uint8)
    # Correct negative: perfect score, still counted as an empty prediction.
    both = case_metrics(empty, empty)
    assert (both["dice"], both["jaccard"], both["hd95"], both["asd"]) == (1, 1, 0, 0)
    assert both["empty_pred"] is True
    # False positive on an empty reference: no overlap, distances undefined (NaN).
    fp = case_metrics(GT_CUBE, empty, spacing=(1.0, 1.0, 1.0))
    assert (fp["dice"], fp["jaccard"]) == (0.0, 0.0)
    assert all(math.isnan(fp[k]) for k in ("hd95", "asd", "hd95_mm", "asd_mm"))
    assert fp["empty_pred"] is False


def test_only_label_one_is_foreground() -> None:
    other = GT_CUBE * 2  # value 2 is not the foreground class
    assert case_metrics(other, GT_CUBE)["empty_pred"] is True


@pytest.mark.parametrize(
    ("pred", "gt", "spacing"),
    [
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), None),
        (np.zeros((4, 4)), np.zeros((4, 4)), None),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 0.0, 1.0)),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 1.0)),
    ],
)
def test_bad_arguments(pred: np.ndarray, gt: np.ndarray, spacing: tuple | None) -> None:
    with pytest.raises(ValueError):
        case_metrics(pred, gt, spacing=spacing)


def test_summarize_by_hand() -> None:
    rows = [
        {"dice": 0.8, "jaccard": 0.5, "hd95": 1.0, "asd": 2.0, "empty_pred": False},
        {"dice": 0.9, "jaccard": 0.5, "hd95": float("nan"), "asd": 4.0, "empty_pred": True},
        {"dice": 1.0, "jaccard": 0.5, "hd95": 3.0, "asd": 6.0, "empty_pred": True},
    ]
    s = summarize(rows).set_index("case")
    assert list(s.index) == ["mean", "sd", "sem"]
    # dice: mean 0.9; deviations -0.1, 0, 0.1 -> sd = sqrt(0.02 / 2) = 0.1; sem = 0.1 / sqrt(3)
    assert s.at["mean", "dice"] == pytest.approx(0.9)
    assert s.at["sd", "dice"] == pytest.approx(0.1)
    assert s.at["sem", "dice"] == pytest.approx(0.1 / math.sqrt(3))
    # constant jaccard: sd 0
    assert s.at["sd", "jaccard"] == pytest.approx(0.0)
    # hd95 with one NaN left out: values 1, 3 -> mean 2, sd sqrt(2), sem sqrt(2)/sqrt(2) = 1
    assert s.at["mean", "hd95"] == pytest.approx(2.0)
    assert s.at["sd", "hd95"] == pytest.approx(math.sqrt(2))
    assert s.at["sem", "hd95"] == pytest.approx(1.0)
    # asd 2, 4, 6: mean 4, sd 2, sem 2 / sqrt(3)
    assert s.at["sem", "asd"] == pytest.approx(2 / math.sqrt(3))
    assert s.at["mean", "empty_pred"] == 2


def test_summarize_single_case_has_no_spread() -> None:
    s = summarize([{"dice": 0.7, "jaccard": 0.5, "hd95": 1.0, "asd": 1.0}]).set_index("case")
    assert s.at["mean", "dice"] == pytest.approx(0.7)
    assert math.isnan(s.at["sd", "dice"]) and math.isnan(s.at["sem", "dice"])


def test_metrics_table_layout() -> None:
    rows = [
        {"case": "a", **case_metrics(PRED_SHIFTED, GT_CUBE, spacing=(0.5, 1.0, 2.0))},
        {"case": "b", **case_metrics(GT_CUBE, GT_CUBE, spacing=(0.5, 1.0, 2.0))},
        {"case": "c", **case_metrics(np.zeros(SHAPE, np.uint8), GT_CUBE, spacing=(1, 1, 1))},
    ]
    table = metrics_table(rows)
    assert list(table.columns) == [
        "case",
        "dice",
        "jaccard",
        "hd95",
        "asd",
        "empty_pred",
        "hd95_mm",
        "asd_mm",
    ]
    assert list(table["case"]) == ["a", "b", "c", "mean", "sd", "sem"]
    assert list(table["empty_pred"][:3]) == [0, 0, 1]
    assert table["empty_pred"][3] == 1  # count of empty predictions
    assert pd.isna(table["empty_pred"][4]) and pd.isna(table["empty_pred"][5])
    # mean dice (0.8 + 1 + 0) / 3; sd of (0.8, 1, 0): deviations 0.2, 0.4, -0.6 -> sqrt(0.56/2)
    assert table["dice"][3] == pytest.approx(0.6)
    assert table["dice"][4] == pytest.approx(math.sqrt(0.28))
    assert table["dice"][5] == pytest.approx(math.sqrt(0.28) / math.sqrt(3))


def test_metrics_table_without_spacing_has_no_mm_columns() -> None:
    table = metrics_table([{"case": "a", **case_metrics(GT_CUBE, GT_CUBE)}])
    assert list(table.columns) == ["case", "dice", "jaccard", "hd95", "asd", "empty_pred"]


@pytest.mark.parametrize("cases", [["a", "a"], ["mean"]])
def test_metrics_table_rejects_bad_case_ids(cases: list[str]) -> None:
    rows = [{"case": c, **case_metrics(GT_CUBE, GT_CUBE)} for c in cases]
    with pytest.raises(ValueError):
        metrics_table(rows)
