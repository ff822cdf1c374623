"""The whole-image perceptual view: :class:`TiledViews` (the two views of :class:`~.transforms.Views` plus the
``clip_size`` tiles that cover the image, :mod:`.tiles`) and the evaluation transform that makes them.

The centre crop stays in ``clip``: the Visual-aware Tuner builds the prompt z_t from it and the inversion is
conditioned on that prompt exactly as under ``eval_view: center``, so ``tiles`` adds E_v passes only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from .tiles import tile_grid
from .transforms import RngLike, Views, ViewTransform, _resized_crop, pil_to_tensor

__all__ = ["TiledViewTransform", "TiledViews"]


class TiledViews(Views):
    """:class:`Views` plus ``tiles`` (T x 3 x s x s in [0, 1], each image's tiles in row-major order), ``owner``
    (T, the batch index of each tile), ``boxes`` (T x 4 float, ``left, top, right, bottom`` in native pixels) and
    ``grid`` (B x 4 long: native width, height, tiles across, tiles down). One image before collation has
    ``owner=None`` and ``grid`` of shape 4."""

    __slots__ = ("boxes", "grid", "owner", "tiles")

    def __init__(
        self,
        clip: torch.Tensor,
        sd: torch.Tensor,
        tiles: torch.Tensor,
        boxes: torch.Tensor,
        grid: torch.Tensor,
        owner: torch.Tensor | None = None,
    ):
        super().__init__(clip, sd)
        self.tiles, self.boxes, self.grid, self.owner = tiles, boxes, grid, owner

    def to(self, *args: Any, **kwargs: Any) -> TiledViews:
        tiles = self.tiles.to(*args, **kwargs)
        owner = self.owner.to(tiles.device) if self.owner is not None else None
        return TiledViews(
            self.clip.to(*args, **kwargs), self.sd.to(*args, **kwargs), tiles, self.boxes, self.grid, owner
        )

    def __getitem__(self, idx: Any) -> TiledViews:
        if self.owner is None:
            raise TypeError("index a batch of TiledViews, not one image")
        if isinstance(idx, int):  # one image, uncollated (what stack() takes back)
            sel = self.owner == idx
            return TiledViews(self.clip[idx], self.sd[idx], self.tiles[sel], self.boxes[sel.cpu()], self.grid[idx])
        picked = torch.arange(len(self))[idx].tolist()
        return TiledViews.stack([self[i] for i in picked])

    @staticmethod
    def stack(items: Sequence[Any]) -> TiledViews:
        owner = torch.cat([torch.full((len(v.tiles),), i, dtype=torch.long) for i, v in enumerate(items)])
        return TiledViews(
            torch.stack([v.clip for v in items]),
            torch.stack([v.sd for v in items]),
            torch.cat([v.tiles for v in items]),
            torch.cat([v.boxes for v in items]),
            torch.stack([v.grid for v in items]),
            owner.to(items[0].tiles.device),
        )

    def __repr__(self) -> str:
        return f"TiledViews(clip={tuple(self.clip.shape)}, sd={tuple(self.sd.shape)}, tiles={tuple(self.tiles.shape)})"


class TiledViewTransform:
    """``(pil_img, rng) -> TiledViews`` for evaluation: the :class:`ViewTransform` views and the image's tiles
    (:func:`~.tiles.tile_grid`: ``clip_size`` tiles, at least ``min_overlap`` overlap, at most ``max_tiles``)."""

    def __init__(self, base: ViewTransform, *, min_overlap: float = 0.25, max_tiles: int = 36):
        if base.train:
            raise ValueError("the tiled view is an evaluation view")
        self.base, self.min_overlap, self.max_tiles = base, float(min_overlap), int(max_tiles)

    def __call__(self, img: Image.Image, rng: RngLike = None) -> TiledViews:
        views = self.base(img, rng)
        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        g = tile_grid(w, h, self.base.clip_size, min_overlap=self.min_overlap, max_tiles=self.max_tiles)
        work = (g.work_width, g.work_height)
        tiles = torch.stack([pil_to_tensor(_resized_crop(img, work, box)) for box in g.boxes()])
        boxes = torch.tensor(g.native_boxes(), dtype=torch.float32)
        grid = torch.tensor([w, h, len(g.xs), len(g.ys)], dtype=torch.long)
        return TiledViews(views.clip, views.sd, tiles, boxes, grid)

    def __repr__(self) -> str:
        return f"TiledViewTransform({self.base!r}, min_overlap={self.min_overlap}, max_tiles={self.max_tiles})"
