"""Measured localisation (``synerdetect evaluate --masks DIR``): how well the evidence maps (engine/maps.py) find
the generated region of partly generated images.

Each image with a mask in ``DIR`` (matched by file stem: ``a/b/cat.jpg`` <- ``DIR/cat.png``; any image format, any
non-zero pixel is "generated", resized to the image's size by nearest neighbour when it differs) is scored with its
maps. Per generator and per map (perceptual, generative, combined):

- ``pixel_auc``: :func:`sklearn.metrics.roc_auc_score` of the map's values against the mask, over the pixels of all
  the generator's masked images pooled (a very large image contributes an even subsample of at most
  :data:`PIXELS_PER_IMAGE` pixels, so every image weighs about the same). Pooling also scores the maps' level from
  image to image: a map that ranks the pixels of each image right but sits higher on one image than on another
  loses here;
- ``pixel_auc_per_image``: the mean over images of each image's own pixel-AUC (the ranking within an image only);
- ``iou_best``: the pooled intersection over union of ``map > t`` with the mask at the best threshold ``t``
  (``threshold_best``), an oracle threshold chosen on these very pixels: an upper bound of what a fixed threshold
  reaches, reported as the issue asks; ``iou_at_zero`` is the IoU at Eq. 10's own threshold 0.

Images without a mask are left out (their count is reported). The masked images are scored again for their maps
(one more pass over them, with one more E_d pass per image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.imageio import IMAGE_EXTENSIONS
from ..utils import atomic_write_json, atomic_write_text
from .scoring import Scorer

__all__ = ["PIXELS_PER_IMAGE", "best_iou", "find_masks", "localisation_markdown", "measure_localisation"]

#: Pixels each masked image contributes to the pooled metrics (an even subsample beyond it).
PIXELS_PER_IMAGE = 65_536
MAP_NAMES = ("perceptual", "generative", "combined")
N_EXAMPLES = 4


def find_masks(folder: str | Path) -> dict[str, Path]:
    """``stem -> mask file`` of the images in ``folder`` (not recursive); two masks with one stem are refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--masks {folder}: not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in found:
                raise ValueError(f"--masks {folder}: two masks for {p.stem!r} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    if not found:
        raise ValueError(f"--masks {folder}: no mask image in it")
    return found


def load_mask(path: Path, width: int, height: int) -> np.ndarray:
    """The mask as booleans, ``height x width``."""
    with Image.open(path) as im:
        m = im.convert("L")
        if m.size != (width, height):
            m = m.resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(m) > 0


def _subsample(a: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(math.sqrt(a.size / PIXELS_PER_IMAGE)))
    return a[::step, ::step].ravel()


def best_iou(values: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(IoU, threshold)``: the best IoU of ``values > t`` with ``truth`` over every threshold, exactly (sort once:
    predicting the k highest values positive gives IoU = TP_k / (P + k - TP_k))."""
    order = np.argsort(-values, kind="stable")
    v, y = values[order], truth[order].astype(np.int64)
    tp = np.cumsum(y)
    k = np.arange(1, len(v) + 1)
    last = np.r_[v[1:] != v[:-1], True]  # a threshold can only fall between distinct values
    iou = np.where(last, tp / (y.sum() + k - tp), -1.0)
    i = int(np.argmax(iou))
    thr = float(v[i + 1]) if i + 1 < len(v) else float(v[i]) - 1.0
    return float(iou[i]), float((v[i] + thr) / 2)


def _metrics(values: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    if truth.all() or not truth.any():
        return {"pixel_auc": None, "iou_best": None, "threshold_best": None, "iou_at_zero": None,
                "note": "the masks hold only one class of pixel: no AUC / IoU"}  # fmt: skip
    iou, thr = best_iou(values, truth)
    pred = values > 0
    inter, union = np.logical_and(pred, truth).sum(), np.logical_or(pred, truth).sum()
    return {
        "pixel_auc": float(roc_auc_score(truth, values)),
        "iou_best": iou,
        "threshold_best": thr,
        "iou_at_zero": float(inter / union) if union else None,
    }


def measure_localisation(
    model: Any, samples: Sequence[Any], masks: str | Path, *, batch_size: int = 16, progress: bool = True
) -> dict[str, Any]:
    """The localisation metrics of ``samples`` (labelled :class:`~synerdetect.data.Sample`) against the masks in
    ``masks`` (module docstring), and a few examples for the figure."""
    found = find_masks(masks)
    masked = [s for s in samples if Path(s.path).stem in found]
    if not masked:
        raise ValueError(f"--masks {masks}: no mask matches an image of the test set (masks are matched by file stem)")
    scorer = Scorer(model, maps=True, batch_size=batch_size)
    from sklearn.metrics import roc_auc_score

    pooled: dict[str, dict[str, list[np.ndarray]]] = {}
    per_image: dict[tuple[str, str], list[float]] = {}
    examples: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    for s, rec in zip(masked, scorer.score_paths([s.path for s in masked], progress=progress, desc="maps")):
        if rec["error"] is not None:
            errors.append((s.path, rec["error"]))
            continue
        arrays = rec["map"]["arrays"]
        truth = load_mask(found[Path(s.path).stem], rec["width"], rec["height"])
        g = pooled.setdefault(s.generator, {k: [] for k in (*MAP_NAMES, "mask")})
        t = _subsample(truth)
        g["mask"].append(t)
        for k in MAP_NAMES:
            g[k].append(_subsample(arrays[k]))
            if t.any() and not t.all():
                per_image.setdefault((s.generator, k), []).append(roc_auc_score(t, g[k][-1]))
        if len(examples) < N_EXAMPLES and truth.any():
            with Image.open(s.path) as im:
                im.thumbnail((256, 256))
                examples.append({"image": np.asarray(im.convert("RGB")), "mask": truth, "map": arrays["combined"]})
    per_gen: dict[str, Any] = {}
    for gen, g in sorted(pooled.items()):
        truth = np.concatenate(g["mask"])
        per_gen[gen] = {"n_images": len(g["mask"])}
        per_gen[gen].update({k: _metrics(np.concatenate(g[k]).astype(np.float64), truth) for k in MAP_NAMES})
        for k in MAP_NAMES:
            aucs = per_image.get((gen, k))
            per_gen[gen][k]["pixel_auc_per_image"] = float(np.mean(aucs)) if aucs else None
    return {
        "masks": str(masks),
        "n_masked": len(masked) - len(errors),
        "n_without_mask": len(samples) - len(masked),
        "errors": errors,
        "per_generator": per_gen,
        "examples": examples,
    }


def localisation_markdown(loc: dict[str, Any], figure: str | None = None) -> str:
    """The results.md section: pixel-AUC and best-threshold IoU per generator and map, and the example grid."""
    lines = [
        "## Localisation (evidence maps against the masks)",
        "",
        f"{loc['n_masked']} masked image(s); {loc['n_without_mask']} image(s) without a mask left out. "
        "IoU at the best threshold is an oracle (threshold chosen on these pixels); IoU@0 uses Eq. 10's threshold.",
        "",
        "| generator | images | map | pixel-AUC pooled | pixel-AUC per image | IoU best thr. | best thr. | IoU@0 |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]

    def f(v: float | None, pct: bool = True) -> str:
        return "n/a" if v is None else (f"{v * 100:.1f}" if pct else f"{v:+.3f}")

    for gen, g in loc["per_generator"].items():
        for k in MAP_NAMES:
            m = g[k]
            lines.append(
                f"| {gen} | {g['n_images']} | {k} | {f(m['pixel_auc'])} | {f(m.get('pixel_auc_per_image'))} | "
                f"{f(m['iou_best'])} | "
                f"{f(m['threshold_best'], False)} | {f(m['iou_at_zero'])} |"
            )
    if figure:
        lines += ["", f"![image, mask and combined map]({figure})"]
    return "\n".join(lines) + "\n"


def localisation_figure(loc: dict[str, Any], path: str | Path) -> Path | None:
    """A grid: one row per example, its image, mask and combined map (diverging colours, 0 at the centre)."""
    ex = loc["examples"]
    if not ex:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_write_bytes

    fig, axes = plt.subplots(len(ex), 3, figsize=(7.5, 2.5 * len(ex)), squeeze=False, constrained_layout=True)
    im = None
    for row, e in zip(axes, ex):
        lim = float(max(1e-6, np.abs(e["map"]).max()))
        row[0].imshow(e["image"])
        row[1].imshow(e["mask"], cmap="gray", vmin=0, vmax=1)
        im = row[2].imshow(e["map"], cmap="coolwarm", vmin=-lim, vmax=lim)
        fig.colorbar(im, ax=row[2], shrink=0.8)
        for ax, t in zip(row, ("image", "mask", "combined map")):
            ax.set_title(t)
            ax.set_xticks([])
            ax.set_yticks([])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_localisation(out: str | Path, loc: dict[str, Any]) -> dict[str, Any]:
    """Add the localisation to an evaluation folder: ``localisation_examples.png``, a section in results.md and
    ``localisation`` in results.json. Returns the JSON part (without the example arrays)."""
    import json

    out = Path(out)
    fig = localisation_figure(loc, out / "localisation_examples.png")
    doc = {k: v for k, v in loc.items() if k != "examples"}
    md = out / "results.md"
    if md.is_file():
        atomic_write_text(md, md.read_text() + "\n" + localisation_markdown(loc, fig.name if fig else None))
    rj = out / "results.json"
    if rj.is_file():
        res = json.loads(rj.read_text())
        res["localisation"] = doc
        atomic_write_json(rj, res)
    return doc
