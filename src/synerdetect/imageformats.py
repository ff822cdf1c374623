"""The image formats SynerDetect opens, and the one way every loader opens a file.

A module of its own (Pillow only, nothing else imported) so that light commands such as ``synerdetect inspect``
use the same list as the data loaders without importing :mod:`synerdetect.data` (and torch).
"""

from __future__ import annotations

import os
from typing import BinaryIO

from PIL import Image

__all__ = ["IMAGE_FORMATS", "open_image"]

#: The only Pillow formats any loader opens (``Image.open(..., formats=...)``). Everything else (EPS, which runs
#: Ghostscript; PDF; ICO; PSD ...) is refused as an unsupported format whatever the file is called.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "AVIF", "BMP", "TIFF", "GIF")


def available_formats() -> tuple[str, ...]:
    """:data:`IMAGE_FORMATS` that this Pillow build has (``Image.open`` raises KeyError for a missing one)."""
    Image.init()
    return tuple(f for f in IMAGE_FORMATS if f in Image.OPEN)


def open_image(fp: str | os.PathLike | BinaryIO) -> Image.Image:
    """``Image.open(fp)`` restricted to :data:`IMAGE_FORMATS` (header only, lazy like ``Image.open``)."""
    return Image.open(fp, formats=available_formats())
