"""Localisation metrics (engine/localisation.py) against brute force and sklearn, and the demo's composites."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synerdetect.demo.localisation import build_localisation_set, soft_box
from synerdetect.engine.localisation import best_iou, find_masks, load_mask


def test_best_iou_equals_brute_force_over_all_thresholds():
    rng = np.random.default_rng(0)
    values = np.round(rng.normal(size=300), 1)  # ties on purpose
    truth = rng.random(300) < 0.3
    got, thr = best_iou(values, truth)
    brute = 0.0
    for t in np.unique(values):
        for cut in (t - 1e-9, t + 1e-9):
            pred = values > cut
            brute = max(brute, (pred & truth).sum() / (pred | truth).sum())
    assert got == pytest.approx(brute)
    pred = values > thr
    assert (pred & truth).sum() / (pred | truth).sum() == pytest.approx(got)


def test_soft_box_by_hand():
    # side 8, feather 2: u = 0.5 .. 7.5, min(u, 8 - u) / 2 = 0.25, 0.75, 1, 1, 1, 1, 0.75, 0.25
    b = soft_box(8, 2)
    np.testing.assert_allclose(b[3], [0.25, 0.75, 1, 1, 1, 1, 0.75, 0.25])
    assert b[0, 0] == pytest.approx(0.0625)


def test_localisation_set_masks_match_the_pasted_region(tmp_path):
    root = build_localisation_set(tmp_path / "loc", n=3, size=64)
    masks = find_masks(root / "masks")
    assert sorted(masks) == ["loc_0000", "loc_0001", "loc_0002"]
    for stem, path in masks.items():
        m = load_mask(path, 64, 64)
        comp = np.asarray(Image.open(root / "gan_upsample" / "1_fake" / f"{stem}.png"), dtype=int)
        orig = np.asarray(Image.open(root / "gan_upsample" / "0_real" / f"orig_{stem[4:]}.png"), dtype=int)
        changed = np.abs(comp - orig).sum(-1) > 0
        share = m.mean()
        assert 0.25**2 * 0.5 <= share <= 0.5**2  # side 25-50 % of the image's, less the soft edges
        assert not changed[~_dilate(m, 8)].any()  # nothing changed far outside the mask
        assert changed[m].mean() > 0.9  # and the masked pixels did change
    with pytest.raises(ValueError, match="no mask"):
        find_masks(root / "gan_upsample")


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    ys, xs = np.nonzero(m)
    out = np.zeros_like(m)
    out[max(0, ys.min() - r) : ys.max() + r + 1, max(0, xs.min() - r) : xs.max() + r + 1] = True
    return out


@pytest.mark.slow  # a scoring run: ~3 s on 2 cores
def test_evaluate_with_masks_reports_every_map(ckpt, tiny_model, tmp_path):
    import json

    from synerdetect.engine.evaluate import evaluate_from_config

    root = build_localisation_set(tmp_path / "loc", n=3, size=96)
    out = tmp_path / "eval"
    res = evaluate_from_config(
        ckpt, out, data=str(root), layout="cnndetection", masks=root / "masks", model=tiny_model, progress=False
    )
    loc = res["localisation"]
    assert loc["n_masked"] == 3 and loc["n_without_mask"] == 3  # the originals have no mask
    g = loc["per_generator"]["gan_upsample"]
    for k in ("perceptual", "generative", "combined"):
        assert 0.0 <= g[k]["pixel_auc"] <= 1.0 and 0.0 < g[k]["iou_best"] <= 1.0
        assert 0.0 <= g[k]["pixel_auc_per_image"] <= 1.0
    assert json.loads((out / "results.json").read_text())["localisation"]["per_generator"] == loc["per_generator"]
    assert "## Localisation" in (out / "results.md").read_text()
    assert (out / "localisation_examples.png").stat().st_size > 0
    with pytest.raises(ValueError, match="not a folder"):
        evaluate_from_config(ckpt, tmp_path / "e2", data=str(root), layout="cnndetection", masks=tmp_path / "none")
