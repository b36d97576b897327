"""Two-stream batch sampler: spec 4.2 / section 10 facts, stateless resume, seeding."""

from __future__ import annotations

from collections import Counter
from itertools import islice

import numpy as np
import pytest

from semiseg3d.data.sampler import TwoStreamBatchSampler


def take(sampler: TwoStreamBatchSampler, n: int, start: int = 0) -> list[list[tuple[int, int]]]:
    return list(islice(sampler.batches(start), n))


def indices(batch: list[tuple[int, int]]) -> list[int]:
    return [i for i, _ in batch]


@pytest.mark.parametrize(
    ("n_labeled", "epoch_length"), [(16, 8), (8, 4), (12, 6), (6, 3), (50, 25), (25, 12)]
)
def test_epoch_length_is_floor_half(n_labeled: int, epoch_length: int) -> None:
    s = TwoStreamBatchSampler(range(n_labeled), range(n_labeled, n_labeled + 10), 2, 2, seed=1)
    assert s.epoch_length == epoch_length


@pytest.mark.parametrize("n_labeled", [16, 8, 6])
def test_each_labeled_index_exactly_once_per_epoch_when_even(n_labeled: int) -> None:
    s = TwoStreamBatchSampler(range(n_labeled), range(100, 172), 2, 2, seed=1337)
    e_len = n_labeled // 2
    batches = take(s, 5 * e_len)
    for e in range(5):
        labeled = [i for b in batches[e * e_len : (e + 1) * e_len] for i in indices(b)[:2]]
        assert sorted(labeled) == list(range(n_labeled))


def test_odd_labeled_count_drops_one_index_per_epoch() -> None:
    # BraTS 10 %: 25 labeled -> 12 iterations per epoch, 24 distinct indices, one dropped
    s = TwoStreamBatchSampler(range(25), range(25, 250), 2, 2, seed=7)
    batches = take(s, 12 * 10)
    dropped = []
    for e in range(10):
        labeled = [i for b in batches[e * 12 : (e + 1) * 12] for i in indices(b)[:2]]
        assert len(labeled) == 24 and len(set(labeled)) == 24
        (missing,) = set(range(25)) - set(labeled)
        dropped.append(missing)
    assert len(set(dropped)) > 1  # a fresh permutation each epoch


def test_labeled_first_then_unlabeled_in_every_batch() -> None:
    labeled, unlabeled = range(0, 8), range(8, 80)
    s = TwoStreamBatchSampler(labeled, unlabeled, 2, 2, seed=1337)
    for b in take(s, 100):
        assert len(b) == 4
        assert all(i in labeled for i in indices(b)[:2])
        assert all(i in unlabeled for i in indices(b)[2:])


def test_unlabeled_stream_is_concatenated_permutations() -> None:
    # 5 unlabeled, chunks of 2: iterations 0-4 take 10 items = two whole permutations,
    # the chunk of iteration 2 straddles them.
    s = TwoStreamBatchSampler([0, 1], [10, 11, 12, 13, 14], 2, 2, seed=3)
    stream = [i for b in take(s, 5) for i in indices(b)[2:]]
    assert sorted(stream[:5]) == [10, 11, 12, 13, 14]
    assert sorted(stream[5:]) == [10, 11, 12, 13, 14]
    # LA 10 %: 72 unlabeled, 2 per iteration -> every unlabeled case once in 36 iterations
    s = TwoStreamBatchSampler(range(8), range(8, 80), 2, 2, seed=1337)
    stream = [i for b in take(s, 36) for i in indices(b)[2:]]
    assert sorted(stream) == list(range(8, 80))


@pytest.mark.parametrize("start", [0, 1, 3, 4, 7, 13, 40])
def test_resume_yields_the_tail(start: int) -> None:
    s = TwoStreamBatchSampler(range(8), range(8, 19), 2, 2, seed=1337)
    full = take(s, start + 30)
    assert take(s, 30, start) == full[start:]
    # a new sampler object with the same arguments (a restarted process) agrees too
    again = TwoStreamBatchSampler(range(8), range(8, 19), 2, 2, seed=1337)
    assert take(again, 30, start) == full[start:]
    assert s.batch(start) == full[start]


def test_seeds_change_batches_and_crop_seeds() -> None:
    a = take(TwoStreamBatchSampler(range(16), range(16, 80), 2, 2, seed=1), 20)
    b = take(TwoStreamBatchSampler(range(16), range(16, 80), 2, 2, seed=2), 20)
    assert [indices(x) for x in a] != [indices(x) for x in b]
    seeds_a = [c for batch in a for _, c in batch]
    seeds_b = [c for batch in b for _, c in batch]
    assert len(set(seeds_a)) == len(seeds_a)  # distinct per (iteration, position)
    assert not set(seeds_a) & set(seeds_b)
    assert all(0 <= c < 2**64 for c in seeds_a)


def test_documented_seed_derivation() -> None:
    """Epoch e's labeled order is the permutation from SeedSequence(seed, spawn_key=(tag, e))
    (module docstring); pinning it keeps old runs reproducible by new code."""
    labeled = np.arange(10, 26)
    s = TwoStreamBatchSampler(labeled, range(30, 40), 2, 2, seed=1337)
    for e in (0, 3):
        rng = np.random.default_rng(np.random.SeedSequence(1337, spawn_key=(0x4C41424C, e)))
        expected = labeled[rng.permutation(16)]
        got = [i for b in take(s, 8, start=8 * e) for i in indices(b)[:2]]
        assert got == expected.tolist()


def test_suponly_without_unlabeled_stream() -> None:
    s = TwoStreamBatchSampler(range(5), [], 2, 0, seed=0)
    batches = take(s, 6)
    assert all(len(b) == 2 for b in batches)
    assert s.epoch_length == 2 and s.batch_size == 2


def test_with_iterations_is_a_finite_reiterable_view() -> None:
    s = TwoStreamBatchSampler(range(8), range(8, 20), 2, 2, seed=9)
    view = s.with_iterations(10, start=4)
    assert len(view) == 6
    assert list(view) == take(s, 6, start=4)
    assert list(view) == list(view)
    assert len(s.with_iterations(10, start=10)) == 0
    with pytest.raises(ValueError):
        s.with_iterations(3, start=4)


@pytest.mark.parametrize(
    ("labeled", "unlabeled", "bl", "bu", "seed"),
    [
        ([0, 1], [1, 2], 2, 2, 0),  # overlap
        ([0], [1, 2], 2, 2, 0),  # too few labeled for one batch
        ([0, 1], [], 2, 2, 0),  # no unlabeled but b_u > 0
        ([0, 0], [1], 2, 1, 0),  # repeated index
        ([0, 1], [2], 2, 1, -1),  # negative seed
    ],
)
def test_invalid_arguments(labeled, unlabeled, bl, bu, seed) -> None:
    with pytest.raises(ValueError):
        TwoStreamBatchSampler(labeled, unlabeled, bl, bu, seed=seed)


def test_labeled_frequency_is_uniform_over_many_epochs() -> None:
    s = TwoStreamBatchSampler(range(25), range(25, 30), 2, 1, seed=11)
    counts = Counter(i for b in take(s, 12 * 100) for i in indices(b)[:2])
    # 100 epochs, each index present in 24 of 25 slots: expected 96 each
    assert set(counts) == set(range(25))
    assert sum(counts.values()) == 2400
    assert max(counts.values()) <= 100 and min(counts.values()) >= 85
