"""What every detection method shares: :class:`Detector`.

A method (SynerDetect in :mod:`synerdetect.model.detector`, the paper's references in
:mod:`synerdetect.methods.references`) subclasses :class:`Detector` and builds only the modules it uses; the base
holds the parts they share - the frozen SD (VAE, UNet, the DDIM inversion), the CLIP towers E_v / E_d and their
preprocessing, the input checks, the trainable-weight I/O (safetensors) and ``save_pretrained`` /
``from_pretrained`` / ``from_config`` / ``from_preset``, which always build ``cls`` itself. Choosing the class from
a config's ``method`` is the registry's job (:func:`synerdetect.methods.build_detector` / ``load_detector``), one
layer above the model.

Contract of every detector: ``images`` are float tensors B x 3 x H x W in [0, 1] (or :class:`Views`);

- ``compute_losses(images, labels, *, cached=None, generator=None)`` -> dict of 0-dim tensors (``total``, ...)
- ``predict(images, *, cached=None, mode="full")`` -> dict of per-image tensors (s_real, s_fake, logit, prob_fake,
  label, sim_*)
- ``cache_features(images)`` -> :class:`CachedBatch`, what the feature cache stores (methods that invert).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Self

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, ExperimentConfig, ModelConfig, from_dict
from ..data.transforms import Views
from ..utils import atomic_write_json
from .backbones import BaseModels, load_base_models
from .backbones.loaders import TINY, write_tiny_clip, write_tiny_sd
from .inversion import ddim_invert

log = logging.getLogger(__name__)

# CLIP's published normalisation (the OpenAI and LAION ViT-L/14 processors use the same values).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONFIG_NAME = "synerdetect_config.json"
WEIGHTS_NAME = "trainable.safetensors"
FORMAT_VERSION = 1
FORMAT = f"synerdetect/{FORMAT_VERSION}"


def dimension_problems(
    m: ModelConfig, clip_cfg: Any, unet_cfg: dict | None, vae_cfg: dict | None, sd_text_width: int | None
) -> list[str]:
    """Every way the configured sizes and the base models' configs do not fit together (empty: they fit). A part
    passed as ``None`` (a base model the method does not load) is not checked."""
    problems = []
    if clip_cfg is not None and clip_cfg.vision_config.image_size != m.clip_size:
        problems.append(
            f"model.clip_size={m.clip_size} but the CLIP vision tower expects {clip_cfg.vision_config.image_size} px"
        )
    if unet_cfg is None or vae_cfg is None:
        return problems
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


def view_transform(
    cfg: ExperimentConfig,
    *,
    train: bool,
    clip_view: str | None = None,
    image_size: int | None = None,
    tiles: bool | None = None,
) -> Any:
    """The data transform a detector of ``cfg`` reads files with (training, evaluation, prediction, the feature
    cache, the service): by default two views (:class:`Views`) of one decode, E_v's a crop of the image's own
    pixels. ``image_size`` (default ``data.image_size``) set: the older single view instead, the image resized to
    ``image_size`` and centre-cropped (random crop in training), which each branch then resamples to its size.
    ``tiles`` (default: ``data.eval_view == "tiles"`` outside training) adds the whole-image tiles
    (:class:`~synerdetect.data.tiled.TiledViews`)."""
    from ..data import EvalTransform, TrainTransform, ViewTransform
    from ..data.tiled import TiledViewTransform

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
    views = ViewTransform(cfg.model.clip_size, cfg.model.sd_size, train=train, clip_view=clip_view or d.clip_view, **kw)
    if tiles is None:
        tiles = d.eval_view == "tiles" and not train
    return TiledViewTransform(views, min_overlap=d.tile_overlap, max_tiles=d.max_tiles) if tiles else views


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    # Shorter side to `size`, then centre crop: the CLIP processor's geometry, on tensors.
    h, w = x.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top : top + size, left : left + size].clamp(0, 1)


def read_checkpoint_config(folder: str | Path, **overrides: Any) -> ExperimentConfig:
    """The experiment config saved in a ``save_pretrained`` folder, its base-model paths resolved against the
    folder and ``overrides`` (dotted keys) applied. A missing, unreadable or foreign config is a
    :class:`CheckpointError`. The registry reads ``method`` from it to choose the class to load."""
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
    return merge(cfg, nest_dotted(overrides))


class Detector(nn.Module):
    """The base of every detection method (see the module docstring). A subclass sets :attr:`method_name` and the
    base models it loads (:attr:`uses_clip`, :attr:`uses_sd`), builds its own modules in ``__init__`` (with
    :meth:`_attach_sd` for the frozen SD) and ends it with :meth:`_freeze`."""

    #: The config's ``method`` this class implements (the registry's name); empty on the abstract base.
    method_name: ClassVar[str] = ""
    #: Whether the method reads the CLIP base model (E_v / E_d) and the frozen SD (VAE, UNet: the inversion).
    #: :meth:`from_config` loads only those; a method that does not use SD has no feature cache.
    uses_clip: ClassVar[bool] = True
    uses_sd: ClassVar[bool] = True
    #: Whether the DDIM inversion is conditioned on trained weights: the feature cache's key then fingerprints them.
    conditioned_inversion: ClassVar[bool] = False
    #: Submodules that always run in eval mode (frozen: no dropout, fixed norms).
    always_eval: ClassVar[tuple[str, ...]] = ("unet", "vae")
    # Declared for the type checker (nn.Module's __getattr__ would type them Tensor | Module). Present only when
    # the method builds them.
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
        if cfg.method != self.method_name:
            raise ConfigError(_wrong_class(cfg.method, type(self)))
        self.cfg = cfg
        self.mcfg, self.lcfg = cfg.model, cfg.loss
        self.clip_source, self.sd_source = base.clip_source, base.sd_source
        self.compute_dtype = _DTYPES[cfg.model.dtype]
        self._check_dims(base)
        self._unet_fn = None  # set by enable_fast_path() when the UNet is compiled

    # ------------------------------------------------------------------ set-up
    @classmethod
    def _dimension_problems(
        cls, m: ModelConfig, clip_cfg: Any, unet_cfg: dict | None, vae_cfg: dict | None, sd_text_width: int | None
    ) -> list[str]:
        """:func:`dimension_problems` of the base models this method loads (a subclass adds its own checks)."""
        if not cls.uses_clip:
            clip_cfg = None
        if not cls.uses_sd:
            unet_cfg = vae_cfg = sd_text_width = None
        return dimension_problems(m, clip_cfg, unet_cfg, vae_cfg, sd_text_width)

    def _check_dims(self, base: BaseModels) -> None:
        unet, vae = base.unet, base.vae
        if unet is not None and vae is not None and self.uses_sd:
            native = int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)
            if self.mcfg.sd_size != native:
                log.warning(
                    "model.sd_size=%d differs from the UNet's native size %d px (sample_size x VAE factor): "
                    "the frozen SD runs off its training resolution",
                    self.mcfg.sd_size,
                    native,
                )
        problems = self._dimension_problems(
            self.mcfg,
            base.clip.config if base.clip is not None else None,
            dict(unet.config) if unet is not None else None,
            dict(vae.config) if vae is not None else None,
            base.empty_context.shape[-1] if base.empty_context is not None else None,
        )
        if problems:
            raise ConfigError("model dimensions do not fit together: " + "; ".join(problems))

    def _attach_sd(self, base: BaseModels) -> None:
        """Take the frozen SD of ``base``: UNet, VAE, the empty-prompt context and the scheduler config. The CLIP
        normalisation buffers come with it (E_d's input is a decoded latent in CLIP's pixel space)."""
        if base.unet is None or base.vae is None or base.empty_context is None:
            raise ConfigError(f"method {self.method_name!r} needs Stable Diffusion, which was not loaded")
        self.unet, self.vae = base.unet, base.vae
        self.register_buffer("empty_context", base.empty_context.float(), persistent=False)
        self.scheduler_config = dict(base.scheduler_config)
        self.vae_scale = float(getattr(base.vae.config, "scaling_factor", 0.18215))

    def _attach_clip_normalisation(self) -> None:
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def vision_encoders(self) -> list[nn.Module]:
        """The CLIP vision towers this detector holds (E_v, E_d; once each when a method shares one tower)."""
        found: list[nn.Module] = []
        for name in ("E_v", "E_d"):
            enc = self._modules.get(name)
            if enc is not None and all(enc is not f for f in found):
                found.append(enc)
        return found

    def _freeze(self, trainable: Iterable[nn.Parameter]) -> None:
        """Train ``trainable`` only; the frozen parts follow the compute dtype (trainable weights stay fp32)."""
        keep = {id(p) for p in trainable}
        for p in self.parameters():
            p.requires_grad_(id(p) in keep)
        cd = self.compute_dtype
        for name in self.always_eval:
            mod = self._modules.get(name)
            if mod is not None:
                mod.to(cd).eval()
        for enc in self.vision_encoders():
            for p in enc.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(cd)

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        # Frozen parts always run in eval mode (no dropout, fixed norms).
        for name in self.always_eval:
            mod = self._modules.get(name)
            if mod is not None:
                mod.eval()
        return self

    def frozen_clip_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """The frozen CLIP weights the feature cache's tensors depend on (its key fingerprints them). None by
        default: an unconditional inversion reads no CLIP weight."""
        return []

    # ------------------------------------------------------------------ trainable weights
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

    def enable_fast_path(self) -> Self:
        """Call after moving the model to its device: channels_last for the frozen convnets on CUDA and,
        if configured, a compiled UNet for the inversion loop and CMID (SDPA attention is diffusers' and
        transformers' default already). A no-op for a method without SD."""
        if self._modules.get("unet") is None:
            return self
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

    def as_input(self, images: Any) -> torch.Tensor | Views:
        """What :meth:`predict` scores: a tensor batch or :class:`Views` as they are; a PIL image, an image path or a
        list of them decoded with the loaders' rules (EXIF orientation, alpha on white, pixel caps) and preprocessed
        with this detector's own evaluation transform (the one :class:`~synerdetect.engine.scoring.Scorer` uses), on
        the model's device. An unreadable file is an :class:`InputError` naming it."""
        if isinstance(images, torch.Tensor | Views):
            return images
        from PIL import Image

        from ..data.imageio import UnreadableImage, load_image, pil_to_rgb8
        from ..data.transforms import stack_images

        items = list(images) if isinstance(images, list | tuple) else [images]
        if not items:
            raise InputError("no images to score")
        transform = view_transform(self.cfg, train=False)
        views = []
        for i, item in enumerate(items):
            try:
                if isinstance(item, Image.Image):
                    img = pil_to_rgb8(item, str(getattr(item, "filename", "") or f"image-{i}"))
                elif isinstance(item, str | os.PathLike):
                    img = load_image(item)
                else:
                    raise InputError(
                        f"item {i}: give a PIL image, an image path or a tensor batch, got {type(item).__name__}"
                    )
            except UnreadableImage as e:
                raise InputError(str(e)) from None
            views.append(transform(img))
        return stack_images(views).to(next(self.parameters()).device)

    # ------------------------------------------------------------------ shared stages
    def clip_pixels(self, images: torch.Tensor | Views) -> torch.Tensor:
        """E_v's and CConv's input at clip_size: the clip view as it is, or a plain tensor resized (shorter side,
        then centre crop)."""
        return resize_square((images.clip if isinstance(images, Views) else images).float(), self.mcfg.clip_size)

    def encode_visual(self, x01_clip: torch.Tensor) -> torch.Tensor:
        """z_v = E_v(x), normalised, B x D."""
        px = ((x01_clip - self.clip_mean) / self.clip_std).to(self.compute_dtype)
        return self.E_v(px)

    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """VAE latent z0 of the image at ``size`` px (the posterior mean, scaled), B x 4 x h x w."""
        size = size or self.mcfg.sd_size
        x = resize_square((images.sd if isinstance(images, Views) else images).float(), size) * 2 - 1
        post = self.vae.encode(x.to(self.compute_dtype)).latent_dist
        return (post.mean * self.vae_scale).float()

    def inversion_latents(
        self, images: torch.Tensor, latents: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(latents, inv_latents)``: the VAE latent at ``sd_size`` (``latents`` when given; ``None`` when the
        inversion runs at its own, lower resolution and none was given) and the one the inversion starts from,
        at ``inversion_size``."""
        m = self.mcfg
        inv_size = m.inversion_size or m.sd_size
        if inv_size == m.sd_size:
            latents = latents if latents is not None else self.encode_latents(images)
            return latents, latents
        return latents, self.encode_latents(images, inv_size)

    @torch.no_grad()
    def ddim_inversion(self, latents: torch.Tensor, context: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """DDIM-invert ``latents`` with the frozen UNet under the SD cross-attention ``context`` (B x L x D_sd)."""
        return ddim_invert(
            self.unet,
            self.scheduler_config,
            latents.float(),
            context,
            steps or self.mcfg.inversion_steps,
            unet_fn=self._unet,
        )

    def noise_pixels(self, inverted: torch.Tensor) -> torch.Tensor:
        """Noise map -> E_d input (normalised pixels at clip_size): the inverted latent decoded by the frozen VAE,
        or mapped by a trained noise adapter when the method has one (``self.adapter``)."""
        size = self.mcfg.clip_size
        adapter = self._modules.get("adapter")
        if adapter is not None:
            x = adapter(inverted.float())
            return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).to(self.compute_dtype)
        with torch.no_grad():
            rgb = self.vae.decode((inverted / self.vae_scale).to(self.compute_dtype)).sample.float()
            rgb = (rgb.clamp(-1, 1) + 1) / 2
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            return ((rgb - self.clip_mean) / self.clip_std).to(self.compute_dtype)

    def encode_noise(self, inverted: torch.Tensor) -> torch.Tensor:
        """z_n = E_d(noise map), normalised, B x D."""
        return self.E_d(self.noise_pixels(inverted))

    def preprocess(
        self, pil_images: Any, *, train: bool = False, rng: Any = None, clip_view: str | None = None
    ) -> Views:
        """PIL images -> what :meth:`predict` and :meth:`compute_losses` accept: the two views of each image from
        one decode (a ``clip_size`` crop of the image's own pixels for E_v and CConv, the image resized to
        ``sd_size`` for CMID and the inversion). ``train`` draws a random crop and the configured augmentation
        from ``rng``; ``clip_view`` defaults to ``data.clip_view``. Plain tensors still work everywhere."""
        from ..data import ViewTransform, stack_images
        from ..data.tiled import TiledViewTransform

        imgs = [pil_images] if not isinstance(pil_images, (list, tuple)) else list(pil_images)
        if not imgs:
            raise InputError("preprocess needs at least one image")
        t = view_transform(self.cfg, train=train, clip_view=clip_view)
        assert isinstance(t, ViewTransform | TiledViewTransform)
        return stack_images([t(img, rng) for img in imgs])  # TiledViews under data.eval_view: tiles

    # ------------------------------------------------------------------ contract (per method)
    def compute_losses(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        cached: CachedBatch | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, images: Any, *, cached: CachedBatch | None = None, mode: str = "full") -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def cache_features(self, images: torch.Tensor) -> CachedBatch:
        """What the feature cache stores for a batch; a method without SD has no inversion to cache."""
        del images  # the methods that run an inversion override this
        raise ConfigError(f"method {self.method_name!r} runs no DDIM inversion: it has no feature cache")

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> Self:
        """Build this class from ``cfg`` (whose ``method`` must be this class's: the registry,
        :func:`synerdetect.methods.build_detector`, picks the class for any method)."""
        from ..config import validate_experiment
        from .backbones.loaders import read_base_configs

        validate_experiment(cfg)
        if cfg.method != cls.method_name:
            raise ConfigError(_wrong_class(cfg.method, cls))
        # Dimensions are checked on the JSON configs first: a mismatch is reported before gigabytes load.
        cfgs = read_base_configs(cfg.model.clip, cfg.model.sd, tiny_seed=cfg.model.tiny_seed)
        if cfgs is not None:
            problems = cls._dimension_problems(cfg.model, *cfgs)
            if problems:
                raise ConfigError("model dimensions do not fit together: " + "; ".join(problems))
        base = load_base_models(
            cfg.model.clip, cfg.model.sd, tiny_seed=cfg.model.tiny_seed, clip=cls.uses_clip, sd=cls.uses_sd
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)  # trainable init is reproducible
            return cls(cfg, base)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Self:
        """``SynerDetect.from_preset("tiny", model={"inversion_steps": 5})`` or dotted keys
        ``**{"model.inversion_steps": 5}``. A reference method's class sets the preset's ``method`` itself."""
        from ..config import merge, nest_dotted
        from ..presets import get_preset

        cfg = merge(get_preset(name), nest_dotted(overrides))
        if "method" not in overrides and cls.method_name:
            cfg.method = cls.method_name
        return cls.from_config(cfg)

    def save_pretrained(self, folder: str | Path, *, extra: dict | None = None) -> Path:
        """Trainable part in safetensors + the config naming the base models (and the method). ``tiny`` base
        models are written beside it (a few MB) so the folder reloads on any machine through the real loaders."""
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
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> Self:
        """Load a detector of this class saved by :meth:`save_pretrained`. Base-model paths relative to the folder
        are resolved against it; ``overrides`` (dotted keys) may point them elsewhere. A folder of another method
        is a :class:`CheckpointError` (:func:`synerdetect.methods.load_detector` loads any method). ``folder`` may
        also be a Hugging Face Hub repo id ``org/name[@revision]`` (:func:`synerdetect.hub.resolve_checkpoint`)."""
        from ..hub import resolve_checkpoint

        folder = resolve_checkpoint(folder)
        cfg = read_checkpoint_config(folder, **overrides)
        if cfg.method != cls.method_name:
            raise CheckpointError(f"{folder}: {_wrong_class(cfg.method, cls)}")
        model = cls.from_config(cfg)
        model.load_trainable(folder)
        return model


def _wrong_class(method: str, cls: type) -> str:
    return (
        f"the config's method is {method!r}, which {cls.__name__} does not implement; "
        "build or load it with synerdetect.methods.build_detector / load_detector"
    )


__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "WEIGHTS_NAME",
    "CachedBatch",
    "CheckpointError",
    "Detector",
    "InputError",
    "VisionEncoder",
    "dimension_problems",
    "read_checkpoint_config",
    "view_transform",
]
