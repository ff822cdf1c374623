"""Certified operating points (engine/guarantees.py): the exact binomial bounds against scipy's own tests, the
refusals, the verdict rule with a certified FPR threshold, the test-set checks on hand-worked cases, and a
simulation of the guarantees over resampled validation sets of a known score distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from synerdetect.engine.calibration import Calibration, apply_calibration, calibration_section, search_band
from synerdetect.engine.evaluate import finish_records
from synerdetect.engine.guarantees import (
    BAND_GRID,
    GuaranteeError,
    check_guarantee,
    check_max_fpr,
    cp_lower,
    cp_upper,
    fpr_threshold,
    ltt_band,
    operating_section,
    promise_for,
    promise_text,
    reals_needed,
    tpr_at_fpr,
)
from synerdetect.engine.metrics import ScoreRecord

# ----------------------------------------------------------------------------- exact bounds


def test_299_reals_with_no_false_positive_certify_one_percent_at_95():
    # scipy's exact binomial test: 0 events in 299 rejects "rate >= 1 %" at 5 %, in 298 it does not
    assert binomtest(0, 299, 0.01, alternative="less").pvalue <= 0.05
    assert binomtest(0, 298, 0.01, alternative="less").pvalue > 0.05
    assert reals_needed(0.01, 0.05) == 299
    assert reals_needed(0.05, 0.05) == 59  # 0.95^59 = 0.0485, 0.95^58 = 0.0510
    with pytest.raises(GuaranteeError, match=r"298 real image\(s\) cannot certify .* at least 299 reals"):
        fpr_threshold(np.full(298, -1.0), target_fpr=0.01, delta=0.05)


@pytest.mark.parametrize(("k", "n"), [(0, 50), (3, 120), (17, 400)])
def test_clopper_pearson_bounds_match_scipy(k, n):
    # a one-sided bound at 1 - delta is the end of the two-sided exact interval at 1 - 2 delta
    ci = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact")
    assert cp_upper(k, n, 0.05) == pytest.approx(ci.high, rel=1e-9)
    assert cp_lower(k, n, 0.05) == pytest.approx(ci.low, rel=1e-9, abs=1e-12)


def test_fpr_threshold_is_the_k_plus_first_largest_real():
    rng = np.random.default_rng(1)
    reals = rng.normal(-1.0, 1.0, 1000)
    f = fpr_threshold(reals, target_fpr=0.01, delta=0.05)
    # k: the largest count of false positives whose exact upper bound stays within 1 % (scipy, by search)
    ks = [k for k in range(50) if binomtest(k, 1000).proportion_ci(0.90, method="exact").high <= 0.01]
    assert f["k_allowed"] == max(ks)
    assert f["threshold"] == max(0.0, np.sort(reals)[::-1][max(ks)])
    assert f["false_positives"] == int((reals > f["threshold"]).sum()) <= max(ks)
    assert f["certified_fpr"] <= 0.01


def test_verdict_with_a_certified_threshold_and_a_band():
    cal = Calibration(band=[-0.05, 0.05], max_fpr={"threshold": 0.2, "target": 0.01, "delta": 0.05})
    x = np.array([-0.3, -0.01, 0.03, 0.1, 0.2, 0.25])
    out = apply_calibration(x, 0.07, cal)
    # band -> uncertain; 0 < logit <= threshold -> uncertain (the model leans fake, the operating point does not
    # vouch for it); only above the threshold -> fake
    assert out["verdict"] == ["real", "uncertain", "uncertain", "uncertain", "uncertain", "fake"]
    assert apply_calibration(x, 0.07, Calibration(band=[-0.05, 0.05]))["verdict"][3:] == ["fake"] * 3


def test_saved_certificates_round_trip(tmp_path):
    cal = Calibration(guarantee={"method": "m", "delta": 0.05, "target": 0.9}, max_fpr={"threshold": 0.1})
    cal.save(tmp_path)
    assert Calibration.load(tmp_path) == cal


# ----------------------------------------------------------------------------- test-set checks, by hand


def test_checks_on_a_hand_worked_test_set():
    g = {"found": True, "band": [-0.1, 0.1], "target": 0.75, "delta": 0.05}
    x = np.array([-0.5, -0.3, 0.05, 0.2, 0.4, -0.2, 0.3, -0.05])
    y = np.array([0, 1, 1, 1, 1, 0, 0, 0])
    c = check_guarantee(g, x, y)
    # outside the band: -0.5 (right), -0.3 (wrong), 0.2, 0.4 (right), -0.2 (right), 0.3 (wrong): 4 / 6
    assert c["n_outside"] == 6 and c["accuracy_outside"] == pytest.approx(4 / 6) and c["honoured"] is False
    src = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    m = check_max_fpr({"threshold": 0.25, "target": 0.2, "delta": 0.05}, x, y, src)
    # reals: a: -0.5; b: -0.2, 0.3 (flagged), -0.05 -> FPR a 0, b 1/3, pooled 1/4 > 0.2
    assert m["sources"] == {"a": {"n_real": 1, "fpr": 0.0}, "b": {"n_real": 3, "fpr": pytest.approx(1 / 3)}}
    assert m["fpr"] == pytest.approx(0.25) and m["held"] is False
    assert m["tpr"] == pytest.approx(1 / 4)  # fakes: -0.3, 0.05, 0.2, 0.4 -> only 0.4 above 0.25
    # TPR at FPR: with the reals of set b at -0.2, 0.3, -0.05 and fakes at 0.4, 0.5: FPR 0 keeps both fakes
    assert tpr_at_fpr([0, 0, 0, 1, 1], [-0.2, 0.3, -0.05, 0.4, 0.5], 0.0) == 1.0
    assert tpr_at_fpr([0, 0, 0, 1, 1], [-0.2, 0.3, -0.05, 0.1, 0.5], 0.0) == 0.5


def test_promise_text_says_there_is_none_without_certificates():
    assert "no certified calibration" in promise_text(None, None)
    t = promise_text(None, {"target": 0.01, "delta": 0.05})
    assert "at most 1% of real photos are flagged" in t and "95% confidence" in t


CERTIFIED = {
    "guarantee": {"found": True, "band": [-0.05, 0.05], "half_width": 0.05, "target": 0.9, "delta": 0.05},
    "max_fpr": {"threshold": 0.2, "target": 0.01, "delta": 0.05},
}


def test_the_band_alone_is_certified_when_the_threshold_widens_uncertain():
    t = promise_text(**CERTIFIED)
    # LTT certified |logit| > 0.05 by the Eq. 10 label; the threshold makes (0, 0.2] "uncertain" on top of it
    assert "outside the certified band (|logit| > 0.05), the Eq. 10 label is right on at least 90%" in t
    assert "certified for the band alone" in t and "(0, 0.2]" in t
    assert "verdicts are right" not in t
    t0 = promise_text(CERTIFIED["guarantee"], {**CERTIFIED["max_fpr"], "threshold": 0.0})
    assert "band alone" not in t0  # the threshold adds no uncertain logit outside the band


def test_the_promise_covers_the_fitted_mode_and_view_only():
    old = Calibration(**CERTIFIED)  # a file from before fitted_on held mode and view: center, full
    assert promise_for(old) == promise_for(old, mode="full", view="center") == promise_text(**CERTIFIED)
    for mode in ("cascade", "perceptual"):
        t = promise_for(old, mode=mode, view="center")
        assert t.startswith("no promise") and f"not under --mode {mode}" in t and "at most 1%" not in t
        assert "certified for --mode full on the center view" in t
    t = promise_for(old, view="tiles")
    assert t.startswith("no promise") and "none for the tiles view" in t
    tiles = Calibration(**CERTIFIED, fitted_on={"mode": "full", "view": "tiles"})
    assert promise_for(tiles, view="tiles") == promise_text(**CERTIFIED)
    assert "none for the center view" in promise_for(tiles, view="center")
    # no certificate: nothing to withdraw, the usual statement
    assert promise_for(Calibration(band=[-0.1, 0.1]), mode="cascade") == promise_text(None, None)


def _rec(logit: float, label: int, decided_by: str | None) -> ScoreRecord:
    return ScoreRecord("p", "g", label, 0.0, logit, logit, 0.5, decided_by=decided_by)


def test_evaluate_calibrates_only_what_the_full_eq10_decided_like_predict():
    """Under the cascade, a perceptual margin is on another scale: bare label and sigmoid(logit / tau), as the
    Scorer does; the certificates are not checked on the mixed logits and the promise says it does not apply."""
    cal = Calibration(a=2.0, **CERTIFIED)
    recs = [_rec(0.1, 1, "perceptual"), _rec(0.1, 1, "full"), _rec(-0.3, 0, "perceptual"), _rec(0.01, 0, "full")]
    out = finish_records(recs, tau=0.07, calibration=cal)
    assert [r.verdict for r in out] == ["fake", "uncertain", "real", "uncertain"]
    assert [r.calibrated for r in out] == [False, True, False, True]
    assert out[0].prob_fake == pytest.approx(1 / (1 + np.exp(-0.1 / 0.07)))
    assert out[1].prob_fake == pytest.approx(1 / (1 + np.exp(-0.2)))
    sec = calibration_section(out, tau=0.07, calibration=cal)  # the section counts what the records report
    assert sec["n_uncertain"] == 2 and sec["coverage"] == pytest.approx(0.5)
    op = operating_section(out, cal, mode="cascade", view="center")
    assert op["max_fpr"] is None and op["guarantee"] is None and "not under --mode cascade" in op["promise"]
    full = operating_section(out, cal, mode="full", view="center")
    assert full["max_fpr"]["n_real"] == 2 and full["promise"] == promise_text(**CERTIFIED)


# ----------------------------------------------------------------------------- simulation

MU, SIGMA = 1.5, 1.0  # logits: reals N(-MU, SIGMA), fakes N(+MU, SIGMA), classes equally likely (then scaled)
SCALE = 0.05  # the logit scale of a trained detector (differences of cosine similarities)


def true_accuracy_outside(lo: float, hi: float) -> float:
    """Accuracy of ``logit > 0`` on the images outside ``[lo, hi]`` under the known distribution (exact)."""
    lo, hi = lo / SCALE, hi / SCALE
    fake_right, real_right = norm.sf(max(hi, 0.0), MU, SIGMA), norm.cdf(min(lo, 0.0), -MU, SIGMA)
    fake_out = norm.sf(hi, MU, SIGMA) + norm.cdf(lo, MU, SIGMA)
    real_out = norm.sf(hi, -MU, SIGMA) + norm.cdf(lo, -MU, SIGMA)
    return (fake_right + real_right) / (fake_out + real_out)


@pytest.mark.slow  # ~1.5 s on 2 cores
def test_simulation_guaranteed_band_and_threshold_hold_empirical_band_does_not():
    from scipy.stats import binom

    rng = np.random.default_rng(2026)
    trials, n, target, delta = 200, 1000, 0.97, 0.05
    ltt_viol = emp_viol = fpr_viol = found = 0
    for _ in range(trials):
        y = rng.integers(0, 2, n)
        x = SCALE * rng.normal(np.where(y == 1, MU, -MU), SIGMA)
        g = ltt_band(x, y, target=target, delta=delta)
        if g["found"]:
            found += 1
            ltt_viol += true_accuracy_outside(*g["band"]) < target
        e = search_band(x, y, target)
        emp_viol += true_accuracy_outside(*e["band"]) < target
        f = fpr_threshold(x[y == 0], target_fpr=0.02, delta=delta)
        fpr_viol += norm.sf(f["threshold"] / SCALE, -MU, SIGMA) > 0.02
    slack = binom.ppf(0.999, trials, delta)  # violations of a procedure holding exactly delta stay below this
    assert found > 0.9 * trials  # the certified band is found, not dodged
    assert ltt_viol <= slack and fpr_viol <= slack
    assert emp_viol > 4 * slack  # the empirical band misses its own target far more often
    print(
        f"violation rates: LTT {ltt_viol / trials:.3f}, empirical {emp_viol / trials:.3f}, FPR {fpr_viol / trials:.3f}"
    )


def test_grid_is_fixed_and_widest_first():
    assert BAND_GRID[0] == 2.0 and BAND_GRID[-1] == 0.0 and list(BAND_GRID) == sorted(BAND_GRID, reverse=True)


def test_calibrate_checkpoint_refuses_too_few_reals_before_scoring(bench, tmp_path):
    from synerdetect.engine.calibrate import calibrate_checkpoint

    (tmp_path / "ckpt").mkdir()
    # 4 reals; no model is loaded (model=None and no weights there): the refusal comes first
    with pytest.raises(GuaranteeError, match=r"4 real image\(s\) cannot certify FPR <= 1% .* at least 299 reals"):
        calibrate_checkpoint(
            tmp_path / "ckpt", bench / "test", layout="cnndetection", max_fpr=0.01, min_per_class=1, progress=False
        )
    assert not (tmp_path / "ckpt" / "calibration.json").exists()


def test_attach_guarantee_replaces_the_band_and_keeps_the_empirical_one_beside_it():
    from synerdetect.engine.calibration import fit_calibration
    from synerdetect.engine.guarantees import attach_guarantee

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    x = SCALE * rng.normal(np.where(y == 1, MU, -MU), SIGMA)
    cal = fit_calibration(x, y, target_accuracy=0.97)
    empirical = list(cal.band)
    attach_guarantee(cal, x, y, target=0.97, delta=0.05)
    g = cal.guarantee
    assert cal.band == g["band"] == [-g["half_width"], g["half_width"]] and g["empirical_band"] == empirical
    outside = np.abs(x) > g["half_width"]
    assert g["n_outside"] == outside.sum() and cal.metrics["coverage"] == pytest.approx(outside.mean())
    assert g["empirical_accuracy"] == pytest.approx(((x > 0) == y)[outside].mean())
    assert cal.uncertain(x).sum() == (~outside).sum()
    with pytest.raises(GuaranteeError, match="no candidate band certifies 99.9% .* 1000 validation images"):
        attach_guarantee(cal, x, y, target=0.999, delta=0.05)


def test_attach_max_fpr_recounts_the_coverage():
    from synerdetect.engine.calibration import fit_calibration
    from synerdetect.engine.guarantees import attach_max_fpr

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 800)
    x = SCALE * rng.normal(np.where(y == 1, MU, -MU), SIGMA)
    cal = fit_calibration(x, y, target_accuracy=0.9)
    attach_max_fpr(cal, x, y, target_fpr=0.05, delta=0.05)
    thr, (lo, hi) = cal.max_fpr["threshold"], cal.band
    unc = ((x > 0) & (x <= thr)) | ((x >= lo) & (x <= hi))
    assert cal.metrics["n_uncertain"] == unc.sum() and cal.metrics["coverage"] == pytest.approx(1 - unc.mean())
    verdicts = apply_calibration(x, 0.07, cal)["verdict"]
    assert [v == "uncertain" for v in verdicts] == unc.tolist()
    assert all((v == "fake") == (xi > thr and not u) for v, xi, u in zip(verdicts, x, unc, strict=True))
