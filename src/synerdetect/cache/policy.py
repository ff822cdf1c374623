"""Reading the feature cache during training and evaluation: which epochs read or rebuild it (the policy), the
schedule a training run follows, and the batch look-up."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from ..model.detector import CachedBatch
from ..utils import barrier, rank_world
from .build import build_cache
from .store import FeatureCache, content_hash, feature_key, remove_stale_keys

log = logging.getLogger(__name__)

POLICIES = ("online", "cached-fixed", "cached-refresh")


# ============================================================================ reading during training / evaluation
class CachePlan(NamedTuple):
    """What a cache policy does at one epoch: ``read`` inverted latents from the cache, ``build`` (or refresh)
    the cache with the current model before the epoch."""

    read: bool
    build: bool


def policy_wants_cache(policy: str, epoch: int, refresh_every: int = 1) -> CachePlan:
    """``(read, build)`` for ``epoch`` (0-based) under a ``cache.policy``.

    - ``online``: never reads or builds; the inversion runs every step with the current prompt (exact, slow).
    - ``cached-fixed``: reads every epoch; builds once, before epoch 0, with the initial (or loaded) model's
      prompt, and keeps that key for the whole run (store it in the checkpoint to resume with the same key).
      The inverted latents then lag the prompt the model learns.
    - ``cached-refresh``: reads every epoch; rebuilds with the current prompt before every epoch with
      ``epoch % refresh_every == 0`` (epoch 0 included) - a new key each time, then ``CachedFeatures.refresh``.
      Costs one inversion pass over the data per refresh.

    Unpack it: ``read, build = policy_wants_cache(...)`` (a tuple is always truthy)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown cache policy {policy!r}; one of {POLICIES}")
    if refresh_every < 1:
        raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
    if policy == "online":
        return CachePlan(False, False)
    if policy == "cached-fixed":
        return CachePlan(True, epoch == 0)
    return CachePlan(True, epoch % refresh_every == 0)


