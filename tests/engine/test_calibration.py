"""Calibration: temperature / Platt fits against independent fits, the uncertain band against a brute-force search,
refusals, the saved file, calibrate_checkpoint and evaluate with a calibration on the tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from synerdetect.data import load_labelled
from synerdetect.engine.calibrate import calibrate_checkpoint
from synerdetect.engine.calibration import (
    BAND_ALL,
    CALIBRATION_NAME,
    Calibration,
    CalibrationError,
    apply_calibration,
    fit_calibration,
    format_calibration,
    search_band,
)

STEPS = 3
pytestmark = pytest.mark.usefixtures("one_thread")
BENCH = {
    "n_train": 1,
    "n_test": 12,
    "test_families": ("gan_upsample", "diffusion_latent"),
    "seed": 3,
}  # the conftest bench, with 12 test images per class of two families


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def synthetic(n, temperature, *, offset=0.0, scale=0.2, seed=0):
    """Logits with a known calibration: P(fake | x) = sigmoid(x / temperature + offset)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, scale, n)
    y = (rng.random(n) < sigmoid(x / temperature + offset)).astype(int)
    return x, y


def hand_ece(y, p, n_bins=15):
    """ECE with a plain loop (right-closed equal-width bins, the first one including 0)."""
    y, p = np.asarray(y), np.asarray(p)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = ((p > lo) if b else (p >= 0)) & (p <= hi)
        if sel.any():
            total += sel.sum() / p.size * abs(y[sel].mean() - p[sel].mean())
    return total


# ----------------------------------------------------------------------------- fits
def test_temperature_fit_recovers_the_known_temperature():
    from sklearn.linear_model import LogisticRegression

    x, y = synthetic(40_000, temperature=0.05, scale=0.1)
    cal = fit_calibration(x, y, tau=0.07)
    assert cal.method == "temperature" and cal.b == 0.0
    assert 1.0 / cal.a == pytest.approx(0.05, rel=0.05)
    assert cal.metrics["temperature"] == pytest.approx(1.0 / cal.a)
    # the same maximum-likelihood slope as an (unpenalised) logistic regression without intercept
    lr = LogisticRegression(fit_intercept=False, C=1e12, max_iter=10_000, tol=1e-12).fit(x[:, None], y)
    assert cal.a == pytest.approx(lr.coef_[0, 0], rel=1e-4)
    # before = sigmoid(x / tau) with the training tau, after = sigmoid(a x): ECE by hand on both
    assert cal.metrics["ece_before"] == pytest.approx(hand_ece(y, sigmoid(x / 0.07)), abs=1e-12)
    assert cal.metrics["ece_after"] == pytest.approx(hand_ece(y, sigmoid(cal.a * x)), abs=1e-12)
    assert cal.metrics["ece_after"] < cal.metrics["ece_before"]
    nll = -np.mean(y * np.log(sigmoid(cal.a * x)) + (1 - y) * np.log(sigmoid(-cal.a * x)))
    assert cal.metrics["nll_after"] == pytest.approx(nll, rel=1e-9)
    assert cal.metrics["brier_before"] == pytest.approx(np.mean((sigmoid(x / 0.07) - y) ** 2))
    assert cal.metrics["n_real"] + cal.metrics["n_fake"] == 40_000 == cal.metrics["n_images"]


def test_platt_matches_sklearn_and_a_direct_likelihood_fit():
    from scipy.optimize import minimize
    from sklearn.linear_model import LogisticRegression

    x, y = synthetic(5_000, temperature=0.1, offset=0.8, seed=1)
    cal = fit_calibration(x, y, method="platt")
    lr = LogisticRegression(C=1e6, max_iter=10_000, tol=1e-12).fit(x[:, None], y)
    assert cal.a == pytest.approx(lr.coef_[0, 0], rel=1e-3)
    assert cal.b == pytest.approx(lr.intercept_[0], abs=1e-3)

    def nll(w):
        z = w[0] * x + w[1]
        return np.mean(np.logaddexp(0.0, z) - y * z)

    direct = minimize(nll, x0=[1.0, 0.0], method="BFGS", options={"gtol": 1e-10}).x
    assert cal.a == pytest.approx(direct[0], rel=1e-3) and cal.b == pytest.approx(direct[1], abs=1e-3)
    assert cal.a == pytest.approx(10.0, rel=0.15) and cal.b == pytest.approx(0.8, abs=0.15)
    np.testing.assert_allclose(cal.prob_fake(x), sigmoid(cal.a * x + cal.b))


