"""The files ``synerdetect predict`` writes: predictions as JSON and as CSV.

No torch here: the writers take the records :func:`~synerdetect.engine.scoring.predict_paths` returns (plain dicts),
so they are tested, and reused, without a model.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils import atomic_write_json, atomic_write_text, csv_cell

#: The columns of the predictions CSV, in order (the provenance ones come from ``provenance_summary``).
PREDICTION_CSV_COLUMNS = (
    "path",
    "label",
    "verdict",
    "verdict_source",
    "prob_fake",
    "calibrated",
    "logit",
    "s_real",
    "s_fake",
    "sim_v_real",
    "sim_v_fake",
    "sim_n_real",
    "sim_n_fake",
    "declared_ai",
    "c2pa",
    "provenance_sources",
    "sha256",
)


def predictions_document(
    rows: Sequence[Mapping[str, Any]],
    errors: Sequence[tuple[str, str]] = (),
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"predictions": rows, "errors": [{"path", "reason"}], "calibration": dict | None}``."""
    return {
        "predictions": list(rows),
        "errors": [{"path": p, "reason": r} for p, r in errors],
        "calibration": dict(calibration) if calibration is not None else None,
    }


def write_predictions_json(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    errors: Sequence[tuple[str, str]] = (),
    calibration: Mapping[str, Any] | None = None,
) -> Path:
    """The predictions JSON (:func:`predictions_document`), written atomically; non-finite numbers become null."""
    return atomic_write_json(path, predictions_document(rows, errors, calibration))


def predictions_csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """One CSV row per record, :data:`PREDICTION_CSV_COLUMNS` (other keys ignored, missing ones empty). Text
    cells that a spreadsheet would run as a formula (a file named ``=HYPERLINK(...)``) are escaped with ``'``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(PREDICTION_CSV_COLUMNS), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(r.get(k)) for k in PREDICTION_CSV_COLUMNS})
    return buf.getvalue()


def write_predictions_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """:func:`predictions_csv_text` written atomically to ``path``."""
    return atomic_write_text(path, predictions_csv_text(rows))


__all__ = [
    "PREDICTION_CSV_COLUMNS",
    "predictions_csv_text",
    "predictions_document",
    "write_predictions_csv",
    "write_predictions_json",
]
