"""Helpers shared by the tests/test_data_*.py files (small synthetic images and trees)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

_EXT_FORMAT = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",
    ".jfif": "JPEG",
    ".avif": "AVIF",
}


def noise_image(w: int = 32, h: int = 24, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def write_image(path: Path, w: int = 32, h: int = 24, seed: int = 0, fmt: str | None = None) -> Path:
    """Write a small noise RGB image; format from the extension unless given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or _EXT_FORMAT[path.suffix.lower()]
    img = noise_image(w, h, seed)
    if fmt == "GIF":
        img = img.convert("P")
    img.save(path, format=fmt)
    return path


def make_tree(root: Path, rel_paths: Iterable[str], **kw) -> list[Path]:
    """Write one small image per relative path under root."""
    out = []
    for i, rel in enumerate(rel_paths):
        out.append(write_image(Path(root) / rel, seed=i, **kw))
    return out


def jpeg_bytes(img: Image.Image | None = None, quality: int = 90) -> bytes:
    img = img if img is not None else noise_image(64, 64)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_truncated_jpeg(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_garbage(path: Path, n: int = 2048) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def png16_bytes(arr: np.ndarray) -> bytes:
    """Hand-written 16-bit PNG (H x W x {1,3,4} uint16) - Pillow cannot write 16-bit RGB."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    color_type = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def tiff16_rgb_bytes(arr: np.ndarray) -> bytes:
    """Hand-written uncompressed little-endian 16-bit RGB TIFF (H x W x 3 uint16)."""
    h, w, c = arr.shape
    assert c == 3
    data = arr.astype("<u2").tobytes()
    n_entries = 9
    ifd_off = 8
    bps_off = ifd_off + 2 + n_entries * 12 + 4
    data_off = bps_off + 6

    def short(tag: int, val: int) -> bytes:
        return struct.pack("<HHIHH", tag, 3, 1, val, 0)

    def long_(tag: int, val: int) -> bytes:
        return struct.pack("<HHII", tag, 4, 1, val)

    entries = [
        long_(256, w),
        long_(257, h),
        struct.pack("<HHII", 258, 3, 3, bps_off),  # BitsPerSample 16,16,16 (offset)
        short(259, 1),
        short(262, 2),
        long_(273, data_off),
        short(277, 3),
        long_(278, h),
        long_(279, len(data)),
    ]
    return (
        b"II*\x00"
        + struct.pack("<I", ifd_off)
        + struct.pack("<H", n_entries)
        + b"".join(entries)
        + struct.pack("<I", 0)
        + struct.pack("<HHH", 16, 16, 16)
        + data
    )
