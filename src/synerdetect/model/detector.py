"""The SynerDetect detector: E_v, E_d (CLIP + LoRA), prompt generation, CMID, conditional inversion,
OT-DCL and the Eq. 10 decision. One module, one contract:

- ``compute_losses(images, labels)`` -> dict of 0-dim tensors (cr, dcl, pot, ot_dcl, total, ...)
- ``predict(images)`` -> dict of per-image tensors (s_real, s_fake, logit, prob_fake, label)

``images`` are float tensors B x 3 x H x W in [0, 1]; the model does its own CLIP and SD preprocessing.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, ExperimentConfig, ModelConfig, from_dict
from ..data.transforms import Views
from ..losses.contrastive import dcl_loss_two_views
from ..losses.ot import pot_loss
from ..utils import atomic_write_json
from .backbones import BaseModels, load_base_models
from .backbones.loaders import TINY, write_tiny_clip, write_tiny_sd
from .inversion import ddim_invert
from .prompt import PromptTextEncoder, VisualAwareTuner

log = logging.getLogger(__name__)

# CLIP's published normalisation (the OpenAI and LAION ViT-L/14 processors use the same values).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONFIG_NAME = "synerdetect_config.json"
WEIGHTS_NAME = "trainable.safetensors"
FORMAT_VERSION = 1
FORMAT = f"synerdetect/{FORMAT_VERSION}"


def dimension_problems(m: ModelConfig, clip_cfg, unet_cfg: dict, vae_cfg: dict, sd_text_width: int) -> list[str]:
    """Every way the configured sizes and the base models' configs do not fit together (empty: they fit)."""
    problems = []
    if clip_cfg.vision_config.image_size != m.clip_size:
        problems.append(
            f"model.clip_size={m.clip_size} but the CLIP vision tower expects {clip_cfg.vision_config.image_size} px"
        )
    if unet_cfg["in_channels"] != vae_cfg["latent_channels"]:
        problems.append(
            f"UNet in_channels={unet_cfg['in_channels']} != VAE latent_channels={vae_cfg['latent_channels']}"
        )
    cad = unet_cfg["cross_attention_dim"]
    if sd_text_width != cad:
        problems.append(f"SD text context width {sd_text_width} != UNet cross_attention_dim {cad}")
    factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    unet_div = 2 ** (len(unet_cfg["block_out_channels"]) - 1)
    for name, size in (("model.sd_size", m.sd_size), ("model.inversion_size", m.inversion_size)):
        if size is not None and (size % factor or (size // factor) % unet_div):
            problems.append(
                f"{name}={size} gives a latent the UNet cannot process "
                f"(VAE factor {factor}, UNet needs multiples of {unet_div})"
            )
    width = clip_cfg.text_config.hidden_size
    if width % m.tuner_heads:
        problems.append(f"text width {width} is not divisible by model.tuner_heads={m.tuner_heads}")
    return problems


class InputError(ValueError):
    """Images or labels are not what the model accepts."""


class CheckpointError(ValueError):
    """A saved detector cannot be loaded: a missing, truncated or foreign file, or weights that do not fit."""


class CachedBatch(NamedTuple):
    """The generative branch of a batch, precomputed (by the feature cache) or ``None`` per field: ``latents`` (VAE
    latent at ``sd_size``, CMID's target), ``inverted`` (the DDIM-inverted latent) and ``noise_pixels`` (E_d's
    input decoded from ``inverted``; float16 in the cache). The one type the trainer, the evaluator and the
    model pass around for "cached features of a batch"."""

    latents: torch.Tensor | None
    inverted: torch.Tensor | None
    noise_pixels: torch.Tensor | None = None


class VisionEncoder(nn.Module):
    """CLIP vision tower + projection into the joint space (E_v or E_d)."""

    def __init__(self, clip_model):
        super().__init__()
        self.vision_model = clip_model.vision_model
        self.visual_projection = clip_model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return F.normalize(self.visual_projection(pooled).float(), dim=-1)


def _add_lora(module: nn.Module, cfg: ModelConfig, name: str) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    lcfg = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # peft accepts a float lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
    )
    try:
        return inject_adapter_in_model(lcfg, module, adapter_name="default")
    except ValueError as e:
        raise ConfigError(f"LoRA on {name}: {e} (model.lora_targets={cfg.lora_targets})") from e


def view_transform(
    cfg: ExperimentConfig, *, train: bool, clip_view: str | None = None, image_size: int | None = None
) -> Any:
    """The data transform a detector of ``cfg`` reads files with (training, evaluation, prediction, the feature
    cache, the service): by default two views (:class:`Views`) of one decode, E_v's a crop of the image's own
    pixels. ``image_size`` (default ``data.image_size``) set: the older single view instead, the image resized to
    ``image_size`` and centre-cropped (random crop in training), which each branch then resamples to its size."""
    from ..data import EvalTransform, TrainTransform, ViewTransform

    d = cfg.data
    size = image_size or d.image_size
    kw: dict[str, Any] = {
        "flip": d.flip,
        "blur_prob": d.blur_prob,
        "blur_sigma": (d.blur_sigma[0], d.blur_sigma[1]),
        "jpeg_prob": d.jpeg_prob,
        "jpeg_quality": (d.jpeg_quality[0], d.jpeg_quality[1]),
    }
    if size:
        return TrainTransform(size, **kw) if train else EvalTransform(size)
    return ViewTransform(cfg.model.clip_size, cfg.model.sd_size, train=train, clip_view=clip_view or d.clip_view, **kw)


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All processes' ``x`` concatenated in rank order; the local slice keeps its gradient (the others are
    constants here: their gradients flow in their own processes)."""
    world = _world_size()
    if world == 1:
        return x
    dist = torch.distributed
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def _scale_grad(loss: torch.Tensor, factor: int) -> torch.Tensor:
    """``loss`` with its value unchanged and its gradient multiplied by ``factor``."""
    return loss if factor == 1 else loss * factor - loss.detach() * (factor - 1)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    # Shorter side to `size`, then centre crop: the CLIP processor's geometry, on tensors.
    h, w = x.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top : top + size, left : left + size].clamp(0, 1)


class SynerDetect(nn.Module):
    #: Whether the DDIM inversion is conditioned on trained weights (the tuner's prompt): the feature cache's key then
    #: fingerprints them. The reference methods invert with SD's empty prompt and set it False.
    conditioned_inversion: ClassVar[bool] = True
    # Declared for the type checker (nn.Module's __getattr__ would type them Tensor | Module).
    E_v: nn.Module
    E_d: nn.Module
    unet: Any
    vae: Any
    clip_mean: torch.Tensor
    clip_std: torch.Tensor
    empty_context: torch.Tensor
    _unet_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None

    def __init__(self, cfg: ExperimentConfig, base: BaseModels):
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        self.mcfg, self.lcfg = m, cfg.loss
        self.clip_source, self.sd_source = base.clip_source, base.sd_source
        self.compute_dtype = _DTYPES[m.dtype]
        clip = base.clip
        self._check_dims(base)

        if m.gradient_checkpointing:
            # Non-reentrant: the frozen towers' inputs need no grad, yet the LoRA weights inside must get one.
            kwargs = {"use_reentrant": False}
            if hasattr(clip, "activation_checkpointing_enable"):  # transformers >= 5 name
                clip.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                clip.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        # E_v and E_d: two copies of the CLIP vision tower, each with its own LoRA.
        self.E_v = _add_lora(VisionEncoder(clip), m, "E_v")
        self.E_d = _add_lora(VisionEncoder(copy.deepcopy(clip)), m, "E_d")
        self.text = PromptTextEncoder(clip, base.tokenizer, m.n_ctx, m.class_names)
        joint = clip.config.projection_dim
        width = clip.config.text_config.hidden_size
        self.tuner = VisualAwareTuner(
            width,
            joint,
            m.n_ctx,
            m.tuner_heads,
            use_global=m.tuner_global,
            use_local=m.tuner_local,
            cconv_filters=m.cconv_filters,
            cconv_kernel=m.cconv_kernel,
            cconv_channels=m.cconv_channels,
            cconv_grid=m.cconv_grid,
            init_std=m.ctx_init_std,
            out_init=m.tuner_out_init,
        )
        self.unet, self.vae = base.unet, base.vae
        sd_width = base.empty_context.shape[-1]
        self.cond_proj = nn.Linear(joint, sd_width)  # 768 -> 1024 (docs/method.md), trained by L_CR only
        self.register_buffer("empty_context", base.empty_context.float(), persistent=False)
        self.adapter = nn.Conv2d(base.vae.config.latent_channels, 3, 1) if m.noise_encoder_input == "adapter" else None
        self.scheduler_config = dict(base.scheduler_config)
        from diffusers import DDIMScheduler

        self.noise_scheduler = DDIMScheduler.from_config(
            {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        )
        self.prediction_type = self.noise_scheduler.config.prediction_type
        if self.prediction_type not in {"epsilon", "v_prediction"}:
            raise ConfigError(f"unsupported SD prediction_type {self.prediction_type!r}")
        self.vae_scale = float(getattr(base.vae.config, "scaling_factor", 0.18215))
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self._unet_fn = None  # set by enable_fast_path() when the UNet is compiled
        self._freeze()
        if m.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    # ------------------------------------------------------------------ set-up
    def _check_dims(self, base: BaseModels) -> None:
        native = int(base.unet.config.sample_size) * 2 ** (len(base.vae.config.block_out_channels) - 1)
        if self.mcfg.sd_size != native:
            log.warning(
                "model.sd_size=%d differs from the UNet's native size %d px (sample_size x VAE factor): "
                "the frozen SD runs off its training resolution",
                self.mcfg.sd_size,
                native,
            )
        problems = dimension_problems(
            self.mcfg, base.clip.config, dict(base.unet.config), dict(base.vae.config), base.empty_context.shape[-1]
        )
        if problems:
            raise ConfigError("model dimensions do not fit together: " + "; ".join(problems))

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        for enc in (self.E_v, self.E_d):
            for n, p in enc.named_parameters():
                if "lora_" in n:
                    p.requires_grad_(True)
        for mod in (self.tuner, self.cond_proj, self.adapter):
            if mod is not None:
                for p in mod.parameters():
                    p.requires_grad_(True)
        cd = self.compute_dtype
        for frozen in (self.unet, self.vae, self.text):
            frozen.to(cd).eval()
        # Frozen weights of the vision towers follow the compute dtype; LoRA stays fp32.
        for enc in (self.E_v, self.E_d):
            for p in enc.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(cd)

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen parts always run in eval mode (no dropout, fixed norms).
        self.unet.eval()
        self.vae.eval()
        self.text.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def load_trainable(self, folder: str | Path) -> None:
        """Copy the trainable weights saved in ``folder`` (a checkpoint or save_pretrained folder) into this model.
        Names, shapes and dtypes must match exactly (``copy_`` would broadcast a wrong shape silently); a
        missing, truncated or garbage file is a :class:`CheckpointError` naming it."""
        from safetensors.torch import load_file

        path = Path(folder) / WEIGHTS_NAME
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (not a SynerDetect checkpoint folder?)")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: empty file")
        try:
            state = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own (Rust) error types
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: not a readable safetensors file ({reason})") from None
        own = dict(self.named_parameters())
        missing = [k for k, p in own.items() if p.requires_grad and k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise CheckpointError(
                f"{path} does not match the model (config changed?): missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise CheckpointError(
                    f"{path}: tensor {k} has shape {tuple(v.shape)}, the model needs {tuple(own[k].shape)}"
                )
            if not v.is_floating_point():
                raise CheckpointError(f"{path}: tensor {k} has dtype {v.dtype}, the model needs a float tensor")
            if not torch.isfinite(v).all():
                raise CheckpointError(f"{path}: tensor {k} holds NaN or Inf")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v.to(own[k].dtype))

    def trainable_fingerprint(self, skip: tuple[str, ...] = ()) -> str:
        """sha256 of the exact bytes (with names, shapes, dtypes) of the trainable weights, except parameters
        whose names start with one of ``skip``."""
        import hashlib

        h = hashlib.sha256()
        for name, p in sorted(self.named_parameters(), key=lambda kv: kv[0]):
            if not p.requires_grad or name.startswith(skip):
                continue
            h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
            h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def enable_fast_path(self) -> SynerDetect:
        """Call after moving the model to its device: channels_last for the frozen convnets on CUDA and,
        if configured, a compiled UNet for the inversion loop and CMID (SDPA attention is diffusers' and
        transformers' default already)."""
        dev = next(self.unet.parameters()).device
        if dev.type == "cuda" and self.mcfg.channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        if self.mcfg.compile_unet and self._unet_fn is None:
            compiled = torch.compile(self.unet, mode=self.mcfg.compile_mode, dynamic=False)
            self._unet_fn = lambda x, t, ctx: compiled(x, t, encoder_hidden_states=ctx, return_dict=False)[0]
        return self

    def _unet(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        if self._unet_fn is not None:
            return self._unet_fn(x, t, ctx)
        return self.unet(x, t, encoder_hidden_states=ctx, return_dict=False)[0]

    # ------------------------------------------------------------------ checks
    def check_inputs(self, images: Any, labels: Any = None) -> None:
        if isinstance(images, Views):  # the two views of preprocess(): each must be a valid image batch
            self.check_inputs(images.clip, labels)
            self.check_inputs(images.sd)
            if images.sd.shape[0] != images.clip.shape[0]:
                raise InputError(
                    f"views of different batch sizes: clip {images.clip.shape[0]}, sd {images.sd.shape[0]}"
                )
            return
        if not isinstance(images, torch.Tensor):
            raise InputError(f"images must be a torch.Tensor B x 3 x H x W in [0, 1], got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"images must have shape B x 3 x H x W, got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise InputError("images is an empty batch")
        if not images.is_floating_point():
            raise InputError(
                f"images must be a float tensor in [0, 1], got dtype {images.dtype} (divide uint8 images by 255)"
            )
        if min(images.shape[-2:]) < 8:
            raise InputError(f"images of {tuple(images.shape[-2:])} px are too small")
        if not torch.isfinite(images).all():
            raise InputError("images contain NaN or Inf")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(
                f"image values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                "(pass float images scaled to [0, 1], not [0, 255] or [-1, 1])"
            )
        if labels is not None:
            if not isinstance(labels, torch.Tensor):
                labels = torch.as_tensor(labels)
            if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
                raise InputError(f"labels must be a 1-D tensor of length {images.shape[0]}, got {tuple(labels.shape)}")
            bad = set(labels.tolist()) - {0, 1}
            if bad:
                raise InputError(f"labels must be 0 (real) or 1 (fake), got {sorted(bad)}")

    # ------------------------------------------------------------------ stages
    def clip_pixels(self, images: torch.Tensor | Views) -> torch.Tensor:
        """E_v's and CConv's input at clip_size: the clip view as it is, or a plain tensor resized (shorter side,
        then centre crop)."""
        return _resize((images.clip if isinstance(images, Views) else images).float(), self.mcfg.clip_size)

    def encode_visual(self, x01_clip: torch.Tensor) -> torch.Tensor:
        """z_v = E_v(x), normalised, B x D."""
        px = ((x01_clip - self.clip_mean) / self.clip_std).to(self.compute_dtype)
        return self.E_v(px)

    def prompts(self, z_v: torch.Tensor, x01_clip: torch.Tensor) -> torch.Tensor:
        """z_t for both classes, B x 2 x D (per image through the tuner, Eq. 1)."""
        ctx = self.tuner(z_v, x01_clip)
        return self.text(ctx)

    @staticmethod
    def agnostic_prompt(z_t: torch.Tensor) -> torch.Tensor:
        """Label-agnostic prompt (docs/method.md): normalised mean of z_t^real and z_t^fake."""
        return F.normalize(z_t.mean(dim=1), dim=-1)

    def sd_context(self, c: torch.Tensor) -> torch.Tensor:
        """Map c (B x D joint) to SD's cross-attention context: empty-prompt context + projected c."""
        proj = self.cond_proj(c.float())
        return self.empty_context.to(proj.device) + proj.unsqueeze(1)

    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """VAE latent z0 of the image at ``size`` px (the posterior mean, scaled), B x 4 x h x w."""
        size = size or self.mcfg.sd_size
        x = _resize((images.sd if isinstance(images, Views) else images).float(), size) * 2 - 1
        post = self.vae.encode(x.to(self.compute_dtype)).latent_dist
        return (post.mean * self.vae_scale).float()

    @torch.no_grad()
    def invert(self, latents: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Discriminative conditional inversion: DDIM-invert z0 conditioned on ``cond`` (B x D)."""
        ctx = self.sd_context(cond.detach()).to(self.compute_dtype)
        return ddim_invert(
            self.unet,
            self.scheduler_config,
            latents.float(),
            ctx,
            steps or self.mcfg.inversion_steps,
            unet_fn=self._unet,
        )

    def noise_pixels(self, inverted: torch.Tensor) -> torch.Tensor:
        """Noise map -> E_d input (normalised pixels at clip_size)."""
        size = self.mcfg.clip_size
        if self.adapter is not None:
            x = self.adapter(inverted.float())
            return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).to(self.compute_dtype)
        with torch.no_grad():
            rgb = self.vae.decode((inverted / self.vae_scale).to(self.compute_dtype)).sample.float()
            rgb = (rgb.clamp(-1, 1) + 1) / 2
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            return ((rgb - self.clip_mean) / self.clip_std).to(self.compute_dtype)

    def encode_noise(self, inverted: torch.Tensor) -> torch.Tensor:
        """z_n = E_d(noise map), normalised, B x D."""
        return self.E_d(self.noise_pixels(inverted))

    def cmid_loss(
        self, latents: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Eq. 2: noise the latent at a random t, predict with the frozen UNet conditioned on c, MSE."""
        b = latents.shape[0]
        dev = latents.device
        t = torch.randint(self.mcfg.cmid_t_min, self.mcfg.cmid_t_max + 1, (b,), device="cpu", generator=generator).to(
            dev
        )
        noise = torch.randn(latents.shape, generator=generator, device="cpu").to(dev)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        ctx = self.sd_context(c)
        pred = self._unet(noisy.to(self.compute_dtype), t, ctx.to(self.compute_dtype)).float()
        if self.prediction_type == "v_prediction":
            # Eq. 2 is an epsilon-MSE: convert v to epsilon (eps = sqrt(1 - a) x_t + sqrt(a) v) rather than taking
            # a v-MSE, which would reweight the timesteps by 1 / (1 - a).
            ab = self.noise_scheduler.alphas_cumprod.to(dev)[t].float().view(-1, 1, 1, 1)
            pred = (1 - ab).sqrt() * noisy + ab.sqrt() * pred
        return F.mse_loss(pred, noise)

    def preprocess(
        self, pil_images: Any, *, train: bool = False, rng: Any = None, clip_view: str | None = None
    ) -> Views:
        """PIL images -> what :meth:`predict` and :meth:`compute_losses` accept: the two views of each image from
        one decode (a ``clip_size`` crop of the image's own pixels for E_v and CConv, the image resized to
        ``sd_size`` for CMID and the inversion). ``train`` draws a random crop and the configured augmentation
        from ``rng``; ``clip_view`` defaults to ``data.clip_view``. Plain tensors still work everywhere."""
        from ..data import ViewTransform

        imgs = [pil_images] if not isinstance(pil_images, (list, tuple)) else list(pil_images)
        if not imgs:
            raise InputError("preprocess needs at least one image")
        t = view_transform(self.cfg, train=train, clip_view=clip_view)
        assert isinstance(t, ViewTransform)
        return Views.stack([t(img, rng) for img in imgs])

    # ------------------------------------------------------------------ contract
    def perceptual(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The CLIP branch: ``(x_clip, z_v, z_t)`` (Eq. 1)."""
        x_clip = self.clip_pixels(images)
        z_v = self.encode_visual(x_clip)
        return x_clip, z_v, self.prompts(z_v, x_clip)

    @torch.no_grad()
    def inversion_inputs(
        self, images: torch.Tensor, z_t: torch.Tensor, *, latents: torch.Tensor | None = None
    ) -> CachedBatch:
        """The generative branch up to E_d: the VAE latent at ``sd_size`` and its DDIM inversion at
        ``inversion_size``, conditioned on the label-agnostic prompt of ``z_t``. The one computation behind the
        online path, the feature cache and the bench."""
        m = self.mcfg
        inv_size = m.inversion_size or m.sd_size
        if inv_size == m.sd_size:
            latents = inv_latents = latents if latents is not None else self.encode_latents(images)
        else:  # the inversion runs at its own (lower) resolution; CMID's latent stays at sd_size
            inv_latents = self.encode_latents(images, inv_size)
        return CachedBatch(latents, self.invert(inv_latents, self.agnostic_prompt(z_t)))

    @torch.no_grad()
    def cache_features(self, images: torch.Tensor) -> CachedBatch:
        """What the feature cache stores for a batch: :meth:`inversion_inputs` of the batch's own prompt."""
        return self.inversion_inputs(images, self.perceptual(images)[2], latents=self.encode_latents(images))

    def features(self, images: torch.Tensor, *, cached: CachedBatch | None = None) -> dict[str, torch.Tensor]:
        """All embeddings of a batch. ``cached`` (from the feature cache) replaces the inversion: its
        ``noise_pixels`` (the E_d input decoded from the inverted latent, without a noise adapter) skip the
        VAE decode too."""
        x_clip, z_v, z_t = self.perceptual(images)
        if cached is None or cached.inverted is None:
            cached = self.inversion_inputs(images, z_t, latents=cached.latents if cached is not None else None)
        if cached.noise_pixels is not None and self.adapter is None:
            z_n = self.E_d(cached.noise_pixels.to(self.compute_dtype))
        else:
            assert cached.inverted is not None  # set just above when it was missing
            z_n = self.encode_noise(cached.inverted)
        return {
            "x_clip": x_clip,
            "z_v": z_v,
            "z_t": z_t,
            "z_n": z_n,
            "inverted": cached.inverted,
            "latents": cached.latents,
        }

    def compute_losses(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        cached: CachedBatch | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Eq. 2, 6, 7, 8, 9 on one batch. Returns 0-dim tensors: cr, dcl, pot, ot_dcl, total. ``cached`` (the
        feature cache's tensors of this batch) replaces the inversion; its ``latents`` are CMID's target when
        given, else the batch is VAE-encoded."""
        self.check_inputs(images, labels)
        labels = torch.as_tensor(labels, device=images.device).long()  # a tensor or Views: both have .device
        lc = self.lcfg
        if lc.use_ot_dcl and len(set(labels.tolist())) < 2:
            raise InputError(
                "a training batch must hold both real and fake images (Eq. 7 needs negatives); "
                "use the class-balanced sampler"
            )
        if lc.use_cmid and (cached is None or cached.latents is None):
            latents = self.encode_latents(images)
            cached = CachedBatch(latents, None, None) if cached is None else cached._replace(latents=latents)
        f = self.features(images, cached=cached)
        z_v, z_t, z_n = f["z_v"], f["z_t"], f["z_n"]
        idx = torch.arange(len(labels), device=labels.device)
        z_t_label = z_t[idx, labels]  # the prompt of each sample's own label (anchor of Eq. 7)
        zero = z_v.new_zeros(())
        out: dict[str, torch.Tensor] = {}
        if lc.use_cmid:
            prompt = z_t_label if self.mcfg.cmid_label_prompt else self.agnostic_prompt(z_t)
            out["cr"] = self.cmid_loss(f["latents"], z_v + prompt, generator)
        else:
            out["cr"] = zero
        if lc.use_ot_dcl:
            other = z_t[idx, 1 - labels] if lc.dcl_class_negative else None
            # Under DDP the batch-level terms (Eq. 7's negatives, the GMM of Eq. 3) see the global batch, so the
            # loss does not depend on the number of processes.
            world = _world_size() if lc.gather_across_processes and self.training else 1
            gather = _gather_with_grad if world > 1 else (lambda t: t)
            g_anchor, g_v, g_n, g_labels = (gather(t) for t in (z_t_label, z_v, z_n, labels))
            g_other = gather(other) if other is not None else None
            dcl = dcl_loss_two_views(g_anchor, g_v, g_n, g_labels, self.mcfg.tau, g_other)
            if lc.use_pot:
                # GMM/EM and W2 in fp32 even under mixed-precision autocast (docs/method.md)
                with torch.autocast(device_type=z_v.device.type, enabled=False):
                    pot, _ = pot_loss(
                        g_n.float(),
                        g_v.float(),
                        k=lc.gmm_components,
                        eps=lc.sinkhorn_eps,
                        covariance=lc.gmm_covariance,
                        sample_term=lc.pot_sample_term,
                        em_iters=lc.gmm_iters,
                        sinkhorn_iters=lc.sinkhorn_iters,
                    )
            else:
                pot = zero
            # Each process back-propagates through its own samples only and DDP averages the gradients over the
            # processes: scale the gradient (not the value) by the world size so it equals the one-process gradient.
            out["dcl"], out["pot"] = _scale_grad(dcl, world), _scale_grad(pot, world)
            out["ot_dcl"] = out["dcl"] + lc.alpha * out["pot"]
        else:
            # Table 5b "w/o OT-DCL": plain cross-entropy on the Eq. 10 scores replaces L_OT-DCL.
            s = self.scores(z_v, z_n, z_t)
            out["dcl"], out["pot"] = zero, zero
            out["ot_dcl"] = F.cross_entropy(s / self.mcfg.tau, labels)
        out["total"] = lc.lam * out["cr"] + (1 - lc.lam) * out["ot_dcl"]
        return out

    @staticmethod
    def scores(z_v: torch.Tensor, z_n: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """Eq. 10: s_c = sim(z_v, z_t^c) + sim(z_n, z_t^c), B x 2 (all inputs normalised)."""
        sim_v, sim_n = SynerDetect.branch_similarities(z_v, z_n, z_t)
        return sim_v + sim_n

    @staticmethod
    def branch_similarities(
        z_v: torch.Tensor, z_n: torch.Tensor, z_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two terms of Eq. 10, B x 2 each: sim(z_v, z_t^c) (perceptual) and sim(z_n, z_t^c) (generative)."""
        return torch.einsum("bd,bcd->bc", z_v, z_t), torch.einsum("bd,bcd->bc", z_n, z_t)

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor, *, cached: CachedBatch | None = None, mode: str = "full"
    ) -> dict[str, torch.Tensor]:
        """Eq. 10 per image: s_real, s_fake, logit = s_fake - s_real, prob_fake, label (1 = fake), and the two branch
        similarities sim_v_* / sim_n_*. No label is used.

        ``mode="perceptual"`` computes the CLIP branch only (no VAE, no inversion): s_c = sim(z_v, z_t^c) and the
        generative similarities are NaN. The cascade (engine/cascade.py) uses it to decide which images need the
        inversion."""
        if mode not in ("full", "perceptual"):
            raise InputError(f"mode must be 'full' or 'perceptual', got {mode!r}")
        self.check_inputs(images)
        was_training = self.training
        if was_training:  # walking ~20k modules to flip modes costs ~8% of a tiny batch: only when needed
            self.eval()
        try:
            if mode == "full":
                f = self.features(images, cached=cached)
                sim_v, sim_n = self.branch_similarities(f["z_v"], f["z_n"], f["z_t"])
                s = sim_v + sim_n
            else:
                _, z_v, z_t = self.perceptual(images)
                sim_v = torch.einsum("bd,bcd->bc", z_v, z_t)
                sim_n = torch.full_like(sim_v, float("nan"))
                s = sim_v
        finally:
            if was_training:
                self.train(True)
        logit = s[:, 1] - s[:, 0]
        return {
            "s_real": s[:, 0],
            "s_fake": s[:, 1],
            "logit": logit,
            "prob_fake": torch.sigmoid(logit / self.mcfg.tau),  # = softmax((s_real, s_fake)/tau)[fake]
            "label": (logit > 0).long(),
            "sim_v_real": sim_v[:, 0],
            "sim_v_fake": sim_v[:, 1],
            "sim_n_real": sim_n[:, 0],
            "sim_n_fake": sim_n[:, 1],
        }

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> SynerDetect:
        from ..config import validate_experiment
        from .backbones.loaders import read_base_configs

        validate_experiment(cfg)
        if cls is SynerDetect:
            # The reference methods (synerdetect.methods) load like SynerDetect: build the config's method's class.
            from ..methods import get_method

            cls = get_method(cfg.method)  # a ConfigError listing the known methods for an unknown name
        # Dimensions are checked on the JSON configs first: a mismatch is reported before gigabytes load.
        cfgs = read_base_configs(cfg.model.clip, cfg.model.sd, tiny_seed=cfg.model.tiny_seed)
        if cfgs is not None:
            problems = dimension_problems(cfg.model, *cfgs)
            if problems:
                raise ConfigError("model dimensions do not fit together: " + "; ".join(problems))
        base = load_base_models(cfg.model.clip, cfg.model.sd, tiny_seed=cfg.model.tiny_seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)  # trainable init is reproducible
            return cls(cfg, base)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SynerDetect:
        """``SynerDetect.from_preset("tiny", model={"inversion_steps": 5})`` or dotted keys
        ``**{"model.inversion_steps": 5}``."""
        from ..config import merge, nest_dotted
        from ..presets import get_preset

        cfg = merge(get_preset(name), nest_dotted(overrides))
        return cls.from_config(cfg)

    def save_pretrained(self, folder: str | Path, *, extra: dict | None = None) -> Path:
        """Trainable part in safetensors + the config naming the base models. ``tiny`` base models
        are written beside it (a few MB) so the folder reloads on any machine through the real loaders."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = copy.deepcopy(self.cfg)
        doc: dict[str, Any] = {"format": FORMAT, "config": asdict(cfg), "extra": extra or {}}
        if cfg.model.clip == TINY:
            if not (folder / "base" / "clip" / "config.json").is_file():
                write_tiny_clip(folder / "base" / "clip", cfg.model.tiny_seed)
            doc["config"]["model"]["clip"] = "base/clip"
        if cfg.model.sd == TINY:
            if not (folder / "base" / "sd" / "model_index.json").is_file():
                write_tiny_sd(folder / "base" / "sd", cfg.model.tiny_seed)
            doc["config"]["model"]["sd"] = "base/sd"
        state = {k: v.float().contiguous() for k, v in self.trainable_state_dict().items()}
        tmp = folder / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(folder / WEIGHTS_NAME)
        atomic_write_json(folder / CONFIG_NAME, doc)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> SynerDetect:
        """Load a detector saved by :meth:`save_pretrained`. Base-model paths relative to the folder are
        resolved against it; ``overrides`` (dotted keys) may point them elsewhere."""
        from ..config import merge, nest_dotted

        folder = Path(folder)
        cfg_path = folder / CONFIG_NAME
        if not cfg_path.is_file():
            raise CheckpointError(f"{folder} is not a SynerDetect checkpoint (no {CONFIG_NAME})")
        try:
            doc = json.loads(cfg_path.read_text())
            fmt = str(doc.get("format", ""))
            config = doc["config"]
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{cfg_path}: not a readable checkpoint config ({type(e).__name__}: {e})") from None
        family, _, version = fmt.partition("/")
        if family != "synerdetect" or not version.isdigit():
            raise CheckpointError(f"{cfg_path}: unknown format {fmt!r} (expected {FORMAT})")
        if int(version) > FORMAT_VERSION:
            raise CheckpointError(
                f"{cfg_path}: format {fmt} is newer than this version of synerdetect understands "
                f"({FORMAT}); upgrade synerdetect"
            )
        cfg = from_dict(ExperimentConfig, config)
        for key in ("clip", "sd"):
            val = getattr(cfg.model, key)
            if val.startswith("base/") and not (folder / val).exists() and f"model.{key}" not in overrides:
                # Said at once: a relative path would otherwise go to a model hub (and retry for a minute).
                raise CheckpointError(
                    f"{folder}: the base model folder {val}/ is missing (copy the whole checkpoint "
                    f"folder, or point model.{key} at the base model)"
                )
            if val and not Path(val).is_absolute() and (folder / val).exists():
                setattr(cfg.model, key, str(folder / val))
        cfg = merge(cfg, nest_dotted(overrides))
        model = cls.from_config(cfg)
        model.load_trainable(folder)
        return model
