"""Image transforms (pure PIL / numpy / torch, no torchvision).

Both transforms are callables ``(pil_img, rng) -> torch.FloatTensor`` of shape
``3 x size x size`` with values in ``[0, 1]`` (no mean/std normalisation: the
backbone-specific normalisation belongs to the model).

``rng`` may be a :class:`random.Random`, a :class:`numpy.random.Generator`, a
:class:`torch.Generator` or ``None`` (fresh, non-reproducible randomness).  The
output is a deterministic function of the image and the rng state.  Every call
of :class:`TrainTransform` consumes exactly seven uniform draws, whatever the
probabilities and image size, so changing e.g. ``blur_prob`` does not shift
the crop positions of later samples sharing a generator.

Training pipeline (CNNDetection / UniFD convention):

1. Gaussian blur with probability ``blur_prob``, sigma ~ U(blur_sigma)
   (Pillow ``GaussianBlur(radius=sigma)``; Pillow's radius is the standard
   deviation);
2. JPEG re-encoding with probability ``jpeg_prob``, quality ~ U{jpeg_quality}
   (integers, inclusive), via Pillow in memory;
3. images whose shorter side is below ``size`` are upscaled (shorter side to
   ``size``, bicubic, aspect ratio kept); larger images are **not** resized;
4. crop ``size x size``: ``"random"`` (default), ``"center"``, or ``"resize"``
   (resize the whole image to ``size x size`` instead of cropping);
5. horizontal flip with probability 0.5 if ``flip``.

Blur/JPEG are applied to the full (native resolution) image *before* cropping,
so the 8x8 JPEG grid has a random phase w.r.t. the crop, exactly as for images
compressed "in the wild".

Evaluation: resize the shorter side to ``size`` (bicubic, antialiased) then
centre crop (``EvalTransform(size, resize=False)`` only centre-crops, upscaling
images smaller than ``size``).

Bounded work for extreme shapes
-------------------------------
"Resize the shorter side to ``size``, then crop" materialises the whole
resized image first: a 317-byte 1 x 60000 PNG passes the pixel cap (60 000
pixels) and then becomes a 64 x 3 840 000 image at ``size=64`` (~1 GB) or
224 x 13 440 000 at ``size=224`` (~12 GB).  So the work is bounded by what is
*produced*, not by what the file declares:

* while the resized image would have an aspect ratio of at most
  :data:`MAX_RESIZE_ASPECT` (4:1, i.e. at most ``4 * size * size`` pixels), the
  whole image is resized then cropped exactly as before, so the output for
  ordinary images (4:3, 3:2, 16:9, 21:9, up to 4:1 panoramas) is bit-identical
  to earlier releases;
* beyond it, the crop box is computed in source coordinates and only that box
  (plus the bicubic filter's support) is cropped from the source and resized
  (Pillow ``resize(..., box=...)``): the intermediate is ``size x size``.
  Centre and random crop positions are the same as before (random positions are
  drawn in resized coordinates, uniformly over the whole long side); pixel
  values equal the resize-then-crop result up to rounding (at most a few levels
  of 255);
* ``TrainTransform(crop="resize")`` squashes such images in two passes, long
  side first, so no intermediate is ``size x long side``.

No image is rejected for its aspect ratio: a tall screenshot or a comic strip
has a perfectly ordinary centre crop, and a 1-pixel-wide strip is upscaled like
any image smaller than ``size``.  (What decoding may cost is bounded earlier by
``load_image(max_pixels=...)``; blur/JPEG augmentation runs on the native image,
so its cost is bounded by that cap too.)
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from .imageio import open_image
from .tiles import short_side_to as _short_side_to

__all__ = ["MAX_RESIZE_ASPECT", "EvalTransform", "RngLike", "TrainTransform", "pil_to_tensor"]

RngLike = random.Random | np.random.Generator | torch.Generator | None

_BICUBIC = Image.Resampling.BICUBIC
_BICUBIC_SUPPORT = 2.0  # Pillow's bicubic kernel radius, in output pixels (source pixels when upscaling)

#: Aspect ratio (long side / short side) up to which an image is resized whole
#: before cropping (the historical, bit-identical path); beyond it only the crop
#: box is resized.  See "Bounded work for extreme shapes" in the module docstring.
MAX_RESIZE_ASPECT: float = 4.0


# ----------------------------------------------------------------------------- helpers


def _rand(rng: RngLike) -> float:
    """One uniform float in [0, 1) from any supported rng."""
    if rng is None:
        return random.random()
    if isinstance(rng, random.Random):
        return rng.random()
    if isinstance(rng, np.random.Generator):
        return float(rng.random())
    if isinstance(rng, torch.Generator):
        return float(torch.rand((), generator=rng, dtype=torch.float64))
    raise TypeError(f"unsupported rng type {type(rng).__name__}; use random.Random or numpy Generator")


def _pick_int(u: float, lo: int, hi: int) -> int:
    """Map u in [0,1) to an integer uniform in [lo, hi] (inclusive)."""
    return lo + min(int(u * (hi - lo + 1)), hi - lo)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor 3xHxW in [0, 1]."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img, dtype=np.uint8, copy=True)  # HxWx3, writable
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0)


def _center_offset(n: int, size: int) -> int:
    return int(round((n - size) / 2.0))


def _resized_crop(img: Image.Image, resized: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """``img.resize(resized, BICUBIC).crop(box)``, without materialising a large resized image.

    Up to :data:`MAX_RESIZE_ASPECT` that is literally what happens (bit-identical
    to the historical transform).  Beyond it, ``box`` is mapped to source
    coordinates, the source is cropped to that region plus the filter support
    (an exact pixel copy, which also keeps Pillow's float32 box coordinates
    small and precise), and only that region is resized to the box size.
    """
    w, h = img.size
    nw, nh = resized
    if (nw, nh) == (w, h):
        return img.crop(box)
    if max(nw, nh) <= MAX_RESIZE_ASPECT * min(nw, nh):
        return img.resize((nw, nh), _BICUBIC).crop(box)
    left, top, right, bottom = box
    sx, sy = w / nw, h / nh  # source pixels per resized pixel
    fx0, fy0 = left * sx, top * sy
    fx1, fy1 = min(float(w), right * sx), min(float(h), bottom * sy)  # no 1-ulp overshoot past the edge
    mx = math.ceil(_BICUBIC_SUPPORT * max(sx, 1.0)) + 1
    my = math.ceil(_BICUBIC_SUPPORT * max(sy, 1.0)) + 1
    x0, y0 = max(0, math.floor(fx0) - mx), max(0, math.floor(fy0) - my)
    x1, y1 = min(w, math.ceil(fx1) + mx), min(h, math.ceil(fy1) + my)
    region = img.crop((x0, y0, x1, y1))
    return region.resize((right - left, bottom - top), _BICUBIC, box=(fx0 - x0, fy0 - y0, fx1 - x0, fy1 - y0))


def _squash(img: Image.Image, size: int) -> Image.Image:
    """Resize the whole image to ``size x size`` (aspect ratio not kept)."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    if max(w, h) <= MAX_RESIZE_ASPECT * min(w, h):
        return img.resize((size, size), _BICUBIC)
    # long side first: the intermediate is (short side x size), never (size x long side)
    first = (w, size) if h > w else (size, h)
    return img.resize(first, _BICUBIC).resize((size, size), _BICUBIC)


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with open_image(buf) as out:
        out.load()
        return out.convert("RGB")


