from __future__ import annotations

import json

from data_fixtures import make_tree, write_garbage, write_truncated_jpeg
from synerdetect.data import check_dataset, format_check_report


def _build(tmp_path):
    root = tmp_path / "ds"
    make_tree(
        root,
        [
            "test/progan/0_real/a.png",
            "test/progan/0_real/b.jpg",
            "test/progan/0_real/c.jpg",
            "test/progan/1_fake/d.png",
            "test/progan/1_fake/e.webp",
            "test/sdxl/0_real/f.jpg",
            "test/sdxl/1_fake/g.png",
            "test/sdxl/1_fake/h.gif",
        ],
    )
    bad = [
        write_truncated_jpeg(root / "test/progan/1_fake/trunc.jpg"),
        write_garbage(root / "test/sdxl/0_real/garbage.png"),
    ]
    (root / "test/sdxl/1_fake/empty.webp").write_bytes(b"")
    bad.append(root / "test/sdxl/1_fake/empty.webp")
    return root, bad


def test_check_dataset_counts_and_bad_files(tmp_path):
    root, bad = _build(tmp_path)
    rep = check_dataset(root, workers=4, progress=False)
    assert rep["layout"] == "cnndetection"
    assert (rep["total"], rep["readable"], rep["unreadable"]) == (11, 8, 3)
    assert rep["counts"] == {
        "progan": {"fake": {"PNG": 1, "WEBP": 1}, "real": {"JPEG": 2, "PNG": 1}},
        "sdxl": {"fake": {"GIF": 1, "PNG": 1}, "real": {"JPEG": 1}},
    }
    assert rep["formats"] == ["GIF", "JPEG", "PNG", "WEBP"]
    assert [b["path"] for b in rep["bad_files"]] == sorted(str(p) for p in bad)
    assert rep["bad_counts"] == {"progan": {"fake": 1}, "sdxl": {"fake": 1, "real": 1}}
    reasons = {b["path"]: b["reason"] for b in rep["bad_files"]}
    assert "truncated" in reasons[str(bad[0])]
    assert "empty" in reasons[str(bad[2])]
    assert rep["min_side"] == 24 and rep["max_side"] == 32 and rep["small"] == 8
    json.dumps(rep)  # serialisable
    # serial run gives the same report
    assert check_dataset(root, workers=1, progress=False) == rep


def test_format_check_report(tmp_path):
    root, bad = _build(tmp_path)
    rep = check_dataset(root, "cnndetection", split="test", workers=2, progress=False)
    md = format_check_report(rep)
    assert "| generator | class | GIF | JPEG | PNG | WEBP | unreadable | total |" in md
    assert "| progan | real | 0 | 2 | 1 | 0 | 0 | 3 |" in md
    assert "| progan | fake | 0 | 0 | 1 | 1 | 1 | 3 |" in md
    assert "| sdxl | real | 0 | 1 | 0 | 0 | 1 | 2 |" in md
    assert "| **total** | | **1** | **3** | **3** | **1** | **3** | **11** |" in md
    assert "Unreadable files (3)" in md
    for p in bad:
        assert str(p) in md
    short = format_check_report(rep, max_bad=1)
    assert "and 2 more" in short


def test_check_clean_dataset_report(tmp_path):
    root = tmp_path / "clean"
    make_tree(root, ["0_real/a.png", "1_fake/b.png"])
    rep = check_dataset(root, progress=False)
    assert rep["unreadable"] == 0 and rep["bad_files"] == []
    md = format_check_report(rep)
    assert "None." in md and "unreadable |" not in md
    assert "| clean | fake | 1 | 1 |" in md
