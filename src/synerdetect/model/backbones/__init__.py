"""Frozen foundation models: CLIP (transformers) and Stable Diffusion (diffusers).

A base-model *spec* is one of:
- a local folder or hub id (``transformers`` CLIP folder; ``diffusers`` SD pipeline folder);
- ``"tiny"``: a small model built from config with random weights (seeded), written to a
  folder with ``save_pretrained`` and loaded back through the same code path as a real one;
- ``"random:vit-l-14"`` / ``"random:sd-2.1-base"``: the paper's architectures with random
  weights (benchmarks without downloads).
"""

from .loaders import BaseModels, load_base_models, load_clip, load_sd, write_tiny_clip, write_tiny_sd

__all__ = ["BaseModels", "load_base_models", "load_clip", "load_sd", "write_tiny_clip", "write_tiny_sd"]
