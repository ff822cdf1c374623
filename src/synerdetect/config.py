"""Typed configuration: dataclasses loadable from YAML, with ``key=value`` overrides.

One experiment = ``ExperimentConfig`` (model + loss + optim + train + data + cache).
Presets, and loading an experiment from a preset + YAML + overrides, live in :mod:`synerdetect.presets`
(this module imports nothing from the package).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, cast, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, mistyped or inconsistent."""


@dataclass
class ModelConfig:
    # --- base models -------------------------------------------------------
    # A transformers CLIP folder or hub id, or "tiny" (random weights from config).
    clip: str = "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"
    # A diffusers Stable Diffusion pipeline folder or hub id, or "tiny".
    sd: str = "stabilityai/stable-diffusion-2-1-base"
    tiny_seed: int = 0  # seed for the random weights of "tiny" base models
    clip_size: int = 224  # E_v / E_d input resolution
    sd_size: int = 512  # VAE input resolution (latent = sd_size / 8)
    # --- LoRA on the two vision encoders E_v and E_d ------------------------
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])
    # Fusion-A/B/C also train SynerDetect's LoRA on two CLIP towers (E_v, E_d): Table 5a with equal trainable
    # capacity (docs/method.md); off = the frozen-feature fusions
    reference_lora: bool = False
    # --- discriminative prompt generation (Eq. 1) ---------------------------
    n_ctx: int = 4  # learnable context tokens p_c
    ctx_init_std: float = 0.02
    class_names: list[str] = field(default_factory=lambda: ["real", "fake"])
    tuner_heads: int = 8
    tuner_global: bool = True  # z_v as key/value of the tuner (Table 5c "Global")
    tuner_local: bool = True  # CConv tokens as key/value (Table 5c "Local")
    # The tuner's output projection starts at PyTorch's default init times this factor. 0 = zero init (p̂_c = p_c
    # at step 0, but then the attention, z_v projection and CConv get no gradient at step 0 and barely move under
    # SGD 1e-4); the default keeps the per-image term small against p_c while every tuner part learns from step 0.
    tuner_out_init: float = 0.004
    cconv_filters: int = 3  # Bayar constrained filters
    cconv_kernel: int = 5
    cconv_channels: int = 32  # width of the conv stem after the Bayar layer
    cconv_grid: int = 4  # CConv feature map pooled to grid x grid tokens
    # --- CMID (Eq. 2) and inversion ----------------------------------------
    cmid_label_prompt: bool = True  # CMID conditions on the sample's own label prompt (training only)
    cmid_t_min: int = 0
    cmid_t_max: int = 999
    inversion_steps: int = 100
    inversion_size: int | None = None  # optional lower SD resolution for the inversion (None = sd_size)
    noise_encoder_input: str = "vae_decode"  # "vae_decode" | "adapter"
    # --- inference (Eq. 10) -------------------------------------------------
    tau: float = 0.07  # temperature of Eq. 7 and of the probability softmax
    # --- runtime ------------------------------------------------------------
    dtype: str = "float32"  # compute dtype of the frozen models: float32 | bfloat16 | float16
    gradient_checkpointing: bool = False
    channels_last: bool = True  # UNet/VAE in channels_last on CUDA (faster convolutions)
    compile_unet: bool = False  # torch.compile the UNet (inversion and CMID)
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs; fixed shapes) | max-autotune


@dataclass
class LossConfig:
    alpha: float = 0.5  # Eq. 8 weight of L_POT
    lam: float = 0.4  # Eq. 9 weight of L_CR
    gmm_components: int = 2  # K
    gmm_covariance: str = "diag"  # "diag" | "full"
    gmm_iters: int = 10
    sinkhorn_eps: float = 0.05  # eta of Eq. 5
    sinkhorn_iters: int = 200
    # Eq. 6's sample term: "literal" (as written, the paper preset) | "routed" (recommended; docs/method.md)
    pot_sample_term: str = "literal"
    # Eq. 7 negatives also include the image's own other-class prompt (recommended; docs/method.md);
    # false = literal Eq. 7 (the paper preset).
    dcl_class_negative: bool = False
    # Under DDP, Eq. 7's negatives and the GMM see the whole global batch (gathered), not each process's share.
    gather_across_processes: bool = True
    use_cmid: bool = True  # Table 5b "w/o CMID"
    use_ot_dcl: bool = True  # Table 5b "w/o OT-DCL": replaced by cross-entropy on Eq. 10 scores
    use_pot: bool = True  # Table 5b "w/o POT"


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float | None = None
    schedule: str = "constant"  # constant (paper) | cosine (decays to 0 over the run)
    warmup_steps: int = 0


