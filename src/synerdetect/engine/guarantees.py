"""Certified operating points: an uncertain band with an accuracy guarantee (Learn-then-Test) and a fake threshold
with a false-positive-rate guarantee (Clopper–Pearson), both fitted on a labelled validation set.

**The band (``calibrate --guarantee``).** The promise: the Eq. 10 label is right on at least ``target`` of the images
*outside* the band, with probability at least ``1 - delta`` over the draw of the validation set (images drawn
i.i.d. from the same distribution as the images it is used on). Learn-then-Test (Angelopoulos, Bates, Candès,
Jordan, Lei 2021): every candidate band ``j`` is a hypothesis ``H_j: accuracy outside band j < target``; a
family-wise error controlling test over them rejects some; every rejected band is certified simultaneously, and the
narrowest of those is kept.

* Candidates: symmetric bands ``|logit| <= w`` on a fixed geometric grid of half-widths (:data:`BAND_GRID`; the
  logit ``s_fake - s_real`` sums two differences of cosine similarities, so ``|logit| <= 4``; the
  grid starts at 2, a band already too wide to leave verdicts). The grid must not depend
  on the validation data, or the p-values are no longer valid; a geometric grid covers the scale of any model.
* p-value of ``H_j``: given the ``n_j`` images outside band ``j`` (the band is fixed in advance, so they are i.i.d.
  draws of the images outside it), their errors are ``Binomial(n_j, 1 - acc_j)``; under ``H_j`` the chance of seeing
  ``e_j`` errors or fewer is at most ``P(Binomial(n_j, 1 - target) <= e_j)`` (``scipy.stats.binom.cdf``; the
  exact binomial p-value, i.e. the test dual to the Clopper–Pearson bound).
* Order: from the widest band to the narrowest. A wider band leaves only confident images outside it, so its
  accuracy is higher and its null the easiest to reject; testing the other way round would stop at the first
  (narrowest, hardest) band. The widest bands leave few images outside and cannot be rejected at all, so plain
  fixed-sequence testing (all of ``delta`` on the first hypothesis, stop at the first failure) would certify nothing
  whenever the grid starts wider than the data. We use its generalisation, the *fallback procedure* (Wiens 2003;
  one of the graph procedures of Learn-then-Test): hypothesis ``j`` is tested at ``delta / K`` plus the level of
  hypothesis ``j - 1`` when that one was rejected. It controls the family-wise error at ``delta`` for any order and
  never stops: a run of rejections along the order accumulates level as fixed-sequence testing does.

**The false-positive threshold (``calibrate --max-fpr``).** With the threshold at the ``(k + 1)``-th largest logit of
the ``n`` validation reals, the false-positive rate of a new real image is ``Beta(k + 1, n - k)`` distributed
(continuous scores), so ``P(FPR > beta.ppf(1 - delta, k + 1, n - k)) = delta``: the one-sided Clopper–Pearson upper
bound for ``k`` false positives out of ``n``. ``k`` is the largest count whose bound stays within the target; it
depends on ``n``, the target and ``delta`` only, never on the scores. Zero false positives need
``n >= log(delta) / log(1 - target)`` reals (299 for 1 % at 95 %).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from .metrics import selective_metrics

log = logging.getLogger(__name__)

#: Half-widths of the candidate bands, widest first: 2 (half the logit range), by 2^(1/4) a step, to 2^-10, then 0 (no
#: band): 46 candidates. Fixed in advance: the validity of the p-values needs a grid chosen without the data. A
#: finer grid gives each candidate less of delta; on the simulation of the tests 2^(1/4) covered more than 2^(1/2)
#: and as much as 2^(1/8).
BAND_GRID: tuple[float, ...] = tuple(2.0 * 2.0 ** (-k / 4) for k in range(45)) + (0.0,)
GUARANTEE_METHOD = "learn-then-test (fallback procedure, binomial p-values)"
FPR_METHOD = "clopper-pearson upper bound at the (k+1)-th largest validation real"
DEFAULT_DELTA = 0.05


class GuaranteeError(ValueError):
    """A guarantee cannot be certified on this data (one line saying why and what is needed)."""


def _check_prob(name: str, value: float, *, closed_right: bool = False) -> float:
    v = float(value)
    if not (0.0 < v < 1.0 or (closed_right and v == 1.0)):
        raise GuaranteeError(f"{name} must be in (0, 1{']' if closed_right else ')'}, got {value!r}")
    return v


# ----------------------------------------------------------------------------- exact binomial bounds
def binomial_pvalue(errors: int, n: int, max_error: float) -> float:
    """``P(Binomial(n, max_error) <= errors)``: the p-value of "error rate >= max_error" (1 when ``n == 0``)."""
    from scipy.stats import binom

    return 1.0 if n == 0 else float(binom.cdf(int(errors), int(n), float(max_error)))


def cp_upper(k: int, n: int, delta: float) -> float:
    """One-sided Clopper–Pearson upper bound (confidence ``1 - delta``) of a rate with ``k`` events in ``n``."""
    from scipy.stats import beta

    if n <= 0:
        return 1.0
    return 1.0 if k >= n else float(beta.ppf(1.0 - delta, k + 1, n - k))


def cp_lower(k: int, n: int, delta: float) -> float:
    """One-sided Clopper–Pearson lower bound (confidence ``1 - delta``) of a rate with ``k`` successes in ``n``."""
    from scipy.stats import beta

    if n <= 0 or k <= 0:
        return 0.0
    return float(beta.ppf(delta, k, n - k + 1))


def reals_needed(target_fpr: float, delta: float) -> int:
    """The fewest reals with which zero false positives certify ``FPR <= target_fpr`` at confidence ``1 - delta``."""
    n = math.ceil(math.log(delta) / math.log1p(-target_fpr))
    while cp_upper(0, n, delta) > target_fpr:  # float rounding at the boundary
        n += 1
    while n > 1 and cp_upper(0, n - 1, delta) <= target_fpr:
        n -= 1
    return n


# ----------------------------------------------------------------------------- the band
def ltt_band(
    logits: Any, labels: Any, *, target: float, delta: float = DEFAULT_DELTA, grid: tuple[float, ...] = BAND_GRID
) -> dict[str, Any]:
    """The narrowest band of ``grid`` certified by Learn-then-Test (module docstring), as the ``guarantee`` dict of
    calibration.json: ``method, delta, target, n, found, band, half_width, certified_accuracy`` (the promise: the
    target, or None), ``clopper_pearson_lower`` (the plain one-sided bound on the chosen band's accuracy, for
    reference), ``empirical_accuracy``, ``n_outside``, ``coverage``, ``p_value``, ``level``, ``n_candidates``,
    ``n_certified``."""
    target = _check_prob("target accuracy", target)
    delta = _check_prob("delta", delta)
    x = np.abs(np.asarray(logits, dtype=np.float64).reshape(-1))
    y = np.asarray(labels).reshape(-1).astype(int)
    signed = np.asarray(logits, dtype=np.float64).reshape(-1)
    wrong = (signed > 0).astype(int) != y
    from scipy.stats import binom

    widths = np.array(sorted({float(w) for w in grid}, reverse=True))
    k_hyp = widths.size
    outside = x[None, :] > widths[:, None]  # (candidates, images)
    n_out = outside.sum(axis=1)
    err = (outside & wrong[None, :]).sum(axis=1)
    pvals = np.where(n_out > 0, binom.cdf(err, np.maximum(n_out, 1), 1.0 - target), 1.0)
    level, prev_rejected = 0.0, False
    best: dict[str, Any] | None = None
    n_cert = 0
    for j in range(k_hyp):  # the fallback procedure: delta / K each, plus the level of a rejected predecessor
        level = delta / k_hyp + (level if prev_rejected else 0.0)
        prev_rejected = bool(pvals[j] <= level)
        if prev_rejected:
            n_cert += 1
            best = {
                "w": float(widths[j]),
                "n_out": int(n_out[j]),
                "err": int(err[j]),
                "p": float(pvals[j]),
                "level": level,
            }
    out: dict[str, Any] = {
        "method": GUARANTEE_METHOD,
        "delta": delta,
        "target": target,
        "n": int(x.size),
        "n_candidates": k_hyp,
        "n_certified": n_cert,
        "found": best is not None,
    }
    if best is None:
        out.update(
            band=None,
            half_width=None,
            certified_accuracy=None,
            clopper_pearson_lower=None,
            empirical_accuracy=None,
            n_outside=0,
            coverage=0.0,
            p_value=None,
            level=None,
        )
        return out
    n_out, err = best["n_out"], best["err"]
    out.update(
        band=[-best["w"] or 0.0, best["w"]],  # no "-0" for the empty band
        half_width=best["w"],
        certified_accuracy=target,
        clopper_pearson_lower=cp_lower(n_out - err, n_out, delta),
        empirical_accuracy=(n_out - err) / n_out,
        n_outside=n_out,
        coverage=n_out / max(int(x.size), 1),
        p_value=best["p"],
        level=best["level"],
    )
    return out


# ----------------------------------------------------------------------------- the false-positive threshold
def fpr_threshold(real_logits: Any, *, target_fpr: float, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """The ``max_fpr`` dict of calibration.json: the lowest threshold (never below the Eq. 10 boundary 0) such that
    a real image's logit exceeds it with probability at most ``target_fpr``, with confidence ``1 - delta``.

    Raises :class:`GuaranteeError` (saying how many reals are needed) when ``n`` reals cannot certify the target."""
    target_fpr = _check_prob("target FPR", target_fpr)
    delta = _check_prob("delta", delta)
    x = np.sort(np.asarray(real_logits, dtype=np.float64).reshape(-1))[::-1]  # descending
    n = int(x.size)
    if n == 0 or cp_upper(0, n, delta) > target_fpr:
        need = reals_needed(target_fpr, delta)
        raise GuaranteeError(
            f"{n} real image(s) cannot certify FPR <= {100 * target_fpr:g}% at {100 * (1 - delta):g}% confidence: "
            f"at least {need} reals are needed (with no false positive among them)"
        )
    k = 0  # the largest k whose bound stays within the target (the bound grows with k)
    while k + 1 < n and cp_upper(k + 1, n, delta) <= target_fpr:
        k += 1
    threshold = max(float(x[k]), 0.0)  # the (k+1)-th largest real logit; fake also needs the Eq. 10 label
    fp = int((x > threshold).sum())
    return {
        "method": FPR_METHOD,
        "target": target_fpr,
        "delta": delta,
        "n_real": n,
        "k_allowed": k,
        "threshold": threshold,
        "certified_fpr": cp_upper(k, n, delta),
        "empirical_fpr": fp / n,
        "false_positives": fp,
    }


# ----------------------------------------------------------------------------- checking on a test set
def check_guarantee(guarantee: dict[str, Any] | None, logits: Any, labels: Any) -> dict[str, Any] | None:
    """Did the test set honour the band's promise? The accuracy outside the certified band against the target
    (a test set is itself a sample: its Clopper–Pearson interval at the same ``delta`` is given beside it)."""
    if not guarantee or not guarantee.get("found"):
        return None
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(int)
    lo, hi = guarantee["band"]
    outside = (x < lo) | (x > hi)
    n_out = int(outside.sum())
    correct = int(((x[outside] > 0).astype(int) == y[outside]).sum())
    acc = correct / n_out if n_out else None
    d = float(guarantee["delta"])
    return {
        "target": guarantee["target"],
        "delta": d,
        "n": int(x.size),
        "n_outside": n_out,
        "coverage": n_out / max(int(x.size), 1),
        "accuracy_outside": acc,
        "interval": [cp_lower(correct, n_out, d / 2), 1.0 - cp_lower(n_out - correct, n_out, d / 2)] if n_out else None,
        "honoured": None if acc is None else bool(acc >= guarantee["target"]),
    }


def check_max_fpr(max_fpr: dict[str, Any] | None, logits: Any, labels: Any, sources: Any) -> dict[str, Any] | None:
    """The FPR of the stored threshold on the test reals, pooled and per source, against the certified target."""
    if not max_fpr:
        return None
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(int)
    src = np.asarray(sources).reshape(-1)
    thr = float(max_fpr["threshold"])
    real = y == 0
    flagged = x > thr
    per = {}
    for s in dict.fromkeys(src[real].tolist()):
        idx = real & (src == s)
        per[str(s)] = {"n_real": int(idx.sum()), "fpr": float(flagged[idx].mean())}
    n_real = int(real.sum())
    fpr = float(flagged[real].mean()) if n_real else None
    return {
        "target": max_fpr["target"],
        "delta": max_fpr["delta"],
        "threshold": thr,
        "n_real": n_real,
        "fpr": fpr,
        "held": None if fpr is None else bool(fpr <= float(max_fpr["target"])),
        "tpr": float(flagged[~real].mean()) if (~real).any() else None,
        "sources": per,
    }


def promise_text(guarantee: dict[str, Any] | None, max_fpr: dict[str, Any] | None) -> str:
    """The promise in words (the web page and ``predict`` show it next to the verdict), as certified at calibration
    time; :func:`promise_for` adds whether it covers the verdicts of a given mode and view."""
    parts = []
    if max_fpr:
        parts.append(
            f"on images like the validation set, at most {100 * max_fpr['target']:g}% of real photos are flagged "
            f"as fake, with {100 * (1 - max_fpr['delta']):g}% confidence"
        )
    if guarantee and guarantee.get("found"):
        w = guarantee.get("half_width")
        where = "outside the certified band" + (f" (|logit| > {w:.4g})" if w is not None else "")
        text = (
            f"{where}, the Eq. 10 label is right on at least {100 * guarantee['target']:g}% of images like the "
            f"validation set, with {100 * (1 - guarantee['delta']):g}% confidence"
        )
        thr = float(max_fpr.get("threshold", 0.0)) if max_fpr else 0.0
        if thr > (w or 0.0):  # LTT certified the band alone: (w, thr] is counted there by its (fake) label
            text += (
                f" (certified for the band alone: logits in (0, {thr:.4g}] get 'uncertain' from the FPR threshold "
                "but are counted there by their label)"
            )
        parts.append(text)
    if not parts:
        return NO_PROMISE
    return "; ".join(parts)


#: The promise when there is none (no certificate, or verdicts outside what was certified).
NO_PROMISE = "no certified calibration: these verdicts carry no stated error guarantee"
#: What a calibration.json without ``fitted_on.mode`` / ``fitted_on.view`` was fitted on (files from before they
#: were recorded: calibrate always scored full Eq. 10 on the checkpoint's view, ``center`` then).
DEFAULT_FITTED = {"mode": "full", "view": "center"}


def fitted_scope(calibration: Any) -> tuple[str, str]:
    """``(mode, view)`` the calibration was fitted on (:data:`DEFAULT_FITTED` for older files)."""
    f = getattr(calibration, "fitted_on", None) or {}
    return str(f.get("mode") or DEFAULT_FITTED["mode"]), str(f.get("view") or DEFAULT_FITTED["view"])


def has_certificates(calibration: Any) -> bool:
    g = getattr(calibration, "guarantee", None)
    return bool(getattr(calibration, "max_fpr", None) or (g and g.get("found")))


def scope_mismatch(calibration: Any, *, mode: str = "full", view: str | None = None) -> str | None:
    """The one rule on what a calibration covers: its certificates (and its fit) hold for the mode and view it was
    fitted on. ``None`` when verdicts scored under ``mode`` and ``view`` (None: the fitted view) match them, else
    the mismatch in words ("not under --mode cascade", "none for the tiles view")."""
    if calibration is None:
        return None
    f_mode, f_view = fitted_scope(calibration)
    why = []
    if mode != f_mode:
        why.append(f"not under --mode {mode}")
    if view is not None and view != f_view:
        why.append(f"none for the {view} view")
    if not why:
        return None
    return f"certified for --mode {f_mode} on the {f_view} view; " + ", and ".join(why)


def promise_for(calibration: Any, *, mode: str = "full", view: str | None = None) -> str:
    """The promise that covers verdicts scored under ``mode`` and ``view``: :func:`promise_text` when they match
    what the calibration was fitted on, otherwise the statement that there is none and why. Used by the service,
    ``predict`` and ``evaluate`` alike."""
    if calibration is None or not has_certificates(calibration):
        return NO_PROMISE
    why = scope_mismatch(calibration, mode=mode, view=view)
    if why is not None:
        return f"no promise for these verdicts: the calibration is {why}"
    return promise_text(getattr(calibration, "guarantee", None), getattr(calibration, "max_fpr", None))


def warn_scope(calibration: Any, *, mode: str = "full", view: str | None = None) -> str | None:
    """Log one warning when a calibration is used outside what it was fitted on: another view (its probabilities,
    band and thresholds are applied as they are, uncertified), or, with certificates, another mode. Returns the
    mismatch (None: none)."""
    why = scope_mismatch(calibration, mode=mode, view=view)
    if why is None:
        return None
    f_mode, f_view = fitted_scope(calibration)
    if view is not None and view != f_view:
        log.warning(
            "calibration.json was fitted on the %s view but these images are scored on the %s view: its "
            "probabilities, band and thresholds are applied as they are, and no promise holds (calibrate with "
            "--view %s to get one)",
            f_view,
            view,
            view,
        )
    elif has_certificates(calibration):
        log.warning(
            "calibration.json certifies verdicts of --mode %s only: under --mode %s its promise does not hold (the "
            "calibration applies to the images the full Eq. 10 decides; the others keep their bare label)",
            f_mode,
            mode,
        )
    return why


# ----------------------------------------------------------------------------- workflow hooks
def attach_guarantee(cal: Any, logits: Any, labels: Any, *, target: float, delta: float) -> None:
    """Replace the empirical band of the :class:`~synerdetect.engine.calibration.Calibration` ``cal`` by the band
    certified by :func:`ltt_band` (the empirical one stays beside it in ``guarantee``); refuse when none is."""
    g = ltt_band(logits, labels, target=target, delta=delta)
    if not g["found"]:
        raise GuaranteeError(
            f"no candidate band certifies {100 * target:g}% accuracy outside it at {100 * (1 - delta):g}% "
            f"confidence on these {g['n']} validation images: lower --target-accuracy, raise --delta or give a "
            "larger validation set"
        )
    m = cal.metrics
    g["empirical_band"] = cal.band
    g["empirical_band_accuracy"] = m.get("selective_accuracy")
    g["empirical_band_coverage"] = m.get("coverage")
    cal.guarantee = g
    cal.band = g["band"]
    m.update(
        band_found=True,
        band_width=2 * g["half_width"],
        coverage=g["coverage"],
        selective_accuracy=g["empirical_accuracy"],
        n_uncertain=g["n"] - g["n_outside"],
    )


def attach_max_fpr(cal: Any, logits: Any, labels: Any, *, target_fpr: float, delta: float) -> None:
    """Store the certified threshold of :func:`fpr_threshold` (fitted on the reals) in ``cal.max_fpr`` and
    recount the validation coverage: fake labels at or below the threshold are now ``uncertain`` too."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(int)
    cal.max_fpr = fpr_threshold(x[y == 0], target_fpr=target_fpr, delta=delta)
    sel = selective_metrics(y, x, cal.uncertain(x))
    cal.metrics.update(
        coverage=sel["coverage"], selective_accuracy=sel["selective_accuracy"], n_uncertain=sel["n_uncertain"]
    )


