"""predict's input expansion: files, folders (recursive), globs, and inputs that match nothing."""

from PIL import Image

from synerdetect.engine.scoring import expand_inputs


def test_files_folders_globs_and_missing(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for p in ("a/x.png", "a/deep/y.jpg", "a/.hidden/z.png", "b.webp"):
        Image.new("RGB", (8, 8)).save(tmp_path / p)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    paths, missing = expand_inputs(
        [
            str(tmp_path / "a"),
            str(tmp_path / "*.webp"),
            str(tmp_path / "a" / "x.png"),
            str(tmp_path / "nope.png"),
            str(tmp_path / "empty"),
        ]
    )
    rel = [str(p)[len(str(tmp_path)) + 1 :] for p in paths]
    assert rel == ["a/deep/y.jpg", "a/x.png", "b.webp"]  # recursive, no hidden folders, no duplicates
    assert [m[0].rsplit("/", 1)[-1] for m in missing] == ["nope.png", "empty"]
    assert "no such file" in missing[0][1] and "no image files" in missing[1][1]
