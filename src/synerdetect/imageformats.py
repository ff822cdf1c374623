"""The image formats SynerDetect opens, and the one way every loader opens a file.

A module of its own (Pillow and pillow-heif only, nothing else imported) so that light commands such as
``synerdetect inspect`` use the same list as the data loaders without importing :mod:`synerdetect.data` (and torch).

HEIC / HEIF (the iPhone's default format) is decoded by pillow-heif, whose opener is registered with Pillow once,
the first time a file is opened (:func:`register_heif`), so every loader, ``inspect``, provenance (EXIF and XMP
from ``img.info``) and the service read it through :func:`open_image`.
"""

from __future__ import annotations

import functools
import os
from typing import BinaryIO

from PIL import Image

__all__ = ["IMAGE_FORMATS", "open_image", "register_heif"]

#: The only Pillow formats any loader opens (``Image.open(..., formats=...)``). Everything else (EPS, which runs
#: Ghostscript; PDF; ICO; PSD ...) is refused as an unsupported format whatever the file is called.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "AVIF", "BMP", "TIFF", "GIF", "HEIF")


@functools.cache
def register_heif() -> bool:
    """Register pillow-heif's HEIF opener with Pillow (once per process); False when pillow-heif is missing."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # a dependency, but a broken install should still open the other formats
        return False
    register_heif_opener()
    return True


def available_formats() -> tuple[str, ...]:
    """:data:`IMAGE_FORMATS` that this Pillow build has (``Image.open`` raises KeyError for a missing one)."""
    Image.init()
    register_heif()
    return tuple(f for f in IMAGE_FORMATS if f in Image.OPEN)


def open_image(fp: str | os.PathLike | BinaryIO) -> Image.Image:
    """``Image.open(fp)`` restricted to :data:`IMAGE_FORMATS` (header only, lazy like ``Image.open``)."""
    return Image.open(fp, formats=available_formats())