def _check_range(name: str, rng: Any, lo_bound: float, hi_bound: float) -> tuple[float, float]:
    try:
        lo, hi = rng
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair, got {rng!r}") from None
    if not (lo_bound <= lo <= hi <= hi_bound):
        raise ValueError(f"{name} must satisfy {lo_bound} <= low <= high <= {hi_bound}, got {rng!r}")
    return lo, hi


def _check_prob(name: str, p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return p


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or int(size) <= 0:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return int(size)


# ----------------------------------------------------------------------------- transforms


class TrainTransform:
    """Training augmentation; see module docstring.

    Args:
        size: output side length.
        crop: ``"random"`` | ``"center"`` | ``"resize"``.
        flip: random horizontal flip (p = 0.5).
        blur_prob, blur_sigma: Gaussian blur probability and sigma range.
        jpeg_prob, jpeg_quality: JPEG re-encoding probability and quality range
            (inclusive integers, 1..100).
    """

    CROPS = ("random", "center", "resize")

    def __init__(
        self,
        size: int,
        *,
        crop: str = "random",
        flip: bool = True,
        blur_prob: float = 0.1,
        blur_sigma: tuple[float, float] = (0.0, 3.0),
        jpeg_prob: float = 0.1,
        jpeg_quality: tuple[int, int] = (30, 100),
    ):
        self.size = _check_size(size)
        if crop not in self.CROPS:
            raise ValueError(f"crop must be one of {self.CROPS}, got {crop!r}")
        self.crop = crop
        self.flip = bool(flip)
        self.blur_prob = _check_prob("blur_prob", blur_prob)
        self.blur_sigma = tuple(float(x) for x in _check_range("blur_sigma", blur_sigma, 0.0, math.inf))
        self.jpeg_prob = _check_prob("jpeg_prob", jpeg_prob)
        q = _check_range("jpeg_quality", jpeg_quality, 1, 100)
        if int(q[0]) != q[0] or int(q[1]) != q[1]:
            raise ValueError(f"jpeg_quality must be integers, got {jpeg_quality!r}")
        self.jpeg_quality = (int(q[0]), int(q[1]))

    def __call__(self, img: Image.Image, rng: RngLike = None) -> torch.Tensor:
        # fixed number of draws, in a fixed order
        u_blur, u_sigma, u_jpeg, u_quality, u_crop_x, u_crop_y, u_flip = (_rand(rng) for _ in range(7))
        if img.mode != "RGB":
            img = img.convert("RGB")

        if u_blur < self.blur_prob:
            lo, hi = self.blur_sigma
            sigma = lo + (hi - lo) * u_sigma
            if sigma > 0:
                img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
        if u_jpeg < self.jpeg_prob:
            img = _jpeg(img, _pick_int(u_quality, *self.jpeg_quality))

        s = self.size
        if self.crop == "resize":
            img = _squash(img, s)
        else:
            w, h = img.size
            nw, nh = _short_side_to(w, h, s) if min(w, h) < s else (w, h)  # only upscale
            if self.crop == "center":
                x, y = _center_offset(nw, s), _center_offset(nh, s)
            else:
                x = _pick_int(u_crop_x, 0, nw - s)
                y = _pick_int(u_crop_y, 0, nh - s)
            img = _resized_crop(img, (nw, nh), (x, y, x + s, y + s))

        if self.flip and u_flip < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(img)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(size={self.size}, crop={self.crop!r}, flip={self.flip}, "
            f"blur_prob={self.blur_prob}, blur_sigma={self.blur_sigma}, "
            f"jpeg_prob={self.jpeg_prob}, jpeg_quality={self.jpeg_quality})"
        )


class EvalTransform:
    """Deterministic evaluation transform: resize shorter side to ``size``
    (bicubic) then centre crop.  With ``resize=False`` only centre-crops
    (images smaller than ``size`` are still upscaled).  ``rng`` is ignored."""

    def __init__(self, size: int, *, resize: bool = True):
        self.size = _check_size(size)
        self.resize = bool(resize)

    def __call__(self, img: Image.Image, _rng: RngLike = None) -> torch.Tensor:  # deterministic: no rng used
        if img.mode != "RGB":
            img = img.convert("RGB")
        s = self.size
        w, h = img.size
        nw, nh = _short_side_to(w, h, s) if self.resize or min(w, h) < s else (w, h)
        x, y = _center_offset(nw, s), _center_offset(nh, s)
        return pil_to_tensor(_resized_crop(img, (nw, nh), (x, y, x + s, y + s)))

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, resize={self.resize})"