# ----------------------------------------------------------------------------- band
def brute_force_band(x, y, target):
    """Every interval [lo, hi] with lo <= 0 <= hi and ends at 0 or a logit: the narrowest (then the widest
    coverage) whose outside has accuracy >= target and is not empty."""
    ends_lo = sorted({0.0, *[v for v in x if v <= 0]})
    ends_hi = sorted({0.0, *[v for v in x if v >= 0]})
    correct = (x > 0).astype(int) == y
    best = None
    for lo in ends_lo:
        for hi in ends_hi:
            out = (x < lo) | (x > hi)
            if not out.any():
                continue
            if correct[out].mean() >= target - 1e-12:
                key = (hi - lo, -int(out.sum()))
                if best is None or key < best[0]:
                    best = (key, (lo, hi))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_band_is_the_narrowest_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(2, 30))
        x = rng.normal(0.0, 1.0, n)
        if seed % 2:
            x = np.round(x, 1)  # ties, and logits exactly 0
        y = (rng.random(n) < sigmoid(2 * x)).astype(int)
        target = float(rng.choice([0.5, 0.75, 0.8, 0.9, 0.95, 1.0]))
        got = search_band(x, y, target)
        want = brute_force_band(x, y, target)
        if want is None:
            assert not got["found"] and got["band"] == BAND_ALL and got["coverage"] == 0.0
            continue
        (width, neg_cov), _ = want
        lo, hi = got["band"]
        assert got["found"] and lo <= 0.0 <= hi
        assert hi - lo == pytest.approx(width, abs=1e-12)
        out = (x < lo) | (x > hi)
        assert out.sum() == -neg_cov == round(got["coverage"] * n)
        assert ((x[out] > 0).astype(int) == y[out]).mean() >= target - 1e-12
        assert got["selective_accuracy"] == pytest.approx(((x[out] > 0).astype(int) == y[out]).mean())


def test_no_band_reaches_the_target_is_said():
    x = np.concatenate([np.linspace(-1, -0.1, 25), np.linspace(0.1, 1, 25)])
    y = (x < 0).astype(int)  # every Eq. 10 label is wrong
    cal = fit_calibration(x, y, target_accuracy=0.95)
    assert cal.band == BAND_ALL and cal.metrics["coverage"] == 0.0 and cal.metrics["band_found"] is False
    assert cal.metrics["selective_accuracy"] is None
    assert any("no uncertain band" in w for w in cal.metrics["warnings"])
    assert all(v == "uncertain" for v in apply_calibration(x, 0.07, cal)["verdict"])
    assert "no band reaches the target" in format_calibration(cal)


def test_perfect_data_gets_a_zero_width_band_and_a_warning():
    x = np.concatenate([np.linspace(-1, -0.1, 25), np.linspace(0.1, 1, 25)])
    y = (x > 0).astype(int)
    cal = fit_calibration(x, y)
    assert cal.band == [0.0, 0.0] and cal.metrics["coverage"] == 1.0
    assert any("separate the classes perfectly" in w for w in cal.metrics["warnings"])


