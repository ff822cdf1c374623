from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from synerdetect.data import BalancedBatchSampler, ShardedEvalSampler

LABELS = [0] * 23 + [1] * 70  # imbalanced: 23 real, 70 fake
LABEL_ARR = np.array(LABELS)


def _all(sampler):
    return [list(b) for b in sampler]


@pytest.mark.parametrize("drop_last", [True, False])
def test_balance_and_coverage(drop_last):
    s = BalancedBatchSampler(LABELS, 8, seed=0, drop_last=drop_last)
    batches = _all(s)
    assert len(batches) == len(s) == (70 // 4 if drop_last else -(-70 // 4))
    for b in batches:
        assert len(b) == 8
        assert Counter(LABEL_ARR[b].tolist()) == {0: 4, 1: 4}
    flat = [i for b in batches for i in b]
    fake_counts = Counter(i for i in flat if LABELS[i] == 1)
    real_counts = Counter(i for i in flat if LABELS[i] == 0)
    if drop_last:
        assert max(fake_counts.values()) == 1 and len(fake_counts) == 68  # majority seen once, tail dropped
    else:
        assert len(fake_counts) == 70  # every majority sample seen
    # minority oversampled evenly: each real index appears floor or ceil of the ratio times
    n_real_draws = 4 * len(batches)
    assert len(real_counts) == 23
    lo, hi = n_real_draws // 23, -(-n_real_draws // 23)
    assert set(real_counts.values()) <= {lo, hi}


def test_determinism_and_epochs():
    a = BalancedBatchSampler(LABELS, 8, seed=5)
    b = BalancedBatchSampler(torch.tensor(LABELS), 8, seed=5)
    assert _all(a) == _all(b)
    assert _all(a) == _all(a)  # re-iterable, same epoch -> same batches
    e0 = _all(a)
    a.set_epoch(1)
    assert _all(a) != e0
    b.set_epoch(1)
    assert _all(a) == _all(b)
    assert _all(BalancedBatchSampler(LABELS, 8, seed=6)) != e0


@pytest.mark.parametrize("drop_last", [True, False])
def test_distributed_round_robin(drop_last):
    R = 3
    ref = BalancedBatchSampler(LABELS, 8, seed=1, drop_last=drop_last)
    ranks = [BalancedBatchSampler(LABELS, 8, seed=1, num_replicas=R, rank=r, drop_last=drop_last) for r in range(R)]
    per_rank = [_all(s) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1  # same number of batches on all ranks
    assert all(len(s) == len(per_rank[0]) for s in ranks)
    glob = ranks[0].global_batches()
    for r in range(R):
        assert per_rank[r] == glob[r::R].tolist()
    # the global sequence does not depend on num_replicas (prefix-stable)
    ref_glob = ref.global_batches()
    n = min(len(glob), len(ref_glob))
    assert np.array_equal(glob[:n], ref_glob[:n])


def test_distributed_disjoint_indices_when_balanced():
    labels = [0, 1] * 48  # 48 per class
    R = 4
    per_rank = [
        set(i for b in BalancedBatchSampler(labels, 4, seed=2, num_replicas=R, rank=r) for i in b) for r in range(R)
    ]
    for r in range(R):
        for q in range(r + 1, R):
            assert not per_rank[r] & per_rank[q]
    assert set().union(*per_rank) == set(range(96))


@pytest.mark.parametrize("R,rank", [(1, 0), (2, 1)])
def test_resume_skip_equivalence(R, rank):
    full_s = BalancedBatchSampler(LABELS, 8, seed=9, num_replicas=R, rank=rank)
    full_s.set_epoch(3)
    full = _all(full_s)
    for k in (0, 1, len(full) // 2, len(full)):
        resumed = BalancedBatchSampler(LABELS, 8, seed=9, num_replicas=R, rank=rank)
        resumed.set_epoch(3)
        resumed.skip(k)
        assert len(resumed) == len(full) - k
        assert _all(resumed) == full[k:]
        assert len(resumed) == len(full)  # skip applies to one iteration only
        assert _all(resumed) == full
    with pytest.raises(ValueError):
        full_s.skip(len(full) + 1)


def test_bad_sampler_args():
    with pytest.raises(ValueError, match="even"):
        BalancedBatchSampler(LABELS, 7)
    with pytest.raises(ValueError, match="both classes"):
        BalancedBatchSampler([1, 1, 1, 1], 2)
    with pytest.raises(ValueError, match="-1"):
        BalancedBatchSampler([0, 1, -1], 2)
    with pytest.raises(ValueError, match="not enough"):
        BalancedBatchSampler([0, 1, 0, 1], 8)
    assert len(BalancedBatchSampler([0, 1, 0, 1], 8, drop_last=False)) == 1
    with pytest.raises(ValueError):
        BalancedBatchSampler(LABELS, 8, num_replicas=2, rank=2)


@pytest.mark.parametrize("n", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("R", [1, 2, 3, 4, 8])
def test_sharded_eval_sampler_exact_cover(n, R):
    shards = [list(ShardedEvalSampler(n, R, r)) for r in range(R)]
    assert [i for s in shards for i in s] == list(range(n))  # every index exactly once, order preserved
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= (1 if n else 0)
    assert [len(ShardedEvalSampler(n, R, r)) for r in range(R)] == sizes


def test_sharded_eval_sampler_accepts_sized():
    assert list(ShardedEvalSampler(list(range(5)), 2, 1)) == [3, 4]
    with pytest.raises(ValueError):
        ShardedEvalSampler(5, 2, 3)
