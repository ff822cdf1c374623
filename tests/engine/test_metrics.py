"""Metrics checked against hand-worked values and independent numpy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from synerdetect.engine.metrics import (
    DECISION_RULE,
    ScoreRecord,
    generator_metrics,
    normalize_format,
    robustness_table,
    summarize,
)

_COUNTER = [0]  # shared across calls on purpose: unique paths


def rec(gen, label, logit, fmt="PNG", i=_COUNTER):
    i[0] += 1
    s_real = 0.25
    s_fake = s_real + logit
    return ScoreRecord(
        f"{gen}/{i[0]}.png",
        gen,
        label,
        s_real,
        s_fake,
        s_fake - s_real,
        1.0 / (1.0 + math.exp(-(s_fake - s_real))),
        fmt,
    )


def stepwise_ap(scores, labels):
    """AP = sum_k (R_k - R_{k-1}) * P_k over distinct thresholds, descending (ties grouped)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    n_pos = labels.sum()
    ap, prev_r = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        sel = scores >= t
        tp = labels[sel].sum()
        p, r = tp / sel.sum(), tp / n_pos
        ap += (r - prev_r) * p
        prev_r = r
    return ap


# Generator A (hand-worked): real logits -2, -0.5, 0.7 ; fake 1.5, 0.3, -1.0
A = [("A", 0, -2.0), ("A", 0, -0.5), ("A", 0, 0.7), ("A", 1, 1.5), ("A", 1, 0.3), ("A", 1, -1.0)]
# Generator B: only fake images
B = [("B", 1, 0.2), ("B", 1, -0.1)]
# Generator C: real JPEG / fake PNG (format shortcut), perfectly separated
C = [("C", 0, -1.0, "JPEG"), ("C", 0, -2.0, "jpg"), ("C", 1, 3.0, "PNG"), ("C", 1, 4.0, "PNG")]
# Generator D: ties in the scores and a fake with logit exactly 0 (s_fake == s_real -> real)
D = [("D", 1, 1.0), ("D", 0, 0.5), ("D", 1, 0.5), ("D", 0, -1.0), ("D", 1, 0.0)]


def make(rows):
    return [rec(*r) for r in rows]


@pytest.fixture
def records():
    return make(A + B + C + D)


def test_hand_worked_generator_A(records):
    m = generator_metrics(records)["A"]
    assert m["n_real"] == 3 and m["n_fake"] == 3 and m["n_images"] == 6
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["real_acc"] == pytest.approx(2 / 3)
    assert m["fake_acc"] == pytest.approx(2 / 3)
    # ranking: F(1.5) R(0.7) F(0.3) R(-0.5) F(-1.0) R(-2.0) -> precisions at hits 1, 2/3, 3/5
    hand = (1 + 2 / 3 + 3 / 5) / 3
    assert hand == pytest.approx(34 / 45)
    logits = [r[2] for r in A]
    labels = [r[1] for r in A]
    assert stepwise_ap(logits, labels) == pytest.approx(hand)
    assert average_precision_score(labels, logits) == pytest.approx(hand)
    assert m["ap"] == pytest.approx(hand)
    assert m["ap_undefined"] is None
    assert m["format_shortcut_warning"] is None
    assert m["formats"] == {"real": {"PNG": 3}, "fake": {"PNG": 3}}


def test_ties_and_zero_logit_decision(records):
    m = generator_metrics(records)["D"]
    # preds: 1.0->1 ok, 0.5 real->1 wrong, 0.5 fake->1 ok, -1 real->0 ok, 0.0 fake->0 wrong
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["real_acc"] == pytest.approx(1 / 2)
    assert m["fake_acc"] == pytest.approx(2 / 3)
    logits, labels = [r[2] for r in D], [r[1] for r in D]
    # thresholds 1.0: P=1 R=1/3 ; 0.5: P=2/3 R=2/3 ; 0.0: P=3/4 R=1 ; -1.0 adds nothing
    hand = (1 / 3) * 1 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 4)
    assert stepwise_ap(logits, labels) == pytest.approx(hand)
    assert m["ap"] == pytest.approx(hand)


