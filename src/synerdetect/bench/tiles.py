"""Bench row of the whole-image view: the per-image cost of ``data.eval_view: tiles`` against ``center`` at 1024 px.

Both views of the same 1024 x 1024 images are made once (their decode and tiling are timed apart, as
``tiles_transform_vs_center``), then ``predict`` is timed on each: the tiles add E_v passes only (the inversion runs
once per image either way), so ``tiles_vs_center_predict`` is close to ``1 + n_tiles * E_v / predict``."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["measure_tiles"]

SIDE = 1024


def measure_tiles(model: Any, bc: Any, emit: Any, timeit: Any) -> None:
    """Emit ``tiles_per_image``, ``predict_center_1024_s_per_img``, ``predict_tiles_1024_s_per_img``,
    ``tiles_vs_center_predict`` and ``tiles_transform_vs_center`` (ratios measured in this run)."""
    from ..data import stack_images
    from ..model.base import view_transform

    dev = next(model.parameters()).device
    n = min(bc.batch_size_, 4)  # 4 images of 1024 px: the tiles of a batch stay a few hundred MB at paper scale
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in range(n)]
    center_t = view_transform(model.cfg, train=False, tiles=False)
    tiles_t = view_transform(model.cfg, train=False, tiles=True)
    reps = max(3, bc.repeats_ // 2)

    def transform_time(t: Any) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for im in imgs:
                t(im)
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) / n

    t_tf_c, t_tf_t = transform_time(center_t), transform_time(tiles_t)
    xc = stack_images([center_t(im) for im in imgs]).to(dev)
    xt = stack_images([tiles_t(im) for im in imgs]).to(dev)
    tiled = copy.copy(model)  # a shallow copy whose config says tiles: the bench's model keeps its own
    tiled.cfg = copy.deepcopy(model.cfg)
    tiled.cfg.data.eval_view = "tiles"
    with torch.no_grad():
        t_c = timeit(lambda: model.predict(xc)) / n
        t_t = timeit(lambda: tiled.predict(xt)) / n
    res = f"{SIDE}x{SIDE}"
    emit("tiles_per_image", len(xt.tiles) / n, "tiles", note=f"{res}, max_tiles={model.cfg.data.max_tiles}")
    emit("predict_center_1024_s_per_img", t_c, "s/img", note=res)
    emit("predict_tiles_1024_s_per_img", t_t, "s/img", note=f"{res}, aggregate {model.cfg.data.tile_aggregate}")
    emit("tiles_vs_center_predict", t_t / t_c, "ratio", note="per-image predict cost, tiles / center, same images")
    emit("tiles_transform_vs_center", t_tf_t / t_tf_c, "ratio", note=f"decode-free view making, {res}")
