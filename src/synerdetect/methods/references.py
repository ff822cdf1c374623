"""The paper's reference methods (Table 5a, Figure 3), trained and evaluated exactly like SynerDetect.

Each reference is a sibling of :class:`~synerdetect.model.detector.SynerDetect`: both subclass
:class:`~synerdetect.model.base.Detector`, which holds the base models, the VAE / DDIM inversion and E_d machinery,
the input checks and the safetensors save / load. A reference builds only what it reads - no prompt tuner, no
text tower, no LoRA by default; vanilla CLIP (one frozen vision tower, serving as E_v and / or E_d) only when it
reads a CLIP embedding, SD only when it inverts - plus its trainable head (everything it trains lives under
``head.``; with ``model.reference_lora`` the fusions also train SynerDetect's LoRA on two towers E_v / E_d). It
overrides its features, its loss (binary cross-entropy on the head's logit) and :meth:`predict`.

Conventions shared with SynerDetect, so that calibration, the cascade, the scorer and the reports work unchanged:
``logit = tau * classifier_logit`` (hence ``prob_fake = sigmoid(logit / tau) = sigmoid(classifier_logit)``),
``s_fake - s_real = logit`` and the Eq. 10 branch similarities ``sim_*`` are NaN (they have no meaning here).

The generative features come from an *unconditional* DDIM inversion (SD's empty-prompt context): DIRE /
inversion-feature detectors invert without a learnt prompt. The inversion takes no trainable weight, so the
feature cache (``cached=``) stores exactly what a reference reads.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from ..config import ConfigError, ExperimentConfig
from ..data.transforms import Views
from ..model.backbones import BaseModels
from ..model.base import CachedBatch, Detector, InputError, VisionEncoder, resize_square
from ..model.inversion import ddim_sample


def _scaled(z: torch.Tensor) -> torch.Tensor:
    # Unit-norm embeddings have coordinates of size ~1/sqrt(D): scale them to unit RMS so one learning rate fits
    # every head (a fixed rescaling; a linear probe on it is still a linear probe on the embedding).
    return z.float() * math.sqrt(z.shape[-1])


class ReferenceMethod(Detector):
    """What every reference shares: frozen feature extractors, a trainable ``head``, BCE training, the contract."""

    #: The method's decision needs no inversion, so ``predict(mode="perceptual")`` is the full method (UniFD only).
    perceptual_only: ClassVar[bool] = False
    #: The CLIP towers the method reads: "E_v" (vanilla CLIP on the image), "E_d" (vanilla CLIP on the decoded
    #: inverted latent). Both are the same frozen function, so one tower serves both names.
    clip_towers: ClassVar[tuple[str, ...]] = ()
    #: ``model.reference_lora`` applies (the fusions): E_v and E_d become two towers with SynerDetect's LoRA.
    lora_option: ClassVar[bool] = False
    head: nn.Module

    def __init__(self, cfg: ExperimentConfig, base: BaseModels):
        super().__init__(cfg, base)
        if cfg.model.noise_encoder_input != "vae_decode":
            # A noise adapter is trained by SynerDetect's losses; a reference would read a random one.
            raise ConfigError(f"method {self.method_name!r} needs model.noise_encoder_input=vae_decode")
        lora: list[nn.Parameter] = []
        if cfg.model.reference_lora and not self.lora_option:
            raise ConfigError(
                f"model.reference_lora applies to the fusions (fusion_a, fusion_b, fusion_c), not {self.method_name!r}"
            )
        if cfg.model.reference_lora:
            # SynerDetect's trainable capacity on the CLIP side: two towers, each with its own LoRA (same rank,
            # alpha, dropout and targets), so Table 5a can separate the fusion design from the trainable capacity.
            from ..model.detector import _add_lora

            self.E_v = _add_lora(VisionEncoder(base.clip), cfg.model, "E_v")
            self.E_d = _add_lora(VisionEncoder(copy.deepcopy(base.clip)), cfg.model, "E_d")
            lora = [p for enc in (self.E_v, self.E_d) for n, p in enc.named_parameters() if "lora_" in n]
        elif self.clip_towers:
            tower = VisionEncoder(base.clip)
            for name in self.clip_towers:
                setattr(self, name, tower)
        if self.uses_sd:
            self._attach_sd(base)
        self._attach_clip_normalisation()
        self.head = self.build_head()
        self._freeze([*lora, *self.head.parameters()])

    def build_head(self) -> nn.Module:
        raise NotImplementedError

    def forward_head(
        self, images: torch.Tensor, cached: CachedBatch | None, *, with_aux: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The classifier's logit (B, positive = fake) and, with ``with_aux``, the method's extra weighted losses."""
        raise NotImplementedError

    # ------------------------------------------------------------ frozen features
    def _proj_dim(self) -> int:
        """D, the joint embedding width of z_v and z_n."""
        proj: Any = getattr(self, self.clip_towers[0]).visual_projection
        return int(proj.out_features)

    def clip_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """Vanilla CLIP's image embedding (frozen E_v; with ``model.reference_lora`` E_v's LoRA), normalised, B x D.
        No ``no_grad``: a frozen tower records no graph, and a LoRA one must pass its gradient."""
        return self.encode_visual(self.clip_pixels(images))

    def unconditional_context(self, batch: int) -> torch.Tensor:
        ctx = self.empty_context
        return (ctx if ctx.ndim == 3 else ctx[None]).expand(batch, -1, -1).to(self.compute_dtype)

    @torch.no_grad()
    def inversion_inputs(
        self, images: torch.Tensor, z_t: torch.Tensor | None = None, *, latents: torch.Tensor | None = None
    ) -> CachedBatch:
        """SynerDetect's generative branch up to E_d, with SD's empty prompt instead of the tuner's (``z_t`` is
        ignored): the VAE latent at ``sd_size`` and its DDIM inversion at ``inversion_size``."""
        del z_t  # SynerDetect's signature, so that the same call serves every method
        latents, inv_latents = self.inversion_latents(images, latents)
        inverted = self.ddim_inversion(inv_latents, self.unconditional_context(inv_latents.shape[0]))
        return CachedBatch(latents, inverted)

    @torch.no_grad()
    def cache_features(self, images: torch.Tensor) -> CachedBatch:
        """What the feature cache stores for a batch: the unconditional inversion (no prompt tuner to run)."""
        if not self.uses_sd:
            return super().cache_features(images)  # the base's one-line error: nothing to cache
        return self.inversion_inputs(images, None, latents=self.encode_latents(images))

    def generative_inputs(self, images: torch.Tensor, cached: CachedBatch | None) -> CachedBatch:
        """``cached`` when it holds the inversion, else the inversion computed now."""
        if cached is None or cached.inverted is None:
            cached = self.inversion_inputs(images, None, latents=cached.latents if cached is not None else None)
        return cached

    @torch.no_grad()
    def noise_encoder_pixels(self, images: torch.Tensor, cached: CachedBatch | None) -> torch.Tensor:
        """E_d's input: the inverted latent decoded by the frozen VAE (from the cache when it stored it)."""
        c = self.generative_inputs(images, cached)
        if c.noise_pixels is not None:
            return c.noise_pixels.to(self.compute_dtype)
        assert c.inverted is not None
        return self.noise_pixels(c.inverted)

    def inversion_embedding(self, images: torch.Tensor, cached: CachedBatch | None) -> torch.Tensor:
        """z_n of vanilla CLIP (frozen E_d) on the decoded inverted latent, normalised, B x D."""
        return self.E_d(self.noise_encoder_pixels(images, cached))

    # ------------------------------------------------------------ contract
    @override
    def compute_losses(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        cached: CachedBatch | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Binary cross-entropy of the head's logit (+ the method's own terms). ``cr``, ``dcl``, ``pot`` and
        ``ot_dcl`` are zero (SynerDetect's terms, kept so that loggers read the same keys); ``generator`` is unused
        (no randomness in the references' losses)."""
        self.check_inputs(images, labels)
        target = torch.as_tensor(labels, device=images.device).float()
        logit, aux = self.forward_head(images, cached, with_aux=True)
        ce = F.binary_cross_entropy_with_logits(logit.float(), target)
        zero = ce.new_zeros(())
        total = ce
        for v in aux.values():
            total = total + v
        return {"total": total, "ce": ce, **aux, "cr": zero, "dcl": zero, "pot": zero, "ot_dcl": zero}

    @torch.no_grad()
    def predict(self, images: Any, *, cached: CachedBatch | None = None, mode: str = "full") -> dict[str, torch.Tensor]:
        """The head's decision per image, in SynerDetect's contract: ``logit = tau * classifier_logit`` so that
        ``prob_fake = sigmoid(logit / tau)``; ``s_real = -logit / 2``, ``s_fake = logit / 2``; ``sim_*`` NaN."""
        if mode not in ("full", "perceptual"):
            raise InputError(f"mode must be 'full' or 'perceptual', got {mode!r}")
        if mode == "perceptual" and not self.perceptual_only:
            raise InputError(
                f"method {self.method_name!r} has no perceptual-only path (mode 'perceptual' and the cascade need a "
                "decision from the CLIP branch alone: methods synerdetect and unifd); use mode 'full'"
            )
        images = self.as_input(images)  # PIL images and paths are preprocessed here
        self.check_inputs(images)
        was_training = self.training
        if was_training:
            self.eval()
        try:
            raw, _ = self.forward_head(images, cached, with_aux=False)
        finally:
            if was_training:
                self.train(True)
        tau = self.mcfg.tau
        logit = tau * raw.float()
        nan = torch.full_like(logit, float("nan"))
        return {
            "s_real": -logit / 2,
            "s_fake": logit / 2,
            "logit": logit,
            "prob_fake": torch.sigmoid(logit / tau),
            "label": (logit > 0).long(),
            "sim_v_real": nan,
            "sim_v_fake": nan,
            "sim_n_real": nan,
            "sim_n_fake": nan,
        }


# ---------------------------------------------------------------------------------------------- single paradigm
class UniFD(ReferenceMethod):
    """Table 5a "vanilla CLIP", Figure 3 "UniFD" (Ojha, Li and Lee 2023): a linear classifier on the frozen CLIP
    image embedding. UniFD probes CLIP ViT-L/14's image embedding with nearest neighbours or a linear layer; here
    the linear probe, on the configured CLIP (the paper preset's OpenCLIP ViT-L/14; the unit-norm embedding scaled
    to unit RMS). No inversion: ``mode="perceptual"`` is the full method and costs the same."""

    method_name = "unifd"
    perceptual_only = True
    clip_towers = ("E_v",)
    uses_sd = False  # no inversion: no VAE, no UNet

    def build_head(self) -> nn.Module:
        return nn.Linear(self._proj_dim(), 1)

    @override
    def forward_head(self, images, cached, *, with_aux):
        return self.head(_scaled(self.clip_embedding(images))).squeeze(-1), {}


class InversionProbe(ReferenceMethod):
    """Table 5a "vanilla Diffusion-Inv": the z_n path of SynerDetect alone - the image's unconditional DDIM
    inversion by the frozen SD, decoded by the frozen VAE and embedded by frozen CLIP (E_d without training) - and
    a linear classifier on that embedding (unit-norm, scaled to unit RMS)."""

    method_name = "inversion_probe"
    clip_towers = ("E_d",)

    def build_head(self) -> nn.Module:
        return nn.Linear(self._proj_dim(), 1)

    @override
    def forward_head(self, images, cached, *, with_aux):
        return self.head(_scaled(self.inversion_embedding(images, cached))).squeeze(-1), {}


class _BasicBlock(nn.Module):
    """ResNet basic block, GroupNorm instead of BatchNorm (no running statistics: the whole classifier is in the
    trainable state that checkpoints save, and a batch of one scores like a batch of many)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(8, cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(8, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.skip(x))


class DireCNN(nn.Module):
    """DIRE's classifier, small: a ResNet-style CNN (3x3 stem conv to 32 channels, three basic residual blocks of
    32, 64 and 128 channels at stride 2, global average pooling, a linear layer; ~0.3 M parameters). DIRE itself
    trains a ResNet-50 (ImageNet-pretrained); this project adds no torchvision weights and the demo runs on CPUs."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.GroupNorm(8, width), nn.ReLU())
        self.stages = nn.Sequential(
            _BasicBlock(width, width, 2), _BasicBlock(width, 2 * width, 2), _BasicBlock(2 * width, 4 * width, 2)
        )
        self.fc = nn.Linear(4 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3))).squeeze(-1)


