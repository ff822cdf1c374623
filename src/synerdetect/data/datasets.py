"""Torch dataset over :class:`~synerdetect.data.layouts.Sample` lists.

``ImageDataset.__getitem__`` never raises for a bad file and never returns a
zero image: an unreadable file (or a transform failure) yields an error record
``{"error": reason, "path": path, "index": i}`` that :func:`collate` drops from
the batch and reports under ``"errors"`` (and logs once per path).

Augmentation randomness is a pure function of ``(seed, epoch, index)``: item
``i`` gets ``numpy.random.default_rng([seed, epoch, i, 0x5D])``, so results do not
depend on worker count, worker assignment or iteration order.

Note on ``set_epoch``: DataLoader workers hold a *copy* of the dataset.  With
``persistent_workers=False`` (default) the copy is refreshed every epoch so
``dataset.set_epoch(e)`` before iterating is enough.  With persistent workers,
index the dataset with ``(index, epoch)`` tuples instead (e.g. from a sampler
wrapper); ``__getitem__`` accepts them and then ignores ``self.epoch``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .imageio import DEFAULT_MAX_PIXELS, UnreadableImage, load_image_with_format
from .layouts import Sample
from .transforms import stack_images

__all__ = ["ImageDataset", "collate"]

logger = logging.getLogger(__name__)

_RNG_TAG = 0x5D  # domain separation from the sampler's rng streams
_warned_paths: set[str] = set()


class ImageDataset(Dataset):
    """Map-style dataset returning dict records (see :meth:`__getitem__`).

    Args:
        samples: list of :class:`Sample`.
        transform: callable ``(pil_rgb_image, rng) -> tensor`` (e.g.
            :class:`~synerdetect.data.transforms.TrainTransform`).
        seed: base seed of the per-item augmentation rng (non-negative).
        max_pixels: decompression-bomb cap forwarded to :func:`load_image`.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Any, Any], torch.Tensor],
        *,
        seed: int = 0,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        if transform is None or not callable(transform):
            raise TypeError("transform must be a callable (pil_image, rng) -> tensor")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.samples: list[Sample] = list(samples)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def rng_for(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The augmentation rng of item ``index`` at ``epoch`` (default: current)."""
        e = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng([self.seed, e, int(index), _RNG_TAG])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, epoch = int(key[0]), int(key[1])
        else:
            index, epoch = int(key), None
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for dataset of size {n}")
        index %= n
        s = self.samples[index]
        try:
            img, fmt = load_image_with_format(s.path, max_pixels=self.max_pixels)
        except UnreadableImage as e:
            return {"error": e.reason, "path": s.path, "index": index}
        try:
            x = self.transform(img, self.rng_for(index, epoch))
        except Exception as e:  # noqa: BLE001 - report, never crash the loader
            return {"error": f"transform failed: {type(e).__name__}: {e}", "path": s.path, "index": index}
        return {
            "image": x,
            "label": int(s.label),
            "generator": s.generator,
            "path": s.path,
            "index": index,
            "format": fmt,
        }


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate :class:`ImageDataset` records, dropping error records.

    Returns ``{"image": B x 3 x H x W float tensor, "label": LongTensor[B],
    "generator": list[str], "path": list[str], "index": list[int], "format": list[str],
    "errors": list[(path, reason)]}``.  When every item failed, ``image`` is an
    empty ``0 x 3 x 0 x 0`` tensor and ``label`` is empty: check
    ``len(batch["label"])`` before using the batch.
    """
    good = [b for b in batch if "error" not in b]
    errors = [(b["path"], b["error"]) for b in batch if "error" in b]
    for path, reason in errors:
        if path not in _warned_paths:
            _warned_paths.add(path)
            logger.warning("skipping unreadable image %s: %s", path, reason)
    if good:
        image = stack_images([b["image"] for b in good])
    else:
        image = torch.empty((0, 3, 0, 0), dtype=torch.float32)
    return {
        "image": image,
        "label": torch.tensor([int(b["label"]) for b in good], dtype=torch.long),
        "generator": [b["generator"] for b in good],
        "path": [b["path"] for b in good],
        "index": [int(b["index"]) for b in good],
        "format": [b["format"] for b in good],
        "errors": errors,
    }