# ----------------------------------------------------------------------------- refusals
def test_refusals_have_clear_messages():
    x, y = synthetic(200, 0.1, seed=2)
    with pytest.raises(CalibrationError, match=r"single-class data: all 30 image\(s\) are fake"):
        fit_calibration(np.ones(30), np.ones(30, dtype=int))
    few = np.r_[np.zeros(19, dtype=int), np.ones(40, dtype=int)]
    with pytest.raises(CalibrationError, match="19 real and 40 fake; at least 20 of each class"):
        fit_calibration(np.linspace(-1, 1, 59), few)
    fit_calibration(np.linspace(-1, 1, 59), few, min_per_class=19)  # the minimum is a parameter
    with pytest.raises(CalibrationError, match="unknown calibration method 'isotonic'"):
        fit_calibration(x, y, method="isotonic")
    with pytest.raises(CalibrationError, match="target accuracy"):
        fit_calibration(x, y, target_accuracy=1.5)
    with pytest.raises(CalibrationError, match="finite"):
        fit_calibration(np.r_[x[:-1], np.nan], y)
    with pytest.raises(CalibrationError, match="labels"):
        fit_calibration(x, np.r_[y[:-1], 2])


def test_saved_calibration_round_trip_and_apply(tmp_path):
    x, y = synthetic(400, 0.1, offset=0.3, seed=4)
    cal = fit_calibration(x, y, method="platt", target_accuracy=0.9)
    cal.fitted_on = {"data": "/val", "n_real": 1}
    cal.save(tmp_path)
    doc = json.loads((tmp_path / CALIBRATION_NAME).read_text())
    assert doc["format"] == "synerdetect-calibration/1" and doc["method"] == "platt"
    back = Calibration.load(tmp_path)
    assert back == cal
    test = np.linspace(-0.5, 0.5, 101)
    out = apply_calibration(test, 0.07, back)
    np.testing.assert_allclose(out["prob_fake"], 1.0 / (1.0 + np.exp(-(back.a * test + back.b))))
    lo, hi = back.band
    want = ["uncertain" if lo <= v <= hi else ("fake" if v > 0 else "real") for v in test]
    assert out["verdict"] == want and out["calibrated"] is True
    raw = apply_calibration(test, 0.07, None)
    np.testing.assert_allclose(raw["prob_fake"], 1.0 / (1.0 + np.exp(-test / 0.07)))
    assert Calibration.load(tmp_path / "nothing-here") is None


# ----------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model):
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_calibrate_checkpoint_fits_saves_and_keeps_the_cascade(ckpt, model, bench, tmp_path):
    import shutil

    from synerdetect.engine.inference import score_samples

    folder = tmp_path / "c"
    shutil.copytree(ckpt, folder)
    Calibration(cascade={"band": [-0.1, 0.1]}).save(folder)  # a cascade fitted earlier must survive
    cal = calibrate_checkpoint(
        folder,
        bench / "test",
        layout="cnndetection",
        split="test",
        min_per_class=10,
        progress=False,
        model=model,
        image_size=64,
    )
    back = Calibration.load(folder)
    assert back == cal and back.cascade == {"band": [-0.1, 0.1]}
    assert back.fitted_on["n_real"] == 24 and back.fitted_on["n_fake"] == 24
    assert back.fitted_on["layout"] == "cnndetection" and back.fitted_on["split"] == "test"
    assert back.fitted_on["data"] == str((bench / "test").resolve())
    assert back.fitted_on["mode"] == "full" and back.fitted_on["view"] == model.cfg.data.eval_view == "center"
    # the fit is the one of the independently scored logits
    recs, _ = score_samples(
        model, load_labelled(str(bench / "test"), "cnndetection", "test"), image_size=64, progress=False
    )
    x = np.array([r.logit for r in recs])
    y = np.array([r.label for r in recs])
    ref = fit_calibration(x, y, min_per_class=10, tau=model.mcfg.tau)
    assert cal.a == pytest.approx(ref.a, rel=1e-4) and cal.band == pytest.approx(ref.band, abs=1e-6)
    assert cal.metrics["accuracy"] == pytest.approx(np.mean((x > 0) == y))