def test_single_class_generator_has_no_ap(records):
    m = generator_metrics(records)["B"]
    assert m["ap"] is None
    assert m["ap_undefined"] == "no real images"
    assert m["real_acc"] is None and m["real_acc_undefined"] == "no real images"
    assert m["fake_acc"] == pytest.approx(0.5) and m["fake_acc_undefined"] is None
    assert m["acc"] == pytest.approx(0.5)
    only_real = generator_metrics(make([("R", 0, -1.0), ("R", 0, 2.0)]))["R"]
    assert only_real["ap"] is None and only_real["ap_undefined"] == "no fake images"
    assert only_real["fake_acc"] is None and only_real["fake_acc_undefined"] == "no fake images"
    assert only_real["real_acc"] == pytest.approx(0.5)


def test_format_shortcut_warning(records):
    gm = generator_metrics(records)
    c = gm["C"]
    assert c["formats"] == {"real": {"JPEG": 2}, "fake": {"PNG": 2}}  # jpg normalised
    assert c["format_shortcut_warning"] and "JPEG" in c["format_shortcut_warning"]
    assert "PNG" in c["format_shortcut_warning"]
    assert c["ap"] == pytest.approx(1.0) and c["acc"] == pytest.approx(1.0)
    # overlapping formats, single-class and unknown formats do not warn
    assert gm["A"]["format_shortcut_warning"] is None
    assert gm["B"]["format_shortcut_warning"] is None
    mixed = make([("M", 0, -1, "JPEG"), ("M", 0, -1, "PNG"), ("M", 1, 1, "PNG")])
    assert generator_metrics(mixed)["M"]["format_shortcut_warning"] is None
    unk = make([("U", 0, -1, None), ("U", 1, 1, "PNG")])
    assert generator_metrics(unk)["U"]["format_shortcut_warning"] is None
    s = summarize(records)
    assert len(s["warnings"]) == 1 and s["warnings"][0].startswith("C:")


def test_summarize_means_exclude_undefined(records):
    s = summarize(records)
    gm = s["generators"]
    assert list(gm) == ["A", "B", "C", "D"]
    assert s["n_images"] == len(records) == 17
    assert s["decision_rule"] == DECISION_RULE
    mean = s["mean"]
    accs = [4 / 6, 1 / 2, 1.0, 3 / 5]
    assert mean["acc"] == pytest.approx(np.mean(accs))
    aps = [gm["A"]["ap"], gm["C"]["ap"], gm["D"]["ap"]]
    assert mean["ap"] == pytest.approx(np.mean(aps))
    assert mean["ap_n_generators"] == 3
    assert mean["ap_excluded"] == ["B"]
    assert mean["real_acc"] == pytest.approx(np.mean([2 / 3, 1.0, 1 / 2]))
    assert mean["real_acc_n_generators"] == 3
    assert mean["fake_acc"] == pytest.approx(np.mean([2 / 3, 1 / 2, 1.0, 2 / 3]))
    for g in gm.values():
        assert {"acc", "real_acc", "fake_acc", "ap", "n_real", "n_fake", "formats"} <= set(g)


def test_mean_ap_none_when_no_generator_defined():
    s = summarize(make([("X", 1, 1.0), ("Y", 0, 1.0)]))
    assert s["mean"]["ap"] is None
    assert s["mean"]["ap_n_generators"] == 0
    assert s["mean"]["ap_undefined"]
    assert s["mean"]["acc"] == pytest.approx(0.5)


def test_accuracy_matches_plain_numpy_on_random_data():
    rng = np.random.default_rng(0)
    rows = []
    for g in ("g1", "g2", "g3"):
        for _ in range(40):
            y = int(rng.integers(0, 2))
            rows.append((g, y, float(rng.normal(1.0 if y else -1.0, 1.5))))
    s = summarize(make(rows))
    for g in ("g1", "g2", "g3"):
        y = np.array([r[1] for r in rows if r[0] == g])
        z = np.array([r[2] for r in rows if r[0] == g])
        assert s["generators"][g]["acc"] == pytest.approx(np.mean((z > 0) == y))
        assert s["generators"][g]["ap"] == pytest.approx(stepwise_ap(z, y))


