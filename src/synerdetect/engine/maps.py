"""Evidence maps: where in an image each branch of Eq. 10 sees generation, at the image's native size.

Three float32 maps, H x W, in logit units (larger = more likely generated; 0 is Eq. 10's decision threshold):

- ``perceptual``: the perceptual logit sim(z_v^t, z_t^fake) - sim(z_v^t, z_t^real) of each whole-image tile t
  (:mod:`synerdetect.data.tiles`), placed at the tile centres and interpolated bilinearly (held constant beyond the
  outermost centres);
- ``generative``: E_d's patch tokens, each through the final LayerNorm and projection of the pooled token that gives
  z_n, against the same prompts (:func:`synerdetect.model.evidence.patch_similarities`): sim(p, z_t^fake) -
  sim(p, z_t^real) per patch of the noise map, interpolated the same way over the region the inversion sees (the SD
  view: the centre square of the image's shorter side; held constant beyond it). Why this one: it is the inversion
  branch's own evidence in the space where Eq. 10 compares z_n with the prompts, costs one E_d pass, needs no
  training and no gradient (a Grad-CAM would need a backward pass through E_d; an inversion residual per pixel
  would not be compared with the prompts at all);
- ``combined``: ``perceptual + generative``, the two terms of Eq. 10 added where they lie, so a pixel is over the
  threshold when the two branches, summed as Eq. 10 sums them, say "generated".

:func:`map_summary` is the record's ``map`` field: the peak region ``[x, y, w, h]`` (the bounding box of the
connected region over the threshold that holds the maximum of ``combined``; the tile around the maximum when no
pixel is over it), the share of the area over the threshold, and the branches' agreement (the share of pixels on
which both maps are on the same side of 0, and the Pearson correlation of the two maps).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EvidenceMaps",
    "batch_maps",
    "grid_to_map",
    "map_summary",
    "overlay_png",
    "map_field",
    "save_maps",
    "thumbnail",
]

#: Pixels used for the agreement statistics of a very large map (an even subsample beyond it).
_STATS_PIXELS = 1_000_000


@dataclass
class EvidenceMaps:
    """The three maps of one image (H x W float32 each) and the decision threshold they are read against."""

    perceptual: np.ndarray
    generative: np.ndarray
    combined: np.ndarray
    tile: tuple[float, float]  # a tile's native width and height (the peak region when nothing is over 0)
    threshold: float = 0.0

    def arrays(self) -> dict[str, np.ndarray]:
        return {"perceptual": self.perceptual, "generative": self.generative, "combined": self.combined}


def _axis_weights(centres: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For pixel centres 0.5 .. n - 0.5: the two grid neighbours and the weight of the second (linear, clamped)."""
    pos = np.arange(n, dtype=np.float64) + 0.5
    if len(centres) == 1:
        zeros = np.zeros(n, dtype=np.int64)
        return zeros, zeros, np.zeros(n)
    i1 = np.clip(np.searchsorted(centres, pos), 1, len(centres) - 1)
    i0 = i1 - 1
    w = np.clip((pos - centres[i0]) / (centres[i1] - centres[i0]), 0.0, 1.0)
    return i0, i1, w


