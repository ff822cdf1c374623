"""Robust image loading for detector datasets.

:func:`load_image` turns *any* image a real dataset holds into an 8-bit RGB
:class:`PIL.Image.Image`, or raises :class:`UnreadableImage`.  It never returns
a blank/zero image for a failure.

What is handled:

* formats: JPEG (also ``.jfif``), PNG, WebP, AVIF (when Pillow is built with
  it, as the official wheels are), BMP, TIFF, GIF (first frame; also the first
  frame of multi-page TIFF / animated PNG / WebP);
* modes: ``1``, ``L``, ``P`` (with/without transparency), ``LA``/``La``/``PA``,
  ``RGBA``/``RGBa`` (alpha composited on **white**), ``CMYK`` (Pillow's
  conversion, no ICC colour management, like the reference CNNDetection/UniFD
  pipelines), ``YCbCr``, ``I;16*`` (16-bit, scaled ``round(v / 257)``), ``I``
  (32-bit int, see :func:`_int_to_uint8`), ``F`` (float, see
  :func:`_float_to_uint8`).  16-bit *RGB(A)* PNG/TIFF are decoded by Pillow to
  the high byte of every sample (``v >> 8``), which is a proper scaling too;
* EXIF orientation (``ImageOps.exif_transpose``; a broken EXIF block is ignored
  rather than failing the image);
* decompression bombs: an explicit pixel cap (``max_pixels``) and a decoded-bytes
  cap (``max_decode_bytes``: bytes per pixel of the file's mode plus the RGB
  output, see :func:`decode_cost`) checked from the header *before* decoding;
  Pillow's own ``DecompressionBombWarning`` is turned into an error and
  ``DecompressionBombError`` is reported as unreadable.  Mode conversions run in
  strips of rows, so the peak is the decoded image plus the RGB result.  A JPEG
  over the byte cap is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
  :meth:`PIL.Image.Image.draft`) rather than refused: that changes the pixels the
  model's centre crop sees, so it happens only for an image that would otherwise
  be refused (never, with the default caps, for an image under the pixel cap);
* only the formats above are opened (:data:`IMAGE_FORMATS`, given to
  ``Image.open(..., formats=...)`` by :func:`open_image`): PostScript, PDF and
  Pillow's other plugins are never reached, whatever the file is named.

Failures (missing file, broken symbolic link, directory, empty file, non-image,
truncated/corrupt data, bomb, unsupported mode) raise :class:`UnreadableImage`
with ``.path`` and ``.reason``.

Only regular files are read.  A FIFO, socket or device (``"not a regular file
(FIFO)"`` ...) is refused from its ``stat`` *before* it is opened, and the file
is opened non-blocking and checked again with ``fstat`` (no window in which a
file swapped for a FIFO could block), so nothing here waits forever on a
special file.  :func:`open_regular_file` offers the same to other readers
(e.g. code hashing image files).

Note: Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay ``False``
(the default) for truncated files to be detected; if some other code sets it,
a warning is logged once and truncated files may be padded by Pillow.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import warnings
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..imageformats import IMAGE_FORMATS, open_image

__all__ = [
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "UnreadableImage",
    "decode_cost",
    "decode_open_file",
    "exif_transpose",
    "image_format",
    "file_kind",
    "is_image_file",
    "load_image",
    "load_image_with_format",
    "open_image",
    "open_regular_file",
    "pil_to_rgb8",
    "to_rgb8",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Default pixel cap (width * height), Pillow's own default warning threshold
#: (~89.5 MPix, e.g. 9459 x 9459).  4K/8K photographs are far below it.
DEFAULT_MAX_PIXELS: int = 89_478_485

#: Peak bytes a decode may add (:func:`decode_cost`): 1 GiB.  An 8-bit RGB or RGBA
#: image at the pixel cap needs about 0.72 GB (8 bytes per pixel).
DEFAULT_MAX_DECODE_BYTES: int = 1 << 30

#: File extensions treated as images (lower case, with dot).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".avif", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
)

_EXT_TO_FORMAT = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".avif": "AVIF",
    ".bmp": "BMP",
    ".dib": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",
    ".heic": "HEIF",
    ".heif": "HEIF",
}

# Serialises Image.open() while the bomb warning is escalated to an error.
# ``warnings.catch_warnings`` mutates process-global state, so concurrent use
# from several threads (check_dataset uses a thread pool) must not interleave.
# Only the cheap header parse runs under the lock; decoding runs outside it.
_OPEN_LOCK = threading.Lock()
_truncated_flag_warned = False
_SUPPORTED = ", ".join(f.replace("WEBP", "WebP") for f in IMAGE_FORMATS)
_STRIP_PIXELS = 1 << 20  # pixels per strip in the mode conversions (a few MB of temporaries)


def _accepts(accept: Callable[[bytes], object], prefix: bytes) -> bool:
    result = accept(prefix)
    return bool(result) and not isinstance(result, str)  # a str is Pillow's "maybe, with a warning"


def _refused_format(f: BinaryIO) -> str | None:
    """The Pillow format whose signature the file has, when it is not one of :data:`IMAGE_FORMATS` (only the
    plugins' cheap 16-byte signature checks run, never their parsers), for a clearer error."""
    try:
        f.seek(0)
        prefix = f.read(16)
        for fmt, (_factory, accept) in Image.OPEN.items():
            if fmt not in IMAGE_FORMATS and accept is not None and _accepts(accept, prefix):
                return fmt
    except Exception:  # noqa: BLE001 - only a nicer message is at stake
        pass
    return None


class UnreadableImage(Exception):
    """An image file that cannot be decoded into a valid RGB image.

    Attributes:
        path: the file path (str).
        reason: short human readable reason.
    """

    def __init__(self, path: PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = str(reason)
        super().__init__(self.path, self.reason)

    def __str__(self) -> str:
        return f"unreadable image {self.path!r}: {self.reason}"

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


def is_image_file(path: PathLike) -> bool:
    """True if ``path`` has an image extension (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def image_format(path: PathLike) -> str:
    """Container format of ``path`` as Pillow names it (``"JPEG"``, ``"PNG"``...).

    Only the header is read.  If Pillow cannot identify the file, falls back to
    the extension (``".jpg"`` -> ``"JPEG"``; unknown -> upper-cased extension,
    or ``"UNKNOWN"`` without one).
    """
    try:
        with open_regular_file(path) as f:  # a FIFO would block Image.open(path) forever
            with _OPEN_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im = open_image(f)
            with im:
                if im.format:
                    return str(im.format)
    except Exception:  # noqa: BLE001 - any failure -> extension fallback
        pass
    return _format_from_extension(path)


def _format_from_extension(path: PathLike) -> str:
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in _EXT_TO_FORMAT:
        return _EXT_TO_FORMAT[ext]
    return ext[1:].upper() if ext else "UNKNOWN"


def load_image(
    path: PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
) -> Image.Image:
    """Load ``path`` as an 8-bit RGB image (fully decoded, file closed).

    Args:
        path: image file.
        max_pixels: refuse images with more than this many pixels
            (width * height, read from the header before decoding).  ``None``
            disables this cap (Pillow's global ``Image.MAX_IMAGE_PIXELS`` still
            applies and is escalated to an error).
        max_decode_bytes: refuse images whose decode would add more than this
            many bytes (:func:`decode_cost`, from the header); a JPEG is decoded
            at a reduced scale instead where that fits.  ``None`` disables it.

    Raises:
        UnreadableImage: for anything that is not a fully decodable image.
    """
    img, _fmt = load_image_with_format(path, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
    return img


def load_image_with_format(
    path: PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
) -> tuple[Image.Image, str]:
    """Like :func:`load_image` but also returns the detected container format."""
    path_s = os.fspath(path)
    with open_regular_file(path_s) as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise UnreadableImage(path_s, "empty file (0 bytes)")
        return decode_open_file(f, path_s, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)


def decode_open_file(
    f: BinaryIO,
    name: str,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
) -> tuple[Image.Image, str]:
    """An open binary file (or ``BytesIO``) -> (8-bit RGB image, container format), with :func:`load_image`'s
    rules; ``name`` is used in errors only."""
    path_s = name
    _warn_if_truncated_flag()
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = open_image(f)
    except UnidentifiedImageError:
        other = _refused_format(f)
        if other is not None:
            raise UnreadableImage(path_s, f"unsupported format {other} (supported: {_SUPPORTED})") from None
        raise UnreadableImage(path_s, "not an image or unsupported format (cannot identify image file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableImage(path_s, f"decompression bomb: {e}") from None
    except Exception as e:  # noqa: BLE001
        raise UnreadableImage(path_s, f"cannot open: {_describe(e)}") from None

    with im:
        fmt = str(im.format or _format_from_extension(path_s))
        out = pil_to_rgb8(im, path_s, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
    return out, fmt


def decode_cost(mode: str, width: int, height: int, *, rotated: bool = False) -> int:
    """Peak bytes that decoding a ``mode`` image of ``width`` x ``height`` adds, counting the conversion to RGB.

    Pillow holds the decoded image (1 byte per pixel for ``1``/``L``/``P``, 2 for ``I;16*``, 4 for every other
    mode, RGB included) and :func:`to_rgb8` writes a 4-byte RGB result, converting in strips of rows so that
    its temporaries stay a few MB; an EXIF rotation adds one transposed copy of the decoded image.
    """
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return width * height * (stored * (2 if rotated else 1) + 4)


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - broken EXIF: no rotation (exif_transpose ignores it too)
        return 1


def _check_decode_cost(im: Image.Image, name: str, max_decode_bytes: int | None, rotated: bool) -> None:
    if max_decode_bytes is None:
        return
    w, h = im.size
    cost = decode_cost(im.mode, w, h, rotated=rotated)
    if cost <= max_decode_bytes:
        return
    if im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK"):
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: only for a file the cap would refuse, since it
        # changes the pixels the model's centre crop of the native image sees.
        for scale in (2, 4, 8):  # libjpeg gives ceil(w / scale) x ceil(h / scale)
            if decode_cost(im.mode, -(-w // scale), -(-h // scale), rotated=rotated) <= max_decode_bytes:
                im.draft(im.mode, (max(1, w // scale), max(1, h // scale)))
                if decode_cost(im.mode, *im.size, rotated=rotated) > max_decode_bytes:  # an already loaded image
                    break
                logger.info(
                    "%s: %dx%d JPEG decoded at %dx%d (max_decode_bytes=%d)", name, w, h, *im.size, max_decode_bytes
                )
                return
    raise UnreadableImage(
        name,
        f"decompression bomb: {w}x{h} {im.mode} needs about {cost / 1e6:.0f} MB to decode and convert to RGB, "
        f"over max_decode_bytes={max_decode_bytes}",
    )


def pil_to_rgb8(
    im: Image.Image,
    name: str,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
) -> Image.Image:
    """A PIL image (opened, perhaps not decoded yet) -> 8-bit RGB: size, pixel and decode-bytes caps, load, EXIF
    orientation, mode conversion.  Raises :class:`UnreadableImage` naming ``name`` and the reason."""
    try:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise UnreadableImage(name, f"invalid image size {w}x{h}")
        if max_pixels is not None and w * h > max_pixels:
            raise UnreadableImage(
                name,
                f"decompression bomb: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}",
            )
        # Checked from the header, before any decode. Pillow's PNG plugin decodes the pixels to look for an eXIf
        # chunk after the image data, so a PNG's orientation is only read (and checked again) after the decode.
        header_exif = im.format != "PNG" or "exif" in im.info
        rotated = header_exif and _orientation(im) not in (0, 1)
        _check_decode_cost(im, name, max_decode_bytes, rotated)
        # Image.open leaves multi-frame files (GIF, APNG, TIFF, WebP) on frame 0
        im.load()
        if not header_exif and _orientation(im) not in (0, 1):
            _check_decode_cost(im, name, max_decode_bytes, rotated=True)  # before the transposed copy is made
        oriented = exif_transpose(im, name)
        # A transposed image is already a fresh copy: no second copy of it for RGB.
        out = _to_rgb8(oriented, name, copy=oriented is im)
        out.load()
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableImage(name, f"decompression bomb: {e}") from None
    except MemoryError:
        raise UnreadableImage(name, "out of memory while decoding") from None
    except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, ValueError, struct.error...
        raise UnreadableImage(name, f"truncated or corrupt image data: {_describe(e)}") from None
    if out.mode != "RGB" or out.size[0] <= 0 or out.size[1] <= 0:  # pragma: no cover - defensive
        raise UnreadableImage(name, f"internal conversion error (mode {out.mode}, size {out.size})")
    return out


# ----------------------------------------------------------------------------- helpers


def _describe(e: BaseException) -> str:
    msg = str(e).strip()
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def file_kind(mode: int) -> str:
    """Human name of the file type in a ``st_mode`` (``"regular file"``, ``"FIFO"``, ``"socket"``...)."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


def open_regular_file(path: PathLike) -> BinaryIO:
    """Open ``path`` for binary reading if, and only if, it is a regular file.

    The type is checked with ``os.stat`` before opening (so a FIFO is never
    opened), the file is opened non-blocking and checked again with
    ``os.fstat`` on the open descriptor (a file swapped for a FIFO in between
    cannot block either), then switched back to blocking reads.

    Raises:
        UnreadableImage: ``"file not found"``, ``"broken symbolic link"``,
            ``"not a regular file (FIFO)"`` (``socket``, ``character device``,
            ``block device``, ``directory``), or ``"cannot open: ..."``.
    """
    path_s = os.fspath(path)
    try:
        st = os.stat(path_s)
    except FileNotFoundError:
        raise UnreadableImage(path_s, "broken symbolic link" if os.path.islink(path_s) else "file not found") from None
    except OSError as e:
        raise UnreadableImage(path_s, f"cannot stat file: {_describe(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableImage(path_s, f"not a regular file ({file_kind(st.st_mode)})")
    try:
        fd = os.open(path_s, _OPEN_FLAGS)
    except FileNotFoundError:
        raise UnreadableImage(path_s, "file not found") from None
    except OSError as e:
        raise UnreadableImage(path_s, f"cannot open: {_describe(e)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableImage(path_s, f"not a regular file ({file_kind(mode)})")
        if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _warn_if_truncated_flag() -> None:
    global _truncated_flag_warned
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _truncated_flag_warned:
        _truncated_flag_warned = True
        logger.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some other code): "
            "truncated image files cannot be detected and may be padded by Pillow"
        )


def exif_transpose(im: Image.Image, name: str) -> Image.Image:
    """``im`` turned upright by its EXIF orientation (``im`` itself when upright; broken EXIF is ignored)."""
    try:
        if im.getexif().get(0x0112, 1) in (None, 1):  # no rotation: avoid a full copy
            return im
        out = ImageOps.exif_transpose(im)
        return im if out is None else out
    except Exception as e:  # noqa: BLE001 - broken EXIF must not kill a decodable image
        logger.debug("ignoring unreadable EXIF orientation of %s: %s", name, e)
        return im


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    rgba = rgba.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def _by_strips(im: Image.Image, convert: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """``convert`` (a per-pixel conversion to RGB) applied to strips of rows, pasted into one RGB image: the same
    pixels as ``convert(im)``, with temporaries the size of a strip instead of several full-size images."""
    w, h = im.size
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    if rows >= h:
        return convert(im)
    out = Image.new("RGB", im.size)
    for top in range(0, h, rows):
        out.paste(convert(im.crop((0, top, w, min(h, top + rows)))), (0, top))
    return out


def to_rgb8(im: Image.Image, name: str) -> Image.Image:
    """A decoded image of any mode -> a new 8-bit RGB image (alpha on white, 16-bit / int / float grey scaled);
    :class:`UnreadableImage` for a mode that cannot be converted."""
    return _to_rgb8(im, name, copy=True)


def _to_rgb8(im: Image.Image, path: str, *, copy: bool) -> Image.Image:
    mode = im.mode
    has_trns = "transparency" in im.info
    if mode == "RGB" and not has_trns:
        return im.copy() if copy else im
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _by_strips(im, _composite_on_white)
    if mode in ("P", "L", "1", "RGB") and has_trns:
        try:
            return _by_strips(im, lambda strip: _composite_on_white(strip.convert("RGBA")))
        except Exception:  # noqa: BLE001 - bad tRNS -> ignore transparency
            return _by_strips(im, lambda strip: strip.convert("RGB"))
    if mode in ("P", "L", "1", "CMYK", "YCbCr"):
        return im.convert("RGB")
    if mode.startswith("I;16"):

        def scale16(strip: Image.Image) -> Image.Image:
            arr = np.asarray(strip).astype(np.uint32)
            return _gray_to_rgb(((arr * 255 + 32767) // 65535).astype(np.uint8))

        return _by_strips(im, scale16)
    if mode == "I":
        lo, hi = im.getextrema()  # the whole image's range, then each strip scaled with it
        value_range = (int(lo), int(hi))  # type: ignore[arg-type]  # a one-band image: two numbers
        bits = _bits_hint(im)
        return _by_strips(im, lambda strip: _gray_to_rgb(_int_to_uint8(np.asarray(strip), bits, value_range)))
    if mode == "F":
        finite_range = _finite_range(im)
        return _by_strips(im, lambda strip: _gray_to_rgb(_float_to_uint8(np.asarray(strip), finite_range)))
    try:
        return im.convert("RGB")
    except Exception as e:  # noqa: BLE001
        raise UnreadableImage(path, f"unsupported image mode {mode!r}: {_describe(e)}") from None


def _finite_range(im: Image.Image) -> tuple[float, float] | None:
    """(min, max) of the finite values of a float image, strip by strip; None when there are none."""
    lo, hi = np.inf, -np.inf
    w, h = im.size
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    for top in range(0, h, rows):
        a = np.asarray(im.crop((0, top, w, min(h, top + rows))), dtype=np.float64)
        fin = a[np.isfinite(a)]
        if fin.size:
            lo, hi = min(lo, float(fin.min())), max(hi, float(fin.max()))
    return (lo, hi) if lo <= hi else None


def _gray_to_rgb(a: np.ndarray) -> Image.Image:
    # L -> RGB copies the grey value into the three channels, without a 3-channel numpy temporary
    return Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8), "L").convert("RGB")


def _bits_hint(im: Image.Image) -> int | None:
    """Bits per sample declared by the file, if known (TIFF tag 258)."""
    tag = getattr(im, "tag_v2", None)
    if tag is not None:
        try:
            bps = tag.get(258)
            if isinstance(bps, (tuple, list)):
                bps = bps[0]
            return int(bps) if bps else None
        except Exception:  # noqa: BLE001
            return None
    return None


def _int_to_uint8(a: np.ndarray, bits: int | None, value_range: tuple[int, int] | None = None) -> np.ndarray:
    """32-bit integer grey -> uint8.

    * declared 8/16-bit depth -> scale that range to 0..255;
    * otherwise by value range: within 0..255 kept as is, within 0..65535
      treated as 16-bit, anything else min-max normalised.

    ``value_range`` is the whole image's (min, max) when ``a`` is one strip of it.
    """
    a = a.astype(np.int64)
    if value_range is not None:
        lo, hi = value_range
    else:
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if bits is not None and 1 <= bits <= 16 and lo >= 0 and hi < (1 << bits):
        maxv = (1 << bits) - 1
        return ((a * 255 + maxv // 2) // maxv).astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return ((a * 255 + 32767) // 65535).astype(np.uint8)
    return _minmax(a.astype(np.float64), lo, hi)


def _float_to_uint8(a: np.ndarray, finite_range: tuple[float, float] | None | str = "own") -> np.ndarray:
    """Float grey -> uint8: values in [0, 1] scaled by 255, values in [0, 255]
    kept, anything else min-max normalised.  NaN -> the minimum, +-inf clipped.

    ``finite_range`` is the whole image's finite (min, max) (None: no finite
    value) when ``a`` is one strip of it; by default ``a``'s own.
    """
    a = np.asarray(a, dtype=np.float64)
    if isinstance(finite_range, str):
        fin = a[np.isfinite(a)]
        finite_range = (float(fin.min()), float(fin.max())) if fin.size else None
    lo_f, hi_f = finite_range if finite_range is not None else (0.0, 0.0)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=lo_f, posinf=hi_f, neginf=lo_f)
    # after replacing the non-finite values the range is the finite one (0..0 when nothing was finite)
    lo, hi = (lo_f, hi_f) if a.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return _minmax(a, lo, hi)


def _minmax(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