class DIRE(ReferenceMethod):
    """Table 5a "vanilla Diffusion-Rec", Figure 3 "DIRE" (Wang et al. 2023): the diffusion reconstruction error
    ``|x - x'|``, where ``x'`` is the image DDIM-inverted (unconditionally, ``model.inversion_steps`` steps) and
    regenerated by deterministic DDIM sampling with the same frozen SD, then decoded by its VAE; a small trainable
    CNN (:class:`DireCNN`, ResNet-style) classifies the error map. DIRE uses an ADM pixel-space diffusion model and
    a ResNet-50; here the latent SD of the other methods (the error is measured in pixels, after the VAE round trip,
    at ``model.inversion_size``) and a small CNN. In evaluation a cache hit supplies the inversion and the regeneration
    runs here; training refuses it when it augments (see ``__init__``)."""

    method_name = "dire"
    uses_clip = False  # the error map is read by its own CNN

    def __init__(self, cfg: ExperimentConfig, base: BaseModels):
        d = cfg.data
        if cfg.cache.policy != "online" and (d.flip or d.blur_prob > 0 or d.jpeg_prob > 0):
            # The cache holds the inversion of the un-augmented evaluation view, while training subtracts it from
            # the augmented (possibly flipped) x: the map would measure the augmentation, not the reconstruction.
            # Without augmentation DIRE's SD view is the evaluation view exactly, and the cache is valid.
            raise ConfigError(
                f"method 'dire' trains online only (cache.policy={cfg.cache.policy!r} refused) while training augments "
                "(data.flip, blur_prob, jpeg_prob): the cached inversion is of the un-augmented view, and |x - x'| "
                "against the augmented x would measure the flip"
            )
        super().__init__(cfg, base)

    def build_head(self) -> nn.Module:
        return DireCNN()

    @torch.no_grad()
    def dire_map(self, images: torch.Tensor, cached: CachedBatch | None = None) -> torch.Tensor:
        """The DIRE image |x - x'| in [0, 1], B x 3 x s x s (s = the inversion resolution). ``cached`` must hold
        the inversion of this very view of ``images`` (evaluation, or training without augmentation)."""
        inverted = self.generative_inputs(images, cached).inverted
        assert inverted is not None
        rec = self.regenerate(inverted)
        x = resize_square((images.sd if isinstance(images, Views) else images).float(), rec.shape[-1])
        return (x - rec).abs()

    @torch.no_grad()
    def regenerate(self, inverted: torch.Tensor) -> torch.Tensor:
        """x': deterministic DDIM sampling from the inverted latent with the empty prompt, VAE-decoded, in [0, 1]."""
        z0 = ddim_sample(
            self.unet,
            self.scheduler_config,
            inverted.float(),
            self.unconditional_context(inverted.shape[0]),
            self.mcfg.inversion_steps,
        )
        rec = self.vae.decode((z0 / self.vae_scale).to(self.compute_dtype)).sample.float()
        return (rec.clamp(-1, 1) + 1) / 2

    @override
    def forward_head(self, images, cached, *, with_aux):
        return self.head(self.dire_map(images, cached)), {}


