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
import logging
import math
import sys
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_write_json
from .metrics import ECE_BINS, probability_metrics, selective_metrics

log = logging.getLogger(__name__)

CALIBRATION_NAME = "calibration.json"
CALIBRATION_FORMAT = "synerdetect-calibration/1"
VERDICTS = ("real", "fake", "uncertain")
CALIBRATION_METHODS = ("temperature", "platt")
DEFAULT_MIN_PER_CLASS = 20
DEFAULT_TARGET_ACCURACY = 0.95
DEFAULT_TAU = 0.07  # ModelConfig.tau: the training temperature of the raw probabilities
#: ``band`` when no band reaches the target accuracy: every finite logit is uncertain (JSON-safe, unlike inf).
BAND_ALL = [-sys.float_info.max, sys.float_info.max]
#: Inverse regularisation of the Platt logistic regression (on logits divided by their standard deviation):
#: large enough to be a plain maximum-likelihood fit, finite so that separable data give a finite slope.
PLATT_C = 1e6
#: The temperature search spans ``a * std(logit)`` in [1e-3, 1e3]; an optimum on a bound is reported.
_SCALE_SPAN = 1e3


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^-z)`` without overflow warnings for large ``|z|`` (scipy's expit)."""
    from scipy.special import expit

    return expit(np.asarray(z, dtype=np.float64))


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
    guarantee: dict[str, Any] | None = None  # calibrate --guarantee: the certified band (engine/guarantees.py)
    max_fpr: dict[str, Any] | None = None  # calibrate --max-fpr: the certified fake threshold (engine/guarantees.py)

    def prob_fake(self, logit: np.ndarray | float) -> np.ndarray:
        z = self.a * np.asarray(logit, dtype=np.float64) + self.b
        return _sigmoid(z)

    def uncertain(self, logit: np.ndarray | float) -> np.ndarray:
        """Inside the band, or (with a certified FPR threshold) a fake label at or below the threshold: the model
        leans fake there but the operating point does not vouch for it, and "real" is not what the model said."""
        x = np.asarray(logit, dtype=np.float64)
        thr = self.fake_threshold()
        below = (x > 0) & (x <= thr) if thr > 0 else np.zeros(x.shape, dtype=bool)
        if self.band is None:
            return below
        lo, hi = self.band
        return below | ((x >= lo) & (x <= hi))

    def fake_threshold(self) -> float:
        """``verdict: fake`` needs ``logit`` above this: 0 (Eq. 10), or the certified ``max_fpr`` threshold."""
        return float(self.max_fpr["threshold"]) if self.max_fpr else 0.0

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


def calibration_applies(decided_by: str | None) -> bool:
    """The calibration was fitted on full Eq. 10 logits: it turns into ``prob_fake`` and ``verdict`` only the logits
    of images the full Eq. 10 decided (``decided_by`` ``"full"``, or None: no routing). A perceptual-branch margin
    (``--mode perceptual``, or the cascade's confident images) is on another scale and keeps
    ``sigmoid(logit / tau)`` and its bare label. One rule for ``predict``, the service and ``evaluate``."""
    return decided_by in (None, "full")


def apply_calibration(logit: np.ndarray, tau: float, calibration: Calibration | None) -> dict[str, Any]:
    """Per-image ``prob_fake``, ``verdict`` and ``calibrated`` for the Eq. 10 logits (the one place that turns a
    logit into what a user reads)."""
    x = np.asarray(logit, dtype=np.float64).reshape(-1)
    label = np.where(x > 0, "fake", "real")
    if calibration is None:
        prob = _sigmoid(x / tau)
        return {"prob_fake": prob, "verdict": label.tolist(), "calibrated": False}
    prob = calibration.prob_fake(x)
    verdict = np.where(calibration.uncertain(x), "uncertain", label)
    return {"prob_fake": prob, "verdict": verdict.tolist(), "calibrated": True}


# ----------------------------------------------------------------------------- fitting
def _stable_nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(z)`` against ``y``: ``log(1 + e^z) - y z`` (no overflow)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _logit_scale(x: np.ndarray) -> float:
    s = float(np.std(x))
    if not s > 0:
        s = float(np.max(np.abs(x)))
    return s if s > 0 else 1.0


def _fit_temperature(x: np.ndarray, y: np.ndarray) -> tuple[float, list[str]]:
    """``a = 1 / T`` minimising the NLL of ``sigmoid(a * logit)`` (no intercept: logit 0 stays p = 0.5).

    The NLL is convex in ``a``, so it is unimodal in ``log a``: a bounded Brent search on ``log a`` finds the
    optimum and keeps ``T`` positive. Separable data have no finite optimum (the NLL keeps falling as T -> 0) and
    logits that rank the classes the wrong way want T -> infinity; both end on a bound and are reported.
    """
    from scipy.optimize import minimize_scalar

    s = _logit_scale(x)
    lo, hi = math.log(1.0 / (_SCALE_SPAN * s)), math.log(_SCALE_SPAN / s)
    res = minimize_scalar(
        lambda u: _stable_nll(math.exp(u) * x, y), bounds=(lo, hi), method="bounded", options={"xatol": 1e-9}
    )
    u = float(res.x)
    notes = []
    if hi - u < 1e-4:
        notes.append(
            "the validation logits separate the classes perfectly: the temperature fit ran to its "
            "lower bound (T = std(logit) / 1000), so calibrated probabilities are close to 0 or 1"
        )
    elif u - lo < 1e-4:
        notes.append(
            "the validation logits do not rank fakes above reals: the temperature fit ran to its upper "
            "bound and calibrated probabilities are close to 0.5"
        )
    return math.exp(u), notes


def _fit_platt(x: np.ndarray, y: np.ndarray) -> tuple[float, float, list[str]]:
    """Platt scaling: ``sigmoid(a * logit + b)`` by ``sklearn.linear_model.LogisticRegression`` (C = PLATT_C).

    The logits are divided by their standard deviation before the fit (a well-conditioned problem for lbfgs) and
    the slope is scaled back; with C this large the penalty is negligible either way.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    s = _logit_scale(x)
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        lr = LogisticRegression(C=PLATT_C, max_iter=10_000, tol=1e-10).fit((x / s)[:, None], y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append(
            "the Platt fit did not converge (the validation logits are probably perfectly separated); "
            "calibrated probabilities are close to 0 or 1"
        )
    return float(lr.coef_[0, 0]) / s, float(lr.intercept_[0]), notes


def search_band(logits: Any, labels: Any, target_accuracy: float) -> dict[str, Any]:
    """The narrowest logit interval ``[lo, hi]`` with ``lo <= 0 <= hi`` such that the Eq. 10 label (fake iff
    ``logit > 0``) is right on at least ``target_accuracy`` of the images *outside* it (``logit < lo`` or
    ``logit > hi``), with at least one image outside. Ties in width go to the larger coverage.

    Written by hand: this is a selective-classification band around a *fixed* decision boundary, which no
    library fits (risk-coverage tools pick a confidence threshold, not an interval anchored at logit 0).

    The outside of ``[lo, hi]`` is the ``k`` most negative logits plus the ``m`` most positive ones (ties cannot
    be split: an interval keeps equal logits together; logits equal to 0 are always inside). With ``CL[k]`` the
    reals among the first and ``CR[m]`` the fakes among the second, the target reads
    ``(CL[k] - t k) + (CR[m] - t m) >= 0``. For each ``k`` the narrowest band takes the *largest* feasible ``m``
    (``hi`` falls as ``m`` grows): a binary search on the suffix maximum of ``CR[m] - t m``. O(n log n).

    Returns ``{"found", "band", "coverage", "selective_accuracy", "n_uncertain", "n_images"}``; when no band
    reaches the target, ``found`` is False, ``band`` is :data:`BAND_ALL` and ``coverage`` 0.
    """
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(int)
    t = float(target_accuracy)
    n = x.size
    neg = np.sort(x[x < 0], kind="stable")
    order_neg = np.argsort(x[x < 0], kind="stable")
    neg_real = (y[x < 0][order_neg] == 0).astype(np.int64)
    pos_order = np.argsort(-x[x > 0], kind="stable")
    pos = x[x > 0][pos_order]  # descending
    pos_fake = (y[x > 0][pos_order] == 1).astype(np.int64)

    # k = number of excluded negatives; valid where the cut does not split equal logits
    ks = np.arange(len(neg) + 1)
    k_ok = np.ones(len(ks), dtype=bool)
    k_ok[1:-1] = neg[:-1] < neg[1:]
    ks = ks[k_ok]
    g = np.concatenate([[0], np.cumsum(neg_real)])[ks] - t * ks

    ms = np.arange(len(pos) + 1)
    m_ok = np.ones(len(ms), dtype=bool)
    m_ok[1:-1] = pos[:-1] > pos[1:]
    ms = ms[m_ok]
    hi_m = np.append(pos, 0.0)[ms]
    h = np.concatenate([[0], np.cumsum(pos_fake)])[ms] - t * ms
    suffix_max = np.maximum.accumulate(h[::-1])[::-1]  # non-increasing in m
    eps = 1e-9 * max(n, 1)  # float slack on "accuracy == target" (e.g. 19/20 vs 0.95 * 20)

    # for every k: the largest index j with suffix_max[j] >= -g[k]; there h[j] == suffix_max[j]
    js = np.searchsorted(-suffix_max, g + eps, side="right") - 1
    ok = js >= 0
    k_sel, j_sel = ks[ok], js[ok]
    m_sel = ms[j_sel]
    ok = (k_sel + m_sel) > 0  # nothing outside: coverage 0 is not a band
    k_sel, j_sel, m_sel = k_sel[ok], j_sel[ok], m_sel[ok]
    if k_sel.size == 0:
        return {
            "found": False,
            "band": list(BAND_ALL),
            "coverage": 0.0,
            "selective_accuracy": None,
            "n_uncertain": int(n),
            "n_images": int(n),
        }
    width = hi_m[j_sel] - np.append(neg, 0.0)[k_sel]
    best = np.lexsort((k_sel, -(k_sel + m_sel), width))[0]  # narrowest, then largest coverage, then fewest k
    k, m = int(k_sel[best]), int(m_sel[best])
    lo = float(np.append(neg, 0.0)[k])
    hi = float(np.append(pos, 0.0)[m])
    outside = (x < lo) | (x > hi)
    correct = (x > 0).astype(int) == y
    n_out = int(outside.sum())
    return {
        "found": True,
        "band": [lo, hi],
        "coverage": n_out / n,
        "selective_accuracy": float(correct[outside].mean()),
        "n_uncertain": int(n - n_out),
        "n_images": int(n),
    }


def check_fit_inputs(
    logits: Any, labels: Any, method: str, target_accuracy: float, min_per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    if method not in CALIBRATION_METHODS:
        raise CalibrationError(
            f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    if not (isinstance(target_accuracy, (int, float)) and 0.0 < float(target_accuracy) <= 1.0):
        raise CalibrationError(f"target accuracy must be in (0, 1], got {target_accuracy!r}")
    if int(min_per_class) != min_per_class or int(min_per_class) < 1:
        raise CalibrationError(f"min_per_class must be a positive integer, got {min_per_class!r}")
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if x.shape != y.shape:
        raise CalibrationError(f"{x.size} logits but {y.size} labels")
    if x.size == 0:
        raise CalibrationError("no scored images to calibrate on")
    if not np.isfinite(x).all():
        raise CalibrationError("the logits must be finite")
    if not np.isin(y, (0, 1)).all():
        raise CalibrationError("labels must be 0 (real) or 1 (fake)")
    y = y.astype(int)
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    if n_real == 0 or n_fake == 0:
        have = "real" if n_fake == 0 else "fake"
        raise CalibrationError(
            f"cannot calibrate on single-class data: all {x.size} image(s) are {have}; a calibration needs "
            f"labelled real and fake images (at least {int(min_per_class)} of each)"
        )
    if n_real < min_per_class or n_fake < min_per_class:
        raise CalibrationError(
            f"too few images to calibrate: {n_real} real and {n_fake} fake; at least {int(min_per_class)} of each "
            "class are needed (a larger validation set, or lower --min-per-class at your own risk)"
        )
    return x, y


def fit_calibration(
    logits: Any,
    labels: Any,
    *,
    method: str = "temperature",
    target_accuracy: float = DEFAULT_TARGET_ACCURACY,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    tau: float = DEFAULT_TAU,
) -> Calibration:
    """Fit a :class:`Calibration` on labelled validation logits (``logit = s_fake - s_real``; label 1 = fake).

    * ``method="temperature"``: ``prob_fake = sigmoid(logit / T)`` (``a = 1/T``, ``b = 0``), T minimising the
      NLL (bounded Brent search on log T, see :func:`_fit_temperature`);
      ``method="platt"``: ``sigmoid(a * logit + b)`` by logistic regression on the logit.
    * ``band``: :func:`search_band` at ``target_accuracy`` (the Eq. 10 label never changes; the band only says
      where it is not trusted).
    * ``metrics``: ECE (15 bins), Brier and NLL before (``sigmoid(logit / tau)``, the uncalibrated probability)
      and after, the validation coverage and selective accuracy, counts and warnings.

    Raises :class:`CalibrationError` for an unknown method, single-class data or fewer than ``min_per_class``
    images of a class.
    """
    x, y = check_fit_inputs(logits, labels, method, target_accuracy, min_per_class)
    if not tau > 0:
        raise CalibrationError(f"tau must be > 0, got {tau!r}")
    if method == "temperature":
        a, notes = _fit_temperature(x, y)
        b = 0.0
    else:
        a, b, notes = _fit_platt(x, y)
    cal = Calibration(method=method, a=float(a), b=float(b), target_accuracy=float(target_accuracy))
    band = search_band(x, y, float(target_accuracy))
    if not band["found"]:
        notes.append(
            f"no uncertain band reaches {100 * target_accuracy:.2f}% accuracy outside it on this "
            "validation set: every image is 'uncertain' (band = all, coverage 0)"
        )
    cal.band = band["band"]
    before = probability_metrics(y, _sigmoid(x / tau), ECE_BINS)
    after = probability_metrics(y, cal.prob_fake(x), ECE_BINS)
    cal.metrics = {
        "n_images": int(x.size),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "tau": float(tau),
        "n_bins": ECE_BINS,
        "temperature": (1.0 / a) if method == "temperature" and a > 0 else None,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "brier_before": before["brier"],
        "brier_after": after["brier"],
        "nll_before": before["nll"],
        "nll_after": after["nll"],
        "accuracy": float(np.mean((x > 0).astype(int) == y)),
        "band_found": band["found"],
        "band_width": (band["band"][1] - band["band"][0]) if band["found"] else None,
        "coverage": band["coverage"],
        "selective_accuracy": band["selective_accuracy"],
        "n_uncertain": band["n_uncertain"],
        "warnings": notes,
    }
    for note in notes:
        log.warning("calibration: %s", note)
    return cal


# ----------------------------------------------------------------------------- reporting
def calibration_section(
    records: Iterable[Any], *, tau: float, calibration: Calibration | None, n_bins: int | None = None
) -> dict[str, Any]:
    """The ``calibration`` section of results.json for scored test records (:class:`ScoreRecord`).

    ECE / Brier / NLL of the probabilities the records report (calibrated when ``calibration`` is given, else the
    raw ``sigmoid(logit / tau)``), the accuracy of the Eq. 10 label over all images and over the images with a
    verdict (coverage and selective accuracy), pooled over every image and per generator (``generators``). With a
    calibration, ``raw`` (and ``raw_ece`` per generator) holds the same before calibration.
    """
    n_bins = n_bins or ECE_BINS
    recs = list(records)
    if not recs:
        raise ValueError("calibration_section() needs at least one record")
    y = np.array([r.label for r in recs], dtype=int)
    x = np.array([r.logit for r in recs], dtype=np.float64)
    raw = _sigmoid(x / tau)
    if calibration is None:
        prob, unc = raw, np.zeros(x.shape, dtype=bool)
    else:  # what the records report: calibrated where calibration_applies (full Eq. 10 decisions)
        full = np.array([calibration_applies(getattr(r, "decided_by", None)) for r in recs])
        prob = np.where(full, calibration.prob_fake(x), raw)
        unc = full & calibration.uncertain(x)
    sec: dict[str, Any] = {"calibrated": calibration is not None, "tau": float(tau)}
    if calibration is not None:
        sec.update(
            method=calibration.method,
            a=calibration.a,
            b=calibration.b,
            band=calibration.band,
            target_accuracy=calibration.target_accuracy,
            fitted_on=dict(calibration.fitted_on),
            validation={k: v for k, v in calibration.metrics.items() if k != "warnings"},
        )
    sec.update(probability_metrics(y, prob, n_bins))
    sec.update(selective_metrics(y, x, unc))
    if calibration is not None:
        sec["raw"] = probability_metrics(y, raw, n_bins)
    gens: dict[str, Any] = {}
    for g in dict.fromkeys(r.generator for r in recs):
        idx = np.array([r.generator == g for r in recs])
        pm = probability_metrics(y[idx], prob[idx], n_bins)
        gens[g] = {
            "ece": pm["ece"],
            "brier": pm["brier"],
            "nll": pm["nll"],
            **selective_metrics(y[idx], x[idx], unc[idx]),
        }
        if calibration is not None:
            gens[g]["raw_ece"] = probability_metrics(y[idx], raw[idx], n_bins)["ece"]
    sec["generators"] = gens
    return sec


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100.0 * v:.2f}%"


def describe_band(band: list[float] | None) -> str:
    if band is None:
        return "none"
    if band == BAND_ALL or (band[0] <= -sys.float_info.max and band[1] >= sys.float_info.max):
        return "all logits (no band reaches the target)"
    return f"logit in [{band[0]:+.6g}, {band[1]:+.6g}]"


def format_calibration(cal: Calibration) -> str:
    """Human-readable lines for a fitted calibration (what ``synerdetect calibrate`` prints)."""
    m, f = cal.metrics, cal.fitted_on
    sign = "-" if cal.b < 0 else "+"
    what = (
        f"temperature scaling, T = {1 / cal.a:.6g} on the logit"
        if cal.method == "temperature"
        else f"Platt scaling, prob_fake = sigmoid({cal.a:.6g} * logit {sign} {abs(cal.b):.6g})"
    )
    src = f" on {f['data']}" if f.get("data") else ""
    if f.get("split"):
        src += f" (split {f['split']})"
    lines = [f"calibration ({what}) fitted{src}: {m.get('n_real')} real + {m.get('n_fake')} fake images"]
    lines.append(
        f"  ECE ({m.get('n_bins', 15)} bins)  {_pct(m.get('ece_before'))} -> {_pct(m.get('ece_after'))} "
        f"(before: sigmoid(logit / tau), tau = {m.get('tau')})"
    )
    nan = float("nan")
    lines.append(f"  Brier          {m.get('brier_before', nan):.4f} -> {m.get('brier_after', nan):.4f}")
    lines.append(f"  NLL            {m.get('nll_before', nan):.4f} -> {m.get('nll_after', nan):.4f}")
    tgt = cal.target_accuracy
    lines.append(
        f"  uncertain band {describe_band(cal.band)}"
        + (f" (target accuracy {_pct(tgt)} outside it)" if tgt is not None else "")
    )
    n = m.get("n_images") or 0
    n_cov = n - (m.get("n_uncertain") or 0)
    lines.append(
        f"  validation: coverage {_pct(m.get('coverage'))} ({n_cov}/{n} images get a verdict), "
        f"selective accuracy {_pct(m.get('selective_accuracy'))} (accuracy on all {_pct(m.get('accuracy'))})"
    )
    for w in m.get("warnings") or []:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)
