"""Discriminative prompt generation (paper Eq. 1).

``p̂_c = p_c + Attn(LN(p_c), LN(z_v), LN(CConv(x)))`` then ``z_t^c = E_t([SOS] p̂_c [class c] . [EOS])``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class BayarConstraint(nn.Module):
    """Bayar & Stamm (2018) constrained kernel: centre weight −1, the other weights of each kernel sum to +1.

    Applied as a parametrisation, so the *effective* weight satisfies the constraint after every
    optimiser step, and the raw parameter stays free."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        k = w.shape[-1]
        c = k // 2
        mask = torch.ones_like(w)
        mask[..., c, c] = 0
        off = w * mask
        s = off.sum(dim=(-2, -1), keepdim=True)
        # Guard the division; the sign is kept so a kernel whose sum crosses 0 does not flip.
        s = torch.where(s.abs() < 1e-6, torch.full_like(s, 1e-6) * torch.sign(s + 1e-12), s)
        centre = torch.zeros_like(w)
        centre[..., c, c] = -1.0
        return off / s + centre


class BayarConv2d(nn.Conv2d):
    def __init__(self, in_channels: int = 3, out_channels: int = 3, kernel_size: int = 5):
        if kernel_size % 2 != 1:
            raise ValueError(f"Bayar kernel size must be odd, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        with torch.no_grad():  # positive init keeps the normalising sums well away from 0
            self.weight.uniform_(0.0, 1.0)
        parametrize.register_parametrization(self, "weight", BayarConstraint())


class CConvTokens(nn.Module):
    """Local artifact tokens: Bayar layer -> small conv stem -> grid x grid tokens of width ``dim``."""

    def __init__(self, dim: int, filters: int = 3, kernel: int = 5, channels: int = 32, grid: int = 4):
        super().__init__()
        self.bayar = BayarConv2d(3, filters, kernel)
        self.stem = nn.Sequential(
            nn.Conv2d(filters, channels, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.proj = nn.Linear(channels, dim)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.stem(self.bayar(x01)))  # B x C x g x g
        return self.proj(h.flatten(2).transpose(1, 2))  # B x g² x dim


class VisualAwareTuner(nn.Module):
    """Eq. 1: refines the learnable context with the global z_v and the local CConv tokens.

    With both sources switched off (Table 5c, "fixed prompts") the context is the same for every image."""

    def __init__(
        self,
        width: int,
        joint_dim: int,
        n_ctx: int,
        heads: int,
        *,
        use_global: bool,
        use_local: bool,
        cconv_filters: int,
        cconv_kernel: int,
        cconv_channels: int,
        cconv_grid: int,
        init_std: float = 0.02,
        out_init: float = 0.0,
    ):
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"text width {width} is not divisible by tuner_heads={heads}")
        self.ctx = nn.Parameter(torch.randn(n_ctx, width) * init_std)  # p_c (CoOp)
        self.use_global, self.use_local = use_global, use_local
        if use_global or use_local:
            self.ln_q = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
            # A small output projection (PyTorch's default init times ``out_init``): the tuner starts close to plain
            # CoOp context (p̂_c ≈ p_c) and learns how much image evidence to add. The default init would make the
            # per-image term ~25x larger than p_c at step 0, leaving each image's other-class prompt, which Eq. 7
            # never trains, arbitrary; a zero init (``out_init=0``) gives the attention, the z_v projection and
            # CConv no gradient at step 0, and under SGD 1e-4 they barely move (docs/method.md, the ledger).
            with torch.no_grad():
                self.attn.out_proj.weight.mul_(out_init)
            nn.init.zeros_(self.attn.out_proj.bias)
        if use_global:
            self.zv_proj = nn.Linear(joint_dim, width)  # z_v lives in the joint space, keys in the text width
            self.ln_zv = nn.LayerNorm(width)
        if use_local:
            self.cconv = CConvTokens(width, cconv_filters, cconv_kernel, cconv_channels, cconv_grid)
            self.ln_local = nn.LayerNorm(width)

    def forward(self, z_v: torch.Tensor, x01: torch.Tensor) -> torch.Tensor:
        """z_v: B x D (joint space); x01: B x 3 x H x W in [0, 1]. Returns p̂_c: B x n_ctx x width."""
        b = z_v.shape[0]
        ctx = self.ctx.unsqueeze(0).expand(b, -1, -1)
        if not (self.use_global or self.use_local):
            return ctx
        kv = []
        if self.use_global:
            kv.append(self.ln_zv(self.zv_proj(z_v)).unsqueeze(1))
        if self.use_local:
            kv.append(self.ln_local(self.cconv(x01)))
        kv_all = torch.cat(kv, dim=1)
        out, _ = self.attn(self.ln_q(ctx), kv_all, kv_all, need_weights=False)
        return ctx + out


class PromptTextEncoder(nn.Module):
    text_model: Any  # transformers CLIPTextTransformer
    token_ids: torch.Tensor
    eos_pos: torch.Tensor
    """Frozen CLIP text tower fed with learned context embeddings in place of placeholder tokens.

    transformers' CLIPTextModel only takes token ids, so the embedding/encoder/pooling steps are
    called one by one here with ``inputs_embeds``; the layers themselves are the library's."""

    def __init__(self, clip_model, tokenizer, n_ctx: int, class_names: list[str]):
        super().__init__()
        self.text_model = clip_model.text_model
        self.text_projection = clip_model.text_projection
        self.n_ctx = n_ctx
        prompts = [" ".join(["X"] * n_ctx) + f" {name}." for name in class_names]
        enc = tokenizer(prompts, padding=True, return_tensors="pt")
        ids = enc.input_ids
        eos = tokenizer.eos_token_id
        # First EOS per row (pad may equal eos); causal attention makes the trailing pads irrelevant.
        eos_pos = (ids == eos).int().argmax(dim=1)
        if ids.shape[1] > self.text_model.config.max_position_embeddings:
            raise ValueError(
                f"prompt of {ids.shape[1]} tokens exceeds the text tower's "
                f"{self.text_model.config.max_position_embeddings} positions; lower model.n_ctx"
            )
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("eos_pos", eos_pos, persistent=False)
        self.width = self.text_model.config.hidden_size

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        """ctx: B x n_ctx x width -> normalised z_t: B x n_classes x joint_dim."""
        from transformers.masking_utils import create_causal_mask

        b = ctx.shape[0]
        n_cls, length = self.token_ids.shape
        tok_emb = self.text_model.embeddings.token_embedding(self.token_ids)  # n_cls x L x W
        tok_emb = tok_emb.unsqueeze(0).expand(b, -1, -1, -1)
        ctx = ctx.to(tok_emb.dtype).unsqueeze(1).expand(-1, n_cls, -1, -1)
        emb = torch.cat([tok_emb[:, :, :1], ctx, tok_emb[:, :, 1 + self.n_ctx :]], dim=2).reshape(b * n_cls, length, -1)
        hidden = self.text_model.embeddings(inputs_embeds=emb)
        mask = create_causal_mask(config=self.text_model.config, inputs_embeds=hidden, attention_mask=None, cache=None)
        hidden = self.text_model.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
        hidden = self.text_model.final_layer_norm(hidden)
        pos = self.eos_pos.repeat(b)
        pooled = hidden[torch.arange(b * n_cls, device=hidden.device), pos]
        z = self.text_projection(pooled).float().reshape(b, n_cls, -1)
        return F.normalize(z, dim=-1)
