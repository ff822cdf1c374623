"""`synerdetect inspect`: provenance only, no model; table and JSON, bad files reported per file."""

import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from synerdetect.cli import main


def _fixtures(tmp_path):
    tmp_path.mkdir()
    info = PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 32x32")
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "a1111.png", pnginfo=info)
    Image.new("RGB", (32, 32)).save(tmp_path / "plain.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return tmp_path


def test_inspect_table_and_json(tmp_path, capsys):
    root = _fixtures(tmp_path / "imgs")
    assert main(["inspect", str(root)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0].rsplit("/", 1)[-1]: line.split()[1] for line in out.splitlines()[2:] if line.strip()}
    assert rows == {"a1111.png": "true", "plain.png": "null", "broken.png": "error"}

    dest = tmp_path / "prov.json"
    assert main(["inspect", str(root / "a1111.png"), "--json", str(dest)]) == 0
    rec = json.loads(dest.read_text())["provenance"][0]
    assert rec["declared_ai"] is True and rec["c2pa"] is None
    assert rec["evidence"][0]["source"] == "png_text" and rec["evidence"][0]["field"] == "parameters"


def test_inspect_refuses_an_unwritable_json_before_reading(tmp_path, capsys):
    root = _fixtures(tmp_path / "imgs")
    (tmp_path / "afile").write_text("x")
    assert main(["inspect", str(root), "--json", str(tmp_path / "afile" / "out.json")]) == 2
    err = capsys.readouterr().err
    assert "afile" in err and "is a file" in err and "Traceback" not in err