def test_score_record_helpers_and_validation():
    r = ScoreRecord.from_scores("a.png", "G", 1, 0.2, 0.5, tau=0.5, format="jpg")
    assert r.logit == pytest.approx(0.3)
    assert r.prob_fake == pytest.approx(1 / (1 + math.exp(-0.6)))
    assert r.pred == 1
    assert ScoreRecord.from_dict(r.to_dict()) == r
    # dicts are accepted by the metric functions
    assert generator_metrics([r.to_dict()])["G"]["n_fake"] == 1
    assert normalize_format("jpg") == "JPEG" and normalize_format(None) == "UNKNOWN"
    with pytest.raises(ValueError):
        ScoreRecord("p", "G", 2, 0.0, 1.0, 1.0, 0.7)
    with pytest.raises(ValueError):
        ScoreRecord("p", "G", 1, 0.0, 1.0, float("nan"), 0.7)
    with pytest.raises(ValueError):
        summarize([])


def test_robustness_table_nested_and_flat(records):
    s_clean = summarize(records)
    lv1 = summarize(make(A + C))
    lv2 = summarize(make(B + D))  # only D has a defined AP
    only_b = summarize(make(B))  # no defined AP
    nested = robustness_table({"jpeg": {"q95": lv1, "q60": lv2}, "blur": {"sigma1": make(B)}}, clean=s_clean)
    j = nested["perturbations"]["jpeg"]
    assert list(j["levels"]) == ["q95", "q60"]
    assert j["levels"]["q95"]["acc"] == pytest.approx(lv1["mean"]["acc"])
    assert j["levels"]["q60"]["ap"] == pytest.approx(lv2["mean"]["ap"])
    assert j["mAcc"] == pytest.approx((lv1["mean"]["acc"] + lv2["mean"]["acc"]) / 2)
    assert j["mAP"] == pytest.approx((lv1["mean"]["ap"] + lv2["mean"]["ap"]) / 2)
    assert j["n_levels"] == 2 and j["mAP_n_levels"] == 2
    b = nested["perturbations"]["blur"]
    assert b["mAP"] is None and b["mAP_undefined"]
    assert b["mAcc"] == pytest.approx(only_b["mean"]["acc"])
    assert nested["clean"]["acc"] == pytest.approx(s_clean["mean"]["acc"])

    flat = robustness_table({"jpeg@q95": lv1, "jpeg@q60": lv2, "blur@sigma1": only_b})
    assert flat["perturbations"]["jpeg"] == j
    assert flat["perturbations"]["blur"]["mAcc"] == b["mAcc"]
    assert flat["clean"] is None
    with pytest.raises(ValueError):
        robustness_table({"jpeg": lv1})


# --------------------------------------------------------------------------- calibration metrics
def test_ece_hand_worked():
    from synerdetect.engine.metrics import expected_calibration_error, reliability_bins

    # 15 bins of width 1/15: 0.05 -> bin 0; 0.22, 0.25 -> bin 3 (0.2, 0.2667]; 0.61, 0.62, 0.64 -> bin 9
    # (0.6, 0.6667]; 0.95 -> bin 14.
    p = [0.05, 0.22, 0.25, 0.61, 0.62, 0.64, 0.95]
    y = [0, 1, 0, 1, 1, 0, 1]
    # |0 - .05| * 1 + |1/2 - .235| * 2 + |2/3 - .623333| * 3 + |1 - .95| * 1 = .05 + .53 + .13 + .05 = .76
    assert expected_calibration_error(y, p) == pytest.approx(0.76 / 7)
    bins = reliability_bins(y, p)
    assert [b["count"] for b in bins] == [1, 2, 3, 1]
    assert [round(b["lo"] * 15) for b in bins] == [0, 3, 9, 14]
    assert bins[1]["mean_prob"] == pytest.approx(0.235) and bins[1]["frac_fake"] == pytest.approx(0.5)
    # a perfectly calibrated case: each bin's fake fraction equals its (single) probability value
    assert expected_calibration_error([0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0]) == 0.0
    # bins are closed on the right: 1/15 is in the first bin, 1.0 in the last; all in one bin -> |mean diff|
    edge = reliability_bins([1, 0], [1 / 15, 1.0])
    assert [b["count"] for b in edge] == [1, 1] and edge[0]["lo"] == 0.0 and edge[1]["hi"] == 1.0
    assert expected_calibration_error([1, 0, 0], [0.3, 0.3, 0.3], n_bins=1) == pytest.approx(abs(1 / 3 - 0.3))


