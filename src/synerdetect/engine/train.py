"""Training on ``accelerate``: CPU, one GPU, DDP over GPUs/nodes (``torchrun`` / ``accelerate launch``).

Exact resume: the batch order (sampler), augmentation (dataset) and CMID noise are pure functions of
(seed, epoch, index / step), and a checkpoint holds the trainable weights, the optimiser state and
the position in the epoch, so a killed run continues with the same batches and reaches the same weights.

``train()`` reads top to bottom: set up the run, build data and model, decide where to start (fresh, resume,
extend a finished run), then the loop (one comment per block), then the final save and summary.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..cache import CacheSchedule
from ..config import ConfigError, ExperimentConfig, OptimConfig, to_dict
from ..data import BalancedBatchSampler, ImageDataset, collate, load_labelled
from ..methods import build_detector
from ..model.detector import view_transform
from ..utils import atomic_write_json, atomic_write_text, check_output_dir, flatten_dict, is_main_process
from .checkpoint import FINAL_STATE, find_resumable, load_optimizer, read_state, save_checkpoint, save_final
from .evaluate import evaluate
from .replay import write_replay_memory

log = logging.getLogger("synerdetect.train")

# Keys that may differ between a run folder's config.yaml and a run that continues in it.
_EXTENDABLE = {
    "train.epochs",
    "train.max_steps",
    "train.output_dir",
    "train.num_workers",
    "train.log_every",
    "train.val_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.replay_memory",
    "data.val",
    "data.val_layout",
    "data.val_split",
    "data.test",
    "data.test_layout",
    "data.test_split",
}


def build_optimizer(params: Iterable[torch.nn.Parameter], o: OptimConfig) -> torch.optim.Optimizer:
    """The one optimiser builder (training and the bench): SGD with momentum (the paper's) or AdamW."""
    params = list(params)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adamw":
        b1, b2 = o.betas
        return torch.optim.AdamW(params, lr=o.lr, betas=(b1, b2), weight_decay=o.weight_decay)
    raise ConfigError(f"optim.name must be sgd or adamw, got {o.name!r}")


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


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The randomness of one optimiser step, a pure function of (seed, step, rank) so that a resumed run replays
    it exactly: the returned generator drives CMID's timesteps and noise; the global RNG (anything else that
    draws, e.g. LoRA dropout) is reseeded per step as well."""
    torch.manual_seed(seed + step)
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 997 + rank)


class _Forward(torch.nn.Module):
    """DDP synchronises gradients of ``forward`` calls: route the loss computation through it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, labels, generator=None, cached=None):
        return self.model.compute_losses(images, labels, generator=generator, cached=cached)