# ----------------------------------------------------------------------------- two views of one decode


class Views:
    """The model's two inputs from one decode of a file (a batch, or one image before collation):

    - ``clip``: what E_v and the Bayar CConv see, ``clip_size`` x ``clip_size`` in [0, 1]: by default a crop of
      the image's **own pixels** (no resampling when the image is at least ``clip_size`` on its shorter side), so
      the pixel-level traces detectors rely on survive;
    - ``sd``: what CMID and the inversion see, the image resized to ``sd_size`` x ``sd_size``.

    Tensor-like where the pipeline needs it: ``to``, ``len``, indexing, :meth:`stack`."""

    __slots__ = ("clip", "sd")

    def __init__(self, clip: torch.Tensor, sd: torch.Tensor):
        self.clip, self.sd = clip, sd

    def to(self, *args: Any, **kwargs: Any) -> Views:
        return Views(self.clip.to(*args, **kwargs), self.sd.to(*args, **kwargs))

    def __len__(self) -> int:
        return int(self.clip.shape[0])

    def __getitem__(self, idx: Any) -> Views:
        return Views(self.clip[idx], self.sd[idx])

    @property
    def device(self) -> torch.device:
        return self.clip.device

    @staticmethod
    def stack(items: Sequence[Views]) -> Views:
        return Views(torch.stack([v.clip for v in items]), torch.stack([v.sd for v in items]))

    def __repr__(self) -> str:
        return f"Views(clip={tuple(self.clip.shape)}, sd={tuple(self.sd.shape)})"


