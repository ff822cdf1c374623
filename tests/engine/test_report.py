"""Result files, markdown and plots."""

from __future__ import annotations

import csv
import json

import matplotlib
import numpy as np
import pytest
from PIL import Image

from synerdetect.engine.metrics import ScoreRecord, robustness_table, summarize
from synerdetect.engine.report import (
    CSV_COLUMNS,
    SCORE_FIELDS,
    markdown_table,
    plot_logit_distributions,
    read_scores_jsonl,
    robustness_markdown,
    write_results,
)


def mk(gen, label, logit, fmt="PNG", idx=0):
    return ScoreRecord.from_scores(f"{gen}/{label}_{idx}.png", gen, label, 0.1, 0.1 + logit, tau=0.07, format=fmt)


@pytest.fixture
def records():
    rng = np.random.default_rng(1)
    out = []
    for g in ("SD1.4", "Midjourney"):
        for i in range(20):
            out.append(mk(g, 0, float(rng.normal(-1, 1)), "JPEG", i))
            out.append(mk(g, 1, float(rng.normal(1, 1)), "PNG" if g == "Midjourney" else "JPEG", i))
    out += [mk("ADM", 1, 0.4, "PNG", 0), mk("ADM", 1, -0.3, "PNG", 1)]  # fake only
    return out


def test_write_results_round_trip(tmp_path, records):
    s = summarize(records)
    paths = write_results(tmp_path / "run", s, records, extra={"model": {"name": "synerdetect"}})
    out = tmp_path / "run"
    assert set(paths) == {"json", "jsonl", "csv"}
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.json", "scores.jsonl"]

    res = json.loads((out / "results.json").read_text())
    assert res["model"] == {"name": "synerdetect"}
    assert res["n_images"] == len(records)
    assert set(res["generators"]) == {"SD1.4", "Midjourney", "ADM"}
    for g in res["generators"].values():
        assert {"acc", "real_acc", "fake_acc", "ap", "n_real", "n_fake", "formats"} <= set(g)
    assert {"acc", "ap"} <= set(res["mean"])
    assert res["generators"]["ADM"]["ap"] is None
    assert res["generators"]["ADM"]["ap_undefined"] == "no real images"
    assert res["mean"]["ap"] == pytest.approx(s["mean"]["ap"])
    assert res["generators"]["SD1.4"]["acc"] == pytest.approx(s["generators"]["SD1.4"]["acc"])

    lines = (out / "scores.jsonl").read_text().splitlines()
    assert len(lines) == len(records)
    assert list(json.loads(lines[0])) == list(SCORE_FIELDS)
    back = read_scores_jsonl(out / "scores.jsonl")
    assert back == records
    assert summarize(back)["mean"] == s["mean"]

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["generator"] for r in rows] == ["SD1.4", "Midjourney", "ADM", "mean"]
    adm = rows[2]
    assert adm["ap"] == "" and adm["real_acc"] == "" and "no real images" in adm["ap_note"]
    assert float(rows[0]["acc"]) == pytest.approx(s["generators"]["SD1.4"]["acc"])
    assert float(rows[3]["ap"]) == pytest.approx(s["mean"]["ap"])
    assert "ADM" in rows[3]["ap_note"]
    assert rows[1]["format_shortcut_warning"]  # Midjourney: real JPEG vs fake PNG
    assert int(rows[3]["n_real"]) == 40 and int(rows[3]["n_fake"]) == 42

    # overwrite is fine, no temp files left behind, clashing extra rejected
    write_results(out, s, records)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError):
        write_results(out, s, records, extra={"mean": 1})


def test_markdown_table(records):
    s = summarize(records)
    md = markdown_table(s)
    table_rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert table_rows[0].startswith("| generator | acc | real acc | fake acc | AP | #real | #fake | formats")
    body = table_rows[2:]
    assert len(body) == 3 + 1
    assert [r.split("|")[1].strip() for r in body] == ["SD1.4", "Midjourney", "ADM", "**mean**"]
    adm = body[2]
    assert "n/a[" in adm
    assert f"{100 * s['generators']['ADM']['acc']:.2f}" in adm
    assert f"{100 * s['mean']['ap']:.2f}" in body[3]
    assert "no real images" in md  # footnote with the reason
    assert "format shortcut" in md  # Midjourney warning footnoted


def test_robustness_markdown(records):
    s = summarize(records)
    t = robustness_table({"jpeg@q95": s, "jpeg@q60": s, "blur@sigma1": s}, clean=s)
    md = robustness_markdown(t)
    assert "| clean |" in md and "| jpeg |" in md and "| blur |" in md
    assert "| jpeg | q60 |" in md
    assert f"{100 * s['mean']['ap']:.2f}" in md