@dataclass
class TrainConfig:
    batch_size: int = 64  # global batch (split across processes)
    epochs: int = 6
    max_steps: int | None = None  # stop after this many optimiser steps (overrides epochs)
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate)
    seed: int = 0
    num_workers: int = 2
    log_every: int = 10
    val_every: int | None = None  # steps between validations (None: end of each epoch)
    checkpoint_every: int = 200  # steps between resumable checkpoints
    keep_checkpoints: int = 2
    output_dir: str = "runs/synerdetect"
    # K training images (half real, half fake) copied into final/replay/ for `synerdetect adapt
    # --replay-from-checkpoint` (engine/replay.py: images, not features; at most 64 MiB); 0 = none
    replay_memory: int = 0


@dataclass
class DataConfig:
    train: str | None = None  # dataset root or manifest
    train_layout: str = "auto"
    train_split: str | None = "train"
    train_generators: list[str] | None = None  # restrict training to these generators/classes
    val: str | None = None
    val_layout: str = "auto"
    val_split: str | None = None
    test: str | None = None
    test_layout: str = "auto"
    test_split: str | None = None
    image_size: int | None = None  # loader output size (None: max(clip_size, sd_size))
    # E_v / CConv view: "crop" (a clip_size crop of the image's own pixels) | "resize" (shorter side resized to
    # clip_size first). docs/method.md measures both.
    clip_view: str = "crop"
    # Evaluation view of E_v: "center" (one clip_size crop) | "tiles" (clip_size tiles over the whole image at native
    # resolution, data/tiles.py: >= tile_overlap overlap, at most max_tiles; their perceptual logits aggregated by
    # tile_aggregate = mean | max | topk (mean of the tile_topk highest) before Eq. 10). docs/method.md.
    eval_view: str = "center"
    tile_overlap: float = 0.25
    max_tiles: int = 36
    tile_aggregate: str = "topk"
    tile_topk: int = 3
    blur_prob: float = 0.1
    blur_sigma: list[float] = field(default_factory=lambda: [0.0, 3.0])
    jpeg_prob: float = 0.1
    jpeg_quality: list[int] = field(default_factory=lambda: [30, 100])
    flip: bool = True


@dataclass
class CacheConfig:
    dir: str | None = None  # feature cache folder (None: no cache)
    policy: str = "online"  # online | cached-fixed | cached-refresh
    refresh_every: int = 1  # epochs between refreshes for cached-refresh
    # CMID's target latent on a cache hit: "cached" (the eval view's latent from the cache: fastest) or
    # "augmented" (VAE-encode the augmented batch each step, so CMID reconstructs the view z_v describes).
    cmid_latents: str = "cached"


@dataclass
class ExperimentConfig:
    preset: str = "paper"
    # The detection method: "synerdetect" or one of the paper's reference methods (Table 5a, Figure 3). Checked
    # against the registry in synerdetect.methods when the model is built (this module imports no package module).
    method: str = "synerdetect"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


# ---------------------------------------------------------------------------
# generic (de)serialisation
# ---------------------------------------------------------------------------


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = get_origin(tp)
    args = get_args(tp)
    if value is None:
        if tp is type(None) or (args and type(None) in args):
            return None
        raise ConfigError(f"{where}: null is not allowed (expected {tp})")
    if origin is not None and type(None) in args:  # Optional[X] / X | None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"false", "0", "no", "off"}:
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) dict, rejecting unknown keys."""
    data = dict(data or {})
    hints = get_type_hints(cls)
    kwargs = {}
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in {where or cls.__name__}; known: {sorted(known)}")
    for f in fields(cls):
        if f.name not in data:
            continue
        key = f"{where}.{f.name}" if where else f.name
        tp = hints[f.name]
        if is_dataclass(tp):
            kwargs[f.name] = from_dict(cast(type, tp), data[f.name], key)
        else:
            kwargs[f.name] = _coerce(data[f.name], tp, key)
    return cls(**kwargs)


def merge(base: Any, patch: dict[str, Any], where: str = "") -> Any:
    """Return a copy of dataclass ``base`` with the nested ``patch`` applied."""
    current = asdict(base)

    def deep(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = deep(out[k], v)
            else:
                out[k] = v
        return out

    return from_dict(type(base), deep(current, patch), where)


def nest_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"model.n_ctx": 8, "loss": {"alpha": 0.3}}`` -> ``{"model": {"n_ctx": 8}, "loss": {"alpha": 0.3}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=2", "loss.alpha=0.3"]`` -> nested dict (values parsed as YAML scalars)."""
    flat: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=2)")
        key, raw = item.split("=", 1)
        flat[key] = yaml.safe_load(raw) if raw != "" else None
    return nest_dotted(flat)


