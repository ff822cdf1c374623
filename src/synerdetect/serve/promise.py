"""What a loaded calibration promises, for the service: the sentence the page shows next to the verdict and the
validation shares of each verdict that the drift metrics compare today's traffic with."""

from __future__ import annotations

from typing import Any

from ..engine.guarantees import promise_for

__all__ = ["promise_of", "validation_shares"]


def promise_of(calibration: Any, *, mode: str = "full", view: str | None = None) -> str:
    """The certified promise in words for verdicts scored under ``mode`` and ``view``, or the statement that there
    is none (engine.guarantees.promise_for)."""
    return promise_for(calibration, mode=mode, view=view)


def validation_shares(calibration: Any) -> dict[str, float | None]:
    """Share of ``uncertain`` verdicts on the calibration's validation set (None: no calibration or not recorded).
    The real / fake shares depend on the class mix of the validation set, which traffic does not share, so only
    the uncertain share is a baseline."""
    m = getattr(calibration, "metrics", None) or {}
    n, unc = m.get("n_images"), m.get("n_uncertain")
    return {"uncertain": (unc / n) if n and unc is not None else None}
