from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from data_fixtures import make_tree, write_image
from synerdetect.data import (
    LayoutError,
    ManifestError,
    Sample,
    count_by_generator,
    detect_layout,
    discover,
    generators,
    parse_label,
)


def _summary(samples):
    """Counter of (split, generator, label)."""
    return Counter((s.split, s.generator, s.label) for s in samples)


def _by_name(samples):
    return {os.path.basename(s.path): s for s in samples}


# ----------------------------------------------------------------------------- cnndetection


@pytest.fixture
def cnn_root(tmp_path):
    root = tmp_path / "CNNDetection"
    make_tree(
        root,
        [
            "train/airplane/0_real/a0.png",
            "train/airplane/0_real/a1.png",
            "train/airplane/1_fake/a2.png",
            "train/cat/0_real/c0.png",
            "train/cat/1_fake/c1.png",
            "val/airplane/0_real/v0.png",
            "val/airplane/1_fake/v1.png",
            # flat generator folder
            "test/biggan/0_real/b0.png",
            "test/biggan/0_real/b1.png",
            "test/biggan/1_fake/b2.png",
            "test/biggan/1_fake/b3.JPG",
            "test/biggan/1_fake/b4.webp",
            # nested generator/class folders
            "test/stylegan/car/0_real/s0.png",
            "test/stylegan/car/1_fake/s1.png",
            "test/stylegan/cat/0_real/s2.png",
            "test/stylegan/cat/1_fake/s3.png",
            "test/stylegan/cat/1_fake/s4.png",
        ],
    )
    # noise that must be ignored
    (root / "test/biggan/1_fake/.hidden.png").write_bytes(b"x")
    (root / "test/biggan/1_fake/readme.txt").write_text("hi")
    write_image(root / "test/biggan/stray.png")  # not under a label folder
    (root / "train/.cache/0_real").mkdir(parents=True)
    write_image(root / "train/.cache/0_real/h.png")
    return root


def test_cnndetection_full_root(cnn_root):
    samples = discover(cnn_root)
    assert detect_layout(cnn_root) == "cnndetection"
    assert _summary(samples) == Counter(
        {
            ("train", "airplane", 0): 2,
            ("train", "airplane", 1): 1,
            ("train", "cat", 0): 1,
            ("train", "cat", 1): 1,
            ("val", "airplane", 0): 1,
            ("val", "airplane", 1): 1,
            ("test", "biggan", 0): 2,
            ("test", "biggan", 1): 3,
            ("test", "stylegan", 0): 2,
            ("test", "stylegan", 1): 3,
        }
    )
    names = _by_name(samples)
    assert "stray.png" not in names and ".hidden.png" not in names and "h.png" not in names
    assert names["b3.JPG"].label == 1  # upper-case extension
    assert [s.path for s in samples] == sorted(s.path for s in samples)
    assert all(os.path.isabs(s.path) for s in samples)
    assert discover(cnn_root) == samples  # deterministic


def test_cnndetection_split_selection(cnn_root):
    test = discover(cnn_root, "cnndetection", split="test")
    assert generators(test) == ["biggan", "stylegan"]
    assert {s.split for s in test} == {"test"}
    assert count_by_generator(test) == {"biggan": {0: 2, 1: 3}, "stylegan": {0: 2, 1: 3}}
    train = discover(cnn_root, split="train")
    assert generators(train) == ["airplane", "cat"]  # first folder below the split
    with pytest.raises(LayoutError, match="available"):
        discover(cnn_root, split="holdout")


def test_cnndetection_split_folder_and_generator_folder(cnn_root):
    test = discover(cnn_root / "test")
    assert test == discover(cnn_root, split="test")
    style = discover(cnn_root / "test" / "stylegan")  # nested classes, generator = folder name
    assert _summary(style) == Counter({("test", "stylegan", 0): 2, ("test", "stylegan", 1): 3})
    big = discover(cnn_root / "test" / "biggan")
    assert _summary(big) == Counter({("test", "biggan", 0): 2, ("test", "biggan", 1): 3})
    with pytest.raises(LayoutError):
        discover(cnn_root / "test", split="train")


def test_cnndetection_generator_root_without_split(tmp_path):
    # UniversalFakeDetect "diffusion_datasets" style: root/<generator>/{0_real,1_fake}
    root = tmp_path / "diffusion_datasets"
    make_tree(root, ["guided/0_real/a.png", "guided/1_fake/b.png", "ldm_200/0_real/c.png", "ldm_200/1_fake/d.png"])
    s = discover(root)
    assert generators(s) == ["guided", "ldm_200"]
    assert {x.split for x in s} == {None}
    assert {x.split for x in discover(root, split="test")} == {"test"}  # recorded only


