"""Which path of Eq. 10 scores an image: the whole method, the perceptual branch alone, or the cascade between them.

A module of its own, without torch, so that the command line can offer ``--mode`` choices without importing the
model (see :mod:`synerdetect.engine.cascade` for what each mode does)."""

MODES = ("full", "perceptual", "cascade")
