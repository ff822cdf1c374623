"""The cascade over Eq. 10: the fitted band against a brute-force search, and cascade scoring against running
the perceptual and full paths separately."""

import itertools

import numpy as np
import pytest
import torch

from synerdetect.engine.cascade import CascadeError, cascade_curve, cascade_predict, cascade_stats, fit_cascade_band


def _brute_force(m, f, target):
    """Every interval [lo, hi] with lo <= 0 <= hi whose ends are 0 or a margin; the narrowest that reaches the
    target agreement (ties: fewest images inside)."""
    ends = sorted(set([0.0, *m.tolist()]))
    best = None
    for lo, hi in itertools.product([e for e in ends if e <= 0], [e for e in ends if e >= 0]):
        inside = (m >= lo) & (m <= hi)
        agree = np.mean(np.where(inside, f > 0, m > 0) == (f > 0))
        if agree >= target - 1e-12:
            key = (hi - lo, int(inside.sum()))
            if best is None or key < best:
                best = key
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [1.0, 0.95, 0.9])
def test_band_is_the_narrowest_by_brute_force(seed, target):
    rng = np.random.default_rng(seed)
    n = 40
    m = rng.normal(0, 1, n)
    f = m + rng.normal(0, 0.8, n)  # the full logit mostly agrees with the perceptual margin
    got = fit_cascade_band(m, f, target_agreement=target)
    lo, hi = got["band"]
    width, inside = _brute_force(m, f, target)
    assert hi - lo == pytest.approx(width)
    assert int(((m >= lo) & (m <= hi)).sum()) == inside
    assert got["agreement"] >= target - 1e-12


def test_stats_and_curve_by_hand():
    m = np.array([-2.0, -0.5, 0.1, 0.4, 3.0])
    f = np.array([-1.0, 0.2, -0.3, 0.5, 2.0])
    y = np.array([0, 1, 0, 1, 1])
    st = cascade_stats(m, f, (-0.6, 0.2), y)
    # inside: -0.5 (full says fake) and 0.1 (full says real); outside: -2 real, 0.4 fake, 3 fake
    assert st["share_inverted"] == pytest.approx(0.4)
    assert st["agreement"] == 1.0
    assert st["acc_cascade"] == st["acc_full"] == 1.0 and st["acc_perceptual"] == pytest.approx(0.6)
    curve = cascade_curve(m, f, y, half_widths=[0.0, 1.0])
    assert [c["share_inverted"] for c in curve] == [0.0, pytest.approx(0.6)]
    with pytest.raises(CascadeError):
        fit_cascade_band(m, f[:3])


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_cascade_predict_regroups_and_decides_like_the_two_paths(tiny_model):
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(3, 3, 64, 64, generator=g), [f"b{b}i{i}" for i in range(3)]) for b in range(4)]
    x = torch.cat([b[0] for b in batches])
    ids = [i for b in batches for i in b[1]]
    per = tiny_model.predict(x, mode="perceptual")["logit"]
    full = tiny_model.predict(x)["logit"]
    lo, hi = float(per.quantile(0.25)), float(per.quantile(0.75))
    sizes = []
    real_predict = tiny_model.predict

    def spy(images, **kw):
        if kw.get("mode", "full") == "full":
            sizes.append(len(images))
        return real_predict(images, **kw)

    tiny_model.predict = spy
    try:
        got = {i: (o, how) for i, o, how in cascade_predict(tiny_model, batches, (lo, hi), batch_size=4)}
    finally:
        del tiny_model.predict
    assert set(got) == set(ids)
    inside = [(lo <= float(per[k]) <= hi) for k in range(len(ids))]
    assert sum(sizes) == sum(inside) and all(s == 4 for s in sizes[:-1])  # full batches, remainder last
    for k, ident in enumerate(ids):
        out, how = got[ident]
        assert how == ("full" if inside[k] else "perceptual")
        expected = full[k] if inside[k] else per[k]
        assert out["logit"] == pytest.approx(float(expected), abs=1e-5)
        assert out["perceptual_logit"] == pytest.approx(float(per[k]), abs=1e-6)


@pytest.mark.slow  # end to end (benchmark-style / CLI): outside the fast loop
def test_cascade_through_calibrate_predict_and_evaluate(tiny_model, tmp_path, capsys):
    """calibrate --cascade-agreement stores a band; predict/evaluate --mode cascade use it and say which path
    decided; without a band cascade is refused with the command to run."""
    import json

    from synerdetect.cli import main
    from synerdetect.demo import build_demo_benchmark
    from synerdetect.engine.calibration import Calibration
    from synerdetect.engine.scoring import Scorer

    ckpt = tiny_model.save_pretrained(tmp_path / "ckpt")
    build_demo_benchmark(
        tmp_path / "val",
        size=64,
        n_train=1,
        n_test=24,
        train_families=("gan_upsample",),
        test_families=("gan_upsample",),
        seed=3,
    )
    build_demo_benchmark(
        tmp_path / "test",
        size=64,
        n_train=1,
        n_test=8,
        train_families=("gan_upsample",),
        test_families=("gan_upsample",),
        seed=4,
    )
    img = next((tmp_path / "test" / "test").rglob("*.png"))
    assert main(["predict", str(img), "--checkpoint", str(ckpt), "--mode", "cascade", "--no-progress"]) == 2
    assert "--cascade-agreement" in capsys.readouterr().err

    assert (
        main(
            [
                "calibrate",
                "--checkpoint",
                str(ckpt),
                "--data",
                str(tmp_path / "val" / "test"),
                "--layout",
                "cnndetection",
                "--target-accuracy",
                "0.5",
                "--min-per-class",
                "10",
                "--cascade-agreement",
                "0.9",
                "--no-progress",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert "cascade band" in capsys.readouterr().out
    cal = Calibration.load(ckpt)
    lo, hi = cal.cascade["band"]
    assert lo <= 0 <= hi and cal.cascade["agreement"] >= 0.9

    scorer = Scorer(tiny_model, calibration=cal, mode="cascade", batch_size=4)
    paths = sorted(str(p) for p in (tmp_path / "test" / "test").rglob("*.png"))
    recs = scorer.score_paths(paths, progress=False)
    assert [r["name"] for r in recs] == paths  # input order kept although in-band images were regrouped
    full = Scorer(tiny_model, batch_size=4).score_paths(paths, progress=False)
    per = Scorer(tiny_model, batch_size=4, mode="perceptual").score_paths(paths, progress=False)
    for r, f, p in zip(recs, full, per):
        inside = lo <= p["logit"] <= hi
        assert r["decided_by"] == ("full" if inside else "perceptual")
        assert r["label"] == (f["label"] if inside else p["label"])

    out = tmp_path / "ev"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ckpt),
                "--data",
                str(tmp_path / "test" / "test"),
                "--layout",
                "cnndetection",
                "--out",
                str(out),
                "--mode",
                "cascade",
                "--no-progress",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["mode"] == "cascade" and res["generators"]["gan_upsample"]["n_real"] == 8
    inside = sum(lo <= p["logit"] <= hi for p in per)
    assert res["generators"]["gan_upsample"]["inverted_share"] == pytest.approx(inside / len(per))
    assert "took the inversion path" in (out / "results.md").read_text()
