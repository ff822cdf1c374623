"""Hardening of the data layer: bounded transform work for extreme shapes, ambiguous folder layouts,
manifest duplicates/encodings, non-regular files and deep trees, extra extensions and odd file names.

Run ``pytest -s tests/test_data_hardening.py -k peak`` to print the measured transform memory.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, features

from data_fixtures import make_tree, noise_image, write_garbage, write_image
from synerdetect.data import (
    AmbiguousLayoutError,
    EvalTransform,
    ImageDataset,
    LayoutError,
    ManifestError,
    TrainTransform,
    UnreadableImage,
    check_dataset,
    discover,
    format_check_report,
    image_format,
    is_image_file,
    load_image,
)

BICUBIC = Image.Resampling.BICUBIC


def _t(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> 3xHxW float tensor in [0, 1] (the transforms' output convention)."""
    return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def _draws(seed: int) -> list[float]:
    """The seven uniform draws TrainTransform takes from random.Random(seed)."""
    r = random.Random(seed)
    return [r.random() for _ in range(7)]


def _smooth(w: int, h: int) -> Image.Image:
    """A smooth image (no edges): resampling differences stay tiny on it."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 100 * np.sin(xx / max(w, 1) * 3.0)
    g = 127 + 100 * np.cos(yy / max(h, 1) * 3.0)
    b = 127 + 60 * np.sin((xx + yy) / max(w + h, 1) * 4.0)
    return Image.fromarray(np.stack([r, g, b], -1).round().astype(np.uint8), "RGB")


# ============================================================================ 1. transform work is bounded


@pytest.mark.parametrize(
    "size,resized,box",
    [
        # hand-worked: 96x80, shorter side (80) -> size, longer = round(96 * size / 80), centre crop offset
        # round((long - size) / 2) with Python's round-half-to-even
        (32, (38, 32), (3, 0, 35, 32)),
        (64, (77, 64), (6, 0, 70, 64)),  # 76.8 -> 77; (77 - 64) / 2 = 6.5 -> 6
        (80, None, (8, 0, 88, 80)),  # already the right size: plain centre crop
        (128, (154, 128), (13, 0, 141, 128)),
        (224, (269, 224), (22, 0, 246, 224)),  # 268.8 -> 269; 22.5 -> 22
    ],
)
def test_eval_output_bit_identical_for_ordinary_image(size, resized, box):
    img = noise_image(96, 80, seed=11)
    ref = img.resize(resized, BICUBIC) if resized else img
    expected = _t(ref.crop(box))
    assert torch.equal(EvalTransform(size)(img), expected)
    # portrait orientation: the same numbers with x and y swapped
    tall = img.transpose(Image.Transpose.TRANSPOSE)
    ref_t = tall.resize(resized[::-1], BICUBIC) if resized else tall
    assert torch.equal(EvalTransform(size)(tall), _t(ref_t.crop((box[1], box[0], box[3], box[2]))))


def test_eval_no_resize_and_train_outputs_bit_identical_for_ordinary_image():
    img = noise_image(96, 80, seed=12)
    up = img.resize((154, 128), BICUBIC)  # shorter side 80 -> 128 (upscale), 153.6 -> 154
    # EvalTransform(resize=False): upscale only when smaller than size, then centre crop
    assert torch.equal(EvalTransform(128, resize=False)(img), _t(up.crop((13, 0, 141, 128))))
    assert torch.equal(EvalTransform(64, resize=False)(img), _t(img.crop((16, 8, 80, 72))))
    plain = dict(flip=False, blur_prob=0.0, jpeg_prob=0.0)
    assert torch.equal(
        TrainTransform(128, crop="center", **plain)(img, random.Random(0)), _t(up.crop((13, 0, 141, 128)))
    )
    assert torch.equal(TrainTransform(64, crop="center", **plain)(img, random.Random(0)), _t(img.crop((16, 8, 80, 72))))
    assert torch.equal(
        TrainTransform(64, crop="resize", **plain)(img, random.Random(0)), _t(img.resize((64, 64), BICUBIC))
    )
    for seed in range(8):  # random crop of the upscaled image: x uniform in 0..26, y = 0
        u = _draws(seed)
        x = min(int(u[4] * 27), 26)
        got = TrainTransform(128, **plain)(img, random.Random(seed))
        assert torch.equal(got, _t(up.crop((x, 0, x + 128, 128))))


class _ResizeBudget:
    """Records every Image.resize request; fails *before* allocating when one exceeds ``budget`` pixels."""

    def __init__(self, budget: int | None):
        self.budget = budget
        self.sizes: list[tuple[int, int]] = []
        self._orig = Image.Image.resize

    def __enter__(self):
        orig, rec = self._orig, self

        def resize(im, size, *args, **kwargs):
            w, h = int(size[0]), int(size[1])
            rec.sizes.append((w, h))
            if rec.budget is not None and w * h > rec.budget:
                raise AssertionError(f"transform asked Pillow for a {w}x{h} image (budget {rec.budget} pixels)")
            return orig(im, size, *args, **kwargs)

        Image.Image.resize = resize
        return self

    def __exit__(self, *exc):
        Image.Image.resize = self._orig
        return False

    @property
    def max_px(self) -> int:
        return max((w * h for w, h in self.sizes), default=0)


_EXTREME = [(1, 60000), (60000, 1)]


def _transforms(size: int) -> list[tuple[str, Callable]]:
    return [
        ("eval", EvalTransform(size)),
        ("eval-noresize", EvalTransform(size, resize=False)),
        ("train-random", TrainTransform(size)),
        ("train-center", TrainTransform(size, crop="center")),
        ("train-resize", TrainTransform(size, crop="resize")),
        ("train-blur-jpeg", TrainTransform(size, blur_prob=1.0, jpeg_prob=1.0)),
    ]


@pytest.mark.parametrize("size", [64, 512])
@pytest.mark.parametrize("shape", _EXTREME, ids=lambda s: f"{s[0]}x{s[1]}")
def test_extreme_aspect_work_is_bounded(shape, size):
    # Before: 1x60000 at 64 px asked Pillow for a 64x3840000 image (983 MB), at 512 px for tens of GB.
    img = Image.new("RGB", shape, (10, 200, 30))
    budget = 4 * size * size  # every intermediate at most 4x the output
    for name, t in _transforms(size):
        with _ResizeBudget(budget) as rec:
            x = t(img, random.Random(1))
        assert tuple(x.shape) == (3, size, size), name
        assert rec.max_px <= budget, name
        assert torch.allclose(x, torch.tensor([10, 200, 30]).view(3, 1, 1) / 255, atol=2 / 255), name


def test_extreme_aspect_png_through_dataset(tmp_path):
    p = tmp_path / "strip.png"
    Image.new("RGB", (1, 60000), (255, 0, 0)).save(p, optimize=True)
    assert p.stat().st_size < 1024  # a few hundred bytes declare a 60000-pixel-long image
    samples = discover(p, layout="folder")
    with _ResizeBudget(4 * 224 * 224):
        rec = ImageDataset(samples, EvalTransform(224))[0]
    assert "error" not in rec and tuple(rec["image"].shape) == (3, 224, 224)


@pytest.mark.parametrize("shape", _EXTREME, ids=lambda s: f"{s[0]}x{s[1]}")
def test_extreme_aspect_keeps_the_centre_content(shape):
    # red everywhere except 41 green pixels in the middle of the long side: a centre crop is green
    w, h = shape
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = 255
    if h > w:
        arr[30000 - 20 : 30000 + 21, :] = (0, 255, 0)
    else:
        arr[:, 30000 - 20 : 30000 + 21] = (0, 255, 0)
    img = Image.fromarray(arr, "RGB")
    green = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)
    plain = dict(flip=False, blur_prob=0.0, jpeg_prob=0.0)
    for t in (EvalTransform(64), EvalTransform(64, resize=False), TrainTransform(64, crop="center", **plain)):
        with _ResizeBudget(4 * 64 * 64):
            x = t(img, random.Random(0))
        assert torch.allclose(x, green.expand_as(x), atol=2 / 255), t


def test_extreme_aspect_random_crop_position_follows_the_draws():
    # vertical ramp 1x60000: red = row / 59999.  Upscaled 64x, the crop at y (upscaled rows) covers source rows
    # y/64 .. (y+64)/64, so its mean red is ((y + 32) / 64 - 0.5) / 59999 (pixel centres), whatever the resampler.
    rows = np.arange(60000, dtype=np.float64)
    arr = np.zeros((60000, 1, 3), np.uint8)
    arr[:, 0, 0] = np.round(rows / 59999 * 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    t = TrainTransform(64, flip=False, blur_prob=0.0, jpeg_prob=0.0)
    nh = 64 * 60000
    means = []
    for seed in range(6):
        u = _draws(seed)
        y = min(int(u[5] * (nh - 64 + 1)), nh - 64)
        with _ResizeBudget(4 * 64 * 64):
            x = t(img, random.Random(seed))
        want = ((y + 32) / 64 - 0.5) / 59999
        assert abs(float(x[0].mean()) - want) < 1.5 / 255, (seed, y)
        means.append(float(x[0].mean()))
    assert max(means) - min(means) > 0.1  # the positions really differ


@pytest.mark.parametrize("shape,size", [((6, 200), 16), ((300, 7), 32), ((40, 900), 64), ((1000, 200), 32)])
def test_moderately_extreme_images_match_resize_then_crop(shape, size):
    """Images beyond 4:1 are resized through a crop box now; the result is the same picture as the old
    resize-whole-image-then-crop (computed here with PIL directly), up to rounding."""
    img = _smooth(*shape)
    w, h = img.size
    if w <= h:
        nw, nh = size, round(h * size / w)
    else:
        nw, nh = round(w * size / h), size
    big = img.resize((nw, nh), BICUBIC)
    left, top = round((nw - size) / 2), round((nh - size) / 2)
    want = _t(big.crop((left, top, left + size, top + size)))
    got = EvalTransform(size)(img)
    assert (got - want).abs().mean() < 0.5 / 255 and (got - want).abs().max() <= 3 / 255
    plain = dict(flip=False, blur_prob=0.0, jpeg_prob=0.0)
    for seed in range(4):
        u = _draws(seed)
        x, y = min(int(u[4] * (nw - size + 1)), nw - size), min(int(u[5] * (nh - size + 1)), nh - size)
        if min(w, h) >= size:  # TrainTransform never downscales: plain native crop
            continue
        want = _t(big.crop((x, y, x + size, y + size)))
        got = TrainTransform(size, **plain)(img, random.Random(seed))
        assert (got - want).abs().mean() < 0.5 / 255 and (got - want).abs().max() <= 3 / 255


def _vm_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_transform_peak(
    transform: Callable, img: Image.Image, rng: Any = None, *, max_resize_px: int | None = None
) -> dict[str, Any]:
    """Run ``transform(img, rng)`` once and measure what it costs.

    Returns ``{"rss_peak_mib", "traced_peak_mib", "max_resize_px", "resizes", "out_shape"}``:

    * ``rss_peak_mib``: growth of the process's peak resident memory over the resident memory just before
      the call (Linux: ``VmHWM`` reset through ``/proc/self/clear_refs``; ``None`` where that is unavailable).
      This sees Pillow's C allocations; it can under-count when freed memory is reused.
    * ``traced_peak_mib``: ``tracemalloc`` peak (Python-level allocations only: Pillow's pixel buffers are
      mostly invisible to it).
    * ``max_resize_px`` / ``resizes``: the largest image, and every size, Pillow was asked to produce.

    ``max_resize_px`` (argument): fail before allocating when a resize asks for more pixels than this.
    """
    gc.collect()
    rss0 = _vm_kib("VmRSS")
    hwm_ok = False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_ok = rss0 is not None
    except OSError:
        pass
    with _ResizeBudget(max_resize_px) as rec:
        tracemalloc.start()
        try:
            out = transform(img, rng)
            traced = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    hwm = _vm_kib("VmHWM") if hwm_ok else None
    return {
        "rss_peak_mib": None if hwm is None or rss0 is None else max(0, hwm - rss0) / 1024,
        "traced_peak_mib": traced / 2**20,
        "max_resize_px": rec.max_px,
        "resizes": list(rec.sizes),
        "out_shape": tuple(out.shape),
    }


@pytest.mark.slow  # end to end (benchmark-style / CLI): outside the fast loop
def test_measure_transform_peak_extreme_shapes():
    size = 224
    shapes = {"96x80": (96, 80), "1x60000": (1, 60000), "60000x1": (60000, 1)}
    rows = []
    for label, shape in shapes.items():
        img = Image.new("RGB", shape, (90, 20, 200))
        for name, t in _transforms(size):
            m = measure_transform_peak(t, img, random.Random(0), max_resize_px=4 * size * size)
            rows.append((label, name, m))
            assert m["out_shape"] == (3, size, size)
            assert m["max_resize_px"] <= 4 * size * size
            if m["rss_peak_mib"] is not None:
                assert m["rss_peak_mib"] < 64, (label, name, m)  # resize-first needed 12 GB for 1x60000
    print(f"\ntransform cost at size {size} (rss = peak RSS growth, traced = tracemalloc peak):")
    for label, name, m in rows:
        rss = "n/a" if m["rss_peak_mib"] is None else f"{m['rss_peak_mib']:7.2f} MiB"
        print(
            f"  {label:>8} {name:<16} rss {rss}  traced {m['traced_peak_mib']:6.2f} MiB  "
            f"largest resize {m['max_resize_px']:>8} px  {m['resizes']}"
        )


# ============================================================================ 2. ambiguous folder layouts


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    return msg


def test_ambiguous_layout_error_type_is_exported():
    assert issubclass(AmbiguousLayoutError, LayoutError) and issubclass(AmbiguousLayoutError, ValueError)


@pytest.mark.parametrize(
    "rels,outer,inner",
    [
        (["test/gen/0_real/r.png", "test/gen/0_real/1_fake/f.png"], "test/gen/0_real", "test/gen/0_real/1_fake"),
        (["test/gen/fake/f.png", "test/gen/fake/x/real/r.png"], "test/gen/fake", "test/gen/fake/x/real"),
        (["0_real/a.png", "1_fake/b.png", "1_fake/nature/c.png"], "1_fake", "1_fake/nature"),
        (
            ["gen/sub/train/ai/a.png", "gen/sub/train/nature/b.png", "gen/sub/train/ai/real/c.png"],
            "gen/sub/train/ai",
            "gen/sub/train/ai/real",
        ),
        (["test/gen/ai/0_real/a.png", "test/gen/ai/1_fake/b.png"], "test/gen/ai", "test/gen/ai/0_real"),
    ],
)
def test_class_folders_inside_class_folders_are_an_error(tmp_path, rels, outer, inner):
    root = tmp_path / "ds"
    make_tree(root, rels)
    with pytest.raises(AmbiguousLayoutError) as ei:
        discover(root)
    msg = _one_line(ei.value)
    assert str(root / inner) in msg and str(root / outer) in msg
    assert "--layout" in msg


def test_real_fake_inside_a_generator_named_real(tmp_path):
    # the old behaviour: every image labelled real, fakes included
    root = tmp_path / "ds"
    make_tree(root, ["test/real/0_real/a.png", "test/real/1_fake/b.png"])
    with pytest.raises(AmbiguousLayoutError, match="test/real"):
        discover(root)
    with pytest.raises(AmbiguousLayoutError, match="test/real"):
        discover(root / "test")
    # pointed at the folder itself: labels are right, but the generator would be called "real"
    with pytest.raises(AmbiguousLayoutError) as ei:
        discover(root / "test" / "real")
    msg = _one_line(ei.value)
    assert str(root / "test" / "real") in msg and "generator" in msg


@pytest.mark.parametrize(
    "rels,where",
    [
        (["real/sub/train/ai/a.png", "real/sub/train/nature/b.png"], "real"),  # genimage generator 'real'
        (["test/nature/0_real/a.png", "test/nature/1_fake/b.png"], "test/nature"),
    ],
)
def test_generator_folder_named_like_a_class_is_an_error(tmp_path, rels, where):
    root = tmp_path / "ds"
    make_tree(root, rels)
    with pytest.raises(AmbiguousLayoutError) as ei:
        discover(root)
    assert str(root / where) in _one_line(ei.value)


@pytest.fixture
def mixed_root(tmp_path):
    root = tmp_path / "mixed"
    make_tree(
        root,
        [
            "sdv4/imagenet_sdv4/train/ai/a.png",
            "sdv4/imagenet_sdv4/train/nature/b.png",
            "progan/0_real/c.png",
            "progan/1_fake/d.png",
            "progan/1_fake/e.png",
        ],
    )
    return root


def test_mixed_layouts_in_one_tree_are_an_error(mixed_root, caplog):
    with pytest.raises(AmbiguousLayoutError) as ei:
        discover(mixed_root)
    msg = _one_line(ei.value)
    assert str(mixed_root / "sdv4/imagenet_sdv4/train") in msg and str(mixed_root / "progan/0_real") in msg
    assert "--layout genimage" in msg and "--layout cnndetection" in msg
    # saying what you mean works, and the ignored part is logged
    with caplog.at_level(logging.WARNING, logger="synerdetect.data.layouts"):
        gen = discover(mixed_root, layout="genimage")
    assert Counter((s.generator, s.label) for s in gen) == Counter({("sdv4", 1): 1, ("sdv4", 0): 1})
    assert any("progan" in r.getMessage() for r in caplog.records)
    cnn = discover(mixed_root, layout="cnndetection")
    assert Counter((s.generator, s.label) for s in cnn) == Counter({("progan", 0): 1, ("progan", 1): 2})


def test_check_dataset_reports_layout_problems(tmp_path, mixed_root):
    root = tmp_path / "ds"
    make_tree(root, ["test/gen/0_real/r.png", "test/gen/0_real/1_fake/f.png"])
    with pytest.raises(AmbiguousLayoutError, match="1_fake"):
        check_dataset(root, progress=False)
    with pytest.raises(AmbiguousLayoutError, match="--layout genimage"):
        check_dataset(mixed_root, progress=False)
    rep = check_dataset(mixed_root, layout="cnndetection", progress=False, workers=1)
    assert rep["total"] == 3


# ============================================================================ 3. manifests


def _imgs(tmp_path, *names):
    return [write_image(tmp_path / "imgs" / n, seed=i) for i, n in enumerate(names)]


def test_manifest_duplicates_same_label_warn_and_keep_once(tmp_path, caplog):
    a, b = _imgs(tmp_path, "a.png", "b.png")
    m = tmp_path / "m.csv"
    m.write_text(
        "path,label,generator\n"
        "imgs/a.png,0,g\n"  # line 2
        f"{a},real,g\n"  # line 3: absolute spelling of the same file
        "imgs/b.png,1,g\n"  # line 4
        "./imgs/../imgs/a.png,0,g\n"  # line 5: yet another spelling
    )
    with caplog.at_level(logging.WARNING, logger="synerdetect.data.layouts"):
        s = discover(m)
    assert [(x.path, x.label) for x in s] == [(str(a), 0), (str(b), 1)]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert str(a) in warned[0] and str(m) in warned[0]
    assert all(f"line {n}" in warned[0] for n in (2, 3, 5)) and "line 4" not in warned[0]
    rep = check_dataset(m, progress=False, workers=1)
    assert rep["total"] == 2 and len(rep["warnings"]) == 1 and str(a) in rep["warnings"][0]
    md = format_check_report(rep)
    assert "## Warnings (1)" in md and "line 5" in md


def test_manifest_duplicates_json_items_and_jsonl_lines(tmp_path, caplog):
    (a,) = _imgs(tmp_path, "a.png")
    js = tmp_path / "m.json"
    js.write_text(json.dumps([{"path": "imgs/a.png", "label": 1}, {"path": str(a), "label": "fake"}]))
    with caplog.at_level(logging.WARNING, logger="synerdetect.data.layouts"):
        assert len(discover(js)) == 1
    assert any("item 1" in r.getMessage() and "item 2" in r.getMessage() for r in caplog.records)
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"path": "imgs/a.png"}\n\n{"path": "imgs/a.png"}\n')  # unlabelled duplicates
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="synerdetect.data.layouts"):
        assert [x.label for x in discover(jl)] == [-1]
    assert any("line 1" in r.getMessage() and "line 3" in r.getMessage() for r in caplog.records)


def test_manifest_same_file_in_two_generators_is_kept_for_each(tmp_path, caplog):
    # benchmarks share the real images between generator test sets: both rows are kept (and reported)
    (a,) = _imgs(tmp_path, "a.png")
    m = tmp_path / "m.csv"
    m.write_text("path,label,generator\nimgs/a.png,0,g1\nimgs/a.png,0,g2\n")
    with caplog.at_level(logging.WARNING, logger="synerdetect.data.layouts"):
        s = discover(m)
    assert [(x.generator, x.label) for x in s] == [("g1", 0), ("g2", 0)]
    assert any("g1" in r.getMessage() and "g2" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("ext", ["csv", "jsonl", "json"])
def test_manifest_contradictory_labels_are_an_error(tmp_path, ext):
    (a,) = _imgs(tmp_path, "a.png")
    rows = [("imgs/a.png", "0"), ("imgs/other.png", "1"), (str(a), "fake")]
    m = tmp_path / f"m.{ext}"
    if ext == "csv":
        m.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
        where = ("line 2", "line 4")
    elif ext == "jsonl":
        m.write_text("".join(json.dumps({"path": p, "label": lab}) + "\n" for p, lab in rows))
        where = ("line 1", "line 3")
    else:
        m.write_text(json.dumps([{"path": p, "label": lab} for p, lab in rows]))
        where = ("item 1", "item 3")
    with pytest.raises(ManifestError) as ei:
        discover(m)
    msg = _one_line(ei.value)
    assert str(m) in msg and str(a) in msg and all(w in msg for w in where)


@pytest.mark.parametrize("ext", ["csv", "jsonl", "json"])
def test_manifest_not_utf8_is_a_one_line_error(tmp_path, ext):
    m = tmp_path / f"m.{ext}"
    head = {
        "csv": b"path,label\na.png,0\n",
        "jsonl": b'{"path": "a.png", "label": 0}\n',
        "json": b'[{"path": "a.png", "label": 0},\n',
    }[ext]
    tail = {
        "csv": b"caf\xe9.png,1\n",
        "jsonl": b'{"path": "caf\xe9.png", "label": 1}\n',
        "json": b'{"path": "caf\xe9.png", "label": 1}]\n',
    }[ext]
    m.write_bytes(head + tail)  # Latin-1 'e acute'
    offset = len(head) + tail.index(b"\xe9")
    line = head.count(b"\n") + 1  # the bad byte sits on the line after the head
    with pytest.raises(ManifestError) as ei:
        discover(m)
    msg = _one_line(ei.value)
    assert str(m) in msg and "UTF-8" in msg and f"offset {offset}," in msg and f"line {line})" in msg


def test_manifest_with_bom_still_fine(tmp_path):
    (a,) = _imgs(tmp_path, "a.png")
    m = tmp_path / "m.csv"
    m.write_bytes(b"\xef\xbb\xbfpath,label\nimgs/a.png,0\n")
    assert [x.path for x in discover(m)] == [str(a)]


# ============================================================================ 4. non-regular files, deep trees


def _in_thread(fn: Callable[[], Any], timeout: float = 20.0, unblock: list[Path] = ()) -> Any:
    """Run fn in a daemon thread; fail (after unblocking FIFO readers) if it does not finish in time."""
    out: dict[str, Any] = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            out["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        for fifo in unblock:  # a reader blocked in open() is released by a writer opening the FIFO
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        th.join(5)
        pytest.fail(f"{fn} did not finish within {timeout} s (blocked on a FIFO?)")
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def special_files():
    """A FIFO and a Unix socket with image names, in a short folder (socket paths are limited to ~107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="sdspec"))
    fifo = d / "pipe.png"
    os.mkfifo(fifo)
    sock_path = d / "sock.jpg"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    try:
        yield d, fifo, sock_path
    finally:
        sock.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_socket_device_in_manifest_reported_not_hanging(tmp_path, special_files):
    _, fifo, sock = special_files
    (good,) = _imgs(tmp_path, "good.png")
    m = tmp_path / "m.csv"
    rows = [(good, 0), (fifo, 1), (sock, 1)] + ([(Path("/dev/null"), 0)] if os.path.exists("/dev/null") else [])
    m.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    rep = _in_thread(lambda: check_dataset(m, progress=False, workers=2), unblock=[fifo])
    reasons = {b["path"]: b["reason"] for b in rep["bad_files"]}
    assert rep["readable"] == 1
    assert reasons[str(fifo)] == "not a regular file (FIFO)"
    assert reasons[str(sock)] == "not a regular file (socket)"
    if os.path.exists("/dev/null"):
        assert reasons["/dev/null"] == "not a regular file (character device)"
    # the loaders say the same, without blocking
    with pytest.raises(UnreadableImage, match=r"not a regular file \(FIFO\)"):
        _in_thread(lambda: load_image(fifo), unblock=[fifo])
    rec = _in_thread(lambda: ImageDataset(discover(m), EvalTransform(8))[1], unblock=[fifo])
    assert rec["error"] == "not a regular file (FIFO)"
    # image_format only reads a header, but opening a FIFO blocks: it falls back to the extension
    assert _in_thread(lambda: image_format(fifo), unblock=[fifo]) == "PNG"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_found_by_folder_scan_is_reported(tmp_path):
    root = tmp_path / "ds"
    make_tree(root, ["test/gen/0_real/a.png", "test/gen/1_fake/b.png"])
    fifo = root / "test/gen/1_fake/pipe.png"
    os.mkfifo(fifo)
    samples = _in_thread(lambda: discover(root), unblock=[fifo])
    assert str(fifo) in [s.path for s in samples]  # listed, not silently skipped
    rep = _in_thread(lambda: check_dataset(root, progress=False, workers=1), unblock=[fifo])
    assert rep["bad_files"] == [
        {"path": str(fifo), "reason": "not a regular file (FIFO)", "generator": "gen", "label": 1}
    ]
    unl = _in_thread(lambda: discover(root, layout="folder"), unblock=[fifo])
    assert str(fifo) in [s.path for s in unl]