def test_calibrate_checkpoint_refuses(ckpt, model, bench, tmp_path):
    cfg = tmp_path / "protocol.yaml"
    cfg.write_text(f"preset: tiny\ndata:\n  test: {bench / 'test'}\n  test_layout: cnndetection\n")
    with pytest.raises(CalibrationError, match="refusing to calibrate on the test set"):
        calibrate_checkpoint(
            ckpt, bench / "test", layout="cnndetection", protocol_config=cfg, model=model, progress=False
        )
    with pytest.raises(CalibrationError, match="refusing to calibrate on the test set"):
        calibrate_checkpoint(ckpt, bench, protocol_config=cfg, model=model, progress=False)  # contains it
    with pytest.raises(CalibrationError, match="12 real and 12 fake; at least 20"):
        calibrate_checkpoint(ckpt, bench / "test" / "gan_upsample", layout="cnndetection", model=model, progress=False)
    assert not (ckpt / CALIBRATION_NAME).exists()


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("calibrated", [True, False])
def test_evaluate_with_and_without_calibration(model, bench, tmp_path, calibrated):
    from sklearn.metrics import brier_score_loss, log_loss

    from synerdetect.engine.evaluate import evaluate

    samples = load_labelled(str(bench / "test"), "cnndetection", "test")
    cal = Calibration(method="platt", a=3.0, b=0.2, band=[-0.05, 0.02], target_accuracy=0.9) if calibrated else None
    res = evaluate(model, samples, tmp_path / "out", image_size=64, progress=False, calibration=cal)
    recs = res["records"]
    x = np.array([r.logit for r in recs])
    y = np.array([r.label for r in recs])
    p = sigmoid(3.0 * x + 0.2) if calibrated else sigmoid(x / model.mcfg.tau)
    np.testing.assert_allclose([r.prob_fake for r in recs], p, rtol=1e-12)
    want = ["uncertain" if calibrated and -0.05 <= v <= 0.02 else ("fake" if v > 0 else "real") for v in x]
    assert [r.verdict for r in recs] == want
    assert all(r.calibrated is calibrated for r in recs) and all(r.size == (64, 64) for r in recs)

    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    sec = doc["calibration"]
    assert sec["calibrated"] is calibrated
    assert sec["ece"] == pytest.approx(hand_ece(y, p), abs=1e-12)
    assert sec["brier"] == pytest.approx(brier_score_loss(y, p))
    assert sec["nll"] == pytest.approx(log_loss(y, p))
    covered = np.array([v != "uncertain" for v in want])
    assert sec["coverage"] == pytest.approx(covered.mean())
    assert sec["selective_accuracy"] == pytest.approx(((x > 0) == y)[covered].mean())
    assert sec["accuracy"] == pytest.approx(((x > 0) == y).mean())
    if calibrated:
        assert sec["raw"]["ece"] == pytest.approx(hand_ece(y, sigmoid(x / model.mcfg.tau)), abs=1e-12)
        assert sec["band"] == [-0.05, 0.02]
    first = json.loads((tmp_path / "out" / "scores.jsonl").read_text().splitlines()[0])
    assert first["verdict"] == want[0] and first["calibrated"] is calibrated and first["size"] == [64, 64]
    assert (tmp_path / "out" / "reliability.png").stat().st_size > 1000
    md = (tmp_path / "out" / "results.md").read_text()
    assert "**Calibration**" in md and f"{100 * sec['ece']:.2f}%" in md
    # the Eq. 10 table is untouched by the calibration
    assert doc["generators"]["gan_upsample"]["acc"] == pytest.approx(
        np.mean([(r.logit > 0) == r.label for r in recs if r.generator == "gan_upsample"])
    )


