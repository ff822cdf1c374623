"""Evaluation metrics for SynerDetect.

Conventions
-----------
* Ground-truth label ``0`` = real, ``1`` = fake.
* The detector produces ``s_real`` and ``s_fake``; ``logit = s_fake - s_real``
  and ``prob_fake = sigmoid(logit / tau)``.
* The label decision is the **fixed** rule ``pred = 1 if s_fake > s_real``
  (equivalently ``logit > 0``).  No threshold is ever fitted on test labels.
* Accuracies and APs are stored as fractions in ``[0, 1]``; only the markdown
  renderers in :mod:`synerdetect.report` turn them into percentages.
* A metric that cannot be computed (e.g. AP for a generator whose test split
  only contains fake images) is ``None`` together with a human-readable
  reason -- never a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss

__all__ = [
    "DECISION_RULE",
    "ECE_BINS",
    "ScoreRecord",
    "normalize_format",
    "generator_metrics",
    "summarize",
    "robustness_table",
    "reliability_bins",
    "expected_calibration_error",
    "probability_metrics",
    "selective_metrics",
]

DECISION_RULE = "s_fake > s_real (fixed; no threshold fitted on test labels)"

REASON_NO_REAL = "no real images"
REASON_NO_FAKE = "no fake images"

_FORMAT_ALIASES = {"JPG": "JPEG", "JPE": "JPEG", "TIF": "TIFF"}
UNKNOWN_FORMAT = "UNKNOWN"
ECE_BINS = 15  # equal-width bins of prob_fake for ECE and the reliability diagram
_VERDICTS = ("real", "fake", "uncertain")
_MAX_SIZES_LISTED = 10  # per class and generator in results.json; the overlap test uses every size


def normalize_format(fmt: str | None) -> str:
    """Canonical upper-case file-format name (``jpg`` -> ``JPEG``; ``None`` -> ``UNKNOWN``)."""
    if fmt is None:
        return UNKNOWN_FORMAT
    f = str(fmt).strip().lstrip(".").upper()
    if not f:
        return UNKNOWN_FORMAT
    return _FORMAT_ALIASES.get(f, f)


def _stable_sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@dataclass(frozen=True)
class ScoreRecord:
    """Detector output for one image (one line of ``scores.jsonl``)."""

    path: str
    generator: str
    label: int
    s_real: float
    s_fake: float
    logit: float
    prob_fake: float  # calibrated when ``calibrated`` is true, else sigmoid(logit / tau)
    format: str | None = None
    verdict: str | None = None  # "real" | "fake" | "uncertain" (calibration band); None: not computed
    calibrated: bool | None = None  # prob_fake comes from a fitted calibration; None: not recorded
    size: tuple[int, int] | None = None  # (width, height) of the file as stored; None: unknown
    decided_by: str | None = None  # "full" | "perceptual" under --mode cascade/perceptual; None: full Eq. 10

    def __post_init__(self) -> None:
        label = self.label
        if isinstance(label, bool) or int(label) != label or int(label) not in (0, 1):
            raise ValueError(f"label must be 0 (real) or 1 (fake), got {label!r} for {self.path!r}")
        object.__setattr__(self, "label", int(label))
        for name in ("s_real", "s_fake", "logit", "prob_fake"):
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v!r} for {self.path!r}")
            object.__setattr__(self, name, v)
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "generator", str(self.generator))
        if self.verdict is not None and self.verdict not in _VERDICTS:
            raise ValueError(f"verdict must be one of {_VERDICTS} or None, got {self.verdict!r} for {self.path!r}")
        if self.calibrated is not None:
            object.__setattr__(self, "calibrated", bool(self.calibrated))
        if self.size is not None:
            try:
                w, h = (int(v) for v in self.size)
            except (TypeError, ValueError):
                raise ValueError(f"size must be (width, height), got {self.size!r} for {self.path!r}") from None
            object.__setattr__(self, "size", (w, h))

    @property
    def pred(self) -> int:
        """Fixed decision rule: 1 (fake) iff ``s_fake > s_real`` i.e. ``logit > 0``."""
        return 1 if self.logit > 0 else 0

    @classmethod
    def from_scores(
        cls,
        path: str,
        generator: str,
        label: int,
        s_real: float,
        s_fake: float,
        *,
        tau: float = 1.0,
        format: str | None = None,
    ) -> ScoreRecord:
        """Build a record from the two class scores (computes ``logit`` and ``prob_fake``)."""
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        logit = float(s_fake) - float(s_real)
        return cls(path, generator, label, float(s_real), float(s_fake), logit, _stable_sigmoid(logit / tau), format)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreRecord:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d and n not in _OPTIONAL_FIELDS]
        if missing:
            raise ValueError(f"score record is missing keys {missing}: {dict(d)!r}")
        return cls(**{n: d[n] for n in names if n in d})


_OPTIONAL_FIELDS = ("format", "verdict", "calibrated", "size", "decided_by")


def as_records(records: Iterable[ScoreRecord | Mapping[str, Any]]) -> list[ScoreRecord]:
    out = []
    for r in records:
        out.append(r if isinstance(r, ScoreRecord) else ScoreRecord.from_dict(r))
    return out


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _format_counts(recs: Sequence[ScoreRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in recs:
        f = normalize_format(r.format)
        counts[f] = counts.get(f, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _format_shortcut_warning(real_fmts: Mapping[str, int], fake_fmts: Mapping[str, int]) -> str | None:
    """Warn when real and fake file formats are disjoint (format alone separates the classes).

    Not raised when either class is absent or any format is unknown (cannot decide).
    """
    if not real_fmts or not fake_fmts:
        return None
    if UNKNOWN_FORMAT in real_fmts or UNKNOWN_FORMAT in fake_fmts:
        return None
    if set(real_fmts).isdisjoint(fake_fmts):
        return (
            f"real images are only {'/'.join(real_fmts)} and fake images only "
            f"{'/'.join(fake_fmts)}: the file format alone separates the classes, so "
            "acc/AP may reflect compression/format artefacts rather than generation traces"
        )
    return None


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _size_counts(recs: Sequence[ScoreRecord]) -> dict[str, int]:
    """``{"WxH": count}`` of the most common sizes (at most ``_MAX_SIZES_LISTED``; the rest under ``"other"``,
    files whose size is unknown under ``"unknown"``)."""
    counts: dict[str, int] = {}
    unknown = 0
    for r in recs:
        if r.size is None:
            unknown += 1
        else:
            k = _size_text(r.size)
            counts[k] = counts.get(k, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:_MAX_SIZES_LISTED])
    if len(ranked) > _MAX_SIZES_LISTED:
        out["other"] = sum(v for _, v in ranked[_MAX_SIZES_LISTED:])
    if unknown:
        out["unknown"] = unknown
    return out


def _describe_sizes(sizes: set[tuple[int, int]]) -> str:
    ordered = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    if len(ordered) <= 3:
        return "/".join(_size_text(s) for s in ordered)
    return f"{len(ordered)} sizes from {_size_text(ordered[0])} to {_size_text(ordered[-1])}"


def _size_shortcut_warning(real: Sequence[ScoreRecord], fake: Sequence[ScoreRecord]) -> str | None:
    """Warn when no real image has the (width, height) of any fake image: the size alone separates the classes
    (and the eval transform resamples the two classes differently).

    Not raised when either class is absent or any size is unknown (cannot decide), like the format warning.
    """
    if not real or not fake or any(r.size is None for r in (*real, *fake)):
        return None
    rs = {r.size for r in real if r.size is not None}
    fs = {r.size for r in fake if r.size is not None}
    if rs.isdisjoint(fs):
        return (
            f"real images are {_describe_sizes(rs)} and fake images {_describe_sizes(fs)}: no size is shared, so "
            "the image size (and how the eval transform resamples it) alone separates the classes and acc/AP may "
            "reflect it rather than generation traces"
        )
    return None


def _single_generator(recs: Sequence[ScoreRecord]) -> dict[str, Any]:
    labels = np.array([r.label for r in recs], dtype=int)
    logits = np.array([r.logit for r in recs], dtype=float)
    preds = (logits > 0).astype(int)
    correct = preds == labels
    real_mask, fake_mask = labels == 0, labels == 1
    n_real, n_fake = int(real_mask.sum()), int(fake_mask.sum())

    m: dict[str, Any] = {
        "acc": float(correct.mean()),
        "real_acc": float(correct[real_mask].mean()) if n_real else None,
        "fake_acc": float(correct[fake_mask].mean()) if n_fake else None,
        "ap": None,
        "n_real": n_real,
        "n_fake": n_fake,
        "n_images": int(len(recs)),
    }
    m["real_acc_undefined"] = None if n_real else REASON_NO_REAL
    m["fake_acc_undefined"] = None if n_fake else REASON_NO_FAKE
    if n_real and n_fake:
        m["ap"] = float(average_precision_score(labels, logits, pos_label=1))
        m["ap_undefined"] = None
    else:
        m["ap_undefined"] = REASON_NO_REAL if not n_real else REASON_NO_FAKE
    real_fmts = _format_counts([r for r in recs if r.label == 0])
    fake_fmts = _format_counts([r for r in recs if r.label == 1])
    m["formats"] = {"real": real_fmts, "fake": fake_fmts}
    m["format_shortcut_warning"] = _format_shortcut_warning(real_fmts, fake_fmts)
    real = [r for r in recs if r.label == 0]
    fake = [r for r in recs if r.label == 1]
    if any(r.size is not None for r in recs):  # sizes are recorded by evaluate(); absent for older records
        m["sizes"] = {"real": _size_counts(real), "fake": _size_counts(fake)}
    m["size_shortcut_warning"] = _size_shortcut_warning(real, fake)
    return m


def generator_metrics(records: Iterable[ScoreRecord | Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-generator metrics, in order of first appearance of each generator.

    Each value has keys ``acc, real_acc, fake_acc, ap, n_real, n_fake, n_images,
    formats, ap_undefined, real_acc_undefined, fake_acc_undefined,
    format_shortcut_warning, size_shortcut_warning`` (and ``sizes`` when the records carry
    image sizes).  The ``*_undefined`` keys hold the reason string
    when the corresponding metric is ``None`` and are ``None`` otherwise;
    ``format_shortcut_warning`` / ``size_shortcut_warning`` are ``None`` unless the
    real and fake formats / (width, height) sizes are disjoint.
    ``ap`` = ``sklearn.metrics.average_precision_score`` with fake as the positive
    class and ``logit`` as the score.
    """
    groups: dict[str, list[ScoreRecord]] = {}
    for r in as_records(records):
        groups.setdefault(r.generator, []).append(r)
    return {g: _single_generator(recs) for g, recs in groups.items()}