def test_broken_symlink_found_and_reported(tmp_path):
    root = tmp_path / "ds"
    make_tree(root, ["0_real/a.png", "1_fake/b.png"])
    link = root / "1_fake/gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    rep = check_dataset(root, progress=False, workers=1)
    assert {b["path"]: b["reason"] for b in rep["bad_files"]} == {str(link): "broken symbolic link"}


_DEPTH = 1200


@pytest.fixture
def deep_tree(tmp_path):
    """<root>/test/gen/1_fake/d/d/.../d/x.png, 1200 folders deep (1-char names: the path stays ~2.5 kB)."""
    root = tmp_path / "deep"
    make_tree(root, ["test/gen/0_real/r.png"])
    path = str(root / "test" / "gen" / "1_fake")
    os.mkdir(path)
    for _ in range(_DEPTH):  # os.makedirs recurses once per level: build it with a loop
        path = os.path.join(path, "d")
        os.mkdir(path)
    leaf = Path(path) / "x.png"
    noise_image(20, 16).save(leaf)
    yield root, leaf
    # bottom-up removal without recursion (shutil.rmtree recurses per level too)
    os.remove(leaf)
    while path != str(root / "test" / "gen" / "1_fake"):
        os.rmdir(path)
        path = os.path.dirname(path)


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_deep_folder_tree_is_scanned_without_recursion(deep_tree):
    root, leaf = deep_tree
    assert len(str(leaf)) > 2 * _DEPTH
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # recursion per folder level would fail far earlier than 1200 levels
    try:
        s = discover(root)
        u = discover(root, layout="folder")
        rep = check_dataset(root, progress=False, workers=1)
    finally:
        sys.setrecursionlimit(old_limit)
    assert {(x.label, os.path.basename(x.path)) for x in s} == {(0, "r.png"), (1, "x.png")}
    assert str(leaf) in [x.path for x in s] and str(leaf) in [x.path for x in u]
    assert rep["readable"] == 2 and rep["unreadable"] == 0


