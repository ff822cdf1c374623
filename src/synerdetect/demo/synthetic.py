"""Offline demo benchmark: bundled real photographs + synthetic "generator" stand-ins.

Nothing here downloads anything.  Real images are random crops of the photographs that
ship *inside* the scikit-image package directory (read directly from disk with Pillow, so
``pooch`` is never involved).  Fake images come from small, hand-written numpy "generators"
that imitate the *artifacts* of well-known generator families (GAN upsampling checkerboards,
GAN spectral grid peaks, latent-diffusion VAE reconstructions, pixel-space diffusion
sampling).  They are **not** real GANs or diffusion models; the demo only uses them to show
the train-on-one-family / test-on-all protocol end to end on a machine without internet.

Every family is a function ``fn(rng, size, *, split="train") -> (size, size, 3) uint8``
that is fully deterministic given the state of ``rng`` (a :class:`numpy.random.Generator`).
Families that start from a real photo patch draw it from the photo pool of ``split`` so that
test fakes never reuse training image content.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.imageio import open_image

__all__ = [
    "FAMILIES",
    "FAMILY_KIND",
    "FAMILY_IMITATES",
    "PHOTO_FILES",
    "real_photo_pool",
    "sample_real",
    "build_demo_benchmark",
    "describe",
]

#: Bumped whenever the generated data would change; part of the manifest so stale
#: benchmarks on disk are regenerated rather than silently reused.
GENERATOR_VERSION = 1

MANIFEST_NAME = "benchmark.json"
REAL_DIR = "0_real"
FAKE_DIR = "1_fake"

# --------------------------------------------------------------------------------------
# Real photographs bundled with scikit-image (no download needed)
# --------------------------------------------------------------------------------------

#: Photographs shipped inside ``skimage/data`` (never fetched through pooch).  Grayscale
#: photos are replicated to RGB.  Synthetic test patterns (chessboard, logo, text, phantom,
#: horse silhouette, colour chart) are deliberately excluded.
PHOTO_FILES: tuple[str, ...] = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",  # skimage.data.cat()
    "rocket.jpg",
    "ihc.png",  # immunohistochemistry
    "hubble_deep_field.jpg",
    "retina.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "camera.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "clock_motion.png",
    "coins.png",
)

#: Fraction of each photo's rows used for training crops; the remaining bottom rows are the
#: test region.  Splitting by rows (not columns) keeps the rectified stereo pair
#: motorcycle_left/right disjoint as well.
TRAIN_ROW_FRACTION = 0.6

#: Real crops are taken with side ``size * U(1, MAX_CROP_SCALE)`` and resized to ``size``.
MAX_CROP_SCALE = 3.0


def _skimage_data_dir() -> Path:
    import skimage  # local import: only needed for the demo

    return Path(skimage.__file__).resolve().parent / "data"


@functools.lru_cache(maxsize=1)
def _load_photos() -> tuple[np.ndarray, ...]:
    data_dir = _skimage_data_dir()
    photos = []
    for name in PHOTO_FILES:
        path = data_dir / name
        if not path.is_file():  # tolerate slimmed-down scikit-image installs
            continue
        with open_image(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        arr = np.ascontiguousarray(arr)
        arr.setflags(write=False)
        photos.append(arr)
    if not photos:
        raise FileNotFoundError(f"none of the bundled scikit-image photographs were found in {data_dir}")
    return tuple(photos)


@functools.lru_cache(maxsize=2)
def _pool(split: str) -> tuple[np.ndarray, ...]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out = []
    for img in _load_photos():
        cut = int(round(img.shape[0] * TRAIN_ROW_FRACTION))
        region = img[:cut] if split == "train" else img[cut:]
        out.append(region)  # read-only views
    return tuple(out)


def real_photo_pool(split: str) -> list[np.ndarray]:
    """Source photographs (read-only uint8 RGB arrays) for ``split`` ("train" or "test").

    Each bundled photo contributes its top rows to "train" and its bottom rows to "test",
    so no pixel of a test real (or of a photo-based test fake) appears in training data.
    """
    return list(_pool(split))


def sample_real(rng: np.random.Generator, size: int, *, split: str = "train") -> np.ndarray:
    """A random real patch: random photo, random crop at scale 1-3x, resized, random h-flip."""
    pool = _pool(split)
    img = pool[int(rng.integers(len(pool)))]
    h, w = img.shape[:2]
    side = int(round(size * rng.uniform(1.0, MAX_CROP_SCALE)))
    side = max(1, min(side, h, w))  # tiny regions: crop what exists (and upsample)
    y = int(rng.integers(h - side + 1))
    x = int(rng.integers(w - side + 1))
    crop = img[y : y + side, x : x + side]
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


# --------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


def _area_down(x: np.ndarray, f: int) -> np.ndarray:
    h, w, c = x.shape
    return x.reshape(h // f, f, w // f, f, c).mean(axis=(1, 3))


def _bilinear_resize(x: np.ndarray, f: int) -> np.ndarray:
    """Half-pixel-centred bilinear upsampling by integer factor ``f`` (edge clamped)."""

    def axis_weights(n: int):
        pos = (np.arange(n * f) + 0.5) / f - 0.5
        pos = np.clip(pos, 0, n - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, n - 1)
        t = (pos - i0).astype(x.dtype)
        return i0, i1, t

    h, w = x.shape[:2]
    r0, r1, tr = axis_weights(h)
    c0, c1, tc = axis_weights(w)
    rows = x[r0] * (1 - tr)[:, None, None] + x[r1] * tr[:, None, None]
    return rows[:, c0] * (1 - tc)[None, :, None] + rows[:, c1] * tc[None, :, None]


def _conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """3x3 conv with channel mixing; ``x`` (H, W, Cin), ``w`` (3, 3, Cin, Cout), edge pad."""
    h, wd, _ = x.shape
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    out = np.zeros((h, wd, w.shape[-1]), dtype=x.dtype)
    for dy in range(3):
        for dx in range(3):
            out += p[dy : dy + h, dx : dx + wd] @ w[dy, dx]
    return out


def _blur3(x: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur over the two spatial axes (edge pad)."""
    p = np.pad(x, ((1, 1), (0, 0), (0, 0)), mode="edge")
    x = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
    p = np.pad(x, ((0, 0), (1, 1), (0, 0)), mode="edge")
    return 0.25 * p[:, :-2] + 0.5 * p[:, 1:-1] + 0.25 * p[:, 2:]


