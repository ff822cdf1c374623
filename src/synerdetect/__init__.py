"""SynerDetect: hierarchical synergistic learning for AI-generated image detection.

CLIP perceptual encoder + frozen Stable Diffusion 2.1, joined by Cross-Model Interactive
Distillation (CMID) and Optimal-Transport-guided discriminative contrastive learning (OT-DCL).

::

    import synerdetect
    detector = synerdetect.load("org/name")          # or a folder; device="cuda"; mode="cascade"
    records = detector(["photo.jpg", pil_image, raw_bytes])
"""

from __future__ import annotations

from .version import __version__

__all__ = ["LoadedDetector", "SynerDetect", "__version__", "get_preset", "list_presets", "load"]


def __getattr__(name):  # lazy: `import synerdetect` stays cheap for the CLI and data tools
    if name == "SynerDetect":
        from .model.detector import SynerDetect

        return SynerDetect
    if name in ("load", "LoadedDetector"):
        from . import api

        return getattr(api, name)
    if name in ("list_presets", "get_preset"):
        from . import presets

        return getattr(presets, name)
    raise AttributeError(name)