def test_symlink_loop_in_label_folder_is_cut(tmp_path):
    root = tmp_path / "ds"
    make_tree(root, ["0_real/a.png", "1_fake/sub/b.png"])
    (root / "1_fake/sub/loop").symlink_to(root / "1_fake", target_is_directory=True)
    assert sorted(os.path.basename(x.path) for x in discover(root)) == ["a.png", "b.png"]


# ============================================================================ 5. extensions, odd names


def test_avif_and_jfif_found_by_folder_scans(tmp_path):
    root = tmp_path / "ds"
    make_tree(root, ["0_real/a.png"])
    jfif = root / "1_fake" / "b.jfif"
    jfif.parent.mkdir(parents=True)
    noise_image(24, 20, seed=1).save(jfif, format="JPEG")
    want = {"a.png", "b.jfif"}
    if features.check("avif"):
        noise_image(24, 20, seed=2).save(root / "1_fake" / "c.AVIF", format="AVIF")
        want.add("c.AVIF")
    assert is_image_file("x.avif") and is_image_file("x.JFIF")
    s = discover(root)
    assert {os.path.basename(x.path) for x in s} == want
    rep = check_dataset(root, progress=False, workers=1)
    assert rep["unreadable"] == 0
    assert set(rep["formats"]) == {"PNG", "JPEG"} | ({"AVIF"} if "c.AVIF" in want else set())
    assert load_image(jfif).size == (24, 20)


