"""Tile geometry of the whole-image view (data/tiles.py) against hand computations, and the tiled transform."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synerdetect.data.tiles import axis_count, axis_positions, tile_grid


def _covered(grid) -> np.ndarray:
    m = np.zeros((grid.work_height, grid.work_width), dtype=int)
    for x0, y0, x1, y1 in grid.boxes():
        m[y0:y1, x0:x1] += 1
    return m


def test_1024_at_224_by_hand():
    # stride floor(224 * 0.75) = 168; ceil((1024 - 224) / 168) + 1 = ceil(4.76) + 1 = 6 tiles per axis,
    # spread evenly over 800 px: offsets round(i * 800 / 5) = 0, 160, 320, 480, 640, 800.
    g = tile_grid(1024, 1024, 224)
    assert g.xs == g.ys == (0, 160, 320, 480, 640, 800)
    assert g.n == 36
    assert _covered(g).min() >= 1  # the whole image is covered
    # neighbours overlap by 224 - 160 = 64 px = 28.6 % >= 25 %
    assert min(b - a for a, b in zip(g.xs, g.xs[1:])) <= 0.75 * 224


def test_exact_stride_and_no_overlap_shortfall():
    # 64 px tiles on 160 px: stride 48, ceil(96 / 48) + 1 = 3 tiles at 0, 48, 96 (overlap 16 = 25 % exactly)
    assert axis_count(160, 64) == 3
    assert axis_positions(160, 64, 3) == (0, 48, 96)
    assert axis_count(64, 64) == 1 and axis_positions(64, 64, 1) == (0,)


def test_cap_spreads_fewer_tiles_over_the_whole_image():
    # 4000 x 3000 at 224: 24 x 18 = 432 tiles uncapped. Cap 36: f = sqrt(36 / 432) = 0.2887 -> floor(6.93) = 6
    # across, floor(5.20) = 5 down (30); one more across (gap 3776 / 5 = 755 > 2776 / 4 = 694) -> 7 x 5 = 35; an
    # 8th across (40) or a 6th down (42) would pass the cap.
    assert axis_count(4000, 224) == 24 and axis_count(3000, 224) == 18
    g = tile_grid(4000, 3000, 224, max_tiles=36)
    assert (len(g.xs), len(g.ys)) == (7, 5)
    assert g.xs[0] == 0 and g.xs[-1] == 4000 - 224 and g.ys[-1] == 3000 - 224  # still spans the whole image
    assert g.xs == tuple(round(i * 3776 / 6) for i in range(7))
    assert tile_grid(20000, 20000, 224, max_tiles=36).n <= 36  # no image is refused, the count stays bounded


@pytest.mark.parametrize(("w", "h"), [(1, 500), (500, 1)])
def test_one_pixel_strips(w, h):
    # 1 x 500: upscaled so the short side is 64 -> 64 x 32000; one tile across, the long axis capped at 36 tiles
    g = tile_grid(w, h, 64, max_tiles=36)
    long_n = len(g.ys) if h > w else len(g.xs)
    short_n = len(g.xs) if h > w else len(g.ys)
    assert short_n == 1 and long_n == 36
    assert (g.work_width, g.work_height) == ((64, 32000) if h > w else (32000, 64))
    boxes = g.native_boxes()
    # mapped back to native pixels, the first and last tiles touch both ends of the strip
    lo = min(b[1] if h > w else b[0] for b in boxes)
    hi = max(b[3] if h > w else b[2] for b in boxes)
    assert lo == 0 and hi == pytest.approx(max(w, h))


def test_smaller_than_a_tile():
    # 30 x 20: short side to 64 -> 96 x 64; across ceil(32 / 48) + 1 = 2 tiles at 0 and 32; down 1
    g = tile_grid(30, 20, 64)
    assert (g.work_width, g.work_height, g.xs, g.ys) == (96, 64, (0, 32), (0,))
    assert _covered(g).min() >= 1
    assert g.native_boxes()[1] == pytest.approx((10.0, 0.0, 30.0, 20.0))


def test_tiled_transform_and_batch_indexing():
    from synerdetect.data import ViewTransform, stack_images
    from synerdetect.data.tiled import TiledViewTransform

    t = TiledViewTransform(ViewTransform(64, 64))
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in ((64, 64), (150, 100))]
    views = stack_images([t(im) for im in imgs])
    assert views.tiles.shape[0] == 1 + 3 * 2 and views.owner.tolist() == [0, 1, 1, 1, 1, 1, 1]
    # the single tile of a clip_size image is its centre crop
    assert np.array_equal(views.tiles[0].numpy(), views.clip[0].numpy())
    # the second image's first tile is its own top-left pixels
    top_left = np.asarray(imgs[1])[:64, :64].transpose(2, 0, 1) / 255.0
    assert np.allclose(views.tiles[1].numpy(), top_left, atol=1e-6)
    one = views[[1]]
    assert one.tiles.shape[0] == 6 and one.grid.tolist() == [[150, 100, 3, 2]]
