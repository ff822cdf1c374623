"""One line of Python: ``synerdetect.load(checkpoint)`` returns a detector that scores images as ``predict`` does.

::

    import synerdetect
    detector = synerdetect.load("org/name")          # or a folder; device="cuda"; mode="cascade"
    records = detector(["photo.jpg", pil_image, raw_bytes])

The detector is a thin wrapper of :class:`synerdetect.engine.scoring.Scorer`, the one scoring path of
``synerdetect predict`` and the service: the same decoding rules, the checkpoint's ``calibration.json`` (calibrated
``prob_fake`` and the ``uncertain`` band), the same provenance reading, and one record per input, in order (the
records of ``synerdetect predict --json``, with ``name`` for ``path``; an input that cannot be scored gets a record
with ``error`` and ``error_kind`` instead of raising). A PIL image carries no file bytes, so its record has no
sha256 and its provenance says so; give the path or the bytes to have both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

__all__ = ["LoadedDetector", "load"]


class LoadedDetector:
    """A loaded checkpoint, callable on one input or a list: paths, raw bytes, ``(name, bytes)``, binary file objects
    or PIL images (see :meth:`synerdetect.engine.scoring.Scorer.score`)."""

    def __init__(self, scorer: Any):
        self.scorer = scorer

    def __call__(self, images: Any) -> list[dict[str, Any]]:
        """One record per input, in order (a single input is a list of one)."""
        return self.scorer.score(images)

    def iter_records(self, images: Any) -> Iterator[dict[str, Any]]:
        """Records one at a time, decoding as it goes (a long list never holds more than a batch in memory)."""
        return self.scorer.iter_score(images)

    @property
    def model(self) -> Any:
        """The underlying :class:`~synerdetect.model.base.Detector` (its ``predict`` takes tensors, PIL images or
        paths and returns raw Eq. 10 outputs without the calibration)."""
        return self.scorer.model

    @property
    def calibration(self) -> Any:
        return self.scorer.calibration

    def info(self) -> dict[str, Any]:
        """What is loaded (checkpoint, base models, calibration, device, mode...)."""
        return {**self.scorer.info(), "mode": self.scorer.mode}

    def __repr__(self) -> str:
        s = self.scorer
        return f"LoadedDetector(checkpoint={s.checkpoint!r}, mode={s.mode!r}, device={s.device})"


def load(
    checkpoint: str | os.PathLike,
    *,
    device: str | None = None,
    mode: str = "full",
    provenance: bool = True,
    batch_size: int = 16,
    **scorer_options: Any,
) -> LoadedDetector:
    """The detector of ``checkpoint`` (a ``save_pretrained`` folder or a Hugging Face Hub repo id
    ``org/name[@revision]``) on ``device`` (default: cuda when available, else cpu), scoring with ``mode``
    (``full``, ``perceptual`` or ``cascade``: :data:`synerdetect.engine.modes.MODES`; the cascade needs a band fitted
    by ``calibrate --cascade-agreement``). ``provenance`` reads C2PA / XMP / EXIF as ``predict`` does by default;
    ``scorer_options`` go to :class:`~synerdetect.engine.scoring.Scorer` (``trust_metadata``, ``trust_anchors``,
    ``max_pixels``, ``max_bytes``, ``image_size``...)."""
    from .engine.modes import MODES
    from .engine.scoring import Scorer

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    scorer = Scorer.from_checkpoint(
        checkpoint, device=device, mode=mode, provenance=provenance, batch_size=batch_size, **scorer_options
    )
    return LoadedDetector(scorer)
