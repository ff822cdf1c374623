"""Tile geometry of the whole-image perceptual view (``data.eval_view: tiles``). Pure arithmetic: no torch, no PIL.

The image is first brought to its *working size*: its native size, or, when its shorter side is below the tile side
``s`` (``model.clip_size``), upscaled so that the shorter side is ``s`` (aspect ratio kept) - the rule of the centre
crop view (:class:`~synerdetect.data.transforms.ViewTransform`), so that a tile is always ``s x s`` pixels of the
image's own resolution or, for a small image, of its upscale.

Stride rule, per axis of working length ``L``:

1. ``n = ceil((L - s) / floor(s * (1 - min_overlap))) + 1`` tiles (``n = 1`` when ``L == s``);
2. the ``n`` tiles are spread evenly: tile ``i`` starts at ``round(i * (L - s) / (n - 1))``, the first at 0 and the
   last at ``L - s``, so together they cover the axis and neighbours overlap by at least ``min_overlap * s``
   (25 % by default);
3. cap: when ``nx * ny > max_tiles`` the counts are scaled by ``sqrt(max_tiles / (nx * ny))`` (rounded down, at
   least 1), then the axis whose tiles lie further apart gets one more tile while the product stays within the cap.
   The tiles keep their native pixels and stay evenly spread over the whole image: overlap shrinks, and for very
   large images gaps open between tiles (the view becomes an even sampling of the image). An axis left with one
   tile holds it at the centre (the centre crop). So memory and time per image are bounded by ``max_tiles`` E_v
   passes and no image is refused for its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TileGrid", "axis_count", "axis_positions", "short_side_to", "tile_grid"]


def short_side_to(w: int, h: int, size: int) -> tuple[int, int]:
    """Size of a ``w x h`` image resized so that its shorter side is ``size`` (aspect ratio kept)."""
    if min(w, h) == size:
        return w, h
    if w <= h:
        return size, max(size, int(round(h * size / w)))
    return max(size, int(round(w * size / h))), size


def working_size(w: int, h: int, size: int) -> tuple[int, int]:
    """The native size, or the upscale whose shorter side is ``size`` when the image is smaller than a tile."""
    return short_side_to(w, h, size) if min(w, h) < size else (w, h)


def axis_count(length: int, size: int, min_overlap: float = 0.25) -> int:
    """Tiles of side ``size`` needed to cover ``length`` with at least ``min_overlap`` overlap (rule 1)."""
    if length <= size:
        return 1
    stride = max(1, math.floor(size * (1 - min_overlap)))
    return math.ceil((length - size) / stride) + 1


def axis_positions(length: int, size: int, n: int) -> tuple[int, ...]:
    """Start offsets of ``n`` tiles spread evenly over ``length`` (rule 2; one tile: the centre)."""
    if n <= 1:
        return (int(round((length - size) / 2.0)),)
    return tuple(int(round(i * (length - size) / (n - 1))) for i in range(n))


def _capped(nx: int, ny: int, lx: int, ly: int, size: int, cap: int) -> tuple[int, int]:
    """Rule 3: counts within ``cap``, spread as evenly as the cap allows."""
    if nx * ny <= cap:
        return nx, ny
    f = math.sqrt(cap / (nx * ny))
    # (+1e-9: 21 * sqrt(36 / 441) is 6 in exact arithmetic and must floor to 6)
    cx, cy = max(1, min(nx, math.floor(nx * f + 1e-9))), max(1, min(ny, math.floor(ny * f + 1e-9)))
    while cx * cy > cap:  # only when one axis was held at 1 and the other must shrink
        if cx >= cy:
            cx -= 1
        else:
            cy -= 1
    while True:
        gap_x = (lx - size) / max(cx - 1, 1) if cx < nx else -1.0
        gap_y = (ly - size) / max(cy - 1, 1) if cy < ny else -1.0
        if gap_x >= gap_y and gap_x >= 0 and (cx + 1) * cy <= cap:
            cx += 1
        elif gap_y >= 0 and cx * (cy + 1) <= cap:
            cy += 1
        elif gap_x >= 0 and (cx + 1) * cy <= cap:
            cx += 1
        else:
            return cx, cy


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one image: working-size offsets ``xs`` x ``ys`` of ``size`` x ``size`` tiles, in row-major order
    (``y`` outer), and the native size they map back to."""

    width: int
    height: int
    work_width: int
    work_height: int
    size: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.xs) * len(self.ys)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """``(left, top, right, bottom)`` of each tile in working coordinates, row-major."""
        s = self.size
        return [(x, y, x + s, y + s) for y in self.ys for x in self.xs]

    def native_boxes(self) -> list[tuple[float, float, float, float]]:
        """The same boxes in native pixel coordinates (they differ only for an upscaled small image)."""
        sx, sy = self.width / self.work_width, self.height / self.work_height
        return [(a * sx, b * sy, c * sx, d * sy) for a, b, c, d in self.boxes()]


def tile_grid(width: int, height: int, size: int, *, min_overlap: float = 0.25, max_tiles: int = 36) -> TileGrid:
    """The tiles of a ``width x height`` image (see the module docstring for the rule)."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    if size < 1 or max_tiles < 1 or not 0.0 <= min_overlap < 1.0:
        raise ValueError(f"bad tiling: size={size}, max_tiles={max_tiles}, min_overlap={min_overlap}")
    lx, ly = working_size(width, height, size)
    nx, ny = _capped(axis_count(lx, size, min_overlap), axis_count(ly, size, min_overlap), lx, ly, size, max_tiles)
    return TileGrid(width, height, lx, ly, size, axis_positions(lx, size, nx), axis_positions(ly, size, ny))
