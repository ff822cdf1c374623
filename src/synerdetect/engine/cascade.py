"""Pay for the inversion only when it matters: a cascade over Eq. 10.

Eq. 10 adds two similarities. ``sim(z_v, z_t)`` needs one CLIP pass; ``sim(z_n, z_t)`` needs a VAE encode, the
DDIM inversion (about 93 % of the cost of an image at 100 steps), a VAE decode and a second CLIP pass. Most
images are not close calls: the cascade computes the perceptual branch for every image and runs the full Eq. 10
only for images whose perceptual margin ``m = sim(z_v, z_t^fake) - sim(z_v, z_t^real)`` lies inside a band
``[lo, hi]`` around 0. Those get the full decision; the others keep the perceptual one.

The band is fitted on a labelled validation set (never the test set): the narrowest band for which the cascade's
decisions agree with full Eq. 10 on at least a target share of the images (default 99 %). Images needing the
inversion are regrouped into full batches across input batches (:func:`cascade_predict`), so the UNet never runs
on batches of one or two.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ..data.transforms import stack_images
from ..utils import atomic_write_bytes
from .modes import MODES


class CascadeError(ValueError):
    """A cascade cannot be fitted or used (no fitted band, too little data)."""


def fit_cascade_band(margin: np.ndarray, full_logit: np.ndarray, *, target_agreement: float = 0.99) -> dict[str, Any]:
    """The narrowest band ``[lo, hi]`` (lo <= 0 <= hi) of perceptual margins such that deciding inside it by the
    full logit and outside it by the margin agrees with the full decision on >= ``target_agreement`` of the images.

    Written by hand (no library solves it): only images whose two decisions disagree matter. At most
    ``D = floor((1 - target) n)`` of them may stay outside the band, and the ones left out must be the extremes, so
    the search tries every split of ``D`` between the most negative and the most positive disagreeing margins."""
    m = np.asarray(margin, dtype=np.float64).reshape(-1)
    f = np.asarray(full_logit, dtype=np.float64).reshape(-1)
    if m.shape != f.shape or m.size == 0:
        raise CascadeError(f"margins and full logits must be non-empty and of one length, got {m.size} and {f.size}")
    if not 0.0 < target_agreement <= 1.0:
        raise CascadeError(f"target agreement must be in (0, 1], got {target_agreement}")
    n = m.size
    disagree = (m > 0) != (f > 0)
    allowed = int(np.floor((1.0 - target_agreement) * n + 1e-9))
    neg = np.sort(m[disagree & (m <= 0)])  # most negative first
    pos = np.sort(m[disagree & (m > 0)])[::-1]  # most positive first
    best: tuple[float, int, float, float] | None = None
    for a in range(0, min(allowed, len(neg)) + 1):
        b = min(allowed - a, len(pos))
        lo = float(neg[a]) if a < len(neg) else 0.0
        hi = float(pos[b]) if b < len(pos) else 0.0
        inside = int(((m >= lo) & (m <= hi)).sum())
        key = (hi - lo, inside, lo, hi)
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    _, _, lo, hi = best
    return {"band": [lo, hi], "target_agreement": target_agreement, **cascade_stats(m, f, (lo, hi))}


def cascade_stats(
    margin: np.ndarray, full_logit: np.ndarray, band: tuple[float, float], labels: np.ndarray | None = None
) -> dict[str, Any]:
    """Share of images inverted, agreement with full Eq. 10 and (with labels) the accuracy of the cascade, of the
    full and of the perceptual decision, for one band."""
    m = np.asarray(margin, dtype=np.float64).reshape(-1)
    f = np.asarray(full_logit, dtype=np.float64).reshape(-1)
    lo, hi = band
    inside = (m >= lo) & (m <= hi)
    decision = np.where(inside, f > 0, m > 0)
    out: dict[str, Any] = {
        "n": int(m.size),
        "share_inverted": float(inside.mean()),
        "agreement": float((decision == (f > 0)).mean()),
    }
    if labels is not None:
        y = np.asarray(labels).reshape(-1).astype(bool)
        out.update(
            acc_cascade=float((decision == y).mean()),
            acc_full=float(((f > 0) == y).mean()),
            acc_perceptual=float(((m > 0) == y).mean()),
        )
    return out


def cascade_curve(
    margin: np.ndarray,
    full_logit: np.ndarray,
    labels: np.ndarray | None = None,
    half_widths: Iterable[float] | None = None,
) -> list[dict[str, Any]]:
    """Band (symmetric, ``[-w, w]``) vs share inverted vs agreement vs accuracy, for a table and a figure."""
    m = np.abs(np.asarray(margin, dtype=np.float64))
    if half_widths is None:
        half_widths = np.unique(np.concatenate([[0.0], np.quantile(m, np.linspace(0.05, 1.0, 20))]))
    return [
        {"half_width": float(w), **cascade_stats(margin, full_logit, (-float(w), float(w)), labels)}
        for w in half_widths
    ]


def plot_cascade_curve(
    curve: list[dict[str, Any]],
    path,
    *,
    fitted: dict[str, Any] | None = None,
    title: str = "cascade: share inverted vs agreement",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = [c["share_inverted"] * 100 for c in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(share, [c["agreement"] * 100 for c in curve], "o-", label="agreement with full Eq. 10")
    if "acc_cascade" in curve[0]:
        ax.plot(share, [c["acc_cascade"] * 100 for c in curve], "s-", label="cascade accuracy")
        ax.axhline(curve[0]["acc_full"] * 100, color="gray", ls="--", label="full accuracy")
    if fitted is not None:
        ax.axvline(fitted["share_inverted"] * 100, color="red", ls=":", label="fitted band")
    ax.set_xlabel("images inverted (%)")
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def cascade_predict(
    model, batches: Iterable[tuple[torch.Tensor, list[Any]]], band: tuple[float, float], *, batch_size: int
) -> Iterator[tuple[Any, dict[str, float], str]]:
    """Score ``(images, ids)`` batches with the cascade; yields ``(id, outputs, decided_by)`` per image, where
    ``outputs`` holds the floats of ``model.predict`` plus ``perceptual_logit``, and ``decided_by`` is
    ``"perceptual"`` or ``"full"``. Images inside the band wait until ``batch_size`` of them are pending (across
    input batches), so the inversion runs on full batches; the rest is flushed at the end. Order is not kept."""
    lo, hi = band
    pending: list[tuple[torch.Tensor, Any, float]] = []

    def run_full(items: list[tuple[torch.Tensor, Any, float]]) -> Iterator[tuple[Any, dict[str, float], str]]:
        out = model.predict(stack_images([t for t, _, _ in items]))  # tensors or the two views of each image
        for i, (_, ident, margin) in enumerate(items):
            yield ident, {**{k: float(v[i]) for k, v in out.items()}, "perceptual_logit": margin}, "full"

    for images, ids in batches:
        per = model.predict(images, mode="perceptual")
        margins = per["logit"].float().cpu()
        for i, ident in enumerate(ids):
            m = float(margins[i])
            if lo <= m <= hi:
                pending.append((images[i], ident, m))
            else:
                yield ident, {**{k: float(v[i]) for k, v in per.items()}, "perceptual_logit": m}, "perceptual"
        while len(pending) >= batch_size:
            head, pending = pending[:batch_size], pending[batch_size:]
            yield from run_full(head)
    if pending:
        yield from run_full(pending)


def cascade_band_of(calibration: Any, mode: str) -> tuple[float, float] | None:
    """The band ``mode="cascade"`` reads from a checkpoint's calibration (None for the other modes); the one check
    and message for a missing band, shared by the CLI, :class:`~synerdetect.engine.scoring.Scorer` and
    :func:`~synerdetect.engine.evaluate.evaluate`."""
    if mode not in MODES:
        raise CascadeError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "cascade":
        return None
    if calibration is None or not calibration.cascade:
        raise CascadeError(
            "--mode cascade needs a fitted cascade band: run `synerdetect calibrate --checkpoint DIR --data VAL "
            "--cascade-agreement 0.99` on a labelled validation set first"
        )
    lo, hi = calibration.cascade["band"]
    return float(lo), float(hi)