def test_ece_brier_nll_against_independent_computations():
    from sklearn.metrics import brier_score_loss, log_loss

    from synerdetect.engine.metrics import probability_metrics

    rng = np.random.default_rng(3)
    p = rng.random(500)
    y = (rng.random(500) < p**1.5).astype(int)
    m = probability_metrics(y, p)
    # ECE by a plain loop over 15 equal-width bins (right-closed, first bin includes 0)
    ece = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        sel = (p > lo) & (p <= hi) if b else (p <= hi)
        if sel.any():
            ece += sel.sum() / p.size * abs(y[sel].mean() - p[sel].mean())
    assert m["ece"] == pytest.approx(ece, abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p)) == pytest.approx(np.mean((p - y) ** 2))
    assert m["nll"] == pytest.approx(log_loss(y, p))
    assert m["nll"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert sum(b["count"] for b in m["bins"]) == 500 and m["n_bins"] == 15
    # a single class still has Brier, NLL and ECE
    one = probability_metrics([1, 1], [0.9, 0.6])
    assert one["brier"] == pytest.approx((0.01 + 0.16) / 2) and one["ece"] == pytest.approx(0.25)


def test_selective_metrics():
    from synerdetect.engine.metrics import selective_metrics

    y = [0, 0, 1, 1, 1]
    x = [-2.0, 0.1, 0.05, 3.0, -0.2]  # correct: yes, no, yes, yes, no
    m = selective_metrics(y, x, [False, True, True, False, False])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["coverage"] == pytest.approx(3 / 5) and m["n_covered"] == 3 and m["n_uncertain"] == 2
    assert m["selective_accuracy"] == pytest.approx(2 / 3)
    assert selective_metrics(y, x, [True] * 5)["selective_accuracy"] is None


def test_size_shortcut_warning_and_record_fields():
    def sized(label, size, i):
        return ScoreRecord(f"S/{label}_{i}.png", "S", label, 0.0, 0.1, 0.1, 0.6, "PNG", size=size)

    disjoint = [sized(0, (64, 48), 0), sized(0, (48, 64), 1), sized(1, (64, 64), 2)]
    m = generator_metrics(disjoint)["S"]
    assert m["size_shortcut_warning"] and "64x64" in m["size_shortcut_warning"]
    assert m["sizes"] == {"real": {"48x64": 1, "64x48": 1}, "fake": {"64x64": 1}}
    assert m["format_shortcut_warning"] is None
    assert summarize(disjoint)["warnings"] == [f"S: {m['size_shortcut_warning']}"]
    shared = disjoint + [sized(0, (64, 64), 3)]
    assert generator_metrics(shared)["S"]["size_shortcut_warning"] is None
    unknown = disjoint + [sized(1, None, 4)]
    assert generator_metrics(unknown)["S"]["size_shortcut_warning"] is None
    # new optional fields round-trip and are validated; old dicts without them still load
    r = ScoreRecord("a.png", "G", 1, 0.0, 1.0, 1.0, 0.7, "PNG", verdict="uncertain", calibrated=True, size=[5, 7])
    assert r.size == (5, 7) and ScoreRecord.from_dict(r.to_dict()) == r
    old = {k: v for k, v in r.to_dict().items() if k not in ("verdict", "calibrated", "size", "format")}
    assert ScoreRecord.from_dict(old).verdict is None
    with pytest.raises(ValueError):
        ScoreRecord("a.png", "G", 1, 0.0, 1.0, 1.0, 0.7, verdict="maybe")