def tpr_at_fpr(labels: Any, logits: Any, fpr: float) -> float | None:
    """The highest TPR of a threshold whose FPR on these reals is at most ``fpr`` (``sklearn.metrics.roc_curve``;
    an oracle threshold per set: a property of the ranking, not of the stored operating point)."""
    from sklearn.metrics import roc_curve

    y = np.asarray(labels).reshape(-1).astype(int)
    if y.min() == y.max():
        return None
    f, t, _ = roc_curve(y, np.asarray(logits, dtype=np.float64).reshape(-1))
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def operating_section(records: Any, calibration: Any, *, mode: str = "full", view: str | None = None) -> dict[str, Any]:
    """The ``operating_points`` part of results.json: TPR at FPR 1 % and 5 % per generator, and, when the
    calibration holds them and they cover ``mode`` and ``view`` (:func:`scope_mismatch`), whether the certified
    band and FPR threshold held on these (test) records (otherwise ``None``: under the cascade the logits mix two
    scales, and another view was never certified)."""
    recs = list(records)
    x = np.array([r.logit for r in recs], dtype=np.float64)
    y = np.array([r.label for r in recs], dtype=int)
    g = np.array([r.generator for r in recs])
    per = {}
    for gen in dict.fromkeys(g.tolist()):
        idx = g == gen
        per[gen] = {"tpr_at_fpr_1": tpr_at_fpr(y[idx], x[idx], 0.01), "tpr_at_fpr_5": tpr_at_fpr(y[idx], x[idx], 0.05)}
    flagged: dict[str, Any] = {}  # what users see: the share of each source's reals given the verdict "fake"
    for gen in dict.fromkeys(g.tolist()):
        reals = [r for r in recs if r.generator == gen and r.label == 0]
        if reals:
            fpr = sum(r.verdict == "fake" for r in reals) / len(reals) if reals[0].verdict is not None else None
            flagged[gen] = {"n_real": len(reals), "fpr": fpr}
    covered = scope_mismatch(calibration, mode=mode, view=view) is None
    return {
        "generators": per,
        "real_flagged": flagged,
        "guarantee": check_guarantee(getattr(calibration, "guarantee", None), x, y) if covered else None,
        "max_fpr": check_max_fpr(getattr(calibration, "max_fpr", None), x, y, g) if covered else None,
        "promise": promise_for(calibration, mode=mode, view=view),
    }


