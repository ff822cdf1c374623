"""Deterministic robustness perturbations for test images, alone or chained.

Each perturbation is applied to every test image *before* the detector's own preprocessing:

* ``blur``  -- Gaussian blur, standard deviation sigma in ``(0, 3]`` pixels
  (``PIL.ImageFilter.GaussianBlur(radius=sigma)``; Pillow's *radius* is the std).
* ``jpeg``  -- in-memory JPEG re-compression with Pillow (libjpeg, default
  4:2:0 chroma subsampling), integer quality in ``[1, 100]``.
* ``crop``  -- random crop keeping a fraction ``f`` in ``(0, 1]`` of *each side*
  (output is ``round(f*W) x round(f*H)``, **not** resized back); the offset is
  drawn uniformly from the seed.
* ``noise`` -- additive i.i.d. Gaussian noise per pixel and channel with std in
  ``(0, 1]`` in ``[0, 1]`` intensity units, then clipped to ``[0, 1]`` and
  rounded to uint8.
* ``resize`` -- downscale by a factor ``f`` in ``(0, 1]`` to ``round(f*W) x round(f*H)``, the way an upload
  pipeline or a browser shrinks a photo: ``Image.resize(..., LANCZOS, reducing_gap=3.0)`` (Pillow first reduces
  by an integer factor with a box filter, ``Image.reduce``, then finishes with Lanczos-3: the shrink-on-load plus
  Lanczos-3 of libvips, which many upload services use).
* ``fit``   -- the same downscale to a long side of at most ``N`` pixels (no upscaling): a platform's size limit.
* ``webp``  -- in-memory lossy WebP re-encoding with Pillow (libwebp, method 4), integer quality in ``[1, 100]``.

**Chains**: ``a+b+c`` applies the steps in order, e.g. ``resize:0.5+jpeg:85``; every step names one level.
**Named chains** (:data:`NAMED_CHAINS`) approximate what common platforms do to an upload (size limit, then
re-encoding). They are approximations from public documentation and published measurements as the authors
knew them (no network was used to check them), not the platforms' code; the sources are in ``CHAIN_SOURCES``.

**Ladders**: ``--perturb kind`` runs the kind's :data:`DEFAULT_LEVELS`. For the four Table 4 kinds these follow the
perturbation protocol the paper cites for Table 4 (Frank et al., ICML 2020, "Leveraging frequency analysis for
deep fake image recognition", Sec. 5, also used by Liu et al., CVPR 2024, FatFormer): blur with Gaussian kernels of
size 3, 5, 7, 9 (sigma 0.8, 1.1, 1.4, 1.7 by OpenCV's rule for a kernel size), crops removing 5 to 20 %, JPEG
quality 10 to 75, Gaussian noise of variance 5 to 20 on the 0-255 scale; the protocol draws one value per image
at random, here the ladder spans that range with fixed levels. The levels this project used before stay available
as ``--perturb kind:legacy`` (:data:`LEGACY_LEVELS`); ``--perturb table4`` and ``--perturb legacy`` run all four
ladders at once and ``--perturb platforms`` every named chain.

Randomness (crop offset, noise) comes only from ``np.random.default_rng(seed)``
with the per-image ``seed`` passed to :func:`apply`; use :func:`image_seed` to
derive a stable per-image seed from its path. The other kinds are deterministic
and ignore the seed; step ``i`` of a chain gets ``seed + i``.
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
    "LEGACY_LEVELS",
    "NAMED_CHAINS",
    "Chain",
    "LEVEL_RANGES",
    "Perturbation",
    "parse_perturb_spec",
    "apply",
    "image_seed",
]

KINDS = ("blur", "jpeg", "crop", "noise", "resize", "fit", "webp")
TABLE4_KINDS = ("blur", "crop", "jpeg", "noise")

#: Table 4 protocol (Frank et al. 2020, module docstring) for its four kinds; sensible ladders for the others.
DEFAULT_LEVELS: dict[str, list[float | int]] = {
    "blur": [0.8, 1.1, 1.4, 1.7],  # Gaussian sigma of OpenCV kernels 3, 5, 7, 9: 0.3 * ((k - 1) / 2 - 1) + 0.8
    "jpeg": [75, 50, 30, 10],  # JPEG quality, the protocol's range 10-75
    "crop": [0.95, 0.9, 0.85, 0.8],  # 5 to 20 % removed
    "noise": [0.0088, 0.0124, 0.0175],  # std sqrt(5), sqrt(10), sqrt(20) / 255 (variance 5-20 on 0-255)
    "resize": [0.75, 0.5, 0.25],  # downscale factor
    "fit": [2048, 1080, 512],  # long side in pixels
    "webp": [90, 75, 50],  # WebP quality
}
#: The ladders of the four Table 4 kinds before the protocol was followed (``--perturb kind:legacy``).
LEGACY_LEVELS: dict[str, list[float | int]] = {
    "blur": [1.0, 2.0, 3.0],
    "jpeg": [95, 80, 60, 30],
    "crop": [0.9, 0.75, 0.5],
    "noise": [0.01, 0.03, 0.05],
}

# (low, high, low_inclusive) -- high is always inclusive
LEVEL_RANGES: dict[str, tuple[float, float, bool]] = {
    "blur": (0.0, 3.0, False),
    "jpeg": (1, 100, True),
    "crop": (0.0, 1.0, False),
    "noise": (0.0, 1.0, False),
    "resize": (0.0, 1.0, False),
    "fit": (16, 16384, True),
    "webp": (1, 100, True),
}
_INTEGER_KINDS = ("jpeg", "webp", "fit")

_NAME_PREFIX = {"blur": "sigma", "jpeg": "q", "crop": "keep", "noise": "std", "resize": "f", "fit": "max", "webp": "q"}
_LEVEL_DOC = {
    "blur": "Gaussian sigma in (0, 3]",
    "jpeg": "integer JPEG quality in [1, 100]",
    "crop": "fraction of each side kept in (0, 1]",
    "noise": "Gaussian std (in [0,1] intensity units) in (0, 1]",
    "resize": "downscale factor in (0, 1]",
    "fit": "integer long side in pixels in [16, 16384]",
    "webp": "integer WebP quality in [1, 100]",
}

#: Named chains: approximations of what a platform does to an uploaded photo (size limit, re-encoding), from
#: public documentation and published measurements as known to the authors, without network access to check
#: them again; not the platforms' code, which changes without notice. Sources in CHAIN_SOURCES.
NAMED_CHAINS: dict[str, str] = {
    "instagram": "fit:1080+jpeg:75",
    "facebook": "fit:2048+jpeg:80",
    "x": "fit:4096+jpeg:85",
    "whatsapp": "fit:1600+jpeg:70",
    "phone-share": "resize:0.5+jpeg:85",
}
CHAIN_SOURCES: dict[str, str] = {
    "instagram": "Instagram help centre: feed photos are stored at a width of up to 1080 px; re-encoded to JPEG, "
    "quality about 70-80 as estimated from quantisation tables in published forensic studies",
    "facebook": "Facebook help centre: photos are resized to 720, 960 or 2048 px on the long side; JPEG quality "
    "about 70-85 in published forensic measurements",
    "x": "X (Twitter) developer documentation: images up to 4096 x 4096; JPEG uploads re-encoded at quality about 85 "
    "as reported by developers",
    "whatsapp": "WhatsApp 'standard quality' photos: long side reported at 1600 px with JPEG quality about 70",
    "phone-share": "the issue's example: a phone or browser halving the size, then JPEG at quality 85",
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
    if kind in _INTEGER_KINDS:
        if value != int(value):
            raise ValueError(f"{kind}: level must be an integer ({_LEVEL_DOC[kind]}), got {level!r}")
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


@dataclass(frozen=True)
class Chain:
    """Perturbations applied one after the other, e.g. ``resize:0.5+jpeg:85`` (name
    ``chain@resize@f0.5+jpeg@q85``), or a named chain such as ``instagram`` (name ``chain@instagram``)."""

    steps: tuple[Perturbation, ...]
    label: str | None = None

    kind = "chain"

    @property
    def level(self) -> str:
        return self.level_label

    @property
    def level_label(self) -> str:
        return self.label or "+".join(p.name for p in self.steps)

    @property
    def name(self) -> str:
        return f"chain@{self.level_label}"

    @property
    def spec(self) -> str:
        return "+".join(f"{p.kind}:{p.level:g}" for p in self.steps)

    def __call__(self, img: Image.Image, seed: int = 0) -> Image.Image:
        return apply(img, self, seed)


def parse_chain(spec: str, label: str | None = None) -> Chain:
    """``"a:x+b:y"`` (each step one level) into a :class:`Chain`."""
    steps = []
    for part in spec.split("+"):
        kind, sep, level = part.strip().partition(":")
        if not sep or "," in level:
            raise ValueError(
                f"chain {spec!r}: each step needs exactly one level, e.g. resize:0.5+jpeg:85 (got {part.strip()!r})"
            )
        got = _parse_kind_spec(part.strip())
        steps.append(got[0])
    return Chain(tuple(steps), label)


def parse_perturb_spec(spec: str) -> list[Perturbation | Chain]:
    """Parse ``"kind"`` (default ladder), ``"kind:l1,l2,..."`` (custom levels), ``"kind:legacy"`` (the
    ladder used before the Table 4 protocol), a chain ``"a:x+b:y"``, a named chain (:data:`NAMED_CHAINS`) or a
    set: ``table4`` / ``legacy`` (the four Table 4 ladders), ``platforms`` (every named chain).

    >>> [p.name for p in parse_perturb_spec("jpeg:30,60")]
    ['jpeg@q30', 'jpeg@q60']
    >>> [p.name for p in parse_perturb_spec("resize:0.5+jpeg:85")]
    ['chain@resize@f0.5+jpeg@q85']

    Raises ``ValueError`` for an unknown kind, empty/non-numeric/duplicate or
    out-of-range levels.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"empty perturbation spec {spec!r}; expected 'kind' or 'kind:l1,l2' with kind in {', '.join(KINDS)}"
        )
    text = spec.strip().lower()
    if text in NAMED_CHAINS:
        return [parse_chain(NAMED_CHAINS[text], text)]
    if text == "platforms":
        return [parse_chain(c, name) for name, c in NAMED_CHAINS.items()]
    if text in ("table4", "legacy"):
        suffix = ":legacy" if text == "legacy" else ""
        return [p for k in TABLE4_KINDS for p in _parse_kind_spec(k + suffix)]
    if "+" in text:
        return [parse_chain(text)]
    return list(_parse_kind_spec(spec))


