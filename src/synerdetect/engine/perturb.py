"""Deterministic robustness perturbations for test images.

Protocol (paper's robustness study; each perturbation applied alone to every test
image *before* the detector's own preprocessing):

* ``blur``  -- Gaussian blur, standard deviation sigma in ``(0, 3]`` pixels
  (``PIL.ImageFilter.GaussianBlur(radius=sigma)``; Pillow's *radius* is the std).
  Default ladder sigma = 1, 2, 3.
* ``jpeg``  -- in-memory JPEG re-compression with Pillow (libjpeg, default
  4:2:0 chroma subsampling), integer quality in ``[30, 100]``.
  Default ladder q = 95, 80, 60, 30.
* ``crop``  -- random crop keeping a fraction ``f`` in ``(0, 1]`` of *each side*
  (output is ``round(f*W) x round(f*H)``, **not** resized back); the offset is
  drawn uniformly from the seed.  Default ladder f = 0.9, 0.75, 0.5.
* ``noise`` -- additive i.i.d. Gaussian noise per pixel and channel with std in
  ``(0, 1]`` in ``[0, 1]`` intensity units, then clipped to ``[0, 1]`` and
  rounded to uint8.  Default ladder std = 0.01, 0.03, 0.05.

Randomness (crop offset, noise) comes only from ``np.random.default_rng(seed)``
with the per-image ``seed`` passed to :func:`apply`; use :func:`image_seed` to
derive a stable per-image seed from its path.  Blur and JPEG are deterministic
and ignore the seed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "KINDS",
    "DEFAULT_LEVELS",
    "LEVEL_RANGES",
    "Perturbation",
    "parse_perturb_spec",
    "apply",
    "image_seed",
]

KINDS = ("blur", "jpeg", "crop", "noise")

DEFAULT_LEVELS: dict[str, list[float | int]] = {
    "blur": [1.0, 2.0, 3.0],  # Gaussian sigma (pixels)
    "jpeg": [95, 80, 60, 30],  # JPEG quality
    "crop": [0.9, 0.75, 0.5],  # fraction of each side kept
    "noise": [0.01, 0.03, 0.05],  # Gaussian std in [0, 1] units
}

# (low, high, low_inclusive) -- high is always inclusive
LEVEL_RANGES: dict[str, tuple[float, float, bool]] = {
    "blur": (0.0, 3.0, False),
    "jpeg": (30, 100, True),
    "crop": (0.0, 1.0, False),
    "noise": (0.0, 1.0, False),
}

_NAME_PREFIX = {"blur": "sigma", "jpeg": "q", "crop": "keep", "noise": "std"}
_LEVEL_DOC = {
    "blur": "Gaussian sigma in (0, 3]",
    "jpeg": "integer JPEG quality in [30, 100]",
    "crop": "fraction of each side kept in (0, 1]",
    "noise": "Gaussian std (in [0,1] intensity units) in (0, 1]",
}


def _check_level(kind: str, level: float | int) -> float | int:
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r}; expected one of {', '.join(KINDS)}")
    if isinstance(level, bool):
        raise ValueError(f"{kind}: level must be a number, got {level!r}")
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"{kind}: level must be a number ({_LEVEL_DOC[kind]}), got {level!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{kind}: level must be finite, got {level!r}")
    lo, hi, lo_incl = LEVEL_RANGES[kind]
    if value > hi or value < lo or (value == lo and not lo_incl):
        raise ValueError(f"{kind}: level {level!r} out of range; expected {_LEVEL_DOC[kind]}")
    if kind == "jpeg":
        if value != int(value):
            raise ValueError(f"jpeg: quality must be an integer, got {level!r}")
        return int(value)
    return value


@dataclass(frozen=True)
class Perturbation:
    """One perturbation at one strength, e.g. ``Perturbation("jpeg", 60)`` (name ``jpeg@q60``)."""

    kind: str
    level: float | int

    def __post_init__(self) -> None:
        kind = str(self.kind).strip().lower()
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "level", _check_level(kind, self.level))

    @property
    def name(self) -> str:
        """Stable identifier: ``blur@sigma2``, ``jpeg@q60``, ``crop@keep0.75``, ``noise@std0.03``."""
        return f"{self.kind}@{self.level_label}"

    @property
    def level_label(self) -> str:
        return f"{_NAME_PREFIX[self.kind]}{self.level:g}"

    def __call__(self, img: Image.Image, seed: int = 0) -> Image.Image:
        return apply(img, self, seed)


def parse_perturb_spec(spec: str) -> list[Perturbation]:
    """Parse ``"kind"`` (default ladder) or ``"kind:l1,l2,..."`` (custom levels).

    >>> [p.name for p in parse_perturb_spec("jpeg:30,60")]
    ['jpeg@q30', 'jpeg@q60']

    Raises ``ValueError`` for an unknown kind, empty/non-numeric/duplicate or
    out-of-range levels.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"empty perturbation spec {spec!r}; expected 'kind' or 'kind:l1,l2' with kind in {', '.join(KINDS)}"
        )
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r} in spec {spec!r}; expected one of {', '.join(KINDS)}")
    if not sep:
        return [Perturbation(kind, lvl) for lvl in DEFAULT_LEVELS[kind]]
    parts = [p.strip() for p in rest.split(",")]
    if not parts or any(p == "" for p in parts):
        raise ValueError(
            f"{kind}: empty level in spec {spec!r}; expected e.g. '{kind}:"
            f"{','.join(f'{x:g}' for x in DEFAULT_LEVELS[kind][:2])}'"
        )
    out: list[Perturbation] = []
    for p in parts:
        try:
            value = float(p)
        except ValueError:
            raise ValueError(f"{kind}: level {p!r} in spec {spec!r} is not a number ({_LEVEL_DOC[kind]})") from None
        out.append(Perturbation(kind, value))
    names = [q.name for q in out]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"duplicate levels in spec {spec!r}: {', '.join(dups)}")
    return out


def image_seed(key: str, base_seed: int = 0) -> int:
    """Stable 63-bit seed from an image key (e.g. its relative path) and a base seed.

    Uses SHA-256 (not Python's salted ``hash``), so it is identical across runs.
    """
    h = hashlib.sha256(f"{int(base_seed)}\x00{key}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _to_rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def apply(img: Image.Image, perturbation: Perturbation, seed: int = 0) -> Image.Image:
    """Apply ``perturbation`` to ``img`` (converted to RGB); returns a new RGB image.

    The input is never modified.  Output is fully determined by
    ``(img, perturbation, seed)``.
    """
    if not isinstance(perturbation, Perturbation):
        raise TypeError(f"expected a Perturbation, got {type(perturbation).__name__}")
    img = _to_rgb(img)
    kind, level = perturbation.kind, perturbation.level

    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=float(level)))

    if kind == "jpeg":
        from ..data.transforms import _jpeg  # one in-memory JPEG round trip for training and robustness

        return _jpeg(img, int(level))

    rng = np.random.default_rng(seed)

    if kind == "crop":
        w, h = img.size
        cw = min(w, max(1, int(round(level * w))))
        ch = min(h, max(1, int(round(level * h))))
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        return img.crop((x0, y0, x0 + cw, y0 + ch))

    if kind == "noise":
        arr = np.asarray(img, dtype=np.float64) / 255.0
        arr = arr + rng.normal(0.0, float(level), size=arr.shape)
        arr = np.clip(np.rint(np.clip(arr, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr)

    raise AssertionError(f"unhandled kind {kind!r}")  # pragma: no cover
