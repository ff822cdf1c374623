"""Evidence maps (engine/maps.py): the interpolation against scipy, the record's summary on a hand-made map, and the
maps of real scoring runs at each image's native size (Scorer and predict --maps)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.interpolate import RegularGridInterpolator

from synerdetect.engine.maps import EvidenceMaps, generative_map, grid_to_map, map_summary

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grid_to_map_is_bilinear_and_clamped_like_scipy():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 4))
    xc, yc = np.array([5.0, 20.0, 35.0, 60.0]), np.array([4.0, 14.0, 30.0])
    w, h = 70, 37
    got = grid_to_map(values, xc, yc, w, h)
    ref = RegularGridInterpolator((yc, xc), values, method="linear")
    py = np.clip(np.arange(h) + 0.5, yc[0], yc[-1])  # constant beyond the outermost centres
    px = np.clip(np.arange(w) + 0.5, xc[0], xc[-1])
    yy, xx = np.meshgrid(py, px, indexing="ij")
    want = ref(np.stack([yy.ravel(), xx.ravel()], axis=1)).reshape(h, w)
    assert got.shape == (h, w) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_generative_map_lies_over_the_centre_square():
    patch = np.zeros((2, 2))
    patch[:, 1] = 1.0  # the right half of the SD view says "generated"
    m = generative_map(patch, 200, 100)  # SD view: the centre 100 x 100 square, x in [50, 150)
    assert m.shape == (100, 200)
    assert m[:, :75].max() == 0.0 and m[:, 125:].min() == 1.0  # patch centres at x = 75 and 125


def test_summary_by_hand():
    c = np.full((40, 60), -1.0, dtype=np.float32)
    c[10:20, 30:50] = 2.0  # the region over the threshold: 200 of 2400 pixels
    c[0:3, 0:3] = 0.5  # a smaller, weaker region
    p = np.where(c > 0, 1.0, -1.0).astype(np.float32)
    g = -p
    s = map_summary(EvidenceMaps(p, g, c, (16.0, 16.0)))
    assert s["peak"] == [30, 10, 20, 10]
    assert s["area_over_threshold"] == pytest.approx(209 / 2400)
    assert s["agreement"]["same_side"] == 0.0 and s["agreement"]["pearson"] == pytest.approx(-1.0)
    low = map_summary(EvidenceMaps(p, g, c - 5.0, (16.0, 16.0)))  # nothing over 0: the tile around the maximum
    # the first maximum is pixel (x 30, y 10): a 16 px tile centred there starts at (22, 2)
    assert low["area_over_threshold"] == 0.0 and low["peak"] == [22, 2, 16, 16]


@pytest.mark.slow  # ~2 s on 2 cores
def test_npz_maps_have_each_image_native_size(tiny_model, tmp_path):
    from synerdetect.engine.scoring import Scorer

    rng = np.random.default_rng(0)
    sizes = [(64, 64), (150, 100), (1, 90), (300, 40), (20, 30)]
    paths = []
    for i, (w, h) in enumerate(sizes):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    out = tmp_path / "maps"
    recs = Scorer(tiny_model, maps=out).score([str(p) for p in paths])
    for (w, h), rec, p in zip(sizes, recs, paths):
        with np.load(out / f"{p.stem}.map.npz") as z:
            assert sorted(z.files) == ["combined", "generative", "perceptual"]
            for k in z.files:
                assert z[k].shape == (h, w) and z[k].dtype == np.float32
            np.testing.assert_allclose(z["combined"], z["perceptual"] + z["generative"], atol=1e-6)
        assert (out / f"{p.stem}.map.png").stat().st_size > 0
        x, y, bw, bh = rec["map"]["peak"]
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and bw > 0 and bh > 0
        assert 0.0 <= rec["map"]["area_over_threshold"] <= 1.0
    # the map changes nothing in the score, and a second run never overwrites the first run's files
    plain = Scorer(tiny_model).score([str(paths[1])])[0]
    assert plain["map"] is None and plain["logit"] == pytest.approx(recs[1]["logit"], abs=1e-5)
    again = Scorer(tiny_model, maps=out).score([str(paths[1])])[0]
    assert again["map"]["files"][1].endswith("im1-1.map.npz")