def summarize(records: Iterable[ScoreRecord | Mapping[str, Any]]) -> dict[str, Any]:
    """Per-generator metrics plus their unweighted mean over generators.

    ``mean.acc`` averages over all generators; ``mean.ap`` / ``real_acc`` /
    ``fake_acc`` average only over generators where the metric is defined
    (counts in ``*_n_generators``; ``ap_excluded`` lists the excluded ones).
    """
    recs = as_records(records)
    if not recs:
        raise ValueError("summarize() needs at least one score record")
    gens = generator_metrics(recs)
    n_gen = len(gens)

    def defined(key: str) -> tuple[list[float], list[str]]:
        vals = [m[key] for m in gens.values() if m[key] is not None]
        excluded = [g for g, m in gens.items() if m[key] is None]
        return vals, excluded

    ap_vals, ap_excl = defined("ap")
    ra_vals, _ = defined("real_acc")
    fa_vals, _ = defined("fake_acc")
    mean: dict[str, Any] = {
        "acc": _mean([m["acc"] for m in gens.values()]),
        "acc_n_generators": n_gen,
        "ap": _mean(ap_vals),
        "ap_n_generators": len(ap_vals),
        "ap_excluded": ap_excl,
        "ap_undefined": None if ap_vals else "AP undefined for every generator (each has a single class)",
        "real_acc": _mean(ra_vals),
        "real_acc_n_generators": len(ra_vals),
        "fake_acc": _mean(fa_vals),
        "fake_acc_n_generators": len(fa_vals),
    }
    warnings = [
        f"{g}: {m[key]}"
        for g, m in gens.items()
        for key in ("format_shortcut_warning", "size_shortcut_warning")
        if m.get(key)
    ]
    return {
        "generators": gens,
        "mean": mean,
        "n_images": len(recs),
        "n_generators": n_gen,
        "decision_rule": DECISION_RULE,
        "warnings": warnings,
    }


