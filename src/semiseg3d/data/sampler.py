"""Two-stream batch sampler (spec 4.2), stateless so that a resumed run sees the same batches.

Every training batch holds ``batch_labeled`` labeled items first, then ``batch_unlabeled``
unlabeled items. Each item is a pair ``(dataset_index, crop_seed)``; the dataset crops with
``numpy.random.default_rng(crop_seed)``, so the batch of iteration ``t`` is a pure function
of ``(seed, t)``:

- Labeled stream: epoch ``e`` is a permutation of the labeled indices drawn from a generator
  seeded by ``(seed, "labeled", e)``, chunked into groups of ``batch_labeled``; a trailing
  incomplete group is dropped. Epoch length = ``len(labeled) // batch_labeled`` iterations
  (LA 16 labeled -> 8, 8 -> 4), so iteration ``t`` belongs to epoch ``t // epoch_length``.
- Unlabeled stream: an endless concatenation of permutations of the unlabeled indices, the
  k-th seeded by ``(seed, "unlabeled", k)``, chunked into groups of ``batch_unlabeled``
  (a group may straddle two permutations). Iteration ``t`` takes items
  ``[t * batch_unlabeled, (t + 1) * batch_unlabeled)`` of that stream. (The reference code
  restarts this stream every epoch; one endless stream cycles through all unlabeled cases
  evenly and keeps random access O(1).)
- ``crop_seed`` of position ``j`` in the batch of iteration ``t`` is derived from
  ``(seed, "crop", t, j)``.

All seeds are combined with :class:`numpy.random.SeedSequence` (``entropy=seed``,
``spawn_key=(stream tag, ...)``). Hence ``batches(start_iteration=t)`` yields exactly the
tail of ``batches(0)`` from ``t`` on.

For a :class:`torch.utils.data.DataLoader`, pass ``batch_sampler=sampler.with_iterations(
total, start)``: a finite, re-iterable view over iterations ``start .. total - 1`` with
``__len__`` = ``total - start``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["TwoStreamBatchSampler", "IterationBatchSampler", "Batch"]

#: one batch: (dataset_index, crop_seed) pairs, labeled items first
Batch = list[tuple[int, int]]

# Stream tags for SeedSequence spawn keys (ASCII of "LABL", "UNLB", "CROP").
_TAG_LABELED = 0x4C41424C
_TAG_UNLABELED = 0x554E4C42
_TAG_CROP = 0x43524F50


def _indices(values: Sequence[int], name: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.int64)
    if arr.ndim != 1 or (arr.size and arr.min() < 0):
        raise ValueError(f"{name} must be a list of non-negative dataset indices")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name} contains repeated indices")
    return arr


class TwoStreamBatchSampler:
    """Labeled-first batches from two index streams, random access by iteration.

    Args:
        labeled_indices: dataset indices of the labeled cases (order matters only through
            the seeded permutations).
        unlabeled_indices: dataset indices of the unlabeled cases; may be empty only when
            ``batch_unlabeled`` is 0 (SupOnly).
        batch_labeled: labeled items per batch (spec: 2), <= len(labeled_indices).
        batch_unlabeled: unlabeled items per batch (spec: 2), >= 0.
        seed: non-negative base seed.

    Raises:
        ValueError: negative or repeated indices, overlapping streams, too few labeled
            indices for one batch, an empty unlabeled stream with ``batch_unlabeled`` > 0,
            or a negative seed.
    """

    def __init__(
        self,
        labeled_indices: Sequence[int],
        unlabeled_indices: Sequence[int],
        batch_labeled: int = 2,
        batch_unlabeled: int = 2,
        seed: int = 0,
    ) -> None:
        self.labeled = _indices(labeled_indices, "labeled_indices")
        self.unlabeled = _indices(unlabeled_indices, "unlabeled_indices")
        if np.intersect1d(self.labeled, self.unlabeled).size:
            raise ValueError("labeled_indices and unlabeled_indices overlap")
        if batch_labeled < 1 or batch_unlabeled < 0:
            raise ValueError(
                f"need batch_labeled >= 1 and batch_unlabeled >= 0, got {batch_labeled}, {batch_unlabeled}"
            )
        if self.labeled.size < batch_labeled:
            raise ValueError(
                f"{self.labeled.size} labeled indices cannot fill a batch of {batch_labeled}"
            )
        if batch_unlabeled > 0 and self.unlabeled.size == 0:
            raise ValueError("batch_unlabeled > 0 needs at least one unlabeled index")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.batch_labeled = int(batch_labeled)
        self.batch_unlabeled = int(batch_unlabeled)
        self.seed = int(seed)

    @property
    def epoch_length(self) -> int:
        """Iterations per labeled epoch: ``len(labeled) // batch_labeled``."""
        return int(self.labeled.size // self.batch_labeled)

    @property
    def batch_size(self) -> int:
        """Items per batch: ``batch_labeled + batch_unlabeled``."""
        return self.batch_labeled + self.batch_unlabeled

    def _generator(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def labeled_epoch(self, epoch: int) -> np.ndarray:
        """Labeled indices used in ``epoch``, in order: a seeded permutation, trailing
        remainder dropped; length ``epoch_length * batch_labeled``."""
        perm = self._generator(_TAG_LABELED, epoch).permutation(self.labeled.size)
        return self.labeled[perm[: self.epoch_length * self.batch_labeled]]

    def unlabeled_permutation(self, k: int) -> np.ndarray:
        """The k-th permutation of the endless unlabeled stream."""
        perm = self._generator(_TAG_UNLABELED, k).permutation(self.unlabeled.size)
        return self.unlabeled[perm]

    def crop_seed(self, iteration: int, position: int) -> int:
        """Crop seed (a 64-bit non-negative int) of ``position`` in the batch of ``iteration``."""
        seq = np.random.SeedSequence(self.seed, spawn_key=(_TAG_CROP, iteration, position))
        return int(seq.generate_state(1, dtype=np.uint64)[0])

    def batches(self, start_iteration: int = 0) -> Iterator[Batch]:
        """Yield the batch of every iteration from ``start_iteration`` on, forever.

        Each batch is a list of ``(dataset_index, crop_seed)``: ``batch_labeled`` labeled
        items, then ``batch_unlabeled`` unlabeled items.
        """
        if start_iteration < 0:
            raise ValueError(f"start_iteration must be >= 0, got {start_iteration}")
        bl, bu = self.batch_labeled, self.batch_unlabeled
        n_u = int(self.unlabeled.size)
        epoch_cache: tuple[int, np.ndarray] | None = None
        perm_cache: dict[int, np.ndarray] = {}
        t = start_iteration
        while True:
            epoch, step = divmod(t, self.epoch_length)
            if epoch_cache is None or epoch_cache[0] != epoch:
                epoch_cache = (epoch, self.labeled_epoch(epoch))
            items = [int(i) for i in epoch_cache[1][step * bl : (step + 1) * bl]]
            for pos in range(t * bu, (t + 1) * bu):
                k, j = divmod(pos, n_u)
                if k not in perm_cache:
                    perm_cache = {key: v for key, v in perm_cache.items() if key >= k - 1}
                    perm_cache[k] = self.unlabeled_permutation(k)
                items.append(int(perm_cache[k][j]))
            yield [(index, self.crop_seed(t, p)) for p, index in enumerate(items)]
            t += 1

    def batch(self, iteration: int) -> Batch:
        """The batch of one iteration (random access; same as ``batches(iteration)``'s first)."""
        return next(self.batches(iteration))

    def with_iterations(self, total: int, start: int = 0) -> IterationBatchSampler:
        """A finite view for ``DataLoader(batch_sampler=...)``: iterations ``start .. total-1``."""
        return IterationBatchSampler(self, total, start)


class IterationBatchSampler:
    """Iterations ``start .. total - 1`` of a :class:`TwoStreamBatchSampler`.

    Re-iterable (each ``iter()`` starts again at ``start``) with ``len() == total - start``,
    which is what a DataLoader ``batch_sampler`` needs.
    """

    def __init__(self, sampler: TwoStreamBatchSampler, total: int, start: int = 0) -> None:
        if not 0 <= start <= total:
            raise ValueError(f"need 0 <= start <= total, got start={start}, total={total}")
        self.sampler = sampler
        self.total = int(total)
        self.start = int(start)

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[Batch]:
        it = self.sampler.batches(self.start)
        for _ in range(len(self)):
            yield next(it)