@dataclass
class RunState:
    """Where a run is: saved in every checkpoint (``trainer_state.json``)."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    cache_key: str | None = None
    no_update_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        known = {k: d[k] for k in ("epoch", "batch_in_epoch", "global_step", "cache_key", "no_update_steps") if k in d}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "cache_key": self.cache_key,
            "no_update_steps": self.no_update_steps,
        }


def train(
    cfg: ExperimentConfig,
    *,
    resume: str = "auto",
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    model=None,
    accelerator: Accelerator | None = None,
    batch_sampler: Callable[[list, int, int, int], Any] | None = None,
    on_validate: Callable[[int, dict], bool] | None = None,
) -> dict[str, Any]:
    """Train a detector as configured. ``resume``: "auto" (latest good checkpoint in the run folder, if any; a
    finished run is extended when more steps are asked for), "never", or a checkpoint folder.
    ``on_step(global_step, losses)`` is called after each optimiser step. ``accelerator``: an
    ``accelerate.Accelerator`` to train with (one is built from ``train.mixed_precision`` otherwise).
    Hooks of ``synerdetect adapt`` (engine/adapt.py): ``batch_sampler(samples, per_rank, world, rank)`` builds the
    resumable batch sampler (class-balanced batches otherwise); ``on_validate(step, record)`` sees each periodic
    validation and stops the run (early stopping) by returning True."""

    # 1. Check the request before any work: data, output folder, config of an existing run.
    if not cfg.data.train:
        raise ValueError("data.train is not set: point it at a training set (folder or manifest)")
    out = Path(cfg.train.output_dir)
    check_output_dir(out, "train.output_dir")
    acc = accelerator if accelerator is not None else _accelerator(cfg)
    rank, world = acc.process_index, acc.num_processes
    t = cfg.train
    if t.batch_size % (2 * world):
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by 2 x {world} processes")
    if resume != "never":
        _check_same_config(cfg, out)

    # 2. Data: class-balanced, resumable batches of augmented views.
    per_rank = t.batch_size // world
    samples = load_labelled(cfg.data.train, cfg.data.train_layout, cfg.data.train_split, cfg.data.train_generators)
    ds = ImageDataset(samples, view_transform(cfg, train=True), seed=t.seed)
    if batch_sampler is not None:
        sampler = batch_sampler(samples, per_rank, world, rank)
    else:
        sampler = BalancedBatchSampler(ds.labels, per_rank, seed=t.seed, num_replicas=world, rank=rank)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=t.num_workers)
    steps_per_epoch = len(sampler)
    total_steps = t.max_steps if t.max_steps is not None else steps_per_epoch * t.epochs

    # 3. Model and optimiser; where to start (fresh, a checkpoint, or a finished run to extend or leave alone).
    if model is None:
        model = build_detector(cfg)
    optimizer = build_optimizer(model.trainable_parameters(), cfg.optim)
    state, finished = _resume(cfg, out, resume, total_steps, model, optimizer, acc.is_main_process)
    if finished is not None:  # a finished run asked for no more steps: leave it as it is
        return finished
    if acc.is_main_process:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        _truncate_metrics(out / "metrics.jsonl", state.global_step)  # no duplicated steps after a resume
    acc.wait_for_everyone()
    _setup_logging(out, acc.is_main_process)
    wrapped, optimizer = acc.prepare(_Forward(model), optimizer)
    model.enable_fast_path()
    device = acc.device
    val_samples = load_labelled(cfg.data.val, cfg.data.val_layout, cfg.data.val_split) if cfg.data.val else None
    schedule = _cache_schedule(cfg, model, samples, out, per_rank, state, progress and acc.is_main_process)

    # 4. The loop.
    bar = tqdm(
        total=total_steps,
        initial=state.global_step,
        desc="train",
        unit="step",
        disable=not (progress and acc.is_main_process),
    )
    running: dict[str, float] = {}
    t0 = time.time()
    skipped_files = 0
    stop = False  # set by on_validate (early stopping)
    for epoch in range(state.epoch, math.ceil(total_steps / steps_per_epoch)):
        if state.global_step >= total_steps or stop:
            break
        # position the data (and the cache) at this epoch; skip what a resumed run has done already
        first = state.batch_in_epoch if epoch == state.epoch else 0
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        if first:
            sampler.skip(first)
        if schedule is not None:
            schedule.before_epoch(epoch, first)
            state.cache_key = schedule.key
        model.train()
        for b_idx, batch in enumerate(loader, start=first):
            if state.global_step >= total_steps or stop:
                break
            # one optimiser step; a batch that lost a class to unreadable files makes none (on every rank together)
            skipped_files += len(batch["errors"])
            images, labels = batch["image"].to(device), batch["label"].to(device)
            losses: dict[str, torch.Tensor] = {}
            if _usable(labels, world, device):
                gen = step_generator(t.seed, state.global_step, rank)
                cached = _cached_features(cfg, schedule, batch["path"])
                losses = _optimizer_step(
                    cfg, acc, wrapped, model, optimizer, images, labels, gen, cached, state.global_step, total_steps
                )
            else:
                state.no_update_steps += 1
                log.warning("batch %d of epoch %d lost a class to unreadable files; no update", b_idx, epoch)
            state.global_step += 1

            # progress bar, callback, metrics.jsonl
            vals = {k: float(v.detach()) for k, v in losses.items()}
            _show_progress(bar, running, vals)
            if on_step is not None:
                on_step(state.global_step, vals)
            if acc.is_main_process and (state.global_step % t.log_every == 0 or state.global_step == total_steps):
                _log_metrics(out, state.global_step, epoch, vals, optimizer, model, t0)

            # where the run is; periodic checkpoint and validation
            epoch_done = b_idx + 1 == steps_per_epoch
            state.epoch, state.batch_in_epoch = epoch + int(epoch_done), 0 if epoch_done else b_idx + 1
            if t.checkpoint_every and state.global_step % t.checkpoint_every == 0 and state.global_step < total_steps:
                _checkpoint(acc, model, optimizer, state, out / "checkpoints", t.keep_checkpoints)
            if t.val_every and cfg.data.val and state.global_step % t.val_every == 0:
                rec = _validate(cfg, model, val_samples, out, state.global_step, progress)
                stop = on_validate is not None and on_validate(state.global_step, rec)
        if cfg.data.val and not t.val_every and state.global_step < total_steps and not stop:
            rec = _validate(cfg, model, val_samples, out, state.global_step, progress)
            stop = on_validate is not None and on_validate(state.global_step, rec)
    bar.close()

    # 5. Final weights (with optimiser state, so the run can be extended later) and the summary.
    run = {"seconds": round(time.time() - t0, 2), "steps_per_epoch": steps_per_epoch, "skipped_files": skipped_files}
    summary = _finish(cfg, acc, model, optimizer, state, out, run, running, schedule, val_samples, progress)
    if t.replay_memory and acc.is_main_process:  # earlier data for `synerdetect adapt` (engine/replay.py)
        summary["replay_memory"] = write_replay_memory(samples, out / "final", t.replay_memory, t.seed)
    return summary


def _finish(
    cfg: ExperimentConfig,
    acc: Accelerator,
    model,
    optimizer,
    state: RunState,
    out: Path,
    run: dict[str, Any],
    running: dict[str, float],
    schedule: CacheSchedule | None,
    val_samples,
    progress: bool,
) -> dict[str, Any]:
    """Save ``final/`` (weights and optimiser state), validate once more, write and return the run's summary."""
    world = acc.num_processes
    acc.wait_for_everyone()
    checksums = _replica_checksums(model, world)
    if len(set(checksums)) > 1:
        log.error("DDP replicas diverged: trainable-weight checksums %s", checksums)
    final = out / "final"
    if acc.is_main_process:
        opt = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        save_final(
            model, opt, state.to_dict(), final, extra={"global_step": state.global_step, "train_data": cfg.data.train}
        )
    acc.wait_for_everyone()
    summary = {
        "global_step": state.global_step,
        "seconds": run["seconds"],
        "final": str(final),
        "world_size": world,
        "steps_per_epoch": run["steps_per_epoch"],
        "skipped_files": run["skipped_files"],
        "no_update_steps": state.no_update_steps,
        "last_losses": running,
        "replica_checksums": checksums,
        "cache_policy": cfg.cache.policy,
    }
    if schedule is not None:
        summary.update(cache_key=schedule.key, cache_hits=schedule.hits, cache_misses=schedule.misses)
    if cfg.data.val:
        summary["val"] = _validate(cfg, model, val_samples, out, state.global_step, progress)
    if state.no_update_steps:
        log.warning(
            "warning: %d of %d steps made no update (their batches lost a class to unreadable files; %d file(s) "
            "skipped): see %s",
            state.no_update_steps,
            state.global_step,
            run["skipped_files"],
            out / "train.log",
        )
    if acc.is_main_process:
        atomic_write_json(out / "train_summary.json", summary)
    return summary