def stack_images(items: Sequence[Any]) -> Any:
    """``torch.stack`` for tensors, the views' own ``stack`` for views (:class:`Views` or a subclass)."""
    return type(items[0]).stack(items) if items and isinstance(items[0], Views) else torch.stack(list(items))


class ViewTransform:
    """``(pil_img, rng) -> Views``: one decode, two views (see :class:`Views`).

    ``clip_view``: ``"crop"`` (default: a ``clip_size`` crop of the image's own pixels; random in training, centre
    in evaluation; images smaller than ``clip_size`` are upscaled, shorter side to ``clip_size``, bicubic) or
    ``"resize"`` (shorter side resized to ``clip_size``, then cropped: the older protocol, which resamples a 4K
    image down to 224 px). The SD view is always the shorter side resized to ``sd_size`` and centre-cropped.
    In training, blur and JPEG act on the whole decoded image before both views and the flip applies to both,
    with :class:`TrainTransform`'s seven draws in the same order."""

    VIEWS = ("crop", "resize")

    def __init__(
        self,
        clip_size: int,
        sd_size: int,
        *,
        train: bool = False,
        clip_view: str = "crop",
        flip: bool = True,
        blur_prob: float = 0.1,
        blur_sigma: tuple[float, float] = (0.0, 3.0),
        jpeg_prob: float = 0.1,
        jpeg_quality: tuple[int, int] = (30, 100),
    ):
        if clip_view not in self.VIEWS:
            raise ValueError(f"clip_view must be one of {self.VIEWS}, got {clip_view!r}")
        self.clip_size, self.sd_size = _check_size(clip_size), _check_size(sd_size)
        self.train, self.clip_view = bool(train), clip_view
        # the augmentation (blur, JPEG, flip) of TrainTransform; its crop is not used
        self.aug = TrainTransform(
            self.clip_size,
            flip=flip,
            blur_prob=blur_prob,
            blur_sigma=blur_sigma,
            jpeg_prob=jpeg_prob,
            jpeg_quality=jpeg_quality,
        )

    def __call__(self, img: Image.Image, rng: RngLike = None) -> Views:
        u_blur, u_sigma, u_jpeg, u_quality, u_crop_x, u_crop_y, u_flip = (_rand(rng) for _ in range(7))
        if img.mode != "RGB":
            img = img.convert("RGB")
        a = self.aug
        if self.train and u_blur < a.blur_prob:
            lo, hi = a.blur_sigma
            sigma = lo + (hi - lo) * u_sigma
            if sigma > 0:
                img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
        if self.train and u_jpeg < a.jpeg_prob:
            img = _jpeg(img, _pick_int(u_quality, *a.jpeg_quality))
        if self.train and a.flip and u_flip < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

        w, h = img.size
        s = self.clip_size
        if self.clip_view == "crop":
            nw, nh = _short_side_to(w, h, s) if min(w, h) < s else (w, h)  # native pixels; only upscale
        else:
            nw, nh = _short_side_to(w, h, s)
        if self.train:
            x, y = _pick_int(u_crop_x, 0, nw - s), _pick_int(u_crop_y, 0, nh - s)
        else:
            x, y = _center_offset(nw, s), _center_offset(nh, s)
        clip = pil_to_tensor(_resized_crop(img, (nw, nh), (x, y, x + s, y + s)))

        t = self.sd_size
        sw, sh = _short_side_to(w, h, t)
        sx, sy = _center_offset(sw, t), _center_offset(sh, t)
        sd = pil_to_tensor(_resized_crop(img, (sw, sh), (sx, sy, sx + t, sy + t)))
        return Views(clip, sd)

    def __repr__(self) -> str:
        return (
            f"ViewTransform(clip_size={self.clip_size}, sd_size={self.sd_size}, train={self.train}, "
            f"clip_view={self.clip_view!r})"
        )
