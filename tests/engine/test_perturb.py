"""Robustness perturbations: effect direction, geometry, statistics, determinism, parsing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synerdetect.engine.perturb import (
    DEFAULT_LEVELS,
    KINDS,
    LEGACY_LEVELS,
    NAMED_CHAINS,
    Chain,
    Perturbation,
    apply,
    image_seed,
    parse_perturb_spec,
)


def textured_image(w=96, h=80, seed=0) -> Image.Image:
    """Smooth gradients plus random texture (has both low and high frequencies)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, 0.5 + 0.25 * np.sin(xx / 7.0) * np.cos(yy / 5.0)], -1)
    arr = np.clip(base * 0.7 + 0.3 * rng.random((h, w, 3)), 0, 1)
    return Image.fromarray((arr * 255).round().astype(np.uint8))


def as_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64) / 255.0


def hf_energy(img: Image.Image) -> float:
    """Spectral energy above 1/4 of the Nyquist radius (mean removed, Hann-windowed
    so that the non-periodic image border does not leak into high frequencies)."""
    a = as_float(img).mean(-1)
    h, w = a.shape
    F = np.fft.fftshift(np.fft.fft2((a - a.mean()) * np.outer(np.hanning(h), np.hanning(w))))
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij")
    return float(np.sum(np.abs(F[np.hypot(fx, fy) > 0.125]) ** 2))


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((as_float(a) - as_float(b)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def test_blur_reduces_high_frequency_monotonically():
    img = textured_image()
    energies = [hf_energy(img)] + [hf_energy(apply(img, Perturbation("blur", s), 0)) for s in (1, 2, 3)]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    # Gaussian transfer exp(-2 pi^2 sigma^2 f^2): strong attenuation above f = 0.125
    assert energies[1] < 0.2 * energies[0]
    assert energies[3] < 0.01 * energies[0]
    out = apply(img, Perturbation("blur", 2), 0)
    assert out.size == img.size and out.mode == "RGB"


def test_jpeg_psnr_decreases_with_quality():
    img = textured_image()
    qs = DEFAULT_LEVELS["jpeg"]
    assert qs == sorted(qs, reverse=True) and qs == [75, 50, 30, 10]  # Frank et al. 2020: quality 10-75
    values = [psnr(img, apply(img, Perturbation("jpeg", q), 0)) for q in qs]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert np.isfinite(values[0])  # even q95 is lossy
    out = apply(img, Perturbation("jpeg", 60), 0)
    assert out.size == img.size and out.mode == "RGB"


@pytest.mark.parametrize("frac", [0.9, 0.75, 0.5, 1.0])
def test_crop_size_and_content(frac):
    img = textured_image(100, 80)
    out = apply(img, Perturbation("crop", frac), seed=3)
    assert out.size == (round(100 * frac), round(80 * frac))
    a, o = np.asarray(img), np.asarray(out)
    ch, cw = o.shape[:2]
    hits = [
        (y, x) for y in range(80 - ch + 1) for x in range(100 - cw + 1) if np.array_equal(a[y : y + ch, x : x + cw], o)
    ]
    assert len(hits) == 1  # exactly a sub-window of the original, not resized


def test_crop_offsets_vary_with_seed():
    img = textured_image(100, 80)
    outs = {apply(img, Perturbation("crop", 0.5), seed=s).tobytes() for s in range(8)}
    assert len(outs) > 1


@pytest.mark.parametrize("std", [0.01, 0.03, 0.05])
def test_noise_std_matches_level(std):
    img = Image.new("RGB", (256, 256), (128, 128, 128))  # mid-grey: clipping negligible
    out = apply(img, Perturbation("noise", std), seed=7)
    diff = as_float(out) - as_float(img)
    # uint8 quantisation adds variance 1/(12*255^2)
    expected = np.sqrt(std**2 + 1 / (12 * 255**2))
    assert diff.std() == pytest.approx(expected, rel=0.03)
    assert abs(diff.mean()) < 3 * expected / np.sqrt(diff.size) + 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_determinism_and_no_mutation(kind):
    img = textured_image()
    before = img.tobytes()
    p = Perturbation(kind, DEFAULT_LEVELS[kind][1])
    a, b = apply(img, p, seed=11), apply(img, p, seed=11)
    assert a.tobytes() == b.tobytes() and a.size == b.size
    assert img.tobytes() == before
    assert p(img, 11).tobytes() == a.tobytes()
    if kind == "noise":
        assert apply(img, p, seed=12).tobytes() != a.tobytes()


def test_non_rgb_input_is_converted():
    for mode in ("L", "RGBA", "P"):
        img = textured_image().convert(mode)
        for kind in KINDS:
            out = apply(img, Perturbation(kind, DEFAULT_LEVELS[kind][0]), 0)
            assert out.mode == "RGB"


def test_names_and_image_seed():
    assert Perturbation("jpeg", 60).name == "jpeg@q60"
    assert Perturbation("blur", 2).name == "blur@sigma2"
    assert Perturbation("crop", 0.75).name == "crop@keep0.75"
    assert Perturbation("noise", 0.03).name == "noise@std0.03"
    assert Perturbation("JPEG", 60.0) == Perturbation("jpeg", 60)
    assert isinstance(Perturbation("jpeg", 60.0).level, int)
    assert image_seed("a/b.png", 0) == image_seed("a/b.png", 0)
    assert image_seed("a/b.png", 0) != image_seed("a/c.png", 0)
    assert image_seed("a/b.png", 0) != image_seed("a/b.png", 1)
    assert 0 <= image_seed("x") < 2**63


def test_parse_spec_defaults_and_custom():
    for kind in KINDS:
        ps = parse_perturb_spec(kind)
        assert [p.level for p in ps] == DEFAULT_LEVELS[kind]
        assert all(p.kind == kind for p in ps)
    assert [p.name for p in parse_perturb_spec("jpeg:30,60,90")] == ["jpeg@q30", "jpeg@q60", "jpeg@q90"]
    assert [p.level for p in parse_perturb_spec(" Blur : 0.5, 3 ")] == [0.5, 3.0]
    assert [p.level for p in parse_perturb_spec("crop:1")] == [1.0]


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("sharpen", "unknown perturbation kind"),
        ("", "empty"),
        ("jpeg:", "empty level"),
        ("jpeg:30,,60", "empty level"),
        ("jpeg:abc", "not a number"),
        ("jpeg:0", "out of range"),
        ("webp:101", "out of range"),
        ("resize:1.5", "out of range"),
        ("fit:8", "out of range"),
        ("fit:100.5", "integer"),
        ("resize:0.5+jpeg:85,60", "exactly one level"),
        ("resize:0.5+sharpen:1", "unknown perturbation kind"),
        ("noise:legacy2", "not a number"),
        ("webp:legacy", "no legacy ladder"),
        ("jpeg:101", "out of range"),
        ("jpeg:60.5", "integer"),
        ("blur:0", "out of range"),
        ("blur:3.5", "out of range"),
        ("crop:1.5", "out of range"),
        ("crop:0", "out of range"),
        ("noise:-0.1", "out of range"),
        ("noise:nan", "finite"),
        ("jpeg:30,30", "duplicate"),
    ],
)
def test_parse_spec_errors(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_perturb_spec(spec)


def test_direct_construction_validates():
    with pytest.raises(ValueError, match="unknown"):
        Perturbation("rotate", 1)
    with pytest.raises(ValueError, match="out of range"):
        Perturbation("noise", 2.0)
    with pytest.raises(TypeError):
        apply(textured_image(), "blur", 0)


# ----------------------------------------------------------------------------- resize, webp, chains, protocols


def _pillow_roundtrip(img: Image.Image, fmt: str, quality: int) -> Image.Image:
    import io

    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_webp_and_chain_match_pillow_directly():
    img = textured_image(97, 61)
    assert apply(img, Perturbation("webp", 80)).tobytes() == _pillow_roundtrip(img, "WEBP", 80).tobytes()
    (chain,) = parse_perturb_spec("resize:0.5+jpeg:85")
    assert isinstance(chain, Chain) and chain.name == "chain@resize@f0.5+jpeg@q85"
    small = img.resize((48, 30), Image.Resampling.LANCZOS, reducing_gap=3.0)  # round(0.5 * 97), round(0.5 * 61)
    assert apply(img, chain, 0).tobytes() == _pillow_roundtrip(small, "JPEG", 85).tobytes()


@pytest.mark.parametrize(("factor", "size"), [(0.5, (50, 40)), (0.25, (25, 20)), (0.33, (33, 26)), (1.0, (100, 80))])
def test_resize_sizes_and_antialiasing(factor, size):
    img = textured_image(100, 80)
    assert apply(img, Perturbation("resize", factor)).size == size
    # a one-pixel checkerboard halved: an antialiasing filter gives flat grey, point sampling would keep 0 or 255
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    out = np.asarray(apply(Image.fromarray(board).convert("RGB"), Perturbation("resize", 0.5)), dtype=float)
    assert np.abs(out[4:-4, 4:-4] - 127.5).max() < 8


def test_fit_caps_the_long_side_without_upscaling():
    img = textured_image(300, 120)
    assert apply(img, Perturbation("fit", 150)).size == (150, 60)
    assert apply(img, Perturbation("fit", 1080)).size == (300, 120)


def test_named_chains_sets_and_legacy_ladders():
    chains = parse_perturb_spec("platforms")
    assert [c.level_label for c in chains] == list(NAMED_CHAINS)
    assert all(isinstance(c, Chain) and c.spec == NAMED_CHAINS[c.level_label] for c in chains)
    assert [p.level for p in parse_perturb_spec("jpeg:legacy")] == [95, 80, 60, 30] == LEGACY_LEVELS["jpeg"]
    table4 = parse_perturb_spec("table4")
    assert {p.kind for p in table4} == {"blur", "crop", "jpeg", "noise"}
    assert len(parse_perturb_spec("legacy")) == sum(len(v) for v in LEGACY_LEVELS.values())
    # the protocol's noise: variance 5, 10, 20 on the 0-255 scale
    assert DEFAULT_LEVELS["noise"] == pytest.approx([np.sqrt(v) / 255 for v in (5, 10, 20)], abs=1e-4)
    # a chain's steps get seed, seed + 1: noise twice is not the same draw twice
    twice = parse_perturb_spec("noise:0.05+noise:0.05")[0]
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    d = np.asarray(apply(grey, twice, 5), dtype=float) - 128
    assert d.std() == pytest.approx(255 * 0.05 * np.sqrt(2), rel=0.05)