def _check_png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 0 and im.size[1] > 0
        return np.asarray(im.convert("RGB")).astype(int)


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("case", ["normal", "one_class", "one_image", "identical", "empty"])
def test_plot_logit_distributions(tmp_path, records, case):
    backend = matplotlib.get_backend()
    recs = {
        "normal": records,
        "one_class": [r for r in records if r.generator == "ADM"],
        "one_image": records[:1],
        "identical": [mk("G", 0, 0.5), mk("G", 1, 0.5), mk("G", 1, 0.5)],
        "empty": [],
    }[case]
    p = plot_logit_distributions(recs, tmp_path / "sub" / "logits.png", title="test")
    arr = _check_png(p)
    assert matplotlib.get_backend() == backend
    if case == "normal":
        r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
        assert np.sum(r - g > 40) > 50  # fake (red) distribution drawn
        assert np.sum(b - r > 40) > 50  # real (blue) distribution drawn


def test_scores_jsonl_optional_fields_round_trip(tmp_path, records):
    from dataclasses import replace

    from synerdetect.engine.report import OPTIONAL_SCORE_FIELDS, write_scores_jsonl

    recs = [
        replace(r, verdict="fake" if r.logit > 0 else "real", calibrated=True, size=(64, 48), decided_by="full")
        for r in records
    ]
    recs[0] = replace(recs[0], verdict="uncertain")
    write_scores_jsonl(tmp_path / "s.jsonl", recs)
    first = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])
    assert list(first) == list(SCORE_FIELDS) + list(OPTIONAL_SCORE_FIELDS)
    assert first["size"] == [64, 48] and first["verdict"] == "uncertain" and first["calibrated"] is True
    assert read_scores_jsonl(tmp_path / "s.jsonl") == recs


def _section(calibrated):
    from synerdetect.engine.calibration import Calibration, calibration_section

    rng = np.random.default_rng(0)
    recs = [mk("G", i % 2, float(rng.normal(0.3 if i % 2 else -0.3, 0.3)), "PNG", i) for i in range(200)]
    cal = (
        Calibration(
            method="temperature",
            a=4.0,
            band=[-0.1, 0.2],
            target_accuracy=0.9,
            fitted_on={"data": "/val", "split": "val", "n_real": 30, "n_fake": 30},
        )
        if calibrated
        else None
    )
    return calibration_section(recs, tau=0.07, calibration=cal), recs


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("calibrated", [True, False])
def test_calibration_markdown_and_reliability_plot(tmp_path, calibrated):
    from synerdetect.engine.report import calibration_markdown, plot_reliability

    sec, recs = _section(calibrated)
    md = calibration_markdown(sec)
    assert f"{100 * sec['ece']:.2f}%" in md and f"{sec['brier']:.4f}" in md and f"{sec['nll']:.4f}" in md
    if calibrated:
        assert "temperature scaling, T = 0.25" in md and f"{100 * sec['raw']['ece']:.2f}" in md
        assert "[-0.1, +0.2]" in md and f"{100 * sec['selective_accuracy']:.2f}%" in md
    else:
        assert "none" in md and "coverage 100.00%" in md
    backend = matplotlib.get_backend()
    arr = _check_png(plot_reliability(sec, tmp_path / "rel.png", title="t"))
    assert matplotlib.get_backend() == backend
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    assert np.sum(r - g > 40) > 50  # the per-bin bars/line are drawn
    if calibrated:
        assert np.sum(b - r > 40) > 20  # the uncalibrated curve too
    # the empty case still renders
    _check_png(plot_reliability({"bins": [], "ece": None, "calibrated": False}, tmp_path / "empty.png"))


def test_harmonized_markdown(records):
    from synerdetect.engine.report import harmonized_markdown

    raw = summarize(records)
    shifted = summarize([mk(r.generator, r.label, r.logit - 0.5, "JPEG", i) for i, r in enumerate(records)])
    md = harmonized_markdown(raw, shifted, "jpeg@q96")
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert rows[0] == "| generator | acc raw | acc jpeg@q96 | Δacc | AP raw | AP jpeg@q96 | ΔAP |"
    sd = rows[2].split("|")
    assert sd[1].strip() == "SD1.4"
    assert sd[2].strip() == f"{100 * raw['generators']['SD1.4']['acc']:.2f}"
    assert sd[3].strip() == f"{100 * shifted['generators']['SD1.4']['acc']:.2f}"
    d = shifted["generators"]["SD1.4"]["acc"] - raw["generators"]["SD1.4"]["acc"]
    assert sd[4].strip() == f"{100 * d:+.2f}"
    assert rows[-1].startswith("| **mean** |")