def test_labels_from_names_not_alphabetical_order(tmp_path):
    # 'fake' < 'real' alphabetically, yet fake = 1; also mixed 0_real/1_fake vs real/fake names
    root = tmp_path / "ds"
    make_tree(
        root, ["test/gen/fake/f.png", "test/gen/real/r.png", "test/gen2/1_fake/f2.png", "test/gen2/0_real/r2.png"]
    )
    names = _by_name(discover(root))
    assert (names["f.png"].label, names["r.png"].label) == (1, 0)
    assert (names["f2.png"].label, names["r2.png"].label) == (1, 0)


def test_only_one_class_is_fine(tmp_path):
    root = tmp_path / "ds"
    make_tree(root, ["test/gen/1_fake/f.png"])
    assert [s.label for s in discover(root)] == [1]


# ----------------------------------------------------------------------------- genimage


@pytest.fixture
def genimage_root(tmp_path):
    root = tmp_path / "GenImage"
    make_tree(
        root,
        [
            "stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/train/ai/1.png",
            "stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/train/ai/2.png",
            "stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/train/nature/3.JPEG",
            "stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/val/ai/4.png",
            "stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/val/nature/5.JPEG",
            "ADM/imagenet_ai_0508_adm/train/ai/6.PNG",
            "ADM/imagenet_ai_0508_adm/train/nature/7.jpeg",
            "ADM/imagenet_ai_0508_adm/train/nature/8.jpeg",
            "ADM/imagenet_ai_0508_adm/val/ai/9.png",
            "ADM/imagenet_ai_0508_adm/val/nature/10.jpeg",
        ],
    )
    return root


def test_genimage_labels_generators_splits(genimage_root):
    assert detect_layout(genimage_root) == "genimage"
    s = discover(genimage_root)
    assert _summary(s) == Counter(
        {
            ("train", "stable_diffusion_v_1_4", 1): 2,
            ("train", "stable_diffusion_v_1_4", 0): 1,
            ("val", "stable_diffusion_v_1_4", 1): 1,
            ("val", "stable_diffusion_v_1_4", 0): 1,
            ("train", "ADM", 1): 1,
            ("train", "ADM", 0): 2,
            ("val", "ADM", 1): 1,
            ("val", "ADM", 0): 1,
        }
    )
    names = _by_name(s)
    # 'ai' sorts before 'nature' yet ai = fake = 1
    assert names["1.png"].label == 1 and names["3.JPEG"].label == 0
    assert generators(s) == ["ADM", "stable_diffusion_v_1_4"]
    train = discover(genimage_root, "genimage", split="train")
    assert {x.split for x in train} == {"train"} and len(train) == 6
    with pytest.raises(LayoutError, match="available"):
        discover(genimage_root, split="test")


def test_genimage_sub_roots(genimage_root):
    gen = genimage_root / "ADM"
    subset = gen / "imagenet_ai_0508_adm"
    for root in (gen, subset):
        s = discover(root)
        assert generators(s) == ["ADM"] and len(s) == 5
    s = discover(subset / "val")
    assert generators(s) == ["ADM"] and {x.split for x in s} == {"val"} and len(s) == 2


# ----------------------------------------------------------------------------- chameleon


def test_chameleon(tmp_path):
    root = tmp_path / "Chameleon"
    make_tree(root, ["test/0_real/r1.jpg", "test/0_real/r2.jpg", "test/1_fake/f1.png"])
    assert detect_layout(root) == "chameleon"
    s = discover(root)
    assert _summary(s) == Counter({("test", "chameleon", 0): 2, ("test", "chameleon", 1): 1})
    assert discover(root / "test") == s
    assert discover(root, "chameleon", split="test") == s
    # explicit chameleon layout on a folder holding 0_real/1_fake directly
    flat = tmp_path / "whatever"
    make_tree(flat, ["0_real/a.png", "1_fake/b.png"])
    s2 = discover(flat, "chameleon")
    assert _summary(s2) == Counter({(None, "chameleon", 0): 1, (None, "chameleon", 1): 1})
    # auto on a flat non-chameleon folder -> cnndetection with the folder name as generator
    assert detect_layout(flat) == "cnndetection"
    assert generators(discover(flat)) == ["whatever"]


# ----------------------------------------------------------------------------- manifest


def test_manifest_csv(tmp_path):
    write_image(tmp_path / "imgs/a.png")
    write_image(tmp_path / "imgs/b.png")
    abs_img = write_image(tmp_path / "elsewhere/c.png")
    m = tmp_path / "meta" / "manifest.csv"
    m.parent.mkdir()
    m.write_text(
        "path,label,generator\n"
        "../imgs/a.png,real,\n"
        f"../imgs/b.png,1,sdxl\n"
        f"{abs_img},AI,midjourney\n"
        "../imgs/d.png, nature ,sdxl\n"
        "\n"
        "../imgs/e.png,1_fake,sdxl\n"
    )
    assert detect_layout(m) == "manifest"
    s = discover(m)
    assert [(os.path.basename(x.path), x.label, x.generator) for x in s] == [
        ("a.png", 0, "unknown"),
        ("b.png", 1, "sdxl"),
        ("c.png", 1, "midjourney"),
        ("d.png", 0, "sdxl"),
        ("e.png", 1, "sdxl"),
    ]
    assert s[0].path == str(tmp_path / "imgs" / "a.png")  # resolved against the manifest folder
    assert s[2].path == str(abs_img)