def operating_markdown(sec: dict[str, Any]) -> str:
    """results.md lines for :func:`operating_section`."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    lines = ["**Operating points** (TPR at a fixed FPR, threshold chosen per generator on its own reals)", ""]
    lines += ["| generator | TPR @ FPR 1% | TPR @ FPR 5% |", "|---|---:|---:|"]
    for gen, m in sec["generators"].items():
        lines.append(f"| {gen} | {pct(m['tpr_at_fpr_1'])} | {pct(m['tpr_at_fpr_5'])} |")
    lines += ["", f"Promise of the calibration: {sec['promise']}."]
    if sec.get("real_flagged"):
        lines.append(
            "- reals given the verdict fake, per source: "
            + ", ".join(f"{s} {pct(v['fpr'])}% of {v['n_real']}" for s, v in sec["real_flagged"].items())
        )
    mf = sec.get("max_fpr")
    if mf:
        held = {True: "held", False: "NOT held", None: "not measurable (no real image)"}[mf["held"]]
        lines.append(
            f"- certified FPR <= {100 * mf['target']:g}% (threshold logit > {mf['threshold']:+.4g}): test FPR "
            f"{pct(mf['fpr'])}% on {mf['n_real']} reals: {held}; TPR at that threshold {pct(mf['tpr'])}%"
        )
        lines.append(
            "- FPR on the reals of each source: "
            + ", ".join(f"{s} {pct(v['fpr'])}% ({v['n_real']})" for s, v in mf["sources"].items())
        )
    gu = sec.get("guarantee")
    if gu:
        honoured = {True: "honoured", False: "NOT honoured", None: "not measurable (no image outside the band)"}
        iv = gu["interval"]
        ci = f" (two-sided {100 * (1 - gu['delta']):g}% interval {pct(iv[0])}-{pct(iv[1])}%)" if iv else ""
        lines.append(
            f"- certified accuracy >= {100 * gu['target']:g}% outside the band: test accuracy outside it "
            f"{pct(gu['accuracy_outside'])}% on {gu['n_outside']}/{gu['n']} images{ci}: {honoured[gu['honoured']]}"
        )
    return "\n".join(lines) + "\n"


def format_guarantees(guarantee: dict[str, Any] | None, max_fpr: dict[str, Any] | None) -> str:
    """What ``synerdetect calibrate`` prints about the certificates."""
    lines = []
    if guarantee:
        g = guarantee
        lines.append(
            f"  guarantee ({g['method']}, delta {g['delta']:g}, n {g['n']}): band |logit| <= {g['half_width']:.4g}, "
            f"certified accuracy outside it >= {100 * g['target']:g}%; "
            f"validation: {100 * g['empirical_accuracy']:.2f}% "
            f"on {g['n_outside']}/{g['n']} images (coverage {100 * g['coverage']:.1f}%), "
            f"{g['n_certified']}/{g['n_candidates']} candidate bands certified"
        )
        eb, ea = g.get("empirical_band"), g.get("empirical_band_accuracy")
        if eb is not None and ea is not None:
            lines.append(
                f"  (the empirical band [{eb[0]:+.4g}, {eb[1]:+.4g}] reaches {100 * ea:.2f}% on this validation set, "
                f"coverage {100 * (g.get('empirical_band_coverage') or 0):.1f}%, with no stated confidence)"
            )
    if max_fpr:
        f = max_fpr
        lines.append(
            f"  max FPR ({f['method']}): 'fake' needs logit > {f['threshold']:+.4g}; certified FPR <= "
            f"{100 * f['certified_fpr']:.2f}% (target {100 * f['target']:g}%) at {100 * (1 - f['delta']):g}% "
            f"confidence; validation: {f['false_positives']}/{f['n_real']} reals flagged "
            f"(FPR {100 * f['empirical_fpr']:.2f}%)"
        )
    lines.append(f"  promise: {promise_text(guarantee, max_fpr)}")
    return "\n".join(lines)