def to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)


def dump_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_hash(obj: Any) -> str:
    """Stable short hash of a config-like object (dataclass or dict)."""
    import hashlib

    payload = json.dumps(to_dict(obj) if is_dataclass(obj) else obj, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def validate_experiment(cfg: ExperimentConfig) -> None:
    m, loss, t = cfg.model, cfg.loss, cfg.train
    checks = [
        (m.clip_size > 0 and m.sd_size > 0, "model.clip_size and model.sd_size must be positive"),
        (m.sd_size % 8 == 0, f"model.sd_size={m.sd_size} must be a multiple of 8 (VAE downsampling)"),
        (m.inversion_size is None or m.inversion_size % 8 == 0, "model.inversion_size must be a multiple of 8"),
        (m.n_ctx >= 1, "model.n_ctx must be >= 1"),
        (len(m.class_names) == 2, "model.class_names must hold exactly two names: [real, fake]"),
        (m.inversion_steps >= 1, "model.inversion_steps must be >= 1"),
        (0 <= m.cmid_t_min <= m.cmid_t_max, "model.cmid_t_min <= model.cmid_t_max required"),
        (m.noise_encoder_input in {"vae_decode", "adapter"}, "model.noise_encoder_input must be vae_decode or adapter"),
        (m.dtype in {"float32", "bfloat16", "float16"}, "model.dtype must be float32, bfloat16 or float16"),
        (m.tau > 0, "model.tau must be > 0"),
        (
            m.compile_mode in {"default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"},
            "model.compile_mode must be default, reduce-overhead, max-autotune or max-autotune-no-cudagraphs",
        ),
        (m.lora_rank >= 1, "model.lora_rank must be >= 1"),
        (0.0 <= loss.lam <= 1.0, "loss.lam must be in [0, 1]"),
        (loss.alpha >= 0, "loss.alpha must be >= 0"),
        (loss.gmm_components >= 1, "loss.gmm_components must be >= 1"),
        (loss.gmm_covariance in {"diag", "full"}, "loss.gmm_covariance must be diag or full"),
        (loss.pot_sample_term in {"routed", "literal"}, "loss.pot_sample_term must be routed or literal"),
        (loss.sinkhorn_eps > 0, "loss.sinkhorn_eps must be > 0"),
        (
            t.batch_size >= 2 and t.batch_size % 2 == 0,
            "train.batch_size must be even and >= 2 (class-balanced batches)",
        ),
        (
            t.max_steps is None or t.max_steps >= 1,
            f"train.max_steps={t.max_steps}: a run must make at least one step (leave it unset to train for epochs)",
        ),
        (t.mixed_precision in {"no", "bf16", "fp16"}, "train.mixed_precision must be no, bf16 or fp16"),
        (cfg.optim.name in {"sgd", "adamw"}, "optim.name must be sgd or adamw"),
        (cfg.optim.schedule in {"constant", "cosine"}, "optim.schedule must be constant or cosine"),
        (cfg.cache.cmid_latents in {"cached", "augmented"}, "cache.cmid_latents must be cached or augmented"),
        (cfg.data.clip_view in {"crop", "resize"}, "data.clip_view must be crop or resize"),
        (cfg.data.eval_view in {"center", "tiles"}, "data.eval_view must be center or tiles"),
        (0.25 <= cfg.data.tile_overlap < 1, "data.tile_overlap must be in [0.25, 1)"),
        (cfg.data.max_tiles >= 1, "data.max_tiles must be >= 1"),
        (cfg.data.tile_aggregate in {"mean", "max", "topk"}, "data.tile_aggregate must be mean, max or topk"),
        (cfg.data.tile_topk >= 1, "data.tile_topk must be >= 1"),
        (
            cfg.cache.policy in {"online", "cached-fixed", "cached-refresh"},
            "cache.policy must be online, cached-fixed or cached-refresh",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    if loss.use_ot_dcl and loss.use_pot and loss.gmm_components * 2 > t.batch_size:
        raise ConfigError(
            f"loss.gmm_components={loss.gmm_components} needs a batch of at least "
            f"{2 * loss.gmm_components}; train.batch_size={t.batch_size}"
        )
