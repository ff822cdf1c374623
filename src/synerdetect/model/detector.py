"""The SynerDetect detector: E_v, E_d (CLIP + LoRA), prompt generation, CMID, conditional inversion,
OT-DCL and the Eq. 10 decision. One module, one contract (that of :class:`~synerdetect.model.base.Detector`, which
holds what every method shares):

- ``compute_losses(images, labels)`` -> dict of 0-dim tensors (cr, dcl, pot, ot_dcl, total, ...)
- ``predict(images)`` -> dict of per-image tensors (s_real, s_fake, logit, prob_fake, label)

``images`` are float tensors B x 3 x H x W in [0, 1]; the model does its own CLIP and SD preprocessing.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, ExperimentConfig, ModelConfig
from ..losses.contrastive import dcl_loss_two_views
from ..losses.ot import pot_loss
from .backbones import BaseModels

# Re-exported: these lived here before the shared base existed and are imported from here across the package.
from .base import (
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    CachedBatch,
    CheckpointError,
    Detector,
    InputError,
    VisionEncoder,
    dimension_problems,
    view_transform,
)
from .prompt import PromptTextEncoder, VisualAwareTuner


def _add_lora(module: nn.Module, cfg: ModelConfig, name: str) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    lcfg = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # peft accepts a float
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
    )
    try:
        return inject_adapter_in_model(lcfg, module, adapter_name="default")
    except ValueError as e:
        raise ConfigError(f"LoRA on {name}: {e} (model.lora_targets={cfg.lora_targets})") from e


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


class SynerDetect(Detector):
    """The paper's method (``method: synerdetect``): E_v and E_d (CLIP vision towers, each with its own LoRA), the
    Visual-aware Tuner and text tower (Eq. 1), CMID (Eq. 2), the discriminative conditional inversion, OT-DCL
    (Eq. 3-8), the total loss (Eq. 9) and the Eq. 10 decision."""

    method_name: ClassVar[str] = "synerdetect"
    conditioned_inversion: ClassVar[bool] = True
    always_eval: ClassVar[tuple[str, ...]] = ("unet", "vae", "text")

    def __init__(self, cfg: ExperimentConfig, base: BaseModels):
        super().__init__(cfg, base)
        m = cfg.model
        clip = base.clip
        if m.gradient_checkpointing:
            # Non-reentrant: the frozen towers' inputs need no grad, yet the LoRA weights inside must get one.
            kwargs = {"use_reentrant": False}
            if hasattr(clip, "activation_checkpointing_enable"):  # transformers >= 5 name
                clip.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                clip.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        # The order below is the order of the random draws and of the trainable parameters (the optimiser state of
        # a checkpoint is indexed by it): keep it.
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
        self._attach_sd(base)
        sd_width = self.empty_context.shape[-1]
        self.cond_proj = nn.Linear(joint, sd_width)  # 768 -> 1024 (docs/method.md), trained by L_CR only
        self.adapter = nn.Conv2d(base.vae.config.latent_channels, 3, 1) if m.noise_encoder_input == "adapter" else None
        from diffusers import DDIMScheduler

        self.noise_scheduler = DDIMScheduler.from_config(
            {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        )
        self.prediction_type = self.noise_scheduler.config.prediction_type
        if self.prediction_type not in {"epsilon", "v_prediction"}:
            raise ConfigError(f"unsupported SD prediction_type {self.prediction_type!r}")
        self._attach_clip_normalisation()
        lora = [p for enc in (self.E_v, self.E_d) for n, p in enc.named_parameters() if "lora_" in n]
        heads = [p for mod in (self.tuner, self.cond_proj, self.adapter) if mod is not None for p in mod.parameters()]
        self._freeze(lora + heads)
        if m.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    @classmethod
    def _dimension_problems(
        cls, m: ModelConfig, clip_cfg: Any, unet_cfg: dict | None, vae_cfg: dict | None, sd_text_width: int | None
    ) -> list[str]:
        problems = super()._dimension_problems(m, clip_cfg, unet_cfg, vae_cfg, sd_text_width)
        width = clip_cfg.text_config.hidden_size
        if width % m.tuner_heads:
            problems.append(f"text width {width} is not divisible by model.tuner_heads={m.tuner_heads}")
        return problems

    def frozen_clip_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """E_v's frozen CLIP weights and the text tower: the inversion is conditioned on the prompt they produce."""
        frozen = [(n, p) for n, p in self.E_v.named_parameters() if not p.requires_grad]
        text: Any = self.text
        return frozen + list(text.named_parameters()) + list(text.named_buffers())

    # ------------------------------------------------------------------ stages
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
    def invert(self, latents: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Discriminative conditional inversion: DDIM-invert z0 conditioned on ``cond`` (B x D)."""
        return self.ddim_inversion(latents, self.sd_context(cond.detach()).to(self.compute_dtype), steps)

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
        # the inversion may run at its own (lower) resolution; CMID's latent stays at sd_size
        latents, inv_latents = self.inversion_latents(images, latents)
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
            noise_px = cached.noise_pixels.to(self.compute_dtype)
        else:
            assert cached.inverted is not None  # set just above when it was missing
            noise_px = self.noise_pixels(cached.inverted)
        z_n = self.E_d(noise_px)
        return {
            "noise_pixels": noise_px,
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
    def predict(self, images: Any, *, cached: CachedBatch | None = None, mode: str = "full") -> dict[str, torch.Tensor]:
        """Eq. 10 per image: s_real, s_fake, logit = s_fake - s_real, prob_fake, label (1 = fake), and the two branch
        similarities sim_v_* / sim_n_*. No label is used.

        ``mode="perceptual"`` computes the CLIP branch only (no VAE, no inversion): s_c = sim(z_v, z_t^c) and the
        generative similarities are NaN. The cascade (engine/cascade.py) uses it to decide which images need the
        inversion. Under ``data.eval_view: tiles`` (images are :class:`~synerdetect.data.tiled.TiledViews`) the z_v
        term is the aggregate of the tiles' (model/evidence.py)."""
        return self.predict_with_evidence(images, cached=cached, mode=mode)[0]

    @torch.no_grad()
    def predict_with_evidence(
        self, images: Any, *, cached: CachedBatch | None = None, mode: str = "full", spatial: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`predict` and the spatial evidence behind it: ``tile_sim`` (T x 2, the tiles' z_v similarities)
        when the images carry tiles, and with ``spatial`` (mode full) ``patch_sim`` (B x g x g x 2, E_d's patch
        tokens against z_t: one more E_d pass). The one code path of Eq. 10."""
        from ..data.tiled import TiledViews
        from .evidence import aggregate_tiles, patch_similarities, tile_similarities

        if mode not in ("full", "perceptual"):
            raise InputError(f"mode must be 'full' or 'perceptual', got {mode!r}")
        images = self.as_input(images)  # PIL images and paths are preprocessed here
        self.check_inputs(images)
        was_training = self.training
        if was_training:  # walking ~20k modules to flip modes costs ~8% of a tiny batch: only when needed
            self.eval()
        extra: dict[str, torch.Tensor] = {}
        try:
            if mode == "full":
                f = self.features(images, cached=cached)
                z_t = f["z_t"]
                sim_v, sim_n = self.branch_similarities(f["z_v"], f["z_n"], z_t)
                if spatial:
                    extra["patch_sim"] = patch_similarities(self.E_d, f["noise_pixels"], z_t)
            else:
                _, z_v, z_t = self.perceptual(images)
                sim_v = torch.einsum("bd,bcd->bc", z_v, z_t)
                sim_n = torch.zeros_like(sim_v)  # no generative term; reported as NaN below
            if isinstance(images, TiledViews):
                # the tiles replace the centre crop in the z_v term of Eq. 10 under eval_view: tiles; otherwise
                # they are scored for the evidence map only
                owner = images.owner
                if owner is None:  # one image's views, not collated into a batch
                    raise InputError("tiled views must be stacked into a batch (TiledViews.stack) before predict")
                extra["tile_sim"] = tile_similarities(self, images.tiles, owner, z_t)
                if self.cfg.data.eval_view == "tiles":
                    d = self.cfg.data
                    sim_v = aggregate_tiles(extra["tile_sim"], owner, len(sim_v), d.tile_aggregate, d.tile_topk)
            s = sim_v + sim_n
        finally:
            if was_training:
                self.train(True)
        if mode != "full":
            sim_n = torch.full_like(sim_v, float("nan"))
        logit = s[:, 1] - s[:, 0]
        out = {
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
        return out, extra


__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CachedBatch",
    "CheckpointError",
    "InputError",
    "SynerDetect",
    "VisionEncoder",
    "dimension_problems",
    "view_transform",
]
