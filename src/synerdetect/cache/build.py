"""Building the feature cache: compute latents, inverted latents and E_d inputs for a set of images, sharded
over processes through the shared filesystem, resumable after a kill."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.imageio import UnreadableImage, load_image
from ..data.transforms import stack_images
from ..model.detector import view_transform
from ..utils import atomic_write_json, rank_world
from .store import NOISE_PIXELS_DTYPE, CacheError, FeatureCache, content_hash, feature_key

log = logging.getLogger(__name__)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def compute_noise_pixels(model, inverted: torch.Tensor, chunk_size: int | None = 16) -> torch.Tensor:
    """What the cache stores as E_d input: ``model.noise_pixels(inverted)`` in float16 (B x 3 x clip x clip).
    Only defined without a noise adapter (see :func:`stores_noise_pixels`). The VAE decode runs on at most
    ``chunk_size`` latents at a time (its activations at ``sd_size`` are the peak memory of a build)."""
    if getattr(model, "adapter", None) is not None:
        raise ValueError("noise_pixels depend on the trainable noise adapter; they are not cached")
    n = inverted.shape[0]
    step = n if not chunk_size or chunk_size >= n else int(chunk_size)
    return torch.cat([model.noise_pixels(inverted[i : i + step]).to(NOISE_PIXELS_DTYPE) for i in range(0, n, step)])


def _set_threads(num_threads: int | None, world: int, device: torch.device) -> int | None:
    if num_threads is None:
        if device.type != "cpu" or world <= 1 or os.environ.get("OMP_NUM_THREADS"):
            return None
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        num_threads = max(1, (os.cpu_count() or 1) // max(local, 1))
    torch.set_num_threads(int(num_threads))
    return int(num_threads)


def _wait_for_ranks(d: Path, world: int, job: str, timeout: float, poll: float) -> list[dict]:
    t0 = time.monotonic()
    while True:
        found, missing = [], []
        for r in range(world):
            p = d / f"done-rank{r}"
            try:
                doc = json.loads(p.read_text())
                if doc.get("job") == job:
                    found.append(doc)
                    continue
            except (OSError, ValueError):
                pass
            missing.append(r)
        if not missing:
            return found
        waited = time.monotonic() - t0
        if waited > timeout:
            raise CacheError(
                f"rank 0 waited {waited:.0f} s for ranks {missing} to finish their slice of the cache build in {d} "
                f"(no matching done-rank<r> marker). Did they crash or run with other data/config? Their finished "
                f"batches are kept: re-run the same build (it resumes), or merge what exists with "
                f"FeatureCache(root, key).merge()."
            )
        time.sleep(poll)


def build_cache(
    model,
    samples: Sequence,
    cache_root: str | os.PathLike,
    *,
    image_size: int | None,
    batch_size: int = 16,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    num_threads: int | None = None,
    verify: bool = True,
    wait_timeout: float = 6 * 3600.0,
    poll_interval: float = 0.5,
    store_noise_pixels: bool = True,
) -> dict:
    """Compute and store ``(latents, inverted)`` for every readable image of ``samples`` (objects with ``.path``,
    e.g. :class:`synerdetect.data.Sample`, or plain paths) under ``cache_root/<feature_key>/``.

    With ``store_noise_pixels`` (default) and no noise adapter, E_d's input ``model.noise_pixels(inverted)`` is
    stored too (float16, 3 x clip_size^2 x 2 bytes per image: ~294 KB at 224 px), so that a cached step skips
    the VAE decode; the flag is part of the feature key (readers pass the same value to :class:`CachedFeatures`).

    Rank ``r`` of ``world_size`` (see :func:`synerdetect.utils.rank_world`) handles
    ``sorted(paths)[r::world_size]``; entries
    already present (and, with ``verify``, whose checksum still matches) are skipped, so a killed build resumes.
    Unreadable images are reported (path and reason) and skipped. Each rank writes ``done-rank<r>``; rank 0 waits
    for all of them (up to ``wait_timeout`` s) and merges the index. On CPU with several processes each process
    uses ``num_threads`` threads (default: cores / local processes, unless OMP_NUM_THREADS is set).

    Returns stats of this rank: n_total, n_computed, n_skipped_cached, n_unreadable, unreadable [(path, reason)],
    n_duplicates, seconds, per_image_seconds, key, dir, rank, world_size; rank 0 adds n_indexed and ``all_ranks``.
    """
    # 1. Where this rank stands: its slice of the sorted paths, the cache folder, no stale done-marker.
    t_start, t0, cpu0 = time.time(), time.perf_counter(), time.process_time()
    rank, world = rank_world(rank, world_size)
    device = _model_device(model)
    threads = _set_threads(num_threads, world, device)
    key, info = feature_key(model, image_size=image_size, store_noise_pixels=store_noise_pixels)
    with_npx = bool(info["noise_pixels"]["stored"])
    cache = FeatureCache(cache_root, key, rank=rank, info=info)
    cache.dir.mkdir(parents=True, exist_ok=True)
    marker = cache.dir / f"done-rank{rank}"
    marker.unlink(missing_ok=True)
    paths = sorted({os.fspath(getattr(s, "path", s)) for s in samples})
    job = hashlib.sha256(json.dumps([key, world, paths]).encode()).hexdigest()[:24]
    mine = paths[rank::world]
    stats: dict[str, Any] = {
        "key": key,
        "dir": str(cache.dir),
        "rank": rank,
        "world_size": world,
        "threads": threads,
        "n_total": len(mine),
        "n_total_all_ranks": len(paths),
        "n_computed": 0,
        "n_skipped_cached": 0,
        "n_unreadable": 0,
        "n_duplicates": 0,
        "unreadable": [],
        "n_dropped_corrupt": 0,
    }
    bar = tqdm(
        total=len(mine),
        desc=f"feature cache (rank {rank}/{world})",
        unit="img",
        dynamic_ncols=True,
        disable=not progress,
    )

    # 2. Skip what is cached already (verified), then compute the rest batch by batch.
    was_training = model.training
    model.eval()
    try:
        todo = _still_to_compute(cache, mine, stats, bar, verify=verify, with_npx=with_npx)
        transform = view_transform(model.cfg, train=False, image_size=image_size)  # the evaluation view(s)
        compute_s = _compute(model, cache, todo, transform, stats, bar, batch_size=batch_size, with_npx=with_npx)
    finally:
        model.train(was_training)
        bar.close()

    # 3. This rank's stats and done-marker; rank 0 waits for every rank and merges the index.
    stats["n_unreadable"] = len(stats["unreadable"])
    stats["seconds"] = time.perf_counter() - t0
    stats["compute_seconds"] = compute_s
    stats["cpu_seconds"] = time.process_time() - cpu0  # this process's CPU time (all its threads)
    stats["per_image_seconds"] = compute_s / stats["n_computed"] if stats["n_computed"] else 0.0
    stats["t_start"], stats["t_end"] = t_start, time.time()
    atomic_write_json(marker, {"job": job, "rank": rank, "stats": stats}, indent=1, sort_keys=True)
    if rank == 0:
        docs = _wait_for_ranks(cache.dir, world, job, wait_timeout, poll_interval) if world > 1 else [{"stats": stats}]
        _merge_ranks(cache, info, world, [d["stats"] for d in docs], stats)
        stats["wall_seconds"] = time.perf_counter() - t0
    return stats


def _unreadable(stats: dict[str, Any], path: str, reason: str) -> None:
    log.warning("cache build: skipping unreadable image %s: %s", path, reason)
    stats["unreadable"].append((path, reason))


def _still_to_compute(
    cache: FeatureCache, mine: list[str], stats: dict[str, Any], bar: tqdm, *, verify: bool, with_npx: bool
) -> list[tuple[str, str]]:
    """``(path, content hash)`` of the files of ``mine`` that are neither duplicates nor cached (verified)."""
    todo: list[tuple[str, str]] = []
    seen: set[str] = set()
    present: list[str] = []
    for p in mine:
        try:
            h = content_hash(p)
        except OSError as e:
            _unreadable(stats, p, f"cannot read file: {type(e).__name__}: {e}")
            bar.update(1)
            continue
        if h in seen:
            stats["n_duplicates"] += 1
            bar.update(1)
            continue
        seen.add(h)
        entry = cache.entries.get(h)
        if entry is not None and (entry.noise_pixels is not None) == with_npx:  # else (written by hand): recompute
            present.append(h)
        todo.append((p, h))
    bad: set[str] = set()
    if verify and present:
        before = len(cache.problems)
        bad = set(cache.verify(present))
        stats["n_dropped_corrupt"] = len(cache.problems) - before
    cached = {h for h in present if h not in bad}
    stats["n_skipped_cached"] = len(cached)
    bar.update(len(cached))
    return [(p, h) for p, h in todo if h not in cached]


def _compute(
    model,
    cache: FeatureCache,
    todo: list[tuple[str, str]],
    transform,
    stats: dict[str, Any],
    bar: tqdm,
    *,
    batch_size: int,
    with_npx: bool,
) -> float:
    """Compute and store the features of ``todo``, one shard per batch; returns the seconds it took."""
    device = _model_device(model)
    t_compute = time.perf_counter()
    batch: list[tuple[str, str, Any]] = []  # (path, hash, tensor or Views)

    def flush() -> None:
        if not batch:
            return
        x = stack_images([b[2] for b in batch]).to(device)  # tensors or the two views of each image
        latents, inverted, _ = model.cache_features(x)
        npx = compute_noise_pixels(model, inverted) if with_npx else None
        cache.put_many([b[1] for b in batch], latents, inverted, paths=[b[0] for b in batch], noise_pixels=npx)
        del x, latents, inverted, npx
        stats["n_computed"] += len(batch)
        bar.update(len(batch))
        batch.clear()

    for p, h in todo:
        try:
            x = transform(load_image(p))
        except UnreadableImage as e:
            _unreadable(stats, p, e.reason)
            bar.update(1)
            continue
        except Exception as e:  # noqa: BLE001 - a transform failure is reported, not fatal
            _unreadable(stats, p, f"transform failed: {type(e).__name__}: {e}")
            bar.update(1)
            continue
        batch.append((p, h, x))
        if len(batch) >= batch_size:
            flush()
    flush()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t_compute


def _merge_ranks(
    cache: FeatureCache, info: dict[str, Any], world: int, all_stats: list[dict[str, Any]], stats: dict[str, Any]
) -> None:
    """Rank 0: merge every rank's shards into the index, remove the done-markers, add the totals to ``stats``."""
    cache.info = info
    stats["n_indexed"] = cache.merge()
    for r in range(world):
        (cache.dir / f"done-rank{r}").unlink(missing_ok=True)
    stats["all_ranks"] = {
        k: sum(s[k] for s in all_stats)
        for k in ("n_total", "n_computed", "n_skipped_cached", "n_unreadable", "n_duplicates")
    }
    stats["all_ranks"]["unreadable"] = [u for s in all_stats for u in s["unreadable"]]
    stats["all_ranks"]["t_start"] = min(s["t_start"] for s in all_stats)
    stats["all_ranks"]["t_end"] = max(s["t_end"] for s in all_stats)