def _resume(
    cfg: ExperimentConfig, out: Path, resume: str, total_steps: int, model, optimizer, is_main: bool
) -> tuple[RunState, dict[str, Any] | None]:
    """Where the run starts: its state (fresh, or a checkpoint's, loaded into ``model`` and ``optimizer``), and the
    summary to return instead of training when a finished run is asked for no more steps."""
    start, note = _starting_point(out, resume, total_steps)
    if start is not None:
        _check_resume_method(start, cfg.method)
    if note and is_main:
        print(note, flush=True)
    if note:
        log.info(note)
    if start is None:
        return RunState(), None
    state = RunState.from_dict(read_state(start))
    if state.global_step >= total_steps:
        summary_path = out / "train_summary.json"
        if summary_path.is_file():
            return state, json.loads(summary_path.read_text())
        return state, {"global_step": state.global_step, "final": str(out / "final")}
    model.load_trainable(start)
    load_optimizer(optimizer, start)
    return state, None


def _cached_features(cfg: ExperimentConfig, schedule: CacheSchedule | None, paths: list[str]):
    """The batch's cached inversion features (None: compute online)."""
    cached = schedule.lookup(paths) if schedule is not None else None
    if cached is not None and cfg.cache.cmid_latents == "augmented":
        cached = cached._replace(latents=None)  # CMID encodes the augmented view itself
    return cached


