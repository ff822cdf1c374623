"""Where the evidence lies: the perceptual similarities of the whole-image tiles (``data.eval_view: tiles``) and
their aggregation into the z_v term of Eq. 10, and the spatial evidence of the inversion branch (E_d's patch tokens)
for the evidence maps.

Aggregation (docs/method.md, ledger): each tile t of an image gets the pair sim(z_v^t, z_t^c), c in {real, fake},
with the image's own prompt z_t (built from the centre view, as under ``center``). The image keeps the mean pair of
the selected tiles - all of them (``mean``), the one of highest perceptual logit (``max``) or the ``k`` of highest
logit (``topk``) - so its perceptual logit is the mean / max / top-k mean of the tile logits, and Eq. 10 adds the
z_n term exactly as before."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["TILE_CHUNK", "aggregate_tiles", "patch_similarities", "tile_similarities"]

#: Tiles per E_v forward pass: memory stays bounded whatever the batch's tile count.
TILE_CHUNK = 64


def tile_similarities(model, tiles: torch.Tensor, owner: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """T x 2: sim(z_v^t, z_t^c) of every tile with its image's prompts (``z_t``: B x 2 x D)."""
    sims = []
    for i in range(0, len(tiles), TILE_CHUNK):
        z = model.encode_visual(tiles[i : i + TILE_CHUNK].float())
        sims.append(torch.einsum("td,tcd->tc", z, z_t[owner[i : i + TILE_CHUNK]]))
    return torch.cat(sims)


def aggregate_tiles(sim: torch.Tensor, owner: torch.Tensor, batch: int, rule: str, k: int = 3) -> torch.Tensor:
    """B x 2: each image's similarity pair from its tiles' pairs ``sim`` (T x 2) by ``rule`` (module docstring)."""
    logit = sim[:, 1] - sim[:, 0]
    out = sim.new_empty((batch, 2))
    for b in range(batch):
        idx = torch.nonzero(owner == b).flatten()
        if rule == "mean":
            pick = idx
        elif rule == "max":
            pick = idx[logit[idx].argmax()].view(1)
        elif rule == "topk":
            pick = idx[logit[idx].topk(min(k, len(idx))).indices]
        else:
            raise ValueError(f"unknown tile aggregation {rule!r} (mean, max or topk)")
        out[b] = sim[pick].mean(dim=0)
    return out


def patch_similarities(encoder, pixel_values: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """B x g x g x 2: sim(patch token, z_t^c) of each of E_d's patch tokens, each token taken through the same
    final LayerNorm and projection as the pooled token that gives z_n (CLIP's ``post_layernorm`` and
    ``visual_projection``)."""
    vm = encoder.vision_model
    hidden = vm(pixel_values=pixel_values).last_hidden_state[:, 1:]  # drop the class token
    z = F.normalize(encoder.visual_projection(vm.post_layernorm(hidden)).float(), dim=-1)  # B x P x D
    g = int(round(z.shape[1] ** 0.5))
    return torch.einsum("bpd,bcd->bpc", z, z_t).reshape(z.shape[0], g, g, 2)
