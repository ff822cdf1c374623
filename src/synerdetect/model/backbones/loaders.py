"""Load (or build) the frozen base models through the libraries' own ``from_pretrained``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .tokenizer import load_tokenizer, write_tiny_clip_tokenizer_files

log = logging.getLogger(__name__)


def quiet_libraries() -> None:
    """Silence the libraries' per-load chatter (progress bars per shard, dtype notes); our own
    progress bars and errors say what matters."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


TINY = "tiny"
RANDOM_CLIP = "random:vit-l-14"
RANDOM_SD = "random:sd-2.1-base"


class BaseModelError(RuntimeError):
    """A base model folder is missing, incomplete, or does not fit the rest of the model."""


@dataclass
class BaseModels:
    """The loaded base models; the CLIP fields (``clip``, ``tokenizer``) or the SD fields (``unet``, ``vae``,
    ``empty_context``; ``scheduler_config`` empty) are ``None`` when the method does not use that model."""

    clip: Any  # transformers CLIPModel
    tokenizer: Any  # CLIPTokenizer of the CLIP model
    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    scheduler_config: dict  # DDIM-compatible scheduler config from the SD folder
    empty_context: torch.Tensor | None  # 1 x L x D_sd: SD's own text encoder on the empty prompt
    clip_source: str = ""
    sd_source: str = ""


# ---------------------------------------------------------------------------
# tiny and random architectures (configs only; weights are random)
# ---------------------------------------------------------------------------


def _tiny_clip_config(vocab_size: int):
    from transformers import CLIPConfig

    # bos/eos/pad must lie inside the small vocabulary; EOT pooling uses eos.
    text = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_act="gelu",
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=64,
        patch_size=8,
        hidden_act="gelu",
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def _vit_l14_config(vocab_size: int):
    from transformers import CLIPConfig

    # OpenCLIP ViT-L/14 (LAION-2B) in transformers' format: GELU, 768-d joint space.
    text = dict(
        vocab_size=max(vocab_size, 49408),
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    vision = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        hidden_act="gelu",
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)


