"""The one scoring call (synerdetect.engine.scoring.Scorer): records for every kind of input, the same numbers as
model.predict on an independently built tensor, calibration, provenance and --trust-metadata, and predict on top."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from synerdetect.data import Views
from synerdetect.engine.calibration import Calibration
from synerdetect.engine.scoring import SCORE_KEYS, Scorer, predict_paths

RECORD_KEYS = {
    "decided_by",
    "perceptual_logit",
    "name",
    "sha256",
    "width",
    "height",
    "format",
    "label",
    "verdict",
    "verdict_source",
    "model_verdict",
    "prob_fake",
    "calibrated",
    *SCORE_KEYS,
    "map",
    "provenance",
    "timings",
    "error",
    "error_kind",
}


def _noise(seed: int, size=(80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads make tiny forward passes 10-100x
    slower (the numbers do not change)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    paths = []
    for i in range(5):
        p = root / f"img{i}.png"
        _noise(i, size=(64 + 16 * i, 72)).save(p)
        paths.append(str(p))
    (root / "broken.jpg").write_bytes(b"this is not an image")
    (root / "truncated.png").write_bytes((root / "img0.png").read_bytes()[:120])
    return root, paths


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_records_for_paths_bytes_named_bytes_files_and_pil_with_per_image_errors(tiny_model, images):
    root, paths = images
    good = open(paths[1], "rb").read()
    rgba = _noise(7).convert("RGBA")
    scorer = Scorer(tiny_model, batch_size=2, provenance=True)
    items = [
        paths[0],
        good,
        ("named.png", good),
        str(root / "broken.jpg"),
        rgba,
        io.BytesIO(good),
        str(root / "truncated.png"),
        b"",
        str(root / "missing.png"),
    ]
    recs = scorer.score(items)
    assert len(recs) == len(items) and all(set(r) == RECORD_KEYS for r in recs)
    ok = [r for r in recs if r["error"] is None]
    bad = {r["name"].rsplit("/", 1)[-1]: r for r in recs if r["error"] is not None}
    assert len(ok) == 5
    assert recs[0]["name"] == paths[0] and recs[2]["name"] == "named.png"
    for r in ok:
        assert r["label"] in ("real", "fake") and r["verdict"] == r["label"] and r["verdict_source"] == "model"
        assert (r["label"] == "fake") == (r["logit"] > 0)  # Eq. 10
        assert 0.0 <= r["prob_fake"] <= 1.0 and r["calibrated"] is False
        assert math.isclose(r["logit"], r["s_fake"] - r["s_real"], abs_tol=1e-5)
        assert math.isclose(r["s_real"], r["sim_v_real"] + r["sim_n_real"], abs_tol=1e-5)
        assert math.isclose(r["s_fake"], r["sim_v_fake"] + r["sim_n_fake"], abs_tol=1e-5)
        assert r["timings"]["decode_ms"] >= 0 and r["timings"]["score_ms"] > 0 and r["timings"]["batch_size"] >= 1
        assert isinstance(r["provenance"], dict)
    # the same bytes give the same record whether they came as a path, bytes, (name, bytes) or a file object
    assert recs[1]["sha256"] == recs[2]["sha256"] == recs[5]["sha256"] == hashlib.sha256(good).hexdigest()
    assert recs[1]["logit"] == pytest.approx(recs[2]["logit"], abs=1e-6)
    assert recs[1]["logit"] == pytest.approx(recs[5]["logit"], abs=1e-6)
    assert recs[1]["width"] == 80 and recs[1]["height"] == 72 and recs[1]["format"] == "PNG"
    # a PIL image: scored, no file bytes (no hash), provenance says why it has none
    assert recs[4]["error"] is None and recs[4]["sha256"] is None and recs[4]["provenance"]["error"]
    assert bad["broken.jpg"]["error_kind"] == "not_an_image" and "not an image" in bad["broken.jpg"]["error"]
    assert bad["truncated.png"]["error_kind"] == "corrupt"
    assert bad["missing.png"]["error"] == "file not found"
    assert recs[7]["error_kind"] == "empty"
    for r in bad.values():
        assert r["label"] is None and r["prob_fake"] is None and "\n" not in r["error"]


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_scorer_equals_model_predict_on_an_independently_built_tensor(tiny_model, images):
    _, paths = images
    assert tiny_model.cfg.data.image_size is None  # the default reads two views of each file
    m = tiny_model.mcfg

    def views(path: str) -> tuple[np.ndarray, np.ndarray]:
        # built here with numpy and Pillow: E_v's view is the centre clip_size crop of the file's own pixels; the SD
        # view the shorter side resized to sd_size (bicubic), then centre-cropped
        img = Image.open(path).convert("RGB")
        a = np.asarray(img, dtype=np.float32) / 255
        h, w = a.shape[:2]
        top, left = round((h - m.clip_size) / 2), round((w - m.clip_size) / 2)
        clip = a[top : top + m.clip_size, left : left + m.clip_size]
        k = m.sd_size / min(w, h)
        nw, nh = max(m.sd_size, round(w * k)), max(m.sd_size, round(h * k))
        r = np.asarray(img.resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.float32) / 255
        top, left = round((nh - m.sd_size) / 2), round((nw - m.sd_size) / 2)
        return clip, r[top : top + m.sd_size, left : left + m.sd_size]

    pairs = [views(p) for p in paths[:3]]
    x = Views(
        torch.from_numpy(np.stack([c for c, _ in pairs])).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack([s for _, s in pairs])).permute(0, 3, 1, 2).contiguous(),
    )
    ref = tiny_model.predict(x)
    recs = Scorer(tiny_model, batch_size=8).score(paths[:3])
    for i, r in enumerate(recs):
        for k in SCORE_KEYS:
            assert r[k] == pytest.approx(float(ref[k][i]), abs=1e-5), k
        assert r["label"] == ("fake" if int(ref["label"][i]) else "real")
        assert r["prob_fake"] == pytest.approx(float(ref["prob_fake"][i]), abs=1e-6)  # uncalibrated: the model's
    # batching does not change the numbers: one image per forward pass gives the same records
    single = Scorer(tiny_model, batch_size=1).score(paths[:3])
    for a, b in zip(recs, single):
        assert a["logit"] == pytest.approx(b["logit"], abs=1e-5)
        assert b["timings"]["batch_size"] == 1
    # score_paths (a DataLoader) builds the same records as score
    via_loader = Scorer(tiny_model, batch_size=2).score_paths(paths[:3], progress=False)
    assert [r["name"] for r in via_loader] == paths[:3]
    for a, b in zip(recs, via_loader):
        assert a["logit"] == pytest.approx(b["logit"], abs=1e-5) and a["sha256"] == b["sha256"]


def test_limits_pixels_and_bytes(tiny_model, images):
    _, paths = images
    scorer = Scorer(tiny_model, max_pixels=64 * 64, max_bytes=10_000_000)
    rec = scorer.score(paths[1])[0]  # 80 x 72 > 64 x 64
    assert rec["error_kind"] == "too_many_pixels" and "max_pixels" in rec["error"]
    small = Scorer(tiny_model, max_bytes=100)
    r_path, r_bytes = small.score([paths[0], open(paths[0], "rb").read()])
    assert r_path["error_kind"] == r_bytes["error_kind"] == "too_large"
    assert r_path["label"] is None


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_calibration_json_is_applied(tiny_model, ckpt, images, tmp_path):
    import shutil

    _, paths = images
    raw = Scorer(tiny_model).score(paths)
    folder = shutil.copytree(ckpt, tmp_path / "cal")
    Calibration(method="temperature", a=2.0, b=0.0, band=[-0.01, 0.01]).save(folder)
    scorer = Scorer.from_checkpoint(folder, device="cpu")
    assert scorer.calibration is not None and scorer.info()["calibration"]["a"] == 2.0
    recs = scorer.score(paths)
    for r, r0 in zip(recs, raw):
        assert r["logit"] == pytest.approx(r0["logit"], abs=1e-5)  # calibration never changes the scores
        assert r["label"] == r0["label"]
        assert r["calibrated"] is True
        assert r["prob_fake"] == pytest.approx(1 / (1 + math.exp(-2.0 * r["logit"])), abs=1e-9)
        inside = -0.01 <= r["logit"] <= 0.01
        assert r["verdict"] == ("uncertain" if inside else r["label"])
    # a band around one image's logit makes exactly that image "uncertain"
    target = raw[2]["logit"]
    cal = Calibration(method="temperature", a=2.0, band=[target - 1e-4, target + 1e-4])
    recs = Scorer(tiny_model, calibration=cal).score(paths)
    assert recs[2]["verdict"] == "uncertain" and recs[2]["label"] in ("real", "fake")
    assert all(r["verdict"] == r["label"] for i, r in enumerate(recs) if abs(r["logit"] - target) > 1e-4)
    # a certified FPR threshold at the largest logit: nothing is "fake", a fake label below it is "uncertain"
    top = max(abs(r["logit"]) for r in raw)
    recs = Scorer(tiny_model, calibration=Calibration(max_fpr={"threshold": top})).score(paths)
    assert [r["verdict"] for r in recs] == ["uncertain" if r0["logit"] > 0 else "real" for r0 in raw]


CERTIFIED = dict(
    band=[-1e-4, 1e-4],
    max_fpr={"threshold": 0.0, "target": 0.01, "delta": 0.05},
    cascade={"band": [-0.5, 0.5]},
)


def test_the_promise_follows_the_scorers_mode_and_view(tiny_model, monkeypatch, caplog):
    """The certificates hold for --mode full on the view calibrate scored (center for files that do not say):
    under the cascade or on the tiles view the scorer says there is no promise, and warns once."""
    cal = Calibration(**CERTIFIED)
    with caplog.at_level("WARNING", logger="synerdetect.engine.guarantees"):
        assert Scorer(tiny_model, calibration=cal).promise().startswith("on images like the validation set, at most 1%")
        assert not caplog.records
        cascade = Scorer(tiny_model, calibration=cal, mode="cascade").promise()
        assert cascade.startswith("no promise") and "not under --mode cascade" in cascade
        assert len(caplog.records) == 1 and "--mode cascade" in caplog.text
        caplog.clear()
        monkeypatch.setattr(tiny_model.cfg.data, "eval_view", "tiles")
        tiles = Scorer(tiny_model, calibration=cal)
        assert tiles.promise().startswith("no promise") and "none for the tiles view" in tiles.promise()
        assert tiles.info()["view"] == "tiles"
        assert len(caplog.records) == 1 and "fitted on the center view" in caplog.text
        caplog.clear()
        fitted_on_tiles = Calibration(**CERTIFIED, fitted_on={"mode": "full", "view": "tiles"})
        assert Scorer(tiny_model, calibration=fitted_on_tiles).promise().startswith("on images like the validation")
        assert not caplog.records


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_trust_metadata_lets_a_trusted_manifest_decide_the_verdict_not_the_score(tiny_model, tmp_path):
    pytest.importorskip("c2pa")
    from provenance_fixtures import jpeg_bytes, make_test_ca, sign_image

    ca = make_test_ca()
    anchors = tmp_path / "root.pem"
    anchors.write_bytes(ca.root_pem)
    signed = sign_image(jpeg_bytes(size=(96, 80)), ca)  # a trusted "trainedAlgorithmicMedia" claim
    plain = Scorer(tiny_model, provenance=True).score(("ai.jpg", signed))[0]
    assert plain["verdict_source"] == "model" and plain["provenance"]["declared_ai"] is True
    trusted = Scorer(tiny_model, trust_metadata=True, trust_anchors=anchors).score(("ai.jpg", signed))[0]
    assert trusted["verdict"] == "fake" and trusted["verdict_source"] == "c2pa"
    assert trusted["model_verdict"] == plain["verdict"]
    for k in ("logit", "prob_fake", "label", "s_real", "s_fake"):  # metadata never changes the score
        assert trusted[k] == plain[k]
    assert trusted["provenance"]["c2pa"]["trusted"] is True
    # the same file without anchors: the signer is untrusted, the model decides
    untrusted = Scorer(tiny_model, trust_metadata=True).score(("ai.jpg", signed))[0]
    assert untrusted["verdict_source"] == "model" and untrusted["verdict"] == plain["verdict"]


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_predict_paths_rows_and_errors(tiny_model, images):
    root, paths = images
    rows, errors = predict_paths(
        tiny_model, paths + [str(root / "broken.jpg")], image_size=64, batch_size=2, progress=False, provenance=True
    )
    assert [r["path"] for r in rows] == paths
    assert errors == [(str(root / "broken.jpg"), "not an image or unsupported format (cannot identify image file)")]
    for r in rows:
        assert r["label"] in ("real", "fake") and 0 <= r["prob_fake"] <= 1 and "verdict" in r and "calibrated" in r


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_cli_predict_with_calibration_table_json_csv(ckpt, images, tmp_path, capsys):
    import shutil

    from synerdetect.cli import main

    root, paths = images
    folder = shutil.copytree(ckpt, tmp_path / "cal")
    Calibration(method="temperature", a=2.0, b=0.0, band=[-0.01, 0.01]).save(folder)
    rc = main(
        [
            "predict",
            paths[0],
            paths[1],
            str(root / "broken.jpg"),
            "--checkpoint",
            str(folder),
            "--json",
            str(tmp_path / "p.json"),
            "--csv",
            str(tmp_path / "p.csv"),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["path", "label", "verdict", "prob_fake", "logit", "provenance"]
    assert len(lines) == 3  # one line per scored file
    assert "broken.jpg" in err and "calibrated" in err
    doc = json.loads((tmp_path / "p.json").read_text())
    assert len(doc["predictions"]) == 2 and doc["errors"][0]["path"].endswith("broken.jpg")
    assert doc["calibration"]["a"] == 2.0
    for p in doc["predictions"]:
        assert p["calibrated"] is True
        assert p["prob_fake"] == pytest.approx(1 / (1 + math.exp(-2 * p["logit"])), abs=1e-9)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 2
    assert {
        "verdict",
        "verdict_source",
        "prob_fake",
        "calibrated",
        "declared_ai",
        "c2pa",
        "provenance_sources",
        "sim_v_real",
        "sim_n_fake",
        "sha256",
    } <= set(rows[0])
    assert rows[0]["calibrated"] == "True" and rows[0]["verdict_source"] == "model"
