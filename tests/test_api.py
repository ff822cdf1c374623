"""``synerdetect.load`` (the one-line API), ``Detector.predict`` on PIL images and paths, and the README's block."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import synerdetect
from hub_fixtures import make_hub_cache
from synerdetect.engine.calibration import Calibration
from synerdetect.model.base import InputError

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[1] / "README.md"


def _photo(seed: int, size: tuple[int, int] = (70, 52)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def calibrated(ckpt, tmp_path_factory):
    """The shared tiny checkpoint with a calibration whose band catches logits near 0 (so it changes verdicts)."""
    folder = tmp_path_factory.mktemp("calibrated") / "model"
    shutil.copytree(ckpt, folder)
    Calibration(method="platt", a=3.0, b=-0.5, band=[-0.5, 0.5]).save(folder)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    paths = []
    for i, fmt in enumerate(("PNG", "JPEG")):
        p = d / f"photo{i}.{fmt.lower()}"
        _photo(i).save(p, fmt)
        paths.append(p)
    return paths


@pytest.mark.slow
def test_predict_takes_pil_images_and_paths_like_the_scorer(tiny_model, files):
    """``model.predict([pil, path])`` preprocesses with the model's own evaluation transform: its logits equal
    the scoring path's (``Scorer``, which decodes the bytes itself), and a tensor batch still works."""
    from synerdetect.engine.scoring import Scorer

    model = tiny_model.eval()
    pil = Image.open(files[0])
    out = model.predict([pil, str(files[1])])
    ref = Scorer(model).score([str(f) for f in files])
    np.testing.assert_allclose(out["logit"].numpy(), [r["logit"] for r in ref], rtol=1e-5, atol=1e-6)
    single = model.predict(files[1])  # one path, not a list
    np.testing.assert_allclose(single["logit"].numpy(), [ref[1]["logit"]], rtol=1e-5, atol=1e-6)
    batch = model.as_input([pil])
    assert model.predict(batch)["logit"].shape == (1,)


def test_predict_names_an_unreadable_input(tiny_model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="broken.jpg"):
        tiny_model.predict([str(bad)])
    with pytest.raises(InputError, match="int"):
        tiny_model.predict([3])


@pytest.mark.slow
def test_load_applies_calibration_and_provenance_as_predict(calibrated, files, tmp_path):
    """The records of ``synerdetect.load`` equal those of ``synerdetect predict --json`` on the same file (the
    calibration applied, provenance read), and bytes and PIL images are scored too."""
    from synerdetect.cli import main

    out = tmp_path / "pred.json"
    assert main(["predict", str(files[0]), "--checkpoint", str(calibrated), "--json", str(out), "--no-progress"]) == 0
    cli = json.loads(out.read_text())["predictions"][0]
    detector = synerdetect.load(calibrated, device="cpu")
    rec, from_bytes, from_pil = detector([str(files[0]), files[0].read_bytes(), Image.open(files[0])])
    assert rec["calibrated"] is True and cli["calibrated"] is True
    for key in ("label", "verdict", "sha256", "provenance"):
        assert rec[key] == cli[key], key
    for key in ("prob_fake", "logit"):  # the JSON file holds them to 6 significant digits
        assert rec[key] == pytest.approx(cli[key], rel=1e-4, abs=1e-6), (key, rec[key], cli[key])
    cal = Calibration.load(calibrated)
    assert cal is not None
    assert rec["prob_fake"] == pytest.approx(1 / (1 + np.exp(-(3.0 * rec["logit"] - 0.5))))  # Platt, by hand
    assert rec["verdict"] == ("uncertain" if -0.5 <= rec["logit"] <= 0.5 else rec["label"])
    assert from_bytes["logit"] == pytest.approx(rec["logit"]) and from_bytes["sha256"] == rec["sha256"]
    assert from_pil["logit"] == pytest.approx(rec["logit"], abs=1e-5) and from_pil["error"] is None
    streamed = list(detector.iter_records(iter([str(files[0]), b"not an image"])))
    assert streamed[0]["logit"] == pytest.approx(rec["logit"], rel=1e-4) and streamed[1]["error_kind"] == "not_an_image"


def test_load_refuses_an_unknown_mode(calibrated):
    with pytest.raises(ValueError, match="mode must be one of"):
        synerdetect.load(calibrated, mode="fast")


@pytest.mark.slow
def test_import_synerdetect_stays_cheap():
    import subprocess
    import sys

    code = "import sys, synerdetect; synerdetect.load; print('torch' in sys.modules)"
    # ``synerdetect.load`` is looked up lazily: naming it imports the api module, not torch (only calling it does)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _readme_block() -> str:
    text = README.read_text()
    m = re.search(r"Then, in Python.*?```python\n(.*?)```", text, re.S)
    assert m, "README: the three-line Python block after the set-up is missing"
    first_code = re.search(r"## Set-up.*?```bash.*?```.*?```bash.*?```.*?```(\w*)", text, re.S)
    assert first_code and first_code.group(1) == "python", "the Python block is the first one after the set-up"
    return m.group(1)


@pytest.mark.slow
def test_the_readme_block_runs_as_written(calibrated, tmp_path, monkeypatch):
    """The README's block, unchanged, against a Hub cache holding ``org/name`` (offline), a photo.jpg in the
    working folder, a PIL image and raw bytes: three records, the first equal to the folder's own."""
    import huggingface_hub.constants as hub_constants

    block = _readme_block()
    cache = tmp_path / "hub"
    make_hub_cache(cache, "org/name", calibrated)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    _photo(7).save("photo.jpg", quality=90)
    buf = io.BytesIO()
    _photo(8).save(buf, "PNG")
    scope = {"pil_image": _photo(9), "raw_bytes": buf.getvalue()}
    exec(compile(block, "README.md", "exec"), scope)
    records = scope["records"]
    assert [r["error"] for r in records] == [None, None, None]
    assert all(r["verdict"] in ("real", "fake", "uncertain") and r["calibrated"] for r in records)
    direct = synerdetect.load(calibrated, device="cpu")("photo.jpg")[0]
    # batched with two other images vs alone: equal up to float summation order
    assert (
        records[0]["logit"] == pytest.approx(direct["logit"], rel=1e-4, abs=1e-5)
        and records[0]["verdict"] == direct["verdict"]
    )