def grid_to_map(values: np.ndarray, xc: np.ndarray, yc: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear interpolation of ``values`` (ny x nx, at increasing centres ``xc``, ``yc`` in native pixels) onto
    the ``height x width`` pixel grid, constant beyond the outermost centres. Separable, so memory is the output's
    (a 12-megapixel map stays one array, no per-pixel coordinate grid)."""
    v = np.asarray(values, dtype=np.float64)
    x0, x1, wx = _axis_weights(np.asarray(xc, dtype=np.float64), width)
    rows = v[:, x0] * (1 - wx) + v[:, x1] * wx  # ny x W
    y0, y1, wy = _axis_weights(np.asarray(yc, dtype=np.float64), height)
    out = rows[y0] * (1 - wy)[:, None] + rows[y1] * wy[:, None]
    return out.astype(np.float32)


def perceptual_map(tile_logits: np.ndarray, boxes: np.ndarray, grid: tuple[int, int, int, int]) -> np.ndarray:
    """The tiles' perceptual logits (row-major, ``boxes`` in native pixels) interpolated to ``width x height``."""
    width, height, nx, ny = grid
    b = np.asarray(boxes, dtype=np.float64).reshape(ny, nx, 4)
    xc = (b[0, :, 0] + b[0, :, 2]) / 2
    yc = (b[:, 0, 1] + b[:, 0, 3]) / 2
    return grid_to_map(np.asarray(tile_logits).reshape(ny, nx), xc, yc, width, height)


def generative_map(patch_logits: np.ndarray, width: int, height: int) -> np.ndarray:
    """E_d's patch logits (g x g over the SD view: the centre square of side min(width, height)) at native size."""
    g = patch_logits.shape[0]
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    centres = (np.arange(g) + 0.5) * side / g
    return grid_to_map(patch_logits, left + centres, top + centres, width, height)


def batch_maps(views: Any, extra: dict[str, Any]) -> list[EvidenceMaps]:
    """The maps of every image of a batch: ``views`` the :class:`~synerdetect.data.tiled.TiledViews` scored,
    ``extra`` what :meth:`~synerdetect.model.detector.SynerDetect.predict_with_evidence` returned with them."""
    tile_sim = extra["tile_sim"].detach().float().cpu().numpy()
    tile_logit = tile_sim[:, 1] - tile_sim[:, 0]
    patch = extra["patch_sim"].detach().float().cpu().numpy()
    patch_logit = patch[..., 1] - patch[..., 0]
    owner = views.owner.cpu().numpy()
    boxes = views.boxes.cpu().numpy()
    out = []
    for b, row in enumerate(views.grid.cpu().numpy().tolist()):
        w, h = int(row[0]), int(row[1])
        sel = owner == b
        per = perceptual_map(tile_logit[sel], boxes[sel], (w, h, int(row[2]), int(row[3])))
        gen = generative_map(patch_logit[b], w, h)
        tb = boxes[sel][0]
        out.append(EvidenceMaps(per, gen, per + gen, (float(tb[2] - tb[0]), float(tb[3] - tb[1]))))
    return out


def _stats_view(a: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(math.sqrt(a.size / _STATS_PIXELS)))
    return a[::step, ::step].ravel()


def map_summary(m: EvidenceMaps) -> dict[str, Any]:
    """The record's ``map`` field (module docstring): ``peak`` [x, y, w, h], ``area_over_threshold``,
    ``agreement`` {``same_side``, ``pearson``} and ``threshold``."""
    from scipy import ndimage

    c = m.combined
    h, w = c.shape
    py, px = np.unravel_index(int(np.argmax(c)), c.shape)
    over = c > m.threshold
    if over[py, px]:
        labels, _ = ndimage.label(over)
        sl = ndimage.find_objects((labels == labels[py, px]).astype(np.int32))[0]
        peak = [int(sl[1].start), int(sl[0].start), int(sl[1].stop - sl[1].start), int(sl[0].stop - sl[0].start)]
    else:
        tw, th = min(w, max(1, round(m.tile[0]))), min(h, max(1, round(m.tile[1])))
        x0, y0 = min(max(0, px - tw // 2), w - tw), min(max(0, py - th // 2), h - th)
        peak = [int(x0), int(y0), int(tw), int(th)]
    p, g = _stats_view(m.perceptual).astype(np.float64), _stats_view(m.generative).astype(np.float64)
    pearson = None
    if p.std() > 0 and g.std() > 0:
        pearson = float(np.corrcoef(p, g)[0, 1])
    return {
        "peak": peak,
        "area_over_threshold": float(over.mean()),
        "agreement": {"same_side": float(np.mean((p > m.threshold) == (g > m.threshold))), "pearson": pearson},
        "threshold": m.threshold,
    }


def _limits(maps: EvidenceMaps) -> float:
    return float(max(1e-6, *(np.abs(a).max() for a in maps.arrays().values())))


def overlay_png(maps: EvidenceMaps, *, max_side: int = 512) -> bytes:
    """The combined map as a transparent RGBA PNG (diverging colours, blue = real, red = generated; alpha grows
    with the evidence) at most ``max_side`` px, to lay over the image (the web page's overlay)."""
    from matplotlib import colormaps
    from PIL import Image

    c = maps.combined
    step = max(1, math.ceil(max(c.shape) / max_side))
    small = c[::step, ::step]
    lim = _limits(maps)
    rgba = colormaps["coolwarm"]((np.clip(small / lim, -1, 1) + 1) / 2)
    rgba[..., 3] = np.clip(np.abs(small) / lim, 0, 1) * 0.75
    buf = io.BytesIO()
    Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def save_maps(folder: str | Path, stem: str, maps: EvidenceMaps, thumbnail: np.ndarray | None) -> list[str]:
    """Write ``STEM.map.npz`` (the three float32 maps, native size) and ``STEM.map.png`` (the image and each map
    beside it, the combined one laid over the image, with a colour bar) into ``folder``; a name already there
    gets ``-1``, ``-2``, ... (nothing is overwritten). Returns the two paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name, i = stem, 0
    while (folder / f"{name}.map.npz").exists() or (folder / f"{name}.map.png").exists():
        i += 1
        name = f"{stem}-{i}"
    buf = io.BytesIO()
    a = maps.arrays()
    np.savez_compressed(buf, perceptual=a["perceptual"], generative=a["generative"], combined=a["combined"])
    npz = folder / f"{name}.map.npz"
    atomic_write_bytes(npz, buf.getvalue())
    h, w = maps.combined.shape
    step = max(1, math.ceil(max(h, w) / 512))
    lim = _limits(maps)
    extent = (0, w, h, 0)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), constrained_layout=True)
    panels = [("image", None), ("perceptual", maps.perceptual), ("generative", maps.generative)]
    panels.append(("combined over image", maps.combined))
    im = None
    for ax, (title, arr) in zip(axes, panels):
        if thumbnail is not None and (arr is None or title.startswith("combined")):
            ax.imshow(thumbnail, extent=extent)
        if arr is not None:
            alpha = 0.55 if title.startswith("combined") and thumbnail is not None else 1.0
            im = ax.imshow(arr[::step, ::step], cmap="coolwarm", vmin=-lim, vmax=lim, alpha=alpha, extent=extent)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    assert im is not None  # three of the four panels are maps
    fig.colorbar(im, ax=axes, shrink=0.8, label="logit (> 0: generated)")
    png = folder / f"{name}.map.png"
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(png, out.getvalue())
    return [str(png), str(npz)]


def thumbnail(img: Any, max_side: int = 512) -> np.ndarray:
    """A <= ``max_side`` px RGB copy of a PIL image (what the map's PNG shows under the maps)."""
    small = img.copy()
    small.thumbnail((max_side, max_side))
    return np.asarray(small.convert("RGB"))


def map_field(maps: EvidenceMaps, name: str, thumb: np.ndarray | None, where: Any) -> dict[str, Any]:
    """A record's ``map``: :func:`map_summary`, plus by ``where`` (the scorer's ``maps``): a folder -> the files
    written there (``files``); True -> the arrays themselves (``arrays``, Python callers); False (a service request)
    -> ``overlay_png``, the combined map as a ``data:image/png;base64`` RGBA overlay (:func:`overlay_png`)."""
    import base64

    field = map_summary(maps)
    if where is True:
        field["arrays"] = maps.arrays()
    elif where:
        stem = Path(str(name)).name.rsplit(".", 1)[0] or "image"
        field["files"] = save_maps(where, stem, maps, thumb)
    else:
        field["overlay_png"] = "data:image/png;base64," + base64.b64encode(overlay_png(maps)).decode()
    return field