def test_manifest_csv_bad_rows(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("path,label\na.png,0\nb.png,maybe\n")
    with pytest.raises(ManifestError, match=r"line 3.*maybe"):
        discover(m)
    m.write_text("path,label\na.png,0\nb.png\n")
    with pytest.raises(ManifestError, match="line 3"):
        discover(m)
    m.write_text("path,label\na.png,0\n,1\n")
    with pytest.raises(ManifestError, match="line 3.*path"):
        discover(m)
    m.write_text("file,label\na.png,0\n")
    with pytest.raises(ManifestError, match="path"):
        discover(m)
    m.write_text("path,label\na.png,0\nb.png,\n")
    with pytest.raises(ManifestError, match="line 3.*label"):
        discover(m)


def test_manifest_jsonl_and_json(tmp_path):
    rows = [
        {"path": "x/1.png", "label": 0, "generator": "g1", "split": "train"},
        {"path": "x/2.png", "label": "fake", "generator": "g2", "split": "test"},
        {"path": "x/3.png", "label": "1", "split": "test"},
    ]
    jl = tmp_path / "m.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    s = discover(jl)
    assert [(x.label, x.generator, x.split) for x in s] == [
        (0, "g1", "train"),
        (1, "g2", "test"),
        (1, "unknown", "test"),
    ]
    assert s[0].path == str(tmp_path / "x" / "1.png")
    assert [x.label for x in discover(jl, split="test")] == [1, 1]  # split column filters
    js = tmp_path / "m.json"
    js.write_text(json.dumps(rows))
    assert discover(js) == s
    js.write_text(json.dumps({"samples": rows}))
    assert discover(js) == s

    jl.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(ManifestError, match="line 2"):
        discover(jl)
    jl.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"path": "y.png", "label": 7}) + "\n")
    with pytest.raises(ManifestError, match="line 2"):
        discover(jl)
    jl.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"path": "y.png", "label": True}) + "\n")
    with pytest.raises(ManifestError, match="line 2"):
        discover(jl)


def test_manifest_without_labels_is_unlabelled(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("path\na.png\nb.png\n")
    assert [x.label for x in discover(m)] == [-1, -1]


def test_parse_label():
    for v, want in [
        (0, 0),
        (1, 1),
        ("real", 0),
        ("FAKE", 1),
        ("nature", 0),
        ("ai", 1),
        ("0_real", 0),
        ("1_fake", 1),
        (1.0, 1),
    ]:
        assert parse_label(v) == want
    for bad in [2, -1, "x", True, None, "", 0.5]:
        with pytest.raises(ValueError):
            parse_label(bad)


# ----------------------------------------------------------------------------- folder / auto / misc


def test_folder_layout(tmp_path):
    root = tmp_path / "predict"
    make_tree(root, ["a.png", "sub/b.jpg", "sub/deeper/c.webp", "other/d.bmp"])
    (root / "notes.txt").write_text("x")
    s = discover(root, "folder")
    assert [x.label for x in s] == [-1] * 4
    assert {os.path.basename(x.path): x.generator for x in s} == {
        "a.png": "predict",
        "b.jpg": "sub",
        "c.webp": "sub",
        "d.bmp": "other",
    }
    # auto does not guess labels for an unlabelled folder
    with pytest.raises(LayoutError) as ei:
        discover(root)
    msg = str(ei.value)
    for word in ("manifest", "genimage", "chameleon", "cnndetection", "0_real", "folder"):
        assert word in msg


def test_auto_detection_each_layout(tmp_path, cnn_root, genimage_root):
    assert detect_layout(cnn_root) == "cnndetection"
    assert detect_layout(cnn_root / "test" / "stylegan") == "cnndetection"
    assert detect_layout(genimage_root) == "genimage"
    assert detect_layout(genimage_root / "ADM") == "genimage"
    m = tmp_path / "m.jsonl"
    m.write_text('{"path": "a.png", "label": 0}\n')
    assert detect_layout(m) == "manifest"
    other = tmp_path / "file.txt"
    other.write_text("x")
    with pytest.raises(LayoutError):
        detect_layout(other)
    with pytest.raises(LayoutError, match="does not exist"):
        discover(tmp_path / "missing")
    with pytest.raises(LayoutError, match="unknown layout"):
        discover(cnn_root, layout="imagenet")


def test_empty_structure_raises(tmp_path):
    root = tmp_path / "ds"
    (root / "test/gen/0_real").mkdir(parents=True)
    (root / "test/gen/1_fake").mkdir(parents=True)
    with pytest.raises(LayoutError, match="no image files"):
        discover(root)


def test_sample_dataclass():
    s = Sample("/a.png", 1, "g", "test")
    assert s.to_dict() == {"path": "/a.png", "label": 1, "generator": "g", "split": "test"}
    assert Sample("/a.png", 0, "g").split is None
