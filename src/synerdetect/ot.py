"""Kept so that ``synerdetect.ot.*`` keeps working: the code lives in :mod:`synerdetect.losses.ot`."""

from .losses.ot import *  # noqa: F403
from .losses.ot import __all__  # noqa: F401
