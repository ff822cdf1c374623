"""Training on ``accelerate``: CPU, one GPU, DDP over GPUs/nodes (``torchrun`` / ``accelerate launch``).

Exact resume: the batch order (sampler), augmentation (dataset) and CMID noise are pure functions of
(seed, epoch, index / step), and a checkpoint holds the trainable weights, the optimiser state and
the position in the epoch, so a killed run continues with the same batches and reaches the same weights.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import latest_checkpoint, load_optimizer, read_state, save_checkpoint
from .config import ExperimentConfig, dump_yaml
from .data import BalancedBatchSampler, ImageDataset, TrainTransform, collate
from .evaluate import evaluate, load_labelled

log = logging.getLogger("synerdetect.train")


def loader_image_size(cfg: ExperimentConfig) -> int:
    return cfg.data.image_size or max(cfg.model.clip_size, cfg.model.sd_size)


def build_optimizer(params, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def lr_at(cfg: ExperimentConfig, step: int, total: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): a pure function of the step, so a resumed run
    needs no scheduler state."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "cosine":
        span = max(1, total - o.warmup_steps)
        return o.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - o.warmup_steps) / span)))
    return o.lr


def _setup_logging(out: Path, is_main: bool) -> None:
    if not is_main:
        return
    fh = logging.FileHandler(out / "train.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    fh.setLevel(logging.INFO)
    root = logging.getLogger("synerdetect")
    if not any(isinstance(h, logging.FileHandler) and h.baseFilename == fh.baseFilename for h in root.handlers):
        root.addHandler(fh)
    root.setLevel(logging.INFO)
    # INFO goes to the run's log file; the terminal keeps the progress bar and warnings only.
    if not any(getattr(h, "_synerdetect_console", False) for h in root.handlers):
        sh = logging.StreamHandler()
        sh.setLevel(logging.WARNING)
        sh.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        sh._synerdetect_console = True
        root.addHandler(sh)
    root.propagate = False


class _Forward(torch.nn.Module):
    """DDP synchronises gradients of ``forward`` calls: route the loss computation through it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, labels, generator=None, latents=None, inverted=None, noise_pixels=None):
        return self.model.compute_losses(images, labels, generator=generator, latents=latents, inverted=inverted,
                                          noise_pixels=noise_pixels)