class CachedFeatures:
    """Batch look-up for the trainer / evaluator.

    ``CachedFeatures(cache_root_or_FeatureCache, model, image_size)`` computes the feature key of ``model`` *now*
    (the key stays fixed until :meth:`refresh`; pass ``key=`` to pin one, e.g. the key a resumed ``cached-fixed``
    run started with). ``store_noise_pixels`` must match the build's (both default to True). ``lookup(paths)``
    returns a :class:`CachedBatch` ``(latents, inverted, noise_pixels)`` on the model's device when every item
    of the batch is cached, else ``None`` (then compute online); ``noise_pixels`` (float16) is None when the
    cache does not hold them. Content hashes are memoised per (path, size, mtime)."""

    def __init__(
        self,
        cache: FeatureCache | str | os.PathLike,
        model,
        image_size: int | None,
        *,
        key: str | None = None,
        rank: int | None = None,
        store_noise_pixels: bool = True,
    ):
        self.model = model
        self.image_size = int(image_size) if image_size else None
        self.store_noise_pixels = bool(store_noise_pixels)
        if isinstance(cache, FeatureCache):
            self.root, r = cache.root, cache.rank
        else:
            self.root, r = Path(cache), 0
        self.rank = r if rank is None else int(rank)
        self._hash_memo: dict[str, tuple[int, int, str]] = {}
        self.hits = self.misses = 0
        self.refresh(key=key)

    def refresh(self, model=None, *, key: str | None = None) -> str:
        """Recompute the key from the (current) model, or use ``key``, and re-read the index. Returns the key."""
        if model is not None:
            self.model = model
        if key is None:
            key, info = feature_key(self.model, image_size=self.image_size, store_noise_pixels=self.store_noise_pixels)
        else:
            info = None
        self.cache = FeatureCache(self.root, key, rank=self.rank, info=info)
        return key

    @property
    def key(self) -> str:
        return self.cache.key

    def _hash(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        memo = self._hash_memo.get(path)
        if memo is not None and memo[0] == st.st_size and memo[1] == st.st_mtime_ns:
            return memo[2]
        try:
            h = content_hash(path)
        except OSError:
            return None
        self._hash_memo[path] = (st.st_size, st.st_mtime_ns, h)
        return h

    def lookup(self, paths: Sequence[str]) -> CachedBatch | None:
        hashes = [self._hash(os.fspath(p)) for p in paths]
        if not paths or any(h is None or h not in self.cache for h in hashes):
            self.misses += 1
            return None
        got = self.cache.get([h for h in hashes if h is not None])
        if any(g is None for g in got):
            self.misses += 1
            return None
        self.hits += 1
        dev = next(self.model.parameters()).device

        def batch(ts: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(ts).to(dev, non_blocking=True)

        items = [g for g in got if g is not None]
        lat = batch([g.latents for g in items])
        inv = batch([g.inverted for g in items])
        npx = None
        pixels = [g.noise_pixels for g in items if g.noise_pixels is not None]
        if len(pixels) == len(items):  # kept in float16 (half the transfer); E_d casts it
            npx = batch(pixels)
        got.clear()
        return CachedBatch(lat, inv, npx)


class CacheSchedule:
    """``cache.policy`` applied to one training run: call :meth:`before_epoch` before each epoch (it builds or
    refreshes the cache, sharded over the processes, when the policy says so) and :meth:`lookup` per batch.
    ``key`` is the feature key the run reads (saved in checkpoints so that a resumed run reads the same one)."""

    def __init__(
        self,
        policy: str,
        refresh_every: int,
        model,
        samples: Sequence,
        root: str | os.PathLike,
        *,
        image_size: int | None,
        batch_size: int,
        key: str | None = None,
        progress: bool = True,
    ):
        self.policy, self.refresh_every = policy, refresh_every
        self.model, self.samples, self.root = model, samples, Path(root)
        self.image_size, self.batch_size, self.progress = image_size, batch_size, progress
        self.key = key
        self.reader: CachedFeatures | None = None

    def before_epoch(self, epoch: int, first_batch: int = 0) -> None:
        if not getattr(self.model, "uses_sd", True):
            return  # a method without the inversion (UniFD) has nothing to cache: it trains online
        read, build = policy_wants_cache(self.policy, epoch, self.refresh_every)
        resuming_inside_epoch = first_batch > 0 and self.key is not None
        rank, world = rank_world()
        if build and not resuming_inside_epoch:
            self._build(epoch, rank, world)
        elif read and self.reader is None:
            self.reader = CachedFeatures(self.root, self.model, self.image_size, key=self.key, rank=rank)
            self.key = self.reader.key

    def _build(self, epoch: int, rank: int, world: int) -> None:
        stats = build_cache(
            self.model,
            self.samples,
            self.root,
            image_size=self.image_size,
            batch_size=self.batch_size,
            rank=rank,
            world_size=world,
            progress=self.progress and rank == 0,
        )
        barrier()
        log.info(
            "feature cache (epoch %d): %s",
            epoch,
            json.dumps(
                {
                    k: stats[k]
                    for k in ("n_total", "n_computed", "n_skipped_cached", "n_unreadable", "key")
                    if k in stats
                }
            ),
        )
        self.reader = CachedFeatures(self.root, self.model, self.image_size, rank=rank)
        self.key = self.reader.key
        if rank == 0 and self.policy == "cached-refresh":
            removed = remove_stale_keys(self.root, keep={self.key})  # a refresh supersedes the older keys
            if removed:
                log.info("feature cache: removed superseded keys %s", removed)
        barrier()

    def lookup(self, paths: Sequence[str]) -> CachedBatch | None:
        return self.reader.lookup(paths) if self.reader is not None else None

    @property
    def hits(self) -> int:
        return self.reader.hits if self.reader is not None else 0

    @property
    def misses(self) -> int:
        return self.reader.misses if self.reader is not None else 0