def _cache_schedule(
    cfg: ExperimentConfig, model, samples, out: Path, per_rank: int, state: RunState, progress: bool
) -> CacheSchedule | None:
    """What the trainer follows to build, refresh and read the feature cache (None: the inversion runs online)."""
    if cfg.cache.policy == "online":
        return None
    return CacheSchedule(
        cfg.cache.policy,
        cfg.cache.refresh_every,
        model,
        samples,
        cfg.cache.dir or out / "feature_cache",
        image_size=cfg.data.image_size,  # None: two views of each file (view_transform)
        batch_size=per_rank,
        key=state.cache_key,
        progress=progress,
    )


def _show_progress(bar: tqdm, running: dict[str, float], vals: dict[str, float]) -> None:
    """One step on the bar, with the running (EMA 0.9) losses."""
    for k, v in vals.items():
        running[k] = 0.9 * running.get(k, v) + 0.1 * v
    bar.update(1)
    bar.set_postfix({k: f"{running[k]:.3f}" for k in ("total", "cr", "dcl", "pot") if k in running})


# ---------------------------------------------------------------------------------------------- helpers
def _accelerator(cfg: ExperimentConfig) -> Accelerator:
    # cpu=True when there is no GPU: accelerate only sets up gloo DDP for torchrun's processes when told so.
    try:
        return Accelerator(
            mixed_precision=cfg.train.mixed_precision,
            cpu=not torch.cuda.is_available(),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
    except ValueError as e:  # accelerate keeps one state per process: a second precision is refused
        raise ConfigError(
            f"train.mixed_precision={cfg.train.mixed_precision!r}: {e} (accelerate allows one mixed precision per "
            "process; pass train(..., accelerator=...) built once, or train in a new process)"
        ) from e


def _check_same_config(cfg: ExperimentConfig, out: Path) -> None:
    """A run folder holding another experiment is refused (its config.yaml is left as it was)."""
    path = out / "config.yaml"
    if not path.is_file():
        return
    try:
        old = flatten_dict(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as e:
        raise ConfigError(
            f"{path}: cannot read the run's config ({e}); move the folder or pass --resume never"
        ) from None
    new = flatten_dict(to_dict(cfg))
    diff = sorted(k for k in set(old) | set(new) if k not in _EXTENDABLE and old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
        raise ConfigError(
            f"{out} holds a run with another configuration ({shown}{', ...' if len(diff) > 5 else ''}); "
            "use another train.output_dir, or --resume never to start over in this folder"
        )


def _starting_point(out: Path, resume: str, total_steps: int) -> tuple[Path | None, str]:
    """The checkpoint to start from and the line that says so (empty when starting fresh)."""
    if resume == "never":
        return None, ""
    if resume != "auto":
        p = Path(resume)
        if not (p / "trainer_state.json").is_file() and not (p / FINAL_STATE).is_file():
            raise FileNotFoundError(f"--resume {p}: not a training checkpoint (no trainer_state.json)")
        step = read_state(p)["global_step"]
        if step >= total_steps and p.resolve() != (out / "final").resolve():
            # nothing would be trained, so no out/final would be written: refuse rather than report one
            raise ValueError(
                f"--resume {p}: the checkpoint is at step {step}, not before the {total_steps} steps asked for; "
                "nothing to train (raise train.max_steps / train.epochs to continue it)"
            )
        return p, f"resuming from {p} (step {step})"
    start, skipped = find_resumable(out)
    notes = [f"checkpoint {p} is unreadable ({why}); falling back to the previous one" for p, why in skipped]
    if start is None:
        return None, "\n".join(notes)
    step = read_state(start)["global_step"]
    if start.name == "final":
        if step >= total_steps:
            notes.append(
                f"{out} holds a finished run (step {step} of {total_steps}): nothing to do; ask for more "
                "steps (train.epochs / train.max_steps) to extend it, or pass --resume never to start over"
            )
        else:
            notes.append(
                f"extending the finished run in {out} from step {step} to {total_steps} (resuming from {start})"
            )
    else:
        notes.append(f"resuming from {start} (step {step})")
    return start, "\n".join(notes)


def _check_resume_method(start: Path, method: str) -> None:
    """A checkpoint of another method is refused by name (before, a finished one was returned unchecked)."""
    from ..model.detector import CONFIG_NAME

    try:
        saved = json.loads((start / CONFIG_NAME).read_text())["config"].get("method", "synerdetect")
    except (OSError, ValueError, KeyError, AttributeError):
        return  # no readable config: load_trainable reports the checkpoint's problem
    if saved != method:
        raise ConfigError(f"--resume {start}: a {saved!r} checkpoint; this run trains method {method!r}")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics.jsonl records past ``step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue  # a torn last line from a kill
    atomic_write_text(path, "".join(x + "\n" for x in keep))


def _usable(labels: torch.Tensor, world: int, device: torch.device) -> bool:
    usable = len(labels) >= 2 and len(set(labels.tolist())) == 2
    if world > 1:  # every rank skips together, or DDP's all-reduce would wait forever
        flag = torch.tensor([int(usable)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        usable = bool(flag.item())
    return usable


def _optimizer_step(
    cfg, acc, wrapped, model, optimizer, images, labels, gen, cached, step: int, total_steps: int
) -> dict[str, torch.Tensor]:
    with acc.autocast():
        losses = wrapped(images, labels, generator=gen, cached=cached)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(cfg, step, total_steps)
    optimizer.zero_grad(set_to_none=True)
    acc.backward(losses["total"])
    if cfg.optim.grad_clip:
        acc.clip_grad_norm_(model.trainable_parameters(), cfg.optim.grad_clip)
    optimizer.step()
    return losses


def _log_metrics(out: Path, step: int, epoch: int, vals: dict[str, float], optimizer, model, t0: float) -> None:
    rec = {
        "step": step,
        "epoch": epoch,
        **{k: round(v, 6) for k, v in vals.items()},
        "lr": optimizer.param_groups[0]["lr"],
        "elapsed_s": round(time.time() - t0, 2),
        **_weight_norms(model),
    }
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(rec) + "\n")
    log.info("step %d %s", step, json.dumps(vals))


def _weight_norms(model) -> dict[str, float]:
    """Norms of the parts that start at zero (the tuner's output projection, the LoRA B matrices): whether they
    learn at all under the configured optimiser."""
    tuner, lora_b = 0.0, 0.0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "lora_B" in name:
            lora_b += float(p.detach().float().pow(2).sum())
        elif name.startswith("tuner.") and "out_proj" in name:
            tuner += float(p.detach().float().pow(2).sum())
    return {"norm_tuner_out": round(tuner**0.5, 8), "norm_lora_b": round(lora_b**0.5, 8)}


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
        sh._synerdetect_console = True  # type: ignore[attr-defined]
        root.addHandler(sh)
    root.propagate = False


def _replica_checksums(model, world: int) -> list[str]:
    """Fingerprint of each rank's trainable weights (all ranks must hold the same model after DDP steps)."""
    mine = model.trainable_fingerprint()[:16]
    if world == 1:
        return [mine]
    parts: list = [None] * world
    torch.distributed.all_gather_object(parts, mine)
    return parts


def _checkpoint(acc, model, optimizer, state: RunState, root: Path, keep: int) -> None:
    acc.wait_for_everyone()
    if acc.is_main_process:
        # The unwrapped optimiser holds the same state tensors as the prepared one.
        opt = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        path = save_checkpoint(model, opt, state.to_dict(), root, keep)
        log.info("checkpoint %s", path)
    acc.wait_for_everyone()


def _validate(cfg: ExperimentConfig, model, samples, out: Path, step: int, progress: bool) -> dict[str, Any]:
    res = evaluate(
        model,
        samples,
        None,
        image_size=cfg.data.image_size,
        batch_size=max(2, cfg.train.batch_size),
        progress=progress,
    )
    mean = res["summary"]["mean"]
    rec = {"step": step, "val_acc": mean["acc"], "val_ap": mean["ap"], "n": res["summary"]["n_images"]}
    if is_main_process():
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        log.info("validation %s", json.dumps(rec))
    model.train()
    return rec