def _leaky_relu(x: np.ndarray, slope: float = 0.2) -> np.ndarray:
    return np.where(x > 0, x, slope * x)


def _radial_freq(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    return np.sqrt(fy**2 + fx**2)


def _powerlaw_noise(rng: np.random.Generator, h: int, w: int, c: int, beta: float) -> np.ndarray:
    """Gaussian random field with power spectrum ~ 1/f^beta, unit std per channel, (h, w, c)."""
    white = rng.standard_normal((c, h, w))
    f = _radial_freq(h, w)
    amp = 1.0 / np.maximum(f, 1.0 / max(h, w)) ** (beta / 2.0)
    amp[0, 0] = 0.0
    field = np.fft.ifft2(np.fft.fft2(white) * amp).real
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-8
    return np.moveaxis(field, 0, -1)


# Opponent colour basis: luminance + two chroma axes (columns map opponent -> RGB).
_OPP_TO_RGB = np.array([[1.0, 1.0, 1.0], [0.5, 0.0, -0.5], [-0.25, 0.5, -0.25]], dtype=np.float64).T


def _fixed_rng(tag: str) -> np.random.Generator:
    """Generator for a family's *fixed* weights ("the trained network"), independent of data."""
    return np.random.default_rng([0x5EED, zlib.crc32(tag.encode())])


# --------------------------------------------------------------------------------------
# Fake families
# --------------------------------------------------------------------------------------


@functools.cache
def _gan_upsample_weights(stage: int):
    r = _fixed_rng(f"gan_upsample/{stage}")
    eye = np.eye(3)
    # Per-output-parity (2x2 phases of the stride-2 transposed conv) colour gains + biases:
    # the four phases get slightly different weights -> content-dependent checkerboard.
    gains = eye[None, None] + 0.03 * r.standard_normal((2, 2, 3, 3))
    bias = 0.005 * r.standard_normal((2, 2, 3))
    # 3x3 conv after each upsampling, zero spatial sum per (in, out) => high-pass "texture"
    # branch passed through a leaky ReLU and added residually.
    w = r.standard_normal((3, 3, 3, 3)) * (0.3 + 0.7 * eye)  # mostly per-channel
    w -= w.mean(axis=(0, 1), keepdims=True)
    w *= 0.1
    b = 0.01 * r.standard_normal(3)
    return gains, bias, w, b


def _transposed_up2(x: np.ndarray, gains: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Stride-2 transposed conv: bilinear 4x4 kernel whose 4 output phases have own weights."""
    up = _bilinear_resize(x, 2)
    for a in range(2):
        for b in range(2):
            up[a::2, b::2] = up[a::2, b::2] @ gains[a, b].T + bias[a, b]
    return up


def gan_upsample(rng: np.random.Generator, size: int, *, split: str = "train") -> np.ndarray:
    """ProGAN/StyleGAN stand-in: a real patch downsampled 2-4x, re-synthesised by fixed
    transposed-conv + 3x3 conv/leaky-ReLU upsampling stages -> periodic checkerboard traces."""
    s = _ceil_to(size, 4)
    x = sample_real(rng, s, split=split).astype(np.float64) / 255.0
    n_stages = int(rng.integers(1, 3))  # 2x or 4x
    h = _area_down(x, 2**n_stages)
    for stage in range(2 - n_stages, 2):
        gains, bias, w, b = _gan_upsample_weights(stage)
        h = _transposed_up2(h, gains, bias)
        h = h + _leaky_relu(_conv3x3(h, w) + b)
    return _to_uint8(h[:size, :size])


@functools.cache
def _gan_spectral_grid(size: int):
    """Fixed periodic 'upsampling grid' of the generator (phase-locked to the pixel grid)."""
    r = _fixed_rng("gan_spectral/grid")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    grid = np.zeros((size, size, 3))
    for period in (4, 8):
        for ky, kx in ((1, 0), (0, 1), (1, 1)):
            phase = r.uniform(0, 2 * np.pi)
            colour = 0.6 + 0.4 * r.random(3)
            wave = np.cos(2 * np.pi * (ky * yy + kx * xx) / period + phase)
            grid += wave[..., None] * colour
    grid /= 6.0  # each wave has amplitude <= 1/6
    grid.setflags(write=False)
    return grid


def gan_spectral(rng: np.random.Generator, size: int, *, split: str = "train") -> np.ndarray:
    """Unconditional-GAN stand-in: scenes from random smooth fields (soft regions + 1/f
    texture) carrying a fixed periodic grid -> isolated peaks in the Fourier spectrum."""
    del split  # content is fully synthetic
    s = size
    beta = rng.uniform(1.8, 2.6)
    tex = _powerlaw_noise(rng, s, s, 3, beta)
    shape = _powerlaw_noise(rng, s, s, 2, 3.2)
    m1 = 1.0 / (1.0 + np.exp(-rng.uniform(3, 10) * shape[..., :1]))
    m2 = 1.0 / (1.0 + np.exp(-rng.uniform(3, 10) * shape[..., 1:]))
    base = rng.uniform(0.2, 0.75, size=(3, 1))
    cols = np.clip(base + rng.uniform(-0.25, 0.25, size=(3, 3)), 0.03, 0.97)
    img = m1 * (m2 * cols[0] + (1 - m2) * cols[1]) + (1 - m1) * cols[2]
    opp = tex * np.array([0.10, 0.03, 0.03]) * rng.uniform(0.5, 1.5)
    img = img + opp @ _OPP_TO_RGB.T
    amp = rng.uniform(0.2, 0.32)
    grid = _gan_spectral_grid(s)
    img = img * (1.0 + amp * grid) + 0.25 * amp * grid
    return _to_uint8(img)


@functools.cache
def _latent_codec():
    r = _fixed_rng("diffusion_latent/codec")
    q, _ = np.linalg.qr(r.standard_normal((4, 4)))  # random latent basis
    pattern = _blur3(r.standard_normal((8, 8, 1)))[..., 0]  # fixed 8x8 luminance texture
    pattern -= pattern.mean()
    pattern /= np.linalg.norm(pattern)
    rgb_to_opp = np.linalg.inv(_OPP_TO_RGB)
    # Decoder = inverse of the encoder plus a small fixed error -> systematic colour shift.
    err = np.diag([0.05, 0.05, 0.05, 0.01]) @ r.standard_normal((4, 4))
    dec = (np.eye(4) + err) @ np.linalg.inv(q)
    dec_bias = np.array([0.015, 0.01, -0.01, 0.0])
    return q, pattern, rgb_to_opp, dec, dec_bias


def diffusion_latent(rng: np.random.Generator, size: int, *, split: str = "train") -> np.ndarray:
    """Latent-diffusion (SD/LDM) stand-in: real patch -> 8x-downsampled 4-channel linear latent,
    noised + mildly denoised, decoded by a slightly wrong linear map + bilinear upsampling."""
    s = _ceil_to(size, 8)
    q, pattern, rgb_to_opp, dec, dec_bias = _latent_codec()
    x = sample_real(rng, s, split=split).astype(np.float64) / 255.0
    blocks = x.reshape(s // 8, 8, s // 8, 8, 3).transpose(0, 2, 1, 3, 4)  # (h, w, 8, 8, 3)
    mean_rgb = blocks.mean(axis=(2, 3))
    lum = blocks.mean(axis=-1)
    tex = np.einsum("hwij,ij->hw", lum, pattern)[..., None]
    z = np.concatenate([mean_rgb @ rgb_to_opp.T, tex], axis=-1) @ q.T  # encoder
    # One "sampling" step: forward-noise the latent and denoise it imperfectly.
    a = rng.uniform(0.90, 0.97)
    eps = rng.standard_normal(z.shape)
    zt = np.sqrt(a) * z + np.sqrt(1 - a) * eps * 0.3
    z0 = (zt - np.sqrt(1 - a) * 0.3 * (0.85 * eps)) / np.sqrt(a)
    z0 = 0.65 * z0 + 0.35 * _blur3(z0)
    d = z0 @ dec.T + dec_bias  # decoder
    rgb_low = d[..., :3] @ _OPP_TO_RGB.T
    out = _bilinear_resize(rgb_low, 8)
    blocky = np.repeat(np.repeat(d[..., 3:], 8, axis=0), 8, axis=1) * np.tile(pattern, (s // 8, s // 8))[..., None]
    out = out + 0.5 * blocky
    return _to_uint8(out[:size, :size])


def diffusion_noise(rng: np.random.Generator, size: int, *, split: str = "train") -> np.ndarray:
    """Pixel-space diffusion (DDPM/ADM) stand-in: a few ancestral denoising steps from Gaussian
    noise with a Wiener denoiser for a 1/f^2 'photo' prior -> smooth scenes, residual noise."""
    del split  # content is fully synthetic
    s = size
    beta = rng.uniform(2.6, 3.4)
    f = np.maximum(_radial_freq(s, s), 1.0 / s)
    prior = f ** (-beta)
    prior[0, 0] = 0.0
    prior *= prior.size / prior.sum()  # unit variance per pixel (ortho FFT units)
    chroma = np.array([1.0, 0.35, 0.35])[:, None, None]
    sigmas = np.geomspace(2.5, 0.04, 6)
    x = sigmas[0] * rng.standard_normal((3, s, s))
    gamma = rng.uniform(0.3, 1.0)
    for i, sig in enumerate(sigmas):
        spec = prior[None] * chroma**2
        x0 = np.fft.ifft2(np.fft.fft2(x) * (spec / (spec + sig**2))).real
        x0 = np.tanh(gamma * x0) / gamma  # pushes toward flat regions with sharper edges
        if i + 1 < len(sigmas):
            eps_hat = (x - x0) / sig
            nxt = sigmas[i + 1]
            x = x0 + nxt * (0.5 * eps_hat + np.sqrt(0.75) * rng.standard_normal(x.shape))
    x0 = x0 - x0.mean(axis=(1, 2), keepdims=True)
    x0 /= x0[0].std() + 1e-8
    contrast = rng.uniform(0.12, 0.22)
    opp = np.moveaxis(x0, 0, -1) * (contrast * np.array([1.0, 0.5, 0.5]))
    base = rng.uniform(0.3, 0.65) + rng.uniform(-0.06, 0.06, size=3)
    img = base + opp @ _OPP_TO_RGB.T
    # Residual sampler noise left in the final sample (characteristic of pixel diffusion).
    img = img + rng.uniform(0.006, 0.015) * rng.standard_normal(img.shape)
    return _to_uint8(img)


FamilyFn = Callable[..., np.ndarray]

#: Synthetic generator families, name -> ``fn(rng, size, *, split="train")``.
FAMILIES: dict[str, FamilyFn] = {
    "gan_upsample": gan_upsample,
    "gan_spectral": gan_spectral,
    "diffusion_latent": diffusion_latent,
    "diffusion_noise": diffusion_noise,
}

FAMILY_KIND: dict[str, str] = {
    "gan_upsample": "GAN-like",
    "gan_spectral": "GAN-like",
    "diffusion_latent": "diffusion-like",
    "diffusion_noise": "diffusion-like",
}

FAMILY_IMITATES: dict[str, str] = {
    "gan_upsample": "ProGAN/StyleGAN-style upsampling (transposed-conv checkerboard artifacts)",
    "gan_spectral": "unconditional GAN scenes with periodic grid peaks in the Fourier spectrum",
    "diffusion_latent": "latent diffusion (Stable Diffusion / LDM): 8x VAE latent reconstruction",
    "diffusion_noise": "pixel-space diffusion (DDPM/ADM): iterative denoising of Gaussian noise",
}


def describe() -> str:
    """Human-readable explanation of the offline demo data."""
    lines = [
        "SynerDetect offline demo data (no downloads).",
        f"Real images: random crops/flips of {len(_load_photos())} photographs bundled with "
        "scikit-image (top rows -> train, bottom rows -> test).",
        "Fake images: SYNTHETIC STAND-INS written in numpy, NOT real GAN or diffusion models.",
        "They only imitate characteristic generator artifacts; demo numbers are illustrative",
        "and say nothing about performance on real generated images.",
        "Families:",
    ]
    for name in FAMILIES:
        lines.append(f"  - {name} [{FAMILY_KIND[name]}]: imitates {FAMILY_IMITATES[name]}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Benchmark builder
# --------------------------------------------------------------------------------------


def _image_rng(seed: int, split: str, family: str, label: int, index: int) -> np.random.Generator:
    key = [int(seed), zlib.crc32(split.encode()), zlib.crc32(family.encode()), label, index]
    return np.random.default_rng(key)


def _count_pngs(d: Path) -> int:
    return sum(1 for _ in d.glob("*.png")) if d.is_dir() else 0


def _layout(root: Path, params: dict) -> dict:
    train = {f: root / "train" / f for f in params["train_families"]}
    test = {f: root / "test" / f for f in params["test_families"]}
    return {"train": train, "test": test}


def _is_complete(root: Path, params: dict) -> bool:
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        old = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    if old.get("params") != params:
        return False
    lay = _layout(root, params)
    for split, n in (("train", params["n_train"]), ("test", params["n_test"])):
        for d in lay[split].values():
            if _count_pngs(d / REAL_DIR) != n or _count_pngs(d / FAKE_DIR) != n:
                return False
    return True


def _summary(root: Path, params: dict, regenerated: bool) -> dict:
    lay = _layout(root, params)
    seen = list(params["train_families"])
    return {
        "root": str(root),
        "manifest": str(root / MANIFEST_NAME),
        "size": params["size"],
        "seed": params["seed"],
        "train_families": seen,
        "test_families": list(params["test_families"]),
        "seen_families": [f for f in params["test_families"] if f in seen],
        "unseen_families": [f for f in params["test_families"] if f not in seen],
        "family_kind": {f: FAMILY_KIND[f] for f in params["test_families"]},
        "train": {f: str(p) for f, p in lay["train"].items()},
        "test": {f: str(p) for f, p in lay["test"].items()},
        "counts": {
            "train": {f: {REAL_DIR: params["n_train"], FAKE_DIR: params["n_train"]} for f in lay["train"]},
            "test": {f: {REAL_DIR: params["n_test"], FAKE_DIR: params["n_test"]} for f in lay["test"]},
        },
        "regenerated": regenerated,
    }


def _check_families(names: Iterable[str], what: str) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; available: {sorted(FAMILIES)}")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"{what} must be a non-empty list of distinct names, got {names}")
    return names


def _write_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG")


def build_demo_benchmark(
    out_dir: str | os.PathLike,
    *,
    size: int = 64,
    n_train: int = 96,
    n_test: int = 48,
    train_families: Iterable[str] = ("gan_upsample",),
    test_families: Iterable[str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write a CNNDetection-style benchmark under ``out_dir`` and describe it.

    Layout (PNG for both classes)::

        out_dir/train/<family>/0_real/*.png   out_dir/train/<family>/1_fake/*.png   (n_train each)
        out_dir/test/<family>/0_real/*.png    out_dir/test/<family>/1_fake/*.png    (n_test each)
        out_dir/benchmark.json                 (parameters; written last)

    Every (split, family) gets its own real crops.  If ``out_dir`` already holds a complete
    benchmark with identical parameters, nothing is regenerated (``result["regenerated"]``
    is False).  A previous benchmark with different parameters (recognised by its manifest)
    is replaced; existing ``train``/``test`` folders *without* a manifest are left alone and
    raise :class:`FileExistsError` unless ``overwrite=True``.
    """
    size = int(size)
    if size < 8 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8, got {size}")
    if n_train < 1 or n_test < 1:
        raise ValueError("n_train and n_test must be >= 1")
    train_families = _check_families(train_families, "train_families")
    test_families = _check_families(FAMILIES if test_families is None else test_families, "test_families")
    params = {
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "n_train": int(n_train),
        "n_test": int(n_test),
        "train_families": train_families,
        "test_families": test_families,
        "seed": int(seed),
    }
    root = Path(out_dir)
    if not overwrite and _is_complete(root, params):
        return _summary(root, params, regenerated=False)

    manifest = root / MANIFEST_NAME
    ours = manifest.is_file()
    for sub in ("train", "test"):
        d = root / sub
        if d.exists() and any(d.iterdir()):
            if not (ours or overwrite):
                raise FileExistsError(
                    f"{d} exists and is not a SynerDetect demo benchmark; pass overwrite=True or choose another out_dir"
                )
            shutil.rmtree(d)
    if manifest.exists():
        manifest.unlink()  # invalid until the new benchmark is complete

    for split, n, fams in (("train", n_train, train_families), ("test", n_test, test_families)):
        for fam in fams:
            fam_dir = root / split / fam
            (fam_dir / REAL_DIR).mkdir(parents=True, exist_ok=True)
            (fam_dir / FAKE_DIR).mkdir(parents=True, exist_ok=True)
            gen = FAMILIES[fam]
            for i in range(n):
                real = sample_real(_image_rng(seed, split, fam, 0, i), size, split=split)
                _write_png(real, fam_dir / REAL_DIR / f"{i:05d}.png")
                fake = gen(_image_rng(seed, split, fam, 1, i), size, split=split)
                _write_png(fake, fam_dir / FAKE_DIR / f"{i:05d}.png")

    tmp = root / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps({"params": params, "family_kind": FAMILY_KIND}, indent=2))
    os.replace(tmp, manifest)
    return _summary(root, params, regenerated=True)