# ---------------------------------------------------------------------------------------------- generic fusions
class _CrossModalBlock(nn.Module):
    """One MulT crossmodal attention layer (Tsai et al. 2019): the target sequence queries the source sequence,
    pre-LayerNorm on both, residual; then a position-wise feed-forward block."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d))

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(source)
        x = target + self.attn(self.norm_q(target), kv, kv, need_weights=False)[0]
        return x + self.ff(self.norm_ff(x))


class MulTHead(nn.Module):
    """MulT for two modalities: each token sequence is projected to ``d`` by a kernel-1 temporal convolution; the
    perceptual stream attends to the generative one and vice versa (``layers`` crossmodal layers each, the source
    always the projected low-level sequence, as in MulT); each result passes one self-attention layer, is pooled,
    and the two are concatenated into MulT's residual output MLP."""

    def __init__(self, width_v: int, width_n: int, d: int = 64, heads: int = 4, layers: int = 2):
        super().__init__()
        self.proj_v = nn.Conv1d(width_v, d, 1, bias=False)
        self.proj_n = nn.Conv1d(width_n, d, 1, bias=False)
        self.v_from_n = nn.ModuleList(_CrossModalBlock(d, heads) for _ in range(layers))
        self.n_from_v = nn.ModuleList(_CrossModalBlock(d, heads) for _ in range(layers))
        self.self_v = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.self_n = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.proj1, self.proj2 = nn.Linear(2 * d, 2 * d), nn.Linear(2 * d, 2 * d)
        self.out = nn.Linear(2 * d, 1)

    def forward(self, tok_v: torch.Tensor, tok_n: torch.Tensor) -> torch.Tensor:
        v = self.proj_v(tok_v.transpose(1, 2)).transpose(1, 2)
        n = self.proj_n(tok_n.transpose(1, 2)).transpose(1, 2)
        hv, hn = v, n
        for blk_v, blk_n in zip(self.v_from_n, self.n_from_v, strict=True):
            hv, hn = blk_v(hv, n), blk_n(hn, v)
        # MulT reads the last element of each (temporal) sequence; ViT tokens have no time order: mean-pool.
        h = torch.cat([self.self_v(hv).mean(1), self.self_n(hn).mean(1)], dim=-1)
        h = h + self.proj2(F.relu(self.proj1(h)))
        return self.out(h).squeeze(-1)