def test_newlines_in_file_names(tmp_path):
    root = tmp_path / "ds"
    good = write_image(root / "test/gen/0_real/two\nlines.png")
    bad = write_garbage(root / "test/gen/1_fake/bad\nname.png")
    make_tree(root, ["test/gen/1_fake/f.png"])
    s = discover(root)
    assert {x.path for x in s} == {str(good), str(bad), str(root / "test/gen/1_fake/f.png")}
    rec = ImageDataset(s, EvalTransform(8))[[x.path for x in s].index(str(good))]
    assert "error" not in rec and rec["label"] == 0
    rep = check_dataset(root, progress=False, workers=1)
    assert rep["readable"] == 2 and [b["path"] for b in rep["bad_files"]] == [str(bad)]
    json.loads(json.dumps(rep))
    md = format_check_report(rep)
    bad_lines = [line for line in md.splitlines() if "name.png" in line]
    assert len(bad_lines) == 1 and bad_lines[0].startswith("- ") and "bad\\nname.png" in bad_lines[0]
    # manifests: quoted CSV field and JSON escape
    m = tmp_path / "m.csv"
    m.write_text(f'path,label\n"{good}",0\n', newline="")
    assert [x.path for x in discover(m)] == [str(good)]
    jl = tmp_path / "m.jsonl"
    jl.write_text(json.dumps({"path": str(good), "label": 0}) + "\n")
    assert [x.path for x in discover(jl)] == [str(good)]
