"""--harmonize: scoring every image re-encoded to JPEG in memory equals scoring JPEG files written beforehand with
PIL; the size-overlap warning; the suggestion to harmonize when a format or size shortcut is detected."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from synerdetect.data import Sample
from synerdetect.engine.evaluate import DEFAULT_HARMONIZE, evaluate, parse_harmonize_spec
from synerdetect.engine.inference import score_samples
from synerdetect.engine.metrics import ScoreRecord, generator_metrics, summarize

STEPS = 3
pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_image(rng, h, w):
    """A photo-like image (smooth colour field + noise), so that JPEG actually changes it."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + rng.uniform(0, 6)), np.cos(5 * yy + rng.uniform(0, 6)), xx * yy], -1)
    arr = 127.5 * (1 + 0.8 * base) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """PNG images, both classes, several sizes (some need a crop)."""
    root = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(0)
    samples = []
    for label, cls in ((0, "0_real"), (1, "1_fake")):
        (root / cls).mkdir()
        for i in range(5):
            p = root / cls / f"{i}.png"
            smooth_image(rng, 64 + 8 * (i % 2), 64 + 4 * i).save(p)
            samples.append(Sample(str(p), label, "g"))
    return samples


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_harmonized_scores_equal_scoring_jpeg_files_written_beforehand(model, pngs, tmp_path):
    # the independent path: PIL writes each image as a JPEG file at quality 96, which is then scored as a file
    jpegs = []
    for s in pngs:
        dst = tmp_path / "jpeg" / f"{s.label}_{s.path.rsplit('/', 1)[-1]}.jpg"
        dst.parent.mkdir(exist_ok=True)
        with Image.open(s.path) as im:
            im.convert("RGB").save(dst, format="JPEG", quality=96)
        jpegs.append(Sample(str(dst), s.label, s.generator))
    on_disk, errors = score_samples(model, jpegs, image_size=64, progress=False)
    assert not errors

    res = evaluate(model, pngs, tmp_path / "out", image_size=64, progress=False, harmonize="jpeg:96")
    harm = res["harmonized_records"]
    assert [r.path for r in harm] == [s.path for s in pngs]
    np.testing.assert_allclose([r.logit for r in harm], [r.logit for r in on_disk], rtol=0, atol=1e-6)
    np.testing.assert_allclose([r.s_fake for r in harm], [r.s_fake for r in on_disk], rtol=0, atol=1e-6)
    # ... and JPEG 96 is not a no-op on these images (otherwise the test would prove nothing)
    raw = res["records"]
    assert max(abs(a.logit - b.logit) for a, b in zip(raw, harm)) > 1e-6

    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    h = doc["harmonized"]
    assert h["harmonize"]["spec"] == "jpeg:96" and h["harmonize"]["name"] == "jpeg@q96"
    assert h["generators"]["g"]["formats"] == {"real": {"JPEG": 5}, "fake": {"JPEG": 5}}
    want = np.mean([(r.logit > 0) == r.label for r in on_disk])
    assert h["generators"]["g"]["acc"] == pytest.approx(want)
    assert doc["generators"]["g"]["acc"] == pytest.approx(np.mean([(r.logit > 0) == r.label for r in raw]))
    assert h["calibration"]["calibrated"] is False and "ece" in h["calibration"]
    lines = (tmp_path / "out" / "scores_harmonized.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["format"] == "JPEG"
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| generator | acc raw | acc jpeg@q96 |" in md
    assert "--harmonize" not in md  # formats agree and the harmonized run was done: nothing to suggest


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_format_or_size_shortcut_suggests_harmonize(model, pngs, tmp_path):
    # real images stored as JPEG, fake ones as PNG: the format alone separates the classes
    mixed = []
    for s in pngs:
        if s.label == 0:
            dst = tmp_path / (s.path.rsplit("/", 1)[-1] + ".jpg")
            with Image.open(s.path) as im:
                im.convert("RGB").save(dst, format="JPEG", quality=90)
            mixed.append(Sample(str(dst), 0, s.generator))
        else:
            mixed.append(s)
    res = evaluate(model, mixed, tmp_path / "out", image_size=64, progress=False)
    warnings = res["summary"]["warnings"]
    assert any("file format alone separates the classes" in w for w in warnings)
    assert any(f"--harmonize {DEFAULT_HARMONIZE}" in w for w in warnings)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "--harmonize jpeg:96" in md
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert any("--harmonize jpeg:96" in w for w in doc["warnings"])

    # sizes: all reals 32x32 and all fakes 48x40, same format -> the size warning fires and suggests it too
    sized = []
    for s in pngs:
        dst = tmp_path / "sized" / f"{s.label}_{s.path.rsplit('/', 1)[-1]}"
        dst.parent.mkdir(exist_ok=True)
        with Image.open(s.path) as im:
            im.resize((32, 32) if s.label == 0 else (48, 40)).save(dst)
        sized.append(Sample(str(dst), s.label, s.generator))
    res = evaluate(model, sized, None, image_size=64, progress=False)
    gm = res["summary"]["generators"]["g"]
    assert gm["sizes"] == {"real": {"32x32": 5}, "fake": {"48x40": 5}}
    assert "32x32" in gm["size_shortcut_warning"] and "48x40" in gm["size_shortcut_warning"]
    assert any("--harmonize jpeg:96" in w for w in res["summary"]["warnings"])


def test_size_overlap_warning_on_hand_made_records():
    def rec(label, size, i, gen="G"):
        return ScoreRecord(f"{gen}/{label}/{i}", gen, label, 0.0, 0.2, 0.2, 0.9, "PNG", size=size)

    # reals are all larger than the fakes and no size is shared
    real = [rec(0, (1024, 768), 0), rec(0, (800, 600), 1), rec(0, (640, 480), 2), rec(0, (2000, 1000), 3)]
    fake = [rec(1, (512, 512), 4), rec(1, (512, 512), 5)]
    w = generator_metrics(real + fake)["G"]["size_shortcut_warning"]
    assert w and "4 sizes from 640x480 to 2000x1000" in w and "512x512" in w
    # one real image of a fake's size -> they overlap, no warning
    assert generator_metrics(real + fake + [rec(0, (512, 512), 6)])["G"]["size_shortcut_warning"] is None
    # a single class, or an unknown size, cannot decide
    assert generator_metrics(real)["G"]["size_shortcut_warning"] is None
    assert generator_metrics(real + fake + [rec(1, None, 7)])["G"]["size_shortcut_warning"] is None
    # per generator: only the generator whose classes are separated by size warns
    other = [rec(0, (512, 512), 8, "H"), rec(1, (512, 512), 9, "H")]
    s = summarize(real + fake + other)
    assert [x.split(":")[0] for x in s["warnings"]] == ["G"]
    assert s["generators"]["H"]["size_shortcut_warning"] is None


@pytest.mark.parametrize(
    "spec,msg",
    [
        ("blur:1", "expected jpeg:QUALITY"),
        ("jpeg", "expected jpeg:QUALITY"),
        ("jpeg:60,96", "one JPEG quality"),
        ("jpeg:101", "out of range"),
        ("jpeg:9x", "not a number"),
    ],
)
def test_bad_harmonize_specs_are_refused(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_harmonize_spec(spec)
    p = parse_harmonize_spec(" JPEG:96 ")
    assert (p.kind, p.level) == ("jpeg", 96)


def test_bad_harmonize_spec_fails_before_scoring(model, pngs, tmp_path):
    with pytest.raises(ValueError, match="expected jpeg:QUALITY"):
        evaluate(model, pngs, tmp_path / "o", image_size=64, progress=False, harmonize="noise:0.1")
    assert not (tmp_path / "o").exists()  # refused before the output folder was even created