class FusionA(ReferenceMethod):
    """Table 5a "Fusion-A": MulT-style cross-modal attention (Tsai et al. 2019, :class:`MulTHead`) between the
    token sequences of the two frozen feature sources - vanilla CLIP on the image (E_v's last hidden states after
    CLIP's final LayerNorm) and vanilla CLIP on the decoded inverted latent (E_d's) - and a classifier. MulT adds
    sinusoidal positions to its (position-free) inputs; ViT tokens carry CLIP's position embeddings already."""

    method_name = "fusion_a"
    clip_towers = ("E_v", "E_d")
    lora_option = True

    def build_head(self) -> nn.Module:
        vm: Any = self.E_v.vision_model
        w = int(vm.config.hidden_size)
        return MulTHead(w, w)

    def _tokens(self, encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        vm: Any = encoder.vision_model
        return vm.post_layernorm(vm(pixel_values=pixels).last_hidden_state).float()

    @override
    def forward_head(self, images, cached, *, with_aux):
        px_v = ((self.clip_pixels(images) - self.clip_mean) / self.clip_std).to(self.compute_dtype)
        tok_v = self._tokens(self.E_v, px_v)
        tok_n = self._tokens(self.E_d, self.noise_encoder_pixels(images, cached))
        return self.head(tok_v, tok_n), {}


class UniCodeHead(nn.Module):
    """Uni-Code (Xia et al. 2023) for two sources, as read here: a modality-specific encoder maps each source into
    one ``d``-dim semantic space; both are quantised by ONE shared codebook (nearest code, straight-through,
    VQ-VAE codebook + commitment loss), so the two sources are expressed in the same discrete vocabulary; a
    cross-modal InfoNCE between the two semantic vectors of an image (Uni-Code's cross-modal CPC, without its
    time axis) pulls each image's perceptual and generative codes together; the classifier reads the two
    quantised vectors. Not modelled: Uni-Code's mutual-information disentangling (DCID, with reconstruction
    decoders) and its EMA codebook update (MM-EMA; a gradient-trained codebook keeps everything in the trainable
    state instead)."""

    def __init__(self, dim: int, d: int = 64, codes: int = 64, beta: float = 0.25, align_weight: float = 0.1):
        super().__init__()
        self.enc_v = nn.Sequential(nn.Linear(dim, d), nn.GELU(), nn.Linear(d, d))
        self.enc_n = nn.Sequential(nn.Linear(dim, d), nn.GELU(), nn.Linear(d, d))
        self.codebook = nn.Parameter(torch.empty(codes, d).uniform_(-1 / codes, 1 / codes))
        self.classifier = nn.Linear(2 * d, 1)
        self.beta, self.align_weight, self.temperature = beta, align_weight, 0.1

    def quantize(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Straight-through quantised ``e`` and its VQ loss."""
        dist = torch.cdist(e, self.codebook)
        q = self.codebook[dist.argmin(dim=-1)]
        loss = F.mse_loss(q, e.detach()) + self.beta * F.mse_loss(e, q.detach())
        return e + (q - e).detach(), loss

    def forward(
        self, z_v: torch.Tensor, z_n: torch.Tensor, *, with_aux: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        e_v, e_n = self.enc_v(z_v), self.enc_n(z_n)
        q_v, vq_v = self.quantize(e_v)
        q_n, vq_n = self.quantize(e_n)
        logit = self.classifier(torch.cat([q_v, q_n], dim=-1)).squeeze(-1)
        if not with_aux:
            return logit, {}
        sim = F.normalize(e_v, dim=-1) @ F.normalize(e_n, dim=-1).T / self.temperature
        target = torch.arange(len(sim), device=sim.device)
        align = (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2
        return logit, {"vq": vq_v + vq_n, "align": self.align_weight * align}


class FusionB(ReferenceMethod):
    """Table 5a "Fusion-B": Uni-Code (Xia et al. 2023, :class:`UniCodeHead`) on the two frozen embeddings, vanilla
    CLIP's z_v and the inversion embedding z_n (unit-norm, scaled to unit RMS). Loss: BCE + VQ + 0.1 x InfoNCE."""

    method_name = "fusion_b"
    clip_towers = ("E_v", "E_d")
    lora_option = True

    def build_head(self) -> nn.Module:
        return UniCodeHead(self._proj_dim())

    @override
    def forward_head(self, images, cached, *, with_aux):
        z_v = _scaled(self.clip_embedding(images))
        z_n = _scaled(self.inversion_embedding(images, cached))
        return self.head(z_v, z_n, with_aux=with_aux)


class FusionC(ReferenceMethod):
    """Table 5a "Fusion-C": the concatenation [z_v, z_n] of vanilla CLIP's image embedding and the inversion
    embedding (each unit-norm, scaled to unit RMS) and a linear classifier."""

    method_name = "fusion_c"
    clip_towers = ("E_v", "E_d")
    lora_option = True

    def build_head(self) -> nn.Module:
        return nn.Linear(2 * self._proj_dim(), 1)

    @override
    def forward_head(self, images, cached, *, with_aux):
        z = torch.cat([_scaled(self.clip_embedding(images)), _scaled(self.inversion_embedding(images, cached))], -1)
        return self.head(z).squeeze(-1), {}


__all__ = ["DIRE", "DireCNN", "FusionA", "FusionB", "FusionC", "InversionProbe", "ReferenceMethod", "UniFD"]
