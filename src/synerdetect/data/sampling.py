"""Samplers: class-balanced training batches and padding-free eval sharding.

:class:`BalancedBatchSampler`
    Every batch holds ``batch_size // 2`` real and ``batch_size // 2`` fake
    indices (shuffled within the batch).  One epoch walks through a random
    permutation of the **majority** class once; the minority class is
    oversampled by concatenating fresh random permutations of it (each minority
    sample appears ``floor`` or ``ceil`` of the ratio times).

    Global batch sequence of epoch ``e`` is a pure function of ``(labels, seed,
    e, batch_size)`` and prefix-stable: the first ``k`` global batches do not
    depend on ``num_replicas``/``drop_last``.  With ``num_replicas = R``, rank
    ``r`` takes global batches ``r, r + R, r + 2R, ...`` (round robin), so
    ranks get different batches and all ranks get the same number of batches:

    * ``drop_last=True``: ``(M // half) // R`` batches per rank
      (``M`` = majority count, ``half = batch_size // 2``); the tail of the
      majority permutation that does not fill a batch on every rank is left out
      this epoch (it is reshuffled next epoch).
    * ``drop_last=False``: ``ceil(ceil(M / half) / R)`` batches per rank; the
      streams wrap around into a fresh permutation so every majority sample is
      seen at least once and all batches are full and balanced.

    Resume: ``sampler.set_epoch(e); sampler.skip(k)`` makes the next iteration
    yield exactly this rank's batches ``k, k+1, ...`` of epoch ``e`` - the same
    batches an uninterrupted run would have produced after ``k`` steps.  The
    skip applies to one iteration only (``len()`` reports the remaining count
    until then).

:class:`ShardedEvalSampler`
    Rank ``r`` of ``R`` gets a contiguous slice of ``range(n)``; slice sizes
    differ by at most one, no padding/duplication, so every index is evaluated
    exactly once overall and concatenating the ranks' outputs in rank order
    restores the dataset order.  (Gather variable-length results, e.g. with
    ``torch.distributed.all_gather_object``.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence, Sized

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["BalancedBatchSampler", "ShardedEvalSampler"]

_TAG = 0xBA1A  # domain separation from the dataset's per-item rng


def _as_label_array(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        arr = labels.detach().cpu().numpy()
    else:
        arr = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels)
    arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        elif arr.dtype == bool:
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"labels must be integers 0/1, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_replicas(num_replicas: int, rank: int) -> tuple[int, int]:
    num_replicas, rank = int(num_replicas), int(rank)
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
    return num_replicas, rank


class BalancedBatchSampler(Sampler[list[int]]):
    """Batch sampler yielding class-balanced lists of dataset indices.

    Args:
        labels: per-index labels, 0 (real) or 1 (fake); both classes required.
        batch_size: per-rank batch size, even (half real, half fake).
        seed: base seed; batches depend only on ``(seed, epoch)``.
        num_replicas, rank: distributed sharding (round robin over global batches).
        drop_last: see module docstring.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = True,
    ):
        arr = _as_label_array(labels)
        bad = sorted(set(np.unique(arr).tolist()) - {0, 1})
        if bad:
            raise ValueError(
                f"BalancedBatchSampler needs labels 0 (real) / 1 (fake); found other values {bad[:5]} "
                "(unlabelled samples have label -1)"
            )
        batch_size = int(batch_size)
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2, got {batch_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.num_replicas, self.rank = _check_replicas(num_replicas, rank)
        self.real = np.flatnonzero(arr == 0)
        self.fake = np.flatnonzero(arr == 1)
        if len(self.real) == 0 or len(self.fake) == 0:
            raise ValueError(
                f"BalancedBatchSampler needs both classes; got {len(self.real)} real and {len(self.fake)} fake"
            )
        self.batch_size = batch_size
        self.half = batch_size // 2
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._skip = 0

        majority = max(len(self.real), len(self.fake))
        R = self.num_replicas
        if self.drop_last:
            self.num_global_batches = (majority // self.half) // R * R
        else:
            self.num_global_batches = math.ceil(math.ceil(majority / self.half) / R) * R
        if self.num_global_batches == 0:
            raise ValueError(
                f"not enough samples for one balanced batch per replica: majority class has {majority} "
                f"samples, need {self.half * R} (batch_size={batch_size}, num_replicas={R}); "
                "use drop_last=False or a smaller batch"
            )
        self.num_batches = self.num_global_batches // R

    # -- epoch / resume -------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)

    def skip(self, n: int) -> None:
        """Skip this rank's first ``n`` batches of the next iteration (resume)."""
        n = int(n)
        if not 0 <= n <= self.num_batches:
            raise ValueError(f"skip must be in [0, {self.num_batches}], got {n}")
        self._skip = n

    # -- batches --------------------------------------------------------------

    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, _TAG, stream])

    @staticmethod
    def _stream(idx: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        reps = math.ceil(count / len(idx))
        return np.concatenate([rng.permutation(idx) for _ in range(reps)])[:count]

    def global_batches(self, epoch: int | None = None) -> np.ndarray:
        """All global batches of ``epoch`` as an array ``[num_global_batches, batch_size]``."""
        e = self.epoch if epoch is None else int(epoch)
        nb, h = self.num_global_batches, self.half
        real = self._stream(self.real, nb * h, self._rng(e, 0)).reshape(nb, h)
        fake = self._stream(self.fake, nb * h, self._rng(e, 1)).reshape(nb, h)
        both = np.concatenate([real, fake], axis=1)
        return self._rng(e, 2).permuted(both, axis=1)

    def __iter__(self) -> Iterator[list[int]]:
        start, self._skip = self._skip, 0
        batches = self.global_batches()
        R, r = self.num_replicas, self.rank
        for j in range(start, self.num_batches):
            yield batches[j * R + r].tolist()

    def __len__(self) -> int:
        return self.num_batches - self._skip

    def __repr__(self) -> str:
        return (
            f"BalancedBatchSampler(real={len(self.real)}, fake={len(self.fake)}, batch_size={self.batch_size}, "
            f"seed={self.seed}, num_replicas={self.num_replicas}, rank={self.rank}, "
            f"drop_last={self.drop_last}, batches_per_rank={self.num_batches})"
        )


class ShardedEvalSampler(Sampler[int]):
    """Contiguous, padding-free shard of ``range(n)`` for rank ``rank``.

    ``n`` may be an int or a sized object (e.g. the dataset).
    """

    def __init__(self, n: int | Sized, num_replicas: int = 1, rank: int = 0):
        n = len(n) if not isinstance(n, (int, np.integer)) else int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = n
        self.num_replicas, self.rank = _check_replicas(num_replicas, rank)
        base, extra = divmod(n, self.num_replicas)
        r = self.rank
        self.start = r * base + min(r, extra)
        self.stop = self.start + base + (1 if r < extra else 0)

    @property
    def indices(self) -> range:
        return range(self.start, self.stop)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return (
            f"ShardedEvalSampler(n={self.n}, num_replicas={self.num_replicas}, rank={self.rank}, "
            f"slice=[{self.start}, {self.stop}))"
        )