def train(cfg: ExperimentConfig, *, resume: str = "auto", progress: bool = True,
          on_step: Callable[[int, dict], None] | None = None, model=None) -> dict[str, Any]:
    """Train a detector as configured. ``resume``: "auto" (latest checkpoint in the run folder, if any),
    "never", or a checkpoint folder. ``on_step(global_step, losses)`` is called after each optimiser step."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from .model import SynerDetect

    if not cfg.data.train:
        raise ValueError("data.train is not set: point it at a training set (folder or manifest)")
    ddp_kwargs = DistributedDataParallelKwargs(find_unused_parameters=True)
    # accelerate keeps one AcceleratorState per process and refuses a second Accelerator with another
    # mixed_precision; forget it (not the distributed PartialState) so that train() can be called again.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True when there is no GPU: accelerate only sets up gloo DDP for torchrun's processes when told so.
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision, kwargs_handlers=[ddp_kwargs],
                      cpu=not torch.cuda.is_available())
    rank, world = acc.process_index, acc.num_processes
    out = Path(cfg.train.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out / "config.yaml")
    acc.wait_for_everyone()
    _setup_logging(out, acc.is_main_process)

    t = cfg.train
    if t.batch_size % (2 * world):
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by 2 x {world} processes")
    per_rank = t.batch_size // world
    samples = load_labelled(cfg.data.train, cfg.data.train_layout, cfg.data.train_split, cfg.data.train_generators)
    size = loader_image_size(cfg)
    d = cfg.data
    transform = TrainTransform(size, flip=d.flip, blur_prob=d.blur_prob, blur_sigma=tuple(d.blur_sigma),
                               jpeg_prob=d.jpeg_prob, jpeg_quality=tuple(d.jpeg_quality))
    ds = ImageDataset(samples, transform, seed=t.seed)
    sampler = BalancedBatchSampler(ds.labels, per_rank, seed=t.seed, num_replicas=world, rank=rank)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=t.num_workers)
    steps_per_epoch = len(sampler)
    total_steps = t.max_steps if t.max_steps is not None else steps_per_epoch * t.epochs
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    if model is None:
        model = SynerDetect.from_config(cfg)
    optimizer = build_optimizer(model.trainable_parameters(), cfg)
    state = {"epoch": 0, "batch_in_epoch": 0, "global_step": 0}
    ckpt_root = out / "checkpoints"
    start = None if resume == "never" else (latest_checkpoint(ckpt_root) if resume == "auto" else Path(resume))
    if start is not None:
        model.load_trainable(start)
        load_optimizer(optimizer, start)
        state = read_state(start)
        log.info("resumed from %s (step %d)", start, state["global_step"])
        if acc.is_main_process and progress:
            print(f"resuming from {start} (step {state['global_step']})")
    wrapped = _Forward(model)
    wrapped, optimizer = acc.prepare(wrapped, optimizer)
    model.enable_fast_path()
    device = acc.device

    val_samples = load_labelled(cfg.data.val, cfg.data.val_layout, cfg.data.val_split) if cfg.data.val else None
    cache_root = Path(cfg.cache.dir) if cfg.cache.dir else out / "feature_cache"
    cached = None
    cache_key = state.get("cache_key")

    metrics_path = out / "metrics.jsonl"
    bar = tqdm(total=total_steps, initial=state["global_step"], desc="train", unit="step",
               disable=not (progress and acc.is_main_process))
    running: dict[str, float] = {}
    t0 = time.time()
    skipped_files = 0
    global_step = state["global_step"]
    for epoch in range(state["epoch"], n_epochs):
        if global_step >= total_steps:
            break
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        first = state["batch_in_epoch"] if epoch == state["epoch"] else 0
        if first:
            sampler.skip(first)
        if cfg.cache.policy != "online":
            cached, cache_key = _prepare_cache(cfg, model, samples, size, per_rank, cache_root, epoch, first,
                                               cached, cache_key, acc, progress)
        model.train()
        for b_idx, batch in enumerate(loader, start=first):
            if global_step >= total_steps:
                break
            skipped_files += len(batch["errors"])
            images, labels = batch["image"].to(device), batch["label"].to(device)
            # Seeded per (step, rank): the CMID noise and timesteps replay exactly after a resume.
            gen = torch.Generator().manual_seed(t.seed * 1_000_003 + global_step * 997 + rank)
            torch.manual_seed(t.seed + global_step)
            usable = len(labels) >= 2 and len(set(labels.tolist())) == 2
            if world > 1:  # every rank skips together, or DDP's all-reduce would wait forever
                flag = torch.tensor([int(usable)], device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
                usable = bool(flag.item())
            losses = {}
            if not usable:
                log.warning("batch %d of epoch %d lost a class to unreadable files on some rank; no update", b_idx,
                            epoch)
            else:
                hit = cached.lookup(batch["path"]) if cached is not None else None
                kw = {}
                if hit is not None:  # inverted latents (+ E_d input) of the eval view, from the cache
                    kw = {"inverted": hit.inverted, "noise_pixels": hit.noise_pixels}
                    if cfg.cache.cmid_latents == "cached":
                        kw["latents"] = hit.latents
                with acc.autocast():
                    losses = wrapped(images, labels, generator=gen, **kw)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg, global_step, total_steps)
                optimizer.zero_grad(set_to_none=True)
                acc.backward(losses["total"])
                if cfg.optim.grad_clip:
                    acc.clip_grad_norm_(model.trainable_parameters(), cfg.optim.grad_clip)
                optimizer.step()
            global_step += 1
            vals = {k: float(v.detach()) for k, v in losses.items()}
            for k, v in vals.items():
                running[k] = 0.9 * running.get(k, v) + 0.1 * v
            bar.update(1)
            bar.set_postfix({k: f"{running[k]:.3f}" for k in ("total", "cr", "dcl", "pot") if k in running})
            if on_step is not None:
                on_step(global_step, vals)
            if acc.is_main_process and (global_step % t.log_every == 0 or global_step == total_steps):
                rec = {"step": global_step, "epoch": epoch, **{k: round(v, 6) for k, v in vals.items()},
                       "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(time.time() - t0, 2)}
                with metrics_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                log.info("step %d %s", global_step, json.dumps(vals))
            epoch_done = b_idx + 1 == steps_per_epoch
            state = {"epoch": epoch + int(epoch_done), "batch_in_epoch": 0 if epoch_done else b_idx + 1,
                     "global_step": global_step, "cache_key": cache_key}
            if t.checkpoint_every and global_step % t.checkpoint_every == 0 and global_step < total_steps:
                _checkpoint(acc, model, optimizer, state, ckpt_root, t.keep_checkpoints)
            if t.val_every and cfg.data.val and global_step % t.val_every == 0:
                _validate(cfg, model, val_samples, out, global_step, progress)
        if cfg.data.val and not t.val_every and global_step < total_steps:
            _validate(cfg, model, val_samples, out, global_step, progress)
    bar.close()
    acc.wait_for_everyone()
    checksums = _replica_checksums(model, world)
    if len(set(checksums)) > 1:
        log.error("DDP replicas diverged: trainable-weight checksums %s", checksums)
    final = out / "final"
    if acc.is_main_process:
        model.save_pretrained(final, extra={"global_step": global_step, "train_data": cfg.data.train})
    acc.wait_for_everyone()
    summary = {"global_step": global_step, "seconds": round(time.time() - t0, 2), "final": str(final),
               "world_size": world, "steps_per_epoch": steps_per_epoch, "skipped_files": skipped_files,
               "last_losses": running, "replica_checksums": checksums, "cache_policy": cfg.cache.policy}
    if cached is not None:
        summary.update(cache_key=cache_key, cache_hits=cached.hits, cache_misses=cached.misses)
    if cfg.data.val:
        summary["val"] = _validate(cfg, model, val_samples, out, global_step, progress)
    if acc.is_main_process:
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _prepare_cache(cfg, model, samples, size, per_rank, root: Path, epoch: int, first: int, cached, key,
                   acc, progress):
    """Apply ``cache.policy`` before an epoch: build or refresh the feature cache when the policy says so
    (sharded over the DDP ranks), else keep reading with the key the run holds (also after a resume)."""
    from .cache import CachedFeatures, build_cache, policy_wants_cache

    read, build = policy_wants_cache(cfg.cache.policy, epoch, cfg.cache.refresh_every)
    resuming_inside_epoch = first > 0 and key is not None
    if build and not resuming_inside_epoch:
        stats = build_cache(model, samples, root, image_size=size, batch_size=per_rank,
                            rank=acc.process_index, world_size=acc.num_processes,
                            progress=progress and acc.is_main_process)
        acc.wait_for_everyone()
        log.info("feature cache (epoch %d): %s", epoch, json.dumps({k: stats[k] for k in
                 ("n_total", "n_computed", "n_skipped_cached", "n_unreadable", "key") if k in stats}))
        cached = CachedFeatures(root, model, size, rank=acc.process_index)
        if acc.is_main_process and cfg.cache.policy == "cached-refresh":
            from .cache import remove_stale_keys

            removed = remove_stale_keys(root, keep={cached.key})  # a refresh supersedes the older keys
            if removed:
                log.info("feature cache: removed superseded keys %s", removed)
        acc.wait_for_everyone()
        return cached, cached.key
    if read and cached is None:
        cached = CachedFeatures(root, model, size, key=key, rank=acc.process_index)
        return cached, cached.key
    return cached, key


def _replica_checksums(model, world: int) -> list[str]:
    """Fingerprint of each rank's trainable weights (all ranks must hold the same model after DDP steps)."""
    mine = model.trainable_fingerprint()[:16]
    if world == 1:
        return [mine]
    parts: list = [None] * world
    torch.distributed.all_gather_object(parts, mine)
    return parts


def _checkpoint(acc, model, optimizer, state, root: Path, keep: int) -> None:
    acc.wait_for_everyone()
    if acc.is_main_process:
        # The unwrapped optimiser holds the same state tensors as the prepared one.
        opt = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        path = save_checkpoint(model, opt, state, root, keep)
        log.info("checkpoint %s", path)
    acc.wait_for_everyone()


def _validate(cfg: ExperimentConfig, model, samples, out: Path, step: int, progress: bool) -> dict[str, Any]:
    res = evaluate(model, samples, None, image_size=loader_image_size(cfg), batch_size=max(2, cfg.train.batch_size),
                   progress=progress)
    mean = res["summary"]["mean"]
    rec = {"step": step, "val_acc": mean["acc"], "val_ap": mean["ap"], "n": res["summary"]["n_images"]}
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        log.info("validation %s", json.dumps(rec))
    model.train()
    return rec