@pytest.mark.slow  # end to end (benchmark-style / CLI): outside the fast loop
def test_cli_calibrate_then_evaluate(ckpt, bench, tmp_path, capsys):
    import shutil

    from synerdetect.cli import main

    folder = tmp_path / "c"
    shutil.copytree(ckpt, folder)
    cfg = tmp_path / "protocol.yaml"
    cfg.write_text(
        f"preset: tiny\ndata:\n  val: {bench / 'test'}\n  val_layout: cnndetection\n  val_split: test\n"
        f"  test: {bench / 'test' / 'diffusion_latent'}\n"
    )
    code = main(
        [
            "calibrate",
            "--checkpoint",
            str(folder),
            "--data",
            str(bench / "test"),
            "--layout",
            "cnndetection",
            "--split",
            "test",
            "--min-per-class",
            "10",
            "--method",
            "platt",
            "--target-accuracy",
            "0.9",
            "--no-progress",
            "--device",
            "cpu",
            "--workers",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    cal = Calibration.load(folder)
    assert cal.method == "platt" and cal.target_accuracy == 0.9
    assert "ECE (15 bins)" in out and "uncertain band" in out and "selective accuracy" in out
    assert f"{100 * cal.metrics['ece_after']:.2f}%" in out
    # --config: --data defaults to data.val; calibrating on its data.test is refused with one line
    code = main(
        [
            "calibrate",
            "--checkpoint",
            str(folder),
            "--config",
            str(cfg),
            "--data",
            str(bench / "test" / "diffusion_latent"),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "refusing to calibrate on the test set" in err and err.count("\n") == 1
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(folder),
            "--data",
            str(bench / "test"),
            "--layout",
            "cnndetection",
            "--split",
            "test",
            "--out",
            str(tmp_path / "ev"),
            "--no-progress",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--harmonize",
            "jpeg:96",
        ]
    )
    assert code == 0
    doc = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert doc["calibration"]["calibrated"] is True and doc["calibration"]["a"] == pytest.approx(cal.a)
    assert math.isfinite(doc["calibration"]["ece"])
    assert doc["harmonized"]["harmonize"]["spec"] == "jpeg:96" and doc["harmonized"]["calibration"]["calibrated"]
    assert "reliability.png" in capsys.readouterr().out
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(folder),
                "--data",
                str(bench / "test"),
                "--out",
                str(tmp_path / "x"),
                "--harmonize",
                "png:1",
            ]
        )
        == 2
    )
    assert "expected jpeg:QUALITY" in capsys.readouterr().err


@pytest.mark.slow  # an evaluate pass with a chain: ~3 s on 2 cores
def test_evaluate_with_a_chain_and_certificates(model, bench, tmp_path):
    from synerdetect.data import load_labelled
    from synerdetect.engine.calibration import Calibration
    from synerdetect.engine.evaluate import evaluate

    samples = load_labelled(str(bench / "test"), "cnndetection", "test")
    cal = Calibration(
        band=[-0.001, 0.001],
        guarantee={"found": True, "band": [-0.001, 0.001], "target": 0.9, "delta": 0.05},
        max_fpr={"threshold": 0.0005, "target": 0.05, "delta": 0.05},
    )
    res = evaluate(
        model, samples, tmp_path / "out", image_size=64, progress=False, calibration=cal, perturb=["phone-share"]
    )
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    ch = doc["robustness"]["chains"]["phone-share"]
    assert ch["spec"] == "resize:0.5+jpeg:85"
    recs = res["records"]
    x = np.array([r.logit for r in recs])
    y = np.array([r.label for r in recs])
    op = doc["operating_points"]
    assert op["max_fpr"]["fpr"] == pytest.approx(np.mean(x[y == 0] > 0.0005))
    outside = np.abs(x) > 0.001
    assert op["guarantee"]["accuracy_outside"] == pytest.approx(np.mean((x[outside] > 0) == y[outside]))
    md = (tmp_path / "out" / "results.md").read_text()
    assert "**Chains**" in md and "| phone-share | resize:0.5+jpeg:85 |" in md and "**Operating points**" in md
    assert "at most 5% of real photos are flagged" in md
    for g, v in op["real_flagged"].items():
        reals = [r for r in recs if r.generator == g and r.label == 0]
        assert v["fpr"] == pytest.approx(np.mean([r.verdict == "fake" for r in reals]))
        assert v["fpr"] == pytest.approx(np.mean([r.logit > 0.0005 and not -0.001 <= r.logit <= 0.001 for r in reals]))