def _parse_kind_spec(spec: str) -> list[Perturbation]:
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(
            f"unknown perturbation kind {kind!r} in spec {spec!r}; expected one of {', '.join(KINDS)}, a chain "
            f"a:x+b:y, a named chain ({', '.join(NAMED_CHAINS)}), table4, legacy or platforms"
        )
    if not sep:
        return [Perturbation(kind, lvl) for lvl in DEFAULT_LEVELS[kind]]
    if rest.strip().lower() == "legacy":
        if kind not in LEGACY_LEVELS:
            raise ValueError(f"{kind}: no legacy ladder (only {', '.join(LEGACY_LEVELS)} had one)")
        return [Perturbation(kind, lvl) for lvl in LEGACY_LEVELS[kind]]
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


def _downscale(img: Image.Image, w: int, h: int) -> Image.Image:
    """Shrink like an upload pipeline: box-reduce by an integer factor, then Lanczos-3 (module docstring)."""
    if (w, h) == img.size:
        return img.copy()
    return img.resize((max(1, w), max(1, h)), Image.Resampling.LANCZOS, reducing_gap=3.0)


def _webp(img: Image.Image, quality: int) -> Image.Image:
    import io

    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=int(quality), method=4)
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def apply(img: Image.Image, perturbation: Perturbation | Chain, seed: int = 0) -> Image.Image:
    """Apply ``perturbation`` (or every step of a :class:`Chain`, step ``i`` with ``seed + i``) to ``img``
    (converted to RGB); returns a new RGB image.

    The input is never modified.  Output is fully determined by
    ``(img, perturbation, seed)``.
    """
    if isinstance(perturbation, Chain):
        out = img
        for i, step in enumerate(perturbation.steps):
            out = apply(out, step, seed + i)
        return out
    if not isinstance(perturbation, Perturbation):
        raise TypeError(f"expected a Perturbation, got {type(perturbation).__name__}")
    img = _to_rgb(img)
    kind, level = perturbation.kind, perturbation.level

    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=float(level)))

    if kind == "jpeg":
        from ..data.transforms import _jpeg  # one in-memory JPEG round trip for training and robustness

        return _jpeg(img, int(level))

    if kind == "webp":
        return _webp(img, int(level))

    if kind == "resize":
        w, h = img.size
        return _downscale(img, int(round(level * w)), int(round(level * h)))

    if kind == "fit":
        w, h = img.size
        scale = min(1.0, float(level) / max(w, h))
        return _downscale(img, int(round(scale * w)), int(round(scale * h)))

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
