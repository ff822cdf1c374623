"""The detector and its parts: the CLIP/SD base models (``backbones``), prompt generation (Eq. 1), the DDIM
inversion, :class:`Detector` (what every detection method shares) and :class:`SynerDetect`, which joins them with
the losses of :mod:`synerdetect.losses`. Choosing a class by the config's ``method`` is :mod:`synerdetect.methods`'
job (``build_detector`` / ``load_detector``); this package never imports it."""

from .base import CheckpointError, Detector, InputError
from .detector import SynerDetect

__all__ = ["CheckpointError", "Detector", "InputError", "SynerDetect"]
