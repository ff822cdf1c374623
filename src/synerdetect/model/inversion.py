"""Deterministic DDIM inversion (and sampling, its inverse) with diffusers' schedulers.

The loop is the one diffusers' inversion pipelines run; it is kept here, batched and without
gradient, so that it can be timed, cached and compiled on its own.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable

import torch


def make_schedulers(scheduler_config: dict, steps: int):
    """DDIM (sampling) and DDIMInverse schedulers from the SD folder's own scheduler config.

    ``clip_sample`` is forced off: the bare DDIMInverseScheduler default clips, which is wrong for latents."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    key = (json.dumps(scheduler_config, sort_keys=True, default=str), steps)
    if key not in _CACHE:
        cfg = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
        cfg["clip_sample"] = False
        fwd = DDIMScheduler.from_config(_accepted(DDIMScheduler, cfg))
        inv = DDIMInverseScheduler.from_config(_accepted(DDIMInverseScheduler, cfg))
        fwd.set_timesteps(steps)
        inv.set_timesteps(steps)
        _CACHE[key] = (fwd, inv)
    return _CACHE[key]


_CACHE: dict = {}


def _accepted(cls, cfg: dict) -> dict:
    # A DDIM config carries keys (thresholding, ...) the inverse scheduler does not take.
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in cfg.items() if k in params}


UNetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _unet_call(unet) -> UNetFn:
    def fn(x, t, ctx):
        return unet(x, t, encoder_hidden_states=ctx, return_dict=False)[0]

    return fn


@torch.no_grad()
def ddim_invert(
    unet,
    scheduler_config: dict,
    latents: torch.Tensor,
    context: torch.Tensor,
    steps: int,
    *,
    unet_fn: UNetFn | None = None,
) -> torch.Tensor:
    """Map clean latents z0 (B x C x h x w) to ẑ_T by DDIM inversion conditioned on ``context``
    (B x L x D). Guidance scale 1, no gradient."""
    _, inv = make_schedulers(scheduler_config, steps)
    fn = unet_fn or _unet_call(unet)
    x = latents
    dtype = next(unet.parameters()).dtype
    for t in inv.timesteps:
        eps = fn(x.to(dtype), t, context.to(dtype)).to(latents.dtype)
        x = inv.step(eps, t, x, return_dict=False)[0]
    return x


@torch.no_grad()
def ddim_sample(unet, scheduler_config: dict, noise: torch.Tensor, context: torch.Tensor, steps: int) -> torch.Tensor:
    """Deterministic DDIM sampling (eta 0) from ẑ_T back to z0; the inverse of :func:`ddim_invert`."""
    fwd, _ = make_schedulers(scheduler_config, steps)
    x = noise
    dtype = next(unet.parameters()).dtype
    for t in fwd.timesteps:
        eps = unet(x.to(dtype), t, encoder_hidden_states=context.to(dtype), return_dict=False)[0].to(noise.dtype)
        x = fwd.step(eps, t, x, eta=0.0, return_dict=False)[0]
    return x
