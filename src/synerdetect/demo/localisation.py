"""The demo's localisation set and measurement: real 256 px test photographs, each with one pasted region made by
the seen family's stand-in generator (the region's side 25-50 % of the image's, a random position, soft edges), a
mask per composite, and the untouched photograph beside it as the real counterpart.

Layout under ``root``: ``gan_upsample/1_fake/loc_NNNN.png`` (composites), ``gan_upsample/0_real/orig_NNNN.png``
(their originals) and ``masks/loc_NNNN.png`` (255 where the region's weight is at least one half), readable by
``synerdetect evaluate --data ROOT --layout cnndetection --masks ROOT/masks``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .synthetic import FAMILIES, sample_real

__all__ = ["build_localisation_set", "soft_box", "run_localisation"]

LOCALISATION_VERSION = 1


def soft_box(side: int, feather: int) -> np.ndarray:
    """``side x side`` weights: 1 inside, falling linearly to 0 over ``feather`` px at each edge (soft edges)."""
    u = np.arange(side, dtype=np.float64) + 0.5
    ramp = np.clip(np.minimum(u, side - u) / max(feather, 1), 0.0, 1.0)
    return np.outer(ramp, ramp)


def build_localisation_set(
    root: str | Path, *, n: int = 24, size: int = 256, family: str = "gan_upsample", seed: int = 0
) -> Path:
    """Write ``n`` composites, their originals and masks under ``root`` (module docstring); deterministic in
    ``seed``. Photographs come from the test rows of the bundled photos (never seen in training)."""
    root = Path(root)
    fake, real, masks = root / family / "1_fake", root / family / "0_real", root / "masks"
    for d in (fake, real, masks):
        d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng([seed, LOCALISATION_VERSION, i])
        base = sample_real(rng, size, split="test").astype(np.float64)
        side = int(rng.integers(round(0.25 * size), round(0.5 * size) + 1))
        region = FAMILIES[family](rng, side, split="test").astype(np.float64)
        x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        alpha = soft_box(side, max(2, side // 8))
        comp = base.copy()
        box = comp[y : y + side, x : x + side]
        comp[y : y + side, x : x + side] = box * (1 - alpha[..., None]) + region * alpha[..., None]
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[y : y + side, x : x + side] = np.where(alpha >= 0.5, 255, 0)
        Image.fromarray(np.clip(np.rint(comp), 0, 255).astype(np.uint8)).save(fake / f"loc_{i:04d}.png")
        Image.fromarray(base.astype(np.uint8)).save(real / f"orig_{i:04d}.png")
        Image.fromarray(mask).save(masks / f"loc_{i:04d}.png")
    return root


def _accuracy(model: Any, samples: list, view: str) -> dict[str, float]:
    """Whole-image accuracy of ``model`` under ``view`` (center | tiles): all images, composites, originals."""
    from ..engine.inference import score_samples

    m = copy.copy(model)  # a shallow copy with its own config: the caller's model keeps its view
    m.cfg = copy.deepcopy(model.cfg)
    m.cfg.data.eval_view = view
    recs, _ = score_samples(m, samples, image_size=None, batch_size=16, progress=False)
    right = np.array([(r.logit > 0) == bool(r.label) for r in recs])
    lab = np.array([r.label for r in recs])
    return {
        "acc": float(right.mean()),
        "acc_composites": float(right[lab == 1].mean()),
        "acc_originals": float(right[lab == 0].mean()),
    }


def run_localisation(out: Path, model: Any, *, n: int = 24, progress: bool = False) -> dict[str, Any]:
    """Build the set under ``out/data/localisation``, measure the maps against the masks and the whole-image
    accuracy under both views, print the numbers; returns them."""
    from ..data import load_labelled
    from ..engine.localisation import measure_localisation

    root = build_localisation_set(out / "data" / "localisation", n=n)
    samples = load_labelled(str(root), "cnndetection", None)
    loc = measure_localisation(model, samples, root / "masks", progress=progress)
    acc = {view: _accuracy(model, samples, view) for view in ("center", "tiles")}
    print(f"\nlocalisation:  {n} real 256 px test photos with a pasted gan_upsample region (side 25-50 %), masks:")
    for gen, g in loc["per_generator"].items():
        for k in ("perceptual", "generative", "combined"):
            m = g[k]
            auc = "n/a" if m["pixel_auc"] is None else f"{m['pixel_auc']:.3f}"
            auc_i = "n/a" if m.get("pixel_auc_per_image") is None else f"{m['pixel_auc_per_image']:.3f}"
            iou = "n/a" if m["iou_best"] is None else f"{m['iou_best']:.3f}"
            print(
                f"               {gen} {k:<10} pixel-AUC {auc} pooled, {auc_i} per image; "
                f"IoU at the best threshold {iou}"
            )
    for view, a in acc.items():
        print(
            f"               whole image, {view:<6}: accuracy {a['acc'] * 100:.1f}% "
            f"(composites {a['acc_composites'] * 100:.1f}%, originals {a['acc_originals'] * 100:.1f}%)"
        )
    return {"localisation": {k: v for k, v in loc.items() if k != "examples"}, "accuracy": acc, "_loc": loc}