# --------------------------------------------------------------------------- robustness


def _is_summary(x: Any) -> bool:
    return isinstance(x, Mapping) and "generators" in x and "mean" in x


def _is_records(x: Any) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, (str, bytes, Mapping))


def _to_summary(x: Any, where: str) -> Mapping[str, Any]:
    if _is_summary(x):
        return x
    if _is_records(x):
        return summarize(x)
    raise TypeError(f"{where}: expected a summarize() dict or a list of ScoreRecord, got {type(x).__name__}")


def _level_entry(summary: Mapping[str, Any]) -> dict[str, Any]:
    mean = summary["mean"]
    return {
        "acc": mean.get("acc"),
        "ap": mean.get("ap"),
        "ap_n_generators": mean.get("ap_n_generators"),
        "n_images": summary.get("n_images"),
    }


def robustness_table(
    results_by_perturbation: Mapping[str, Any],
    *,
    clean: Mapping[str, Any] | Sequence[ScoreRecord] | None = None,
) -> dict[str, Any]:
    """Robustness table (paper Table 4 layout).

    ``results_by_perturbation`` is either nested,
    ``{kind: {level_label: summary_or_records}}`` (e.g. ``{"jpeg": {"q60": s}}``), or
    flat, ``{"kind@level": summary_or_records}`` (``Perturbation.name`` keys such as
    ``"jpeg@q60"``), where *summary_or_records* is a :func:`summarize` result or a
    list of :class:`ScoreRecord`.  Insertion order of kinds and levels is kept.

    Returns ``{"perturbations": {kind: {"levels": {level: {"acc", "ap",
    "ap_n_generators", "n_images"}}, "mAcc", "mAP", "mAP_n_levels", "n_levels"}},
    "clean": {...} | None}``.  ``mAcc``/``mAP`` are unweighted means over levels of
    the per-level mean-over-generators acc/AP; levels with undefined AP are excluded
    from ``mAP`` (``None`` with ``mAP_undefined`` if no level has one).
    """
    grouped: dict[str, dict[str, Mapping[str, Any]]] = {}
    for key, val in results_by_perturbation.items():
        key = str(key)
        if _is_summary(val) or _is_records(val):
            if "@" not in key:
                raise ValueError(f"flat robustness results need 'kind@level' keys (e.g. 'jpeg@q60'), got {key!r}")
            kind, level = key.split("@", 1)
            grouped.setdefault(kind, {})[level] = _to_summary(val, key)
        elif isinstance(val, Mapping):
            lv = grouped.setdefault(key, {})
            for level, res in val.items():
                lv[str(level)] = _to_summary(res, f"{key}/{level}")
        else:
            raise TypeError(f"{key}: unsupported value of type {type(val).__name__}")

    table: dict[str, Any] = {}
    for kind, levels in grouped.items():
        if not levels:
            raise ValueError(f"perturbation {kind!r} has no levels")
        entries = {lvl: _level_entry(s) for lvl, s in levels.items()}
        accs = [e["acc"] for e in entries.values() if e["acc"] is not None]
        aps = [e["ap"] for e in entries.values() if e["ap"] is not None]
        table[kind] = {
            "levels": entries,
            "mAcc": _mean(accs),
            "mAP": _mean(aps),
            "mAP_n_levels": len(aps),
            "mAP_undefined": None if aps else "AP undefined at every level",
            "n_levels": len(entries),
        }
    return {
        "perturbations": table,
        "clean": _level_entry(_to_summary(clean, "clean")) if clean is not None else None,
        "decision_rule": DECISION_RULE,
    }