def write_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny CLIP with seeded random weights and save it as a transformers folder."""
    from transformers import CLIPModel

    folder = Path(folder)
    vocab = write_tiny_clip_tokenizer_files(folder / "_tok")
    tok = load_tokenizer(folder / "_tok")
    tok.model_max_length = 77
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(_tiny_clip_config(vocab))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _tiny_sd_components(seed: int, clip_folder: Path):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = load_tokenizer(clip_folder)
    vocab = len(tok)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=8,
            use_linear_projection=True,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            sample_size=64,
            block_out_channels=(8, 16, 16, 16),
            norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        )
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=vocab - 2,
                eos_token_id=vocab - 1,
                pad_token_id=vocab - 1,
            )
        )
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    return unet, vae, text, tok, sched


def write_tiny_sd(folder: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Build a tiny SD pipeline with seeded random weights; save it with diffusers' save_pretrained
    (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    tok_dir = folder.parent / (folder.name + "_tok")
    write_tiny_clip_tokenizer_files(tok_dir)
    unet, vae, text, tok, sched = _tiny_sd_components(seed, tok_dir)
    tok.model_max_length = 77
    if prediction_type != "epsilon":
        sched = type(sched).from_config(sched.config, prediction_type=prediction_type)
    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    return folder


def _tiny_root(seed: int) -> Path:
    # Built once per seed and reused: the tiny models are deterministic given the seed.
    base = Path(os.environ.get("SYNERDETECT_CACHE", Path.home() / ".cache" / "synerdetect"))
    return base / f"tiny-seed{seed}"


_TINY_CLIP_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")
_TINY_SD_FILES = (
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "scheduler/scheduler_config.json",
)


def _complete(folder: Path, files: tuple[str, ...]) -> bool:
    return all((folder / f).is_file() for f in files)


def ensure_tiny_folders(seed: int = 0, *, wait_s: float = 600.0) -> tuple[Path, Path]:
    """Build (once per seed) and return the tiny CLIP and SD folders.

    Under torch.distributed, transformers' save_pretrained writes on global rank 0 only, so rank 0 builds
    and the other ranks wait for the finished folders (a shared filesystem is assumed, as for the data)."""
    import time

    quiet_libraries()
    root = _tiny_root(seed)
    clip_dir, sd_dir = root / "clip", root / "sd"
    if _complete(clip_dir, _TINY_CLIP_FILES) and _complete(sd_dir, _TINY_SD_FILES):
        return clip_dir, sd_dir
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    if dist and torch.distributed.get_rank() != 0:
        deadline = time.monotonic() + wait_s
        while not (_complete(clip_dir, _TINY_CLIP_FILES) and _complete(sd_dir, _TINY_SD_FILES)):
            if time.monotonic() > deadline:
                raise BaseModelError(
                    f"waited {wait_s:.0f} s for rank 0 to build the tiny models in {root}; "
                    "the ranks need a shared filesystem (or set SYNERDETECT_CACHE to one)"
                )
            time.sleep(0.2)
        return clip_dir, sd_dir
    import shutil

    for d, files in ((clip_dir, _TINY_CLIP_FILES), (sd_dir, _TINY_SD_FILES)):
        if d.exists() and not _complete(d, files):  # left by a crashed build: renames only publish complete ones
            shutil.rmtree(d, ignore_errors=True)
    if not _complete(clip_dir, _TINY_CLIP_FILES):
        tmp = root / f"clip.tmp{os.getpid()}"
        write_tiny_clip(tmp, seed)
        _atomic_dir_replace(tmp, clip_dir)
    if not _complete(sd_dir, _TINY_SD_FILES):
        tmp = root / f"sd.tmp{os.getpid()}"
        write_tiny_sd(tmp, seed)
        _atomic_dir_replace(tmp, sd_dir)
    for d, files in ((clip_dir, _TINY_CLIP_FILES), (sd_dir, _TINY_SD_FILES)):
        if not _complete(d, files):
            raise BaseModelError(f"tiny model folder {d} is incomplete (expected {', '.join(files)}); delete it")
    return clip_dir, sd_dir


def _atomic_dir_replace(tmp: Path, final: Path) -> None:
    import shutil

    if final.exists():  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------


def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise BaseModelError(f"{what} not found: {path}")


def load_clip(spec: str, *, tiny_seed: int = 0):
    """Return (CLIPModel, tokenizer) from a transformers folder / hub id / "tiny" / "random:vit-l-14"."""
    from transformers import CLIPModel

    if spec == RANDOM_CLIP:
        clip_dir, _ = ensure_tiny_folders(tiny_seed)
        tok = load_tokenizer(clip_dir)
        return CLIPModel(_vit_l14_config(len(tok))), tok
    if spec == TINY:
        spec = str(ensure_tiny_folders(tiny_seed)[0])
    p = Path(spec)
    if p.exists():
        _require(p / "config.json", "CLIP config.json")
    try:
        model = CLIPModel.from_pretrained(spec)
        tok = load_tokenizer(spec)
    except OSError as e:
        raise BaseModelError(
            f"could not load CLIP from {spec!r}: {e}. Pass a local transformers CLIP folder "
            "(config.json, model.safetensors, tokenizer files) or a reachable hub id."
        ) from e
    if tok.model_max_length > 10_000:
        tok.model_max_length = model.config.text_config.max_position_embeddings  # type: ignore[union-attr]
    return model, tok


def load_sd(spec: str, *, tiny_seed: int = 0):
    """Return (unet, vae, scheduler_config, empty_context) from a diffusers SD pipeline folder / hub id /
    "tiny" / "random:sd-2.1-base". SD's text encoder is used once, for the empty prompt, then dropped."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    if spec == RANDOM_SD:
        unet = UNet2DConditionModel(
            sample_size=64,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=2,
            block_out_channels=(128, 256, 512, 512),
            sample_size=512,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        )
        sched: Any = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type="epsilon",
        )
        # Random weights anyway: a random empty-prompt context stands in for the 340M-param text tower.
        g = torch.Generator().manual_seed(tiny_seed)
        return unet, vae, dict(sched.config), torch.randn(1, 77, 1024, generator=g)
    if spec == TINY:
        spec = str(ensure_tiny_folders(tiny_seed)[1])
    p = Path(spec)
    if p.exists():
        _require(p / "model_index.json", "Stable Diffusion model_index.json")
        for sub in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
            _require(p / sub, f"Stable Diffusion '{sub}/' folder")
    try:
        unet = UNet2DConditionModel.from_pretrained(spec, subfolder="unet")
        vae = AutoencoderKL.from_pretrained(spec, subfolder="vae")
        # The folder's own scheduler config (betas, prediction_type); DDIM-compatible by construction.
        sched = DDIMScheduler.from_pretrained(spec, subfolder="scheduler")
        empty = _empty_prompt_context(spec)
    except OSError as e:
        raise BaseModelError(
            f"could not load Stable Diffusion from {spec!r}: {e}. Pass a local diffusers "
            "pipeline folder (model_index.json, unet/, vae/, scheduler/, text_encoder/, "
            "tokenizer/)."
        ) from e
    return unet, vae, dict(sched.config), empty


