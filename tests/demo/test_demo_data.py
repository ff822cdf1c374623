"""Tests for the offline demo benchmark data (synerdetect.demo.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synerdetect.demo import (
    FAMILIES,
    FAMILY_KIND,
    build_demo_benchmark,
    describe,
    real_photo_pool,
    sample_real,
    synthetic,
)

SIZE = 64
N_STAT = 40


def _rngs(tag: int, n: int = N_STAT):
    return [np.random.default_rng([tag, i]) for i in range(n)]


def _reals(split: str = "test", n: int = N_STAT):
    return [sample_real(r, SIZE, split=split) for r in _rngs(11, n)]


def _fakes(name: str, split: str = "test", n: int = N_STAT):
    return [FAMILIES[name](r, SIZE, split=split) for r in _rngs(23, n)]


def _power(img: np.ndarray) -> np.ndarray:
    g = img.astype(np.float64).mean(axis=-1)
    g -= g.mean()
    return np.abs(np.fft.fft2(g)) ** 2


def _radius(n: int) -> np.ndarray:
    f = np.fft.fftfreq(n)
    return np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


def nyquist_fraction(img: np.ndarray) -> float:
    """Share of (non-DC) power on the row/column at the Nyquist frequency (period 2)."""
    p = _power(img)
    n = p.shape[0]
    return float((p[n // 2, :].sum() + p[:, n // 2].sum()) / (p.sum() + 1e-12))


def high_freq_fraction(img: np.ndarray, cutoff: float = 0.25) -> float:
    p = _power(img)
    return float(p[_radius(p.shape[0]) > cutoff].sum() / (p.sum() + 1e-12))


def spectral_peakiness(img: np.ndarray) -> float:
    """Largest log-power excess over the local (5x5) median, away from low frequencies."""
    from scipy.ndimage import median_filter

    logp = np.log(_power(img) + 1e-8)
    excess = logp - median_filter(logp, size=5, mode="wrap")
    return float(excess[_radius(logp.shape[0]) > 0.1].max())


def residual_kurtosis(img: np.ndarray) -> float:
    """Excess kurtosis of the Laplacian residual (photos: heavy tailed; Gaussian noise: ~0)."""
    g = img.astype(np.float64).mean(axis=-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    z = (lap - lap.mean()) / (lap.std() + 1e-12)
    return float((z**4).mean() - 3.0)


# ----------------------------------------------------------------------------- API


def test_family_registry():
    assert len(FAMILIES) >= 4
    assert set(FAMILY_KIND) == set(FAMILIES)
    assert set(FAMILY_KIND.values()) == {"GAN-like", "diffusion-like"}
    text = describe()
    assert "stand-in" in text.lower() or "synthetic" in text.lower()
    for name in FAMILIES:
        assert name in text
        assert FAMILIES[name].__doc__


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("size", [32, 64])
def test_family_output_and_determinism(name, size):
    fn = FAMILIES[name]
    a = fn(np.random.default_rng(123), size)
    b = fn(np.random.default_rng(123), size)
    c = fn(np.random.default_rng(124), size)
    assert a.shape == (size, size, 3) and a.dtype == np.uint8
    assert a.min() >= 0 and a.max() <= 255 and a.std() > 1.0  # not a constant image
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ----------------------------------------------------------------------------- reals


def test_real_photos_are_bundled_and_split(monkeypatch):
    # Any attempt to go through skimage's pooch fetcher would be a download: forbid it.
    import skimage.data._fetchers as fetchers

    def _no_fetch(*_args, **_kwargs):
        raise AssertionError("demo data must not use the scikit-image fetcher")

    monkeypatch.setattr(fetchers, "_fetch", _no_fetch)
    synthetic._load_photos.cache_clear()
    synthetic._pool.cache_clear()
    data_dir = synthetic._skimage_data_dir()
    train, test = real_photo_pool("train"), real_photo_pool("test")
    assert len(train) == len(test) >= 10
    for tr, te in zip(train, test):
        assert tr.dtype == np.uint8 and tr.ndim == 3 and tr.shape[2] == 3
        assert te.shape[1] == tr.shape[1] and te.shape[0] < tr.shape[0]
    for name in synthetic.PHOTO_FILES[:3]:
        assert (data_dir / name).is_file()
    with pytest.raises(ValueError):
        real_photo_pool("val")


def test_real_crops_deterministic_and_distinct():
    a = sample_real(np.random.default_rng(5), SIZE, split="train")
    b = sample_real(np.random.default_rng(5), SIZE, split="train")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    crops = {sample_real(r, SIZE).tobytes() for r in _rngs(3, 30)}
    assert len(crops) == 30


# ----------------------------------------------------------------------------- artifacts


def test_gan_upsample_has_periodic_upsampling_energy():
    real = np.median([nyquist_fraction(x) for x in _reals()])
    fake = np.median([nyquist_fraction(x) for x in _fakes("gan_upsample")])
    assert fake > 3 * real, (fake, real)


def test_diffusion_latent_suppresses_high_frequencies():
    real = np.median([high_freq_fraction(x) for x in _reals()])
    fake = np.median([high_freq_fraction(x) for x in _fakes("diffusion_latent")])
    assert fake < 0.75 * real, (fake, real)


def test_gan_spectral_has_spectral_peaks():
    real = np.median([spectral_peakiness(x) for x in _reals()])
    fake = np.median([spectral_peakiness(x) for x in _fakes("gan_spectral")])
    assert fake > real + 1.0, (fake, real)


def test_diffusion_noise_residual_is_gaussian_like():
    real = np.median([residual_kurtosis(x) for x in _reals()])
    fake = np.median([residual_kurtosis(x) for x in _fakes("diffusion_noise")])
    assert fake < 1.0 < real, (fake, real)


def test_photo_based_fakes_use_split_pool():
    # Same rng, different split -> different source content.
    for name in ("gan_upsample", "diffusion_latent"):
        tr = FAMILIES[name](np.random.default_rng(0), SIZE, split="train")
        te = FAMILIES[name](np.random.default_rng(0), SIZE, split="test")
        assert not np.array_equal(tr, te)


# ----------------------------------------------------------------------------- builder


def _pngs(d: Path):
    return sorted(d.glob("*.png"))


def test_build_demo_benchmark_tree_and_idempotence(tmp_path):
    out = tmp_path / "bench"
    kw = dict(size=32, n_train=5, n_test=3, seed=1)
    info = build_demo_benchmark(out, **kw)
    assert info["regenerated"] is True
    assert info["train_families"] == ["gan_upsample"]
    assert info["test_families"] == list(FAMILIES)
    assert info["seen_families"] == ["gan_upsample"]
    assert set(info["unseen_families"]) == set(FAMILIES) - {"gan_upsample"}

    assert sorted(p.name for p in (out / "train").iterdir()) == ["gan_upsample"]
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(FAMILIES)
    for split, n, fams in (("train", 5, ["gan_upsample"]), ("test", 3, list(FAMILIES))):
        for fam in fams:
            assert info[split][fam] == str(out / split / fam)
            assert info["counts"][split][fam] == {"0_real": n, "1_fake": n}
            for cls in ("0_real", "1_fake"):
                files = _pngs(out / split / fam / cls)
                assert len(files) == n
                with Image.open(files[0]) as im:
                    assert im.format == "PNG" and im.mode == "RGB" and im.size == (32, 32)

    # Test reals differ across families and from the train reals.
    def load(d):
        return {np.asarray(Image.open(p)).tobytes() for p in _pngs(d)}

    train_reals = load(out / "train" / "gan_upsample" / "0_real")
    seen = set(train_reals)
    for fam in FAMILIES:
        reals = load(out / "test" / fam / "0_real")
        assert not (reals & seen)
        seen |= reals

    manifest = json.loads((out / "benchmark.json").read_text())
    assert manifest["params"]["size"] == 32 and manifest["params"]["seed"] == 1

    # Second call: nothing regenerated, files untouched.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    stamps[out / "benchmark.json"] = (out / "benchmark.json").stat().st_mtime_ns
    info2 = build_demo_benchmark(out, **kw)
    assert info2["regenerated"] is False
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert info2["counts"] == info["counts"]

    # Different parameters -> rebuilt (old benchmark replaced, not mixed).
    info3 = build_demo_benchmark(
        out, size=32, n_train=2, n_test=2, seed=1, train_families=["diffusion_latent"], test_families=["gan_spectral"]
    )
    assert info3["regenerated"] is True
    assert sorted(p.name for p in (out / "test").iterdir()) == ["gan_spectral"]
    assert len(_pngs(out / "train" / "diffusion_latent" / "1_fake")) == 2
    assert info3["unseen_families"] == ["gan_spectral"]


def test_build_is_deterministic(tmp_path):
    kw = dict(size=32, n_train=2, n_test=2, test_families=["gan_upsample", "diffusion_noise"], seed=3)
    build_demo_benchmark(tmp_path / "a", **kw)
    build_demo_benchmark(tmp_path / "b", **kw)
    for pa in (tmp_path / "a").rglob("*.png"):
        pb = tmp_path / "b" / pa.relative_to(tmp_path / "a")
        np.testing.assert_array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))


def test_build_refuses_foreign_directory(tmp_path):
    (tmp_path / "train" / "mine").mkdir(parents=True)
    (tmp_path / "train" / "mine" / "x.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        build_demo_benchmark(tmp_path, size=32, n_train=1, n_test=1)
    assert (tmp_path / "train" / "mine" / "x.txt").exists()


def test_build_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        build_demo_benchmark(tmp_path, train_families=["no_such_family"])
    with pytest.raises(ValueError):
        build_demo_benchmark(tmp_path, size=30)