# --------------------------------------------------------------------------- calibration


def _binary_arrays(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length ({y.size} vs {p.size})")
    if y.size == 0:
        raise ValueError("no labelled probabilities")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probabilities must be finite and in [0, 1]")
    return y.astype(int), p


def reliability_bins(labels: Any, probs: Any, n_bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """The non-empty bins of a reliability diagram of ``prob_fake`` (fake = positive class).

    ``n_bins`` equal-width bins over [0, 1], closed on the right: ``[0, 1/n], (1/n, 2/n], ..., ((n-1)/n, 1]``,
    the assignment of ``sklearn.calibration.calibration_curve(strategy="uniform")``, which gives each bin's
    observed fraction of fakes (``frac_fake``) and mean predicted probability (``mean_prob``). sklearn does not
    return how many images fall in each bin, so the counts are computed here with the same edges.
    Returns ``[{"lo", "hi", "count", "mean_prob", "frac_fake"}]`` in increasing order.
    """
    y, p = _binary_arrays(labels, probs)
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)  # right-closed bins, as in calibration_curve
    counts = np.bincount(ids, minlength=n_bins)
    frac_fake, mean_prob = calibration_curve(y, p, n_bins=n_bins, strategy="uniform", pos_label=1)
    nonempty = np.flatnonzero(counts)
    if len(nonempty) != len(frac_fake):  # pragma: no cover - would mean sklearn changed its binning
        raise RuntimeError("bin counts do not match sklearn's calibration_curve bins")
    return [
        {
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "count": int(counts[b]),
            "mean_prob": float(mp),
            "frac_fake": float(ff),
        }
        for b, mp, ff in zip(nonempty, mean_prob, frac_fake)
    ]


def expected_calibration_error(labels: Any, probs: Any, n_bins: int = ECE_BINS) -> float:
    """ECE of ``prob_fake``: ``sum_b (n_b / N) * |frac_fake_b - mean_prob_b|`` over :func:`reliability_bins`.

    Written here from the bin counts because scikit-learn has no ECE (only ``calibration_curve``, which drops
    the bin sizes). This is the binary, positive-class form (the same bins as the reliability diagram), not the
    top-label confidence form.
    """
    bins = reliability_bins(labels, probs, n_bins)
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["frac_fake"] - b["mean_prob"]) for b in bins) / n)