@torch.no_grad()
def _empty_prompt_context(spec: str) -> torch.Tensor:
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(spec, subfolder="tokenizer")
    text = CLIPTextModel.from_pretrained(spec, subfolder="text_encoder").eval()
    max_len = min(tok.model_max_length, text.config.max_position_embeddings)
    ids = tok([""], padding="max_length", max_length=max_len, truncation=True, return_tensors="pt").input_ids
    return text(ids).last_hidden_state.float().clone()


def read_base_configs(clip_spec: str, sd_spec: str, *, tiny_seed: int = 0):
    """The base models' configs only (a few KB of JSON), so that dimensions can be checked before any weights
    load. Returns (clip_config, unet_config, vae_config, sd_text_width) for local folders; None otherwise
    (random architectures, or hub ids that would need a download)."""
    import json as _json

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPConfig

    if clip_spec.startswith("random:") or sd_spec.startswith("random:"):
        return None
    quiet_libraries()
    if TINY in (clip_spec, sd_spec):
        tiny_clip, tiny_sd = ensure_tiny_folders(tiny_seed)
        clip_spec = str(tiny_clip) if clip_spec == TINY else clip_spec
        sd_spec = str(tiny_sd) if sd_spec == TINY else sd_spec
    clip_dir, sd_dir = Path(clip_spec), Path(sd_spec)
    if not (clip_dir.is_dir() and sd_dir.is_dir()):
        return None
    _require(clip_dir / "config.json", "CLIP config.json")
    for sub in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json"):
        _require(sd_dir / sub, f"Stable Diffusion {sub}")
    clip_cfg = CLIPConfig.from_pretrained(str(clip_dir))
    unet_cfg = dict(UNet2DConditionModel.load_config(str(sd_dir), subfolder="unet"))
    vae_cfg = dict(AutoencoderKL.load_config(str(sd_dir), subfolder="vae"))
    width = int(_json.loads((sd_dir / "text_encoder" / "config.json").read_text())["hidden_size"])
    return clip_cfg, unet_cfg, vae_cfg, width


def load_base_models(
    clip_spec: str, sd_spec: str, *, tiny_seed: int = 0, clip: bool = True, sd: bool = True
) -> BaseModels:
    """CLIP and / or Stable Diffusion (``clip`` / ``sd`` False: that model is not loaded, its fields are None)."""
    quiet_libraries()
    clip_model, tok = load_clip(clip_spec, tiny_seed=tiny_seed) if clip else (None, None)
    unet, vae, sched_cfg, empty = load_sd(sd_spec, tiny_seed=tiny_seed) if sd else (None, None, {}, None)
    return BaseModels(
        clip=clip_model,
        tokenizer=tok,
        unet=unet,
        vae=vae,
        scheduler_config=sched_cfg,
        empty_context=empty,
        clip_source=clip_spec,
        sd_source=sd_spec,
    )
