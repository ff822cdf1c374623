"""Benchmark: component costs, end-to-end throughput and the ratios the design is judged by.

``run_bench("tiny", "cpu")`` (or ``synerdetect bench``) prints one JSON line per measurement and returns them as a
list of dicts. Every line holds ``name, value, unit, device, preset, steps, resolution, dtype, batch_size, torch,
date`` (plus ``note`` where useful). Timings are the median of ``repeats`` runs after ``warmup`` runs, with
``torch.cuda.synchronize`` around each on GPU.

Measurements (``s/img`` = seconds per image at the bench batch size):

- bare components: ``component_clip_vision`` (E_v forward incl. CLIP normalisation), ``component_clip_vision_noise``
  (E_d forward), ``component_text_tower`` (tuner + text tower on the 2·B prompts), ``component_unet_step`` (one UNet
  forward at the inversion resolution), ``component_vae_encode`` (at ``sd_size``), ``component_vae_decode``
  (noise map -> E_d pixels);
- ``roofline_predict`` = 2 CLIP vision forwards + text tower + VAE encode + ``steps`` UNet steps + VAE decode;
  ``predict_s_per_img`` / ``predict_throughput`` (end to end, ``SynerDetect.predict``);
  ``predict_vs_roofline`` = roofline / measured (1.0 = no overhead beyond the components; target >= 0.9);
- ``inversion_throughput`` (``steps`` DDIM inversion steps);
- the whole-image view at 1024 px (bench/tiles.py): ``tiles_per_image``, ``predict_center_1024_s_per_img``,
  ``predict_tiles_1024_s_per_img``, ``tiles_vs_center_predict`` (the per-image cost ratio) and
  ``tiles_transform_vs_center``;
- ``train_step_throughput`` (``compute_losses`` + backward + optimiser step; batch 64 on GPU for ``paper``) and on
  GPU ``train_step_peak_memory``;
- ``cache_build_s_per_img`` (latents + inverted + E_d input); ``cached_epoch_speedup`` = time of one training
  epoch over a small dataset computing the inversion online / the same epoch reading latents, inverted latents and
  the float16 E_d input (``noise_pixels``, so no VAE decode) from a :class:`FeatureCache` built in this run (data
  loading included in both); ``cached_epoch_speedup_latents_only`` the same with a cache built with
  ``store_noise_pixels=False`` (the VAE decode of the inverted latent runs every step: the previous cache);
  ``cached_eval_epoch_speedup[_latents_only]`` the same for an evaluation epoch (``predict``). For the tiny preset
  all are also measured with ``long_steps`` (100, the paper's) inversion steps on the tiny architecture
  (``cached_epoch_speedup_100steps``, ``cached_epoch_speedup_100steps_latents_only``, ...): at 10 steps the
  inversion is a smaller share of the cost;
- ``sharded_build_speedup``: wall time of ``build_cache`` over ``shard_images`` images with 1 process x 1 thread
  divided by 2 processes x 1 thread (``RANK``/``WORLD_SIZE`` subprocesses, CPU, tiny preset; the processes start
  the build together after loading, so model loading is not counted; rank 0's time includes waiting for the other
  rank and merging the index). Target >= 1.7 on 2 idle cores.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .tiles import measure_tiles

DEFAULTS = {
    # preset: (bench batch, train batch, epoch images, shard images, repeats)
    "tiny": dict(batch_size=8, train_batch_size=8, epoch_images=32, shard_images=96, repeats=7),
    "paper": dict(batch_size=16, train_batch_size=64, epoch_images=64, shard_images=96, repeats=3),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    # Best of N: on a shared machine interference only ever adds time, so the minimum is the stable estimate
    # (used alike for the components and the end-to-end runs that the ratios compare).
    return float(min(times))


def _write_images(folder: Path, n: int, size: int, seed: int) -> list[str]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        # Smooth random fields plus noise: cheap, distinct content per image.
        base = rng.integers(0, 256, (max(2, size // 8), max(2, size // 8), 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3))
        p = folder / f"{i:05d}.png"
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


def _optimizer(model):
    from ..engine.train import build_optimizer

    return build_optimizer(model.trainable_parameters(), model.cfg.optim)


def _balanced_labels(n: int, device) -> torch.Tensor:
    return torch.tensor([i % 2 for i in range(n)], device=device)


# ----------------------------------------------------------------------------- sharded build (subprocesses)
def shard_worker(argv: list[str]) -> int:
    """``python -m synerdetect.bench.shard_worker SPEC_JSON``: one rank of the sharded-build measurement."""
    spec = json.loads(argv[0])
    torch.set_num_threads(1)
    from ..cache import build_cache
    from ..model.detector import SynerDetect

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    model = SynerDetect.from_preset(spec["preset"], **spec["overrides"]).eval()
    # Start together: a barrier on the shared folder, so that model loading is not timed.
    sync = Path(spec["sync_dir"])
    (sync / f"ready-{rank}").write_text("1")
    t0 = time.monotonic()
    while len(list(sync.glob("ready-*"))) < world:
        if time.monotonic() - t0 > 600:
            raise RuntimeError("sharded bench: the other ranks never became ready")
        time.sleep(0.005)
    stats = build_cache(
        model,
        spec["paths"],
        spec["cache_root"],
        image_size=None,  # the model's own two views of each file
        batch_size=spec["batch_size"],
        rank=rank,
        world_size=world,
        progress=False,
        num_threads=1,
        poll_interval=0.005,
    )
    Path(spec["out"]).with_suffix(f".rank{rank}.json").write_text(json.dumps(stats, default=str))
    return 0


def _sharded_build_seconds(
    paths: list[str],
    work: Path,
    nprocs: int,
    *,
    preset: str,
    overrides: dict,
    batch_size: int,
    timeout: float = 900.0,
) -> float:
    work.mkdir(parents=True, exist_ok=True)
    sync = work / f"sync-{nprocs}"
    sync.mkdir()
    spec: dict[str, Any] = {
        "preset": preset,
        "overrides": overrides,
        "paths": paths,
        "cache_root": str(work / f"cache-{nprocs}"),
        "batch_size": batch_size,
        "sync_dir": str(sync),
        "out": str(work / f"stats-{nprocs}.json"),
    }
    procs = []
    for r in range(nprocs):
        env = dict(
            os.environ,
            RANK=str(r),
            WORLD_SIZE=str(nprocs),
            LOCAL_RANK=str(r),
            LOCAL_WORLD_SIZE=str(nprocs),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            TOKENIZERS_PARALLELISM="false",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "synerdetect.bench.shard_worker", json.dumps(spec)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise RuntimeError(f"sharded build bench ({nprocs} processes) timed out after {timeout} s") from None
        outputs.append(out)
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"sharded build bench worker failed (rc {p.returncode}):\n{out[-3000:]}")
    st = json.loads(Path(spec["out"]).with_suffix(".rank0.json").read_text())
    if st["n_indexed"] != len(paths):
        raise RuntimeError(f"sharded build indexed {st['n_indexed']} of {len(paths)} images")
    return float(st["wall_seconds"])


# ----------------------------------------------------------------------------- epochs
def _epoch_loader(model, paths: list[str], batch_size: int):
    from torch.utils.data import DataLoader

    from ..data.datasets import ImageDataset, collate
    from ..data.layouts import Sample
    from ..model.detector import view_transform

    samples = [Sample(p, i % 2, "bench", None) for i, p in enumerate(paths)]
    ds = ImageDataset(samples, view_transform(model.cfg, train=False))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)


def _copy_without_noise_pixels(model, src, root: Path, image_size: int | None, batch_size: int) -> None:
    """The same latents / inverted latents under the ``store_noise_pixels=False`` key (what ``build_cache(...,
    store_noise_pixels=False)`` computes), copied instead of recomputed to keep the bench short."""
    from ..cache import FeatureCache, feature_key

    key, info = feature_key(model, image_size=image_size, store_noise_pixels=False)
    dst = FeatureCache(root, key, info=info)
    hashes = src.hashes()
    for i in range(0, len(hashes), batch_size):
        hs = hashes[i : i + batch_size]
        got = src.get(hs)
        if any(g is None for g in got):
            raise RuntimeError("bench: the cache just built has unreadable entries")
        dst.put_many(
            hs,
            torch.stack([g.latents for g in got]),
            torch.stack([g.inverted for g in got]),
            paths=[src.entries[h].path for h in hs],
        )
    dst.merge()


def _epoch_times(
    model,
    paths: list[str],
    cache_root: Path,
    *,
    batch_size: int,
    device: torch.device,
    latents_only: bool = True,
) -> dict[str, float]:
    """Build the cache (timed, with the E_d inputs), then one training epoch and one evaluation epoch, online
    and from the cache; with ``latents_only`` also the cached epochs that read only latents + inverted latents
    and decode the E_d input every step (the previous cache), from a second cache built without noise pixels.
    The files are read as training and prediction read them (``data.image_size``: None, two views)."""
    from ..cache import CachedFeatures, build_cache

    image_size = model.cfg.data.image_size

    t0 = time.perf_counter()
    st = build_cache(
        model,
        paths,
        cache_root / "full",
        image_size=image_size,
        batch_size=batch_size,
        progress=False,
        rank=0,
        world_size=1,
        store_noise_pixels=True,
    )
    build_s = time.perf_counter() - t0
    if st["n_computed"] != len(paths):
        raise RuntimeError(f"bench cache build computed {st['n_computed']} of {len(paths)}")
    # keys of the model now (cached-fixed semantics)
    caches = {"cached": CachedFeatures(cache_root / "full", model, image_size, store_noise_pixels=True)}
    if latents_only:
        _copy_without_noise_pixels(model, caches["cached"].cache, cache_root / "latents", image_size, batch_size)
        caches["cached_latents_only"] = CachedFeatures(
            cache_root / "latents", model, image_size, store_noise_pixels=False
        )
    loader = _epoch_loader(model, paths, batch_size)
    opt = _optimizer(model)

    def lookup(which: str, b):
        hit = caches[which].lookup(b["path"])
        if hit is None:
            raise RuntimeError("bench: cache miss in the cached epoch")
        if (hit.noise_pixels is None) != (which == "cached_latents_only") and model.adapter is None:
            raise RuntimeError(f"bench: unexpected noise_pixels in the {which} epoch")
        return hit

    def train_epoch(which: str | None) -> None:
        model.train()
        for b in loader:
            x, y = b["image"].to(device), b["label"].to(device)
            cached = lookup(which, b) if which is not None else None
            loss = model.compute_losses(x, y, cached=cached)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def eval_epoch(which: str | None) -> None:
        for b in loader:
            x = b["image"].to(device)
            model.predict(x, cached=lookup(which, b) if which is not None else None)

    out = {"build": build_s}
    for name, fn in (("train", train_epoch), ("eval", eval_epoch)):
        for which in (None, *caches):
            _sync(device)
            t = time.perf_counter()
            fn(which)
            _sync(device)
            out[f"{name}_{which or 'online'}"] = time.perf_counter() - t
    model.eval()
    return out


# ----------------------------------------------------------------------------- main entry
@dataclass
class BenchConfig:
    """What one ``run_bench`` measures. ``steps`` overrides ``model.inversion_steps``; ``overrides`` are further
    dotted config keys; ``long_steps`` (tiny preset only; None to skip) adds the cached-epoch speedups at that many
    steps; ``sharded`` adds the 2-process CPU build measurement (always on the tiny preset); ``threads`` sets
    ``torch.set_num_threads`` for the in-process measurements (restored afterwards)."""

    preset: str = "tiny"
    device: str = "cpu"
    batch_size: int | None = None
    steps: int | None = None
    compile: bool = False
    out: str | os.PathLike | None = None
    repeats: int | None = None
    warmup: int = 1
    train_batch_size: int | None = None
    epoch_images: int | None = None
    long_steps: int | None = 100
    shard_images: int | None = None
    sharded: bool = True
    overrides: dict | None = None
    print_lines: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        from ..config import ConfigError

        if self.preset not in DEFAULTS:
            raise ConfigError(f"bench preset must be one of {sorted(DEFAULTS)}, got {self.preset!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("bench --device cuda: no CUDA device is available")
        d = DEFAULTS[self.preset]
        self.batch_size_ = int(self.batch_size or d["batch_size"])
        tbs = int(
            self.train_batch_size
            or (self.batch_size if self.batch_size and self.preset == "tiny" else d["train_batch_size"])
        )
        self.train_batch_size_ = tbs + tbs % 2  # balanced training batches
        self.repeats_ = int(self.repeats or d["repeats"])
        self.epoch_images_ = int(self.epoch_images or d["epoch_images"])
        self.shard_images_ = int(self.shard_images or d["shard_images"])

    def model_overrides(self) -> dict[str, Any]:
        ov: dict[str, Any] = {}
        if self.preset == "paper":
            ov.update({"model.clip": "random:vit-l-14", "model.sd": "random:sd-2.1-base"})
        if self.device == "cuda":
            ov["model.dtype"] = "bfloat16"
        if self.steps is not None:
            ov["model.inversion_steps"] = int(self.steps)
        ov.update(self.overrides or {})
        return ov


class Recorder:
    """Collects, prints and writes the JSON lines; every line carries the run's common fields."""

    def __init__(self, bc: BenchConfig, model):
        mc = model.mcfg
        self.bc = bc
        self.lines: list[dict[str, Any]] = []
        self.common = {
            "device": bc.device,
            "preset": bc.preset,
            "steps": mc.inversion_steps,
            "resolution": f"clip{mc.clip_size}/sd{mc.sd_size}/inv{mc.inversion_size or mc.sd_size}",
            "dtype": mc.dtype,
            "batch_size": bc.batch_size_,
        }
        self.date = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        if bc.out:
            Path(bc.out).parent.mkdir(parents=True, exist_ok=True)
        self.file = open(bc.out, "w") if bc.out else None

    def __call__(self, name: str, value: float, unit: str, **extra) -> None:
        line = {
            "name": name,
            "value": float(value),
            "unit": unit,
            **{k: extra.pop(k, v) for k, v in self.common.items()},
            "compile": bool(self.bc.compile),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "date": self.date,
            **extra,
        }
        self.lines.append(line)
        s = json.dumps(line)
        if self.bc.print_lines:
            print(s, flush=True)
        if self.file is not None:
            self.file.write(s + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def run_bench(preset: str = "tiny", device: str = "cpu", **options: Any) -> list[dict]:
    """Run every measurement once (see the module docstring); print and return the JSON lines. ``options`` are
    the fields of :class:`BenchConfig`. ``preset="paper"`` uses random weights of the real architectures; on CUDA
    the frozen models run in bf16 and ``compile=True`` wraps the UNet in ``torch.compile``."""
    from ..model.detector import SynerDetect

    bc = BenchConfig(preset=preset, device=device, **options)
    dev = torch.device(device)
    # 1. The model, eager first (compilation, if asked, is applied after the eager numbers: one run gives both).
    model = SynerDetect.from_preset(preset, **bc.model_overrides()).to(dev).eval().enable_fast_path()
    emit = Recorder(bc, model)
    old_threads = torch.get_num_threads()
    if bc.threads:
        torch.set_num_threads(int(bc.threads))
    try:
        image_size = max(model.mcfg.clip_size, model.mcfg.sd_size)
        x = torch.rand(bc.batch_size_, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(dev)
        # 2. Bare components and the roofline they add up to.
        roof = _measure_components(model, x, bc, emit)
        # 3. End to end: predict (eager, then compiled), inversion throughput.
        _measure_predict(model, x, roof, bc, emit)
        # 3b. The whole-image view at 1024 px: tiles against the centre crop (bench/tiles.py).
        measure_tiles(model, bc, emit, lambda fn: _timeit(fn, dev, bc.repeats_, bc.warmup))
        # 4. One training step.
        _measure_train_step(model, image_size, bc, emit)
        with tempfile.TemporaryDirectory(prefix="synerdetect-bench-") as tmp:
            # 5. Epochs online vs from the feature cache (and at the paper's step count on tiny).
            _measure_cached_epochs(model, image_size, Path(tmp), bc, emit)
            # 6. The 2-process sharded cache build (CPU, tiny).
            if bc.sharded:
                _measure_sharded_build(Path(tmp), bc, emit)
    finally:
        torch.set_num_threads(old_threads)
        emit.close()
    return emit.lines


def _measure_components(model, x: torch.Tensor, bc: BenchConfig, emit: Recorder) -> float:
    """Each component on the bench batch; returns the roofline of one prediction (s/img)."""
    dev, bs, mc = x.device, bc.batch_size_, model.mcfg
    inv_size = mc.inversion_size or mc.sd_size
    T = lambda fn: _timeit(fn, dev, bc.repeats_, bc.warmup)  # noqa: E731
    with torch.no_grad():
        x_clip, z_v, z_t = model.perceptual(x)
        px = ((x_clip - model.clip_mean) / model.clip_std).to(model.compute_dtype)
        gen = model.inversion_inputs(x, z_t)  # the same inputs the model and the cache compute
        ctx = model.sd_context(model.agnostic_prompt(z_t)).to(model.compute_dtype)
        noise_px = model.noise_pixels(gen.inverted)
        lat_inv = gen.inverted.to(model.compute_dtype)  # the inversion's latent shape (at inversion_size)
        t_mid = torch.tensor(500, device=dev)
        comp = {
            "component_clip_vision": T(lambda: model.E_v(px)),
            "component_clip_vision_noise": T(lambda: model.E_d(noise_px)),
            "component_text_tower": T(lambda: model.prompts(z_v, x_clip)),
            "component_unet_step": T(lambda: model.unet(lat_inv, t_mid, encoder_hidden_states=ctx, return_dict=False)),
            "component_vae_encode": T(lambda: model.encode_latents(x)),
            "component_vae_decode": T(lambda: model.noise_pixels(gen.inverted)),
        }
    notes = {
        "component_text_tower": "tuner + text tower on 2B prompts",
        "component_unet_step": f"one UNet forward at {inv_size} px",
        "component_vae_decode": "VAE decode of the noise map + resize to the E_d input",
    }
    for k, v in comp.items():
        emit(k, v / bs, "s/img", **({"note": notes[k]} if k in notes else {}))
    roof = (
        comp["component_clip_vision"]
        + comp["component_clip_vision_noise"]
        + comp["component_text_tower"]
        + comp["component_vae_encode"]
        + mc.inversion_steps * comp["component_unet_step"]
        + comp["component_vae_decode"]
    ) / bs
    emit(
        "roofline_predict_s_per_img",
        roof,
        "s/img",
        note="2 CLIP vision + text tower + VAE encode + steps x UNet + VAE decode",
    )
    return roof


def _measure_predict(model, x: torch.Tensor, roof: float, bc: BenchConfig, emit: Recorder) -> None:
    dev, bs, mc = x.device, bc.batch_size_, model.mcfg
    T = lambda fn: _timeit(fn, dev, bc.repeats_, bc.warmup)  # noqa: E731
    t_pred = T(lambda: model.predict(x)) / bs
    emit("predict_s_per_img", t_pred, "s/img")
    emit("predict_throughput", 1.0 / t_pred, "img/s")
    emit("predict_vs_roofline", roof / t_pred, "ratio", note="target >= 0.9")
    if bc.compile:
        model.mcfg.compile_unet = True
        model.enable_fast_path()
        t_pred_c = T(lambda: model.predict(x)) / bs
        emit("predict_compiled_s_per_img", t_pred_c, "s/img", note=f"torch.compile mode={mc.compile_mode}")
        emit("compiled_predict_vs_eager_roofline", roof / t_pred_c, "ratio", note="target >= 1.3 on a GPU")
    with torch.no_grad():
        x_clip, z_v, z_t = model.perceptual(x)
        lat = model.inversion_inputs(x, z_t).inverted  # a latent of the inversion's shape
        cond = model.agnostic_prompt(z_t)
    t_inv = T(lambda: model.invert(lat, cond)) / bs
    emit("inversion_throughput", 1.0 / t_inv, "img/s", note=f"{mc.inversion_steps}-step DDIM inversion")


def _measure_train_step(model, image_size: int, bc: BenchConfig, emit: Recorder) -> None:
    dev, tbs = next(model.parameters()).device, bc.train_batch_size_
    g = torch.Generator().manual_seed(1)
    xt = torch.rand(tbs, 3, image_size, image_size, generator=g).to(dev)
    yt = _balanced_labels(tbs, dev)
    state = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    opt = _optimizer(model)
    model.train()

    def step() -> None:
        loss = model.compute_losses(xt, yt)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t_step = _timeit(step, dev, bc.repeats_, bc.warmup)
    emit(
        "train_step_throughput",
        tbs / t_step,
        "img/s",
        batch_size=tbs,
        note="compute_losses + backward + optimiser step",
    )
    if dev.type == "cuda":
        emit("train_step_peak_memory", torch.cuda.max_memory_allocated(dev) / 2**30, "GiB", batch_size=tbs)
    # Restore the weights so that the cache key of the next measurements is the model's starting one.
    with torch.no_grad():
        own = dict(model.named_parameters())
        for k, v in state.items():
            own[k].copy_(v)
    model.eval()


def _measure_cached_epochs(model, image_size: int, tmp: Path, bc: BenchConfig, emit: Recorder) -> None:
    from ..model.detector import SynerDetect

    dev, bs, n_epoch, n_steps = (
        next(model.parameters()).device,
        bc.batch_size_,
        bc.epoch_images_,
        model.mcfg.inversion_steps,
    )
    paths = _write_images(tmp / "epoch", n_epoch, image_size, seed=1)
    variants = [(model, n_steps, "")]
    if bc.preset == "tiny" and bc.long_steps and bc.long_steps != n_steps:
        ov = {**bc.model_overrides(), "model.inversion_steps": int(bc.long_steps)}
        variants.append(
            (SynerDetect.from_preset(bc.preset, **ov).to(dev).eval(), int(bc.long_steps), f"_{int(bc.long_steps)}steps")
        )
    for mdl, s, suffix in variants:
        ep = _epoch_times(mdl, paths, tmp / f"cache{suffix}", batch_size=bs, device=dev)
        kw = {"steps": s, "batch_size": bs}
        emit(f"cache_build_s_per_img{suffix}", ep["build"] / n_epoch, "s/img", **kw)
        emit(f"epoch_train_online_s{suffix}", ep["train_online"], "s", images=n_epoch, **kw)
        emit(f"epoch_train_cached_s{suffix}", ep["train_cached"], "s", images=n_epoch, **kw)
        emit(f"epoch_train_cached_latents_only_s{suffix}", ep["train_cached_latents_only"], "s", images=n_epoch, **kw)
        emit(
            f"cached_epoch_speedup{suffix}",
            ep["train_online"] / ep["train_cached"],
            "x",
            images=n_epoch,
            note="training epoch: online inversion / latents+inverted+E_d input (float16) from the cache; target >= 20",
            **kw,
        )
        emit(
            f"cached_epoch_speedup{suffix}_latents_only",
            ep["train_online"] / ep["train_cached_latents_only"],
            "x",
            images=n_epoch,
            note="training epoch: online / latents+inverted from the cache, VAE decode "
            "every step (cache without noise_pixels)",
            **kw,
        )
        emit(
            f"cached_eval_epoch_speedup{suffix}",
            ep["eval_online"] / ep["eval_cached"],
            "x",
            images=n_epoch,
            note="evaluation epoch (predict), E_d input from the cache",
            **kw,
        )
        emit(
            f"cached_eval_epoch_speedup{suffix}_latents_only",
            ep["eval_online"] / ep["eval_cached_latents_only"],
            "x",
            images=n_epoch,
            note="evaluation epoch (predict), inverted latents from the cache, VAE decode every batch",
            **kw,
        )


def _measure_sharded_build(tmp: Path, bc: BenchConfig, emit: Recorder) -> None:
    from ..presets import get_preset

    tiny_ov = {"model.inversion_steps": int(bc.steps)} if (bc.steps is not None and bc.preset == "tiny") else {}
    tcfg = get_preset("tiny").model
    t_size = max(tcfg.clip_size, tcfg.sd_size)
    t_steps = tiny_ov.get("model.inversion_steps", tcfg.inversion_steps)
    n_shard = bc.shard_images_
    spaths = _write_images(tmp / "shard", n_shard, t_size, seed=2)
    sbs = min(8, max(1, n_shard // 8))
    t1 = _sharded_build_seconds(spaths, tmp / "sharded", 1, preset="tiny", overrides=tiny_ov, batch_size=sbs)
    t2 = _sharded_build_seconds(spaths, tmp / "sharded", 2, preset="tiny", overrides=tiny_ov, batch_size=sbs)
    kw = dict(
        device="cpu",
        preset="tiny",
        steps=t_steps,
        dtype="float32",
        batch_size=sbs,
        resolution=f"clip{tcfg.clip_size}/sd{tcfg.sd_size}/inv{tcfg.inversion_size or tcfg.sd_size}",
        images=n_shard,
        threads=1,
    )
    emit("sharded_build_seconds_1proc", t1, "s", **kw, note="1 process x 1 thread")
    emit("sharded_build_seconds_2proc", t2, "s", **kw, note="2 processes x 1 thread")
    emit("sharded_build_speedup", t1 / t2, "x", **kw, note="target >= 1.7")