def probability_metrics(labels: Any, probs: Any, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """``{"ece", "brier", "nll", "n_bins", "bins"}`` of ``prob_fake`` against the labels (fake = 1).

    Brier = ``sklearn.metrics.brier_score_loss``; NLL = ``sklearn.metrics.log_loss`` (natural log, mean per
    image; probabilities of exactly 0 or 1 are clipped by sklearn to machine epsilon).
    """
    y, p = _binary_arrays(labels, probs)
    bins = reliability_bins(y, p, n_bins)
    n = sum(b["count"] for b in bins)
    return {
        "ece": float(sum(b["count"] * abs(b["frac_fake"] - b["mean_prob"]) for b in bins) / n),
        "brier": float(brier_score_loss(y, p, pos_label=1)),
        "nll": float(log_loss(y, p, labels=[0, 1])),
        "n_bins": int(n_bins),
        "bins": bins,
    }


def selective_metrics(labels: Any, logits: Any, uncertain: Any) -> dict[str, Any]:
    """Accuracy of the Eq. 10 label over all images and over the images *with* a verdict (not uncertain).

    ``{"accuracy", "coverage", "selective_accuracy", "n_images", "n_covered", "n_uncertain"}``;
    ``selective_accuracy`` is None when every image is uncertain (``coverage`` 0).
    """
    y = np.asarray(labels).reshape(-1).astype(int)
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    u = np.asarray(uncertain, dtype=bool).reshape(-1)
    if not (y.shape == x.shape == u.shape) or y.size == 0:
        raise ValueError("labels, logits and the uncertain mask must be non-empty and of equal length")
    correct = (x > 0).astype(int) == y
    covered = ~u
    n_cov = int(covered.sum())
    return {
        "accuracy": float(correct.mean()),
        "coverage": n_cov / y.size,
        "selective_accuracy": float(correct[covered].mean()) if n_cov else None,
        "n_images": int(y.size),
        "n_covered": n_cov,
        "n_uncertain": int(y.size - n_cov),
    }
