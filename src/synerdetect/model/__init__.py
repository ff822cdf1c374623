"""The detector and its parts: the CLIP/SD base models (``backbones``), prompt generation (Eq. 1), the DDIM
inversion, and :class:`SynerDetect`, which joins them with the losses of :mod:`synerdetect.losses`."""

from .detector import InputError, SynerDetect

__all__ = ["InputError", "SynerDetect"]
