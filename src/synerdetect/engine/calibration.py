"""Calibrated probabilities and selective verdicts on top of the Eq. 10 decision.

The Eq. 10 decision (``label``: fake when ``s_fake > s_real``, i.e. ``logit > 0``) never changes. What a
calibration adds, fitted on a labelled validation set (never the test set) by ``synerdetect calibrate``:

- ``prob_fake = sigmoid(a * logit + b)``: temperature scaling (``b = 0``, ``a = 1 / T``) or Platt scaling;
- an **uncertain band** ``[lo, hi]`` of logits around the decision boundary: images whose logit falls inside it get
  ``verdict = "uncertain"``; outside it the verdict is the Eq. 10 label.

Without a calibration, ``prob_fake`` is the raw softmax of the scores at the training temperature
(``sigmoid(logit / tau)``), ``calibrated`` is false, and the verdict is the label.

It is stored as ``calibration.json`` in the checkpoint folder and applied by every scoring path.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_write_json

CALIBRATION_NAME = "calibration.json"
CALIBRATION_FORMAT = "synerdetect-calibration/1"
VERDICTS = ("real", "fake", "uncertain")


class CalibrationError(ValueError):
    """A calibration cannot be fitted or read."""


@dataclass
class Calibration:
    method: str = "temperature"  # temperature | platt
    a: float = 1.0  # prob_fake = sigmoid(a * logit + b)
    b: float = 0.0
    band: list[float] | None = None  # [lo, hi]: logits in lo <= logit <= hi are "uncertain"
    target_accuracy: float | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)  # data, layout, split, n per class
    metrics: dict[str, Any] = field(default_factory=dict)  # ECE before/after, coverage, selective accuracy, ...
    cascade: dict[str, Any] | None = None  # the cascade band, when fitted (see synerdetect.engine.scoring)

    def prob_fake(self, logit: np.ndarray | float) -> np.ndarray:
        z = self.a * np.asarray(logit, dtype=np.float64) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def uncertain(self, logit: np.ndarray | float) -> np.ndarray:
        x = np.asarray(logit, dtype=np.float64)
        if self.band is None:
            return np.zeros(x.shape, dtype=bool)
        lo, hi = self.band
        return (x >= lo) & (x <= hi)

    def to_dict(self) -> dict[str, Any]:
        return {"format": CALIBRATION_FORMAT, **asdict(self)}

    def save(self, folder: str | Path) -> Path:
        return atomic_write_json(Path(folder) / CALIBRATION_NAME, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path) -> Calibration | None:
        """The calibration stored in a checkpoint folder, or None when there is none."""
        path = Path(folder) / CALIBRATION_NAME
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CalibrationError(f"{path}: not readable ({type(e).__name__}: {e})") from None
        if doc.pop("format", None) != CALIBRATION_FORMAT:
            raise CalibrationError(f"{path}: unknown calibration format (expected {CALIBRATION_FORMAT})")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in doc.items() if k in known})
        except TypeError as e:
            raise CalibrationError(f"{path}: {e}") from None


def apply_calibration(logit: np.ndarray, tau: float, calibration: Calibration | None) -> dict[str, Any]:
    """Per-image ``prob_fake``, ``verdict`` and ``calibrated`` for the Eq. 10 logits (the one place that turns a
    logit into what a user reads)."""
    x = np.asarray(logit, dtype=np.float64).reshape(-1)
    label = np.where(x > 0, "fake", "real")
    if calibration is None:
        prob = 1.0 / (1.0 + np.exp(-x / tau))
        return {"prob_fake": prob, "verdict": label.tolist(), "calibrated": False}
    prob = calibration.prob_fake(x)
    verdict = np.where(calibration.uncertain(x), "uncertain", label)
    return {"prob_fake": prob, "verdict": verdict.tolist(), "calibrated": True}
