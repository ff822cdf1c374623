"""HEIC / HEIF through pillow-heif in every loader, ``inspect``, provenance (EXIF and XMP) and the scoring path the
service uses; fixtures made here with pillow-heif's own encoder."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synerdetect.imageformats import IMAGE_FORMATS, available_formats, open_image, register_heif

pillow_heif = pytest.importorskip("pillow_heif")
if not pillow_heif.libheif_info().get("HEIF"):
    pytest.skip("this libheif build has no HEIF encoder to make fixtures with", allow_module_level=True)

XMP_AI = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def _pixels(seed: int = 0) -> np.ndarray:
    """A smooth image (HEVC keeps smooth gradients close at high quality), 48 x 64."""
    y, x = np.mgrid[0:48, 0:64]
    rng = np.random.default_rng(seed)
    a = np.stack([x * 3 + rng.integers(0, 40), y * 4 + rng.integers(0, 40), (x + y) * 2], axis=-1)
    return np.clip(a, 0, 255).astype(np.uint8)


def heic_bytes(*, exif_software: str | None = None, xmp: bytes | None = None, seed: int = 0) -> bytes:
    kw = {}
    if exif_software:
        ex = Image.Exif()
        ex[0x0131] = exif_software
        kw["exif"] = ex.tobytes()
    if xmp:
        kw["xmp"] = xmp
    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(_pixels(seed))).save(buf, quality=95, **kw)
    return buf.getvalue()


def test_heif_is_one_of_the_formats():
    assert "HEIF" in IMAGE_FORMATS and register_heif() and "HEIF" in available_formats()
    data = heic_bytes()
    assert data[4:12] == b"ftypheic"
    with open_image(io.BytesIO(data)) as im:
        assert im.format == "HEIF" and im.size == (64, 48)


def test_the_loaders_decode_heic(tmp_path):
    from synerdetect.data.imageio import IMAGE_EXTENSIONS, image_format, load_image_with_format
    from synerdetect.engine.inputs import expand_inputs

    for name in ("photo.heic", "PHOTO.HEIF"):
        (tmp_path / name).write_bytes(heic_bytes())
    assert {".heic", ".heif"} <= IMAGE_EXTENSIONS
    paths, missing = expand_inputs([str(tmp_path)])
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["PHOTO.HEIF", "photo.heic"] and not missing
    img, fmt = load_image_with_format(tmp_path / "photo.heic")
    assert fmt == "HEIF" and img.mode == "RGB" and img.size == (64, 48)
    # lossy at quality 95: close to the pixels that went in (an independent reference: the array itself)
    assert np.abs(np.asarray(img, dtype=float) - _pixels()).mean() < 4
    assert image_format(tmp_path / "photo.heic") == "HEIF"


def test_a_truncated_heic_is_reported_not_raised(tmp_path):
    from synerdetect.data.imageio import UnreadableImage, load_image

    bad = tmp_path / "cut.heic"
    bad.write_bytes(heic_bytes()[:200])
    with pytest.raises(UnreadableImage, match="cut.heic"):
        load_image(bad)


def test_provenance_reads_heic_exif_and_xmp(tmp_path):
    from synerdetect.provenance import inspect_paths, read_provenance

    data = heic_bytes(exif_software="Midjourney v6", xmp=XMP_AI)
    prov = read_provenance(data)
    assert not prov.get("error") and prov["declared_ai"] is True
    got = {(e["source"], e["field"]) for e in prov["evidence"]}
    assert ("xmp", "Iptc4xmpExt:DigitalSourceType") in got and any(s == "exif" for s, _ in got)
    (tmp_path / "ai.heic").write_bytes(data)
    (tmp_path / "plain.heic").write_bytes(heic_bytes())
    rows = inspect_paths([tmp_path / "ai.heic", tmp_path / "plain.heic"])
    assert [r["declared_ai"] for r in rows] == [True, None] and not any(r.get("error") for r in rows)


@pytest.mark.slow
def test_the_scoring_path_of_predict_and_the_service_takes_heic(tiny_model):
    """``Scorer`` (predict, ``synerdetect.load`` and every service request go through it): HEIC bytes give a
    record whose score equals that of the same decoded pixels given as a PNG."""
    from synerdetect.engine.scoring import Scorer

    data = heic_bytes(xmp=XMP_AI)
    decoded = Image.open(io.BytesIO(data)).convert("RGB")
    png = io.BytesIO()
    decoded.save(png, "PNG")
    heic_rec, png_rec = Scorer(tiny_model.eval(), provenance=True).score([("a.heic", data), png.getvalue()])
    assert heic_rec["error"] is None and heic_rec["format"] == "HEIF" and heic_rec["provenance"]["declared_ai"]
    assert heic_rec["logit"] == pytest.approx(png_rec["logit"], abs=1e-5)
