"""The replay memory: a few earlier training images mixed into every batch of ``synerdetect adapt``.

Training writes one into ``final/replay/`` when ``train.replay_memory=K`` is set: K training images (half real,
half fake, spread over the generators), copied byte for byte with a ``manifest.csv`` beside them, capped at
:data:`REPLAY_BUDGET_BYTES`.

Images, not features: what SynerDetect trains (the LoRA on E_v and E_d, the prompts and the tuner) is what produces
z_v, z_n and the prompt that conditions the inversion, so any stored feature is stale after the first adaptation
step; only the frozen VAE's latents would stay valid, and they alone do not train the detector. Images stay valid
for every later adaptation. The bytes are copied unchanged because re-encoding or resizing would erase the very
generator artifacts the detector learns.

:class:`ReplayBatchSampler` puts a stated number of replay images (class-balanced) into every batch, the rest from
the new data, both drawn as a pure function of (seed, epoch) so that a resumed run sees the same batches.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Sampler

from ..data import BalancedBatchSampler, Sample, load_labelled

log = logging.getLogger(__name__)

REPLAY_DIR = "replay"
REPLAY_MANIFEST = "manifest.csv"
#: The size cap of a checkpoint's replay memory: 64 MiB holds ~6,000 demo images (64 px PNG) or a few hundred
#: 512 px photographs, and keeps the checkpoint folder small next to the base models it names.
REPLAY_BUDGET_BYTES = 64 * 2**20


class ReplayError(ValueError):
    """No replay memory where one was asked for."""


def pick_balanced(samples: Sequence[Sample], k: int, seed: int) -> list[Sample]:
    """Up to ``k`` samples, half of each class, spread round robin over the generators (seeded)."""
    rng = np.random.default_rng([seed, 7919])
    picked: list[Sample] = []
    for label in (0, 1):
        by_gen: dict[str, list[Sample]] = {}
        for s in samples:
            if s.label == label:
                by_gen.setdefault(s.generator, []).append(s)
        queues = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(by_gen.items())]
        want, pos = k // 2 + (k % 2 if label == 1 else 0), 0
        taken: list[Sample] = []
        while len(taken) < want and any(pos < len(q) for q in queues):
            taken += [q[pos] for q in queues if pos < len(q)][: want - len(taken)]
            pos += 1
        picked += taken
    return picked


def write_replay_memory(
    samples: Sequence[Sample], folder: Path, k: int, seed: int, budget: int = REPLAY_BUDGET_BYTES
) -> dict[str, int]:
    """Copy ``k`` balanced training images into ``folder/replay`` (with ``manifest.csv``) within ``budget`` bytes;
    returns the counts written."""
    dest = folder / REPLAY_DIR
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    rows, used = [], 0
    for i, s in enumerate(pick_balanced(samples, k, seed)):
        src = Path(s.path)
        size = src.stat().st_size
        if used + size > budget:
            continue  # a big file is skipped; a smaller one may still fit
        name = f"{i:05d}-{s.label}{src.suffix.lower()}"
        shutil.copyfile(src, dest / name)
        used += size
        rows.append({"path": name, "label": s.label, "generator": s.generator})
    with (dest / REPLAY_MANIFEST).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "generator"])
        w.writeheader()
        w.writerows(rows)
    n_real = sum(1 for r in rows if r["label"] == 0)
    if len(rows) < k:
        log.warning("replay memory: %d of %d images kept (budget %d bytes)", len(rows), k, budget)
    return {"n_real": n_real, "n_fake": len(rows) - n_real, "bytes": used}


def read_replay_memory(checkpoint: Path) -> list[Sample]:
    """The replay memory a checkpoint carries; a one-line :class:`ReplayError` when it has none."""
    manifest = Path(checkpoint) / REPLAY_DIR / REPLAY_MANIFEST
    if not manifest.is_file():
        raise ReplayError(
            f"{checkpoint} carries no replay memory ({REPLAY_DIR}/{REPLAY_MANIFEST}): training writes one with "
            "train.replay_memory=K, and a published (pushed) checkpoint never carries it (its training images are "
            "kept out of public uploads on purpose); pass --replay OLD_DATA (earlier training data)"
        )
    return load_labelled(str(manifest), "manifest")


def replay_split(batch_size: int, ratio: float) -> tuple[int, int]:
    """``(new, replay)`` images per batch: ``ratio`` of the batch from the replay memory, rounded to an even
    number (half real, half fake) and leaving at least one pair of new images."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"replay ratio must be in [0, 1), got {ratio}")
    replay = min(2 * round(batch_size * ratio / 2), batch_size - 2)
    return batch_size - replay, replay


class ReplayBatchSampler(Sampler[list[int]]):
    """Batches of ``n_new`` images from the new data and ``n_replay`` from the replay memory, each part
    class-balanced (a :class:`BalancedBatchSampler` each). An epoch is one pass over the new data; the replay part
    cycles through the memory. Indices: ``new_idx`` and ``replay_idx`` index the one dataset holding both."""

    def __init__(
        self,
        labels: Sequence[int],
        is_replay: Sequence[bool],
        batch_size: int,
        ratio: float,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        self.n_new, self.n_replay = replay_split(batch_size, ratio)
        flags = np.asarray(is_replay, dtype=bool)
        lab = np.asarray(labels)
        self.new_idx, self.replay_idx = np.flatnonzero(~flags), np.flatnonzero(flags)
        self.new = BalancedBatchSampler(lab[self.new_idx], self.n_new, seed=seed, num_replicas=num_replicas, rank=rank)
        self.rep = (
            BalancedBatchSampler(
                lab[self.replay_idx],
                self.n_replay,
                seed=seed + 1,
                num_replicas=num_replicas,
                rank=rank,
                drop_last=False,
            )
            if self.n_replay
            else None
        )
        self.epoch, self._skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.new.set_epoch(epoch)

    def skip(self, n: int) -> None:
        self.new.skip(n)
        self._skip = int(n)

    def _replay_batches(self, count: int) -> list[list[int]]:
        """This epoch's ``count`` replay batches: the memory's own epochs ``epoch * m ...`` chained (m per epoch)."""
        if self.rep is None:
            return [[] for _ in range(count)]
        per = self.rep.num_batches
        rounds = math.ceil(count / per)
        out: list[list[int]] = []
        for j in range(rounds):
            self.rep.set_epoch(self.epoch * rounds + j)
            out += list(iter(self.rep))
        return out[:count]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._skip = self._skip, 0
        replay = self._replay_batches(self.new.num_batches)
        for j, new in enumerate(iter(self.new), start=start):
            yield [int(self.new_idx[i]) for i in new] + [int(self.replay_idx[i]) for i in replay[j]]

    def __len__(self) -> int:
        return self.new.num_batches - self._skip
