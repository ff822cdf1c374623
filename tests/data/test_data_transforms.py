from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

import synerdetect.data.transforms as T
from data_fixtures import noise_image
from synerdetect.data import EvalTransform, TrainTransform


def _check(x: torch.Tensor, size: int):
    assert isinstance(x, torch.Tensor)
    assert x.dtype == torch.float32
    assert tuple(x.shape) == (3, size, size)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize(
    "rng_factory", [random.Random, np.random.default_rng, lambda s: torch.Generator().manual_seed(s)]
)
def test_train_shape_range_determinism(rng_factory):
    img = noise_image(100, 80, seed=1)
    t = TrainTransform(64, blur_prob=0.5, jpeg_prob=0.5)
    a = t(img, rng_factory(7))
    b = t(img, rng_factory(7))
    _check(a, 64)
    assert torch.equal(a, b)
    outs = [t(img, rng_factory(s)) for s in range(6)]
    assert len({o.numpy().tobytes() for o in outs}) > 1  # different rngs -> different crops


def test_train_crop_is_native_resolution_crop():
    img = noise_image(50, 40, seed=2)
    arr = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    t = TrainTransform(16, flip=False, blur_prob=0.0, jpeg_prob=0.0)
    seen = set()
    for seed in range(20):
        x = t(img, random.Random(seed))
        hits = [
            (i, j) for i in range(40 - 15) for j in range(50 - 15) if torch.equal(arr[:, i : i + 16, j : j + 16], x)
        ]
        assert len(hits) == 1  # an exact crop, no resizing of larger images
        seen.add(hits[0])
    assert len(seen) > 5  # crop position is random


def test_train_flip():
    img = noise_image(16, 16, seed=3)
    t = TrainTransform(16, flip=True, blur_prob=0.0, jpeg_prob=0.0)
    base = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    outs = [t(img, random.Random(s)) for s in range(20)]
    flipped = [torch.equal(o, base.flip(-1)) for o in outs]
    plain = [torch.equal(o, base) for o in outs]
    assert all(f or p for f, p in zip(flipped, plain))
    assert any(flipped) and any(plain)


def test_train_upscales_small_images():
    img = Image.new("RGB", (20, 30), (10, 200, 30))
    x = TrainTransform(64)(img, random.Random(0))
    _check(x, 64)
    assert torch.allclose(x[:, 5, 5], torch.tensor([10, 200, 30]) / 255, atol=2 / 255)


def test_train_blur_and_jpeg_applied_with_prob_one(monkeypatch):
    img = noise_image(48, 48, seed=4)
    plain = TrainTransform(32, blur_prob=0.0, jpeg_prob=0.0)
    blur = TrainTransform(32, blur_prob=1.0, blur_sigma=(2.0, 2.0), jpeg_prob=0.0)
    x0, x1 = plain(img, random.Random(5)), blur(img, random.Random(5))
    assert x1.std() < 0.6 * x0.std()  # blurred noise loses variance

    used = []
    orig = T._jpeg
    monkeypatch.setattr(T, "_jpeg", lambda im, q: used.append(q) or orig(im, q))
    jp = TrainTransform(32, blur_prob=0.0, jpeg_prob=1.0, jpeg_quality=(30, 40))
    for s in range(30):
        jp(img, random.Random(s))
    assert len(used) == 30 and min(used) >= 30 and max(used) <= 40 and len(set(used)) > 3
    assert all(isinstance(q, int) for q in used)


def test_train_probability_roughly_respected(monkeypatch):
    calls = []
    orig = T._jpeg
    monkeypatch.setattr(T, "_jpeg", lambda im, q: calls.append(q) or orig(im, q))
    t = TrainTransform(8, blur_prob=0.0, jpeg_prob=0.1)
    img = noise_image(8, 8)
    for s in range(400):
        t(img, random.Random(s))
    assert 15 <= len(calls) <= 70


def test_train_center_and_resize_modes():
    img = noise_image(60, 40, seed=5)
    c = TrainTransform(20, crop="center", flip=False, blur_prob=0, jpeg_prob=0)
    x = c(img, random.Random(0))
    arr = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(x, arr[:, 10:30, 20:40])
    r = TrainTransform(20, crop="resize", flip=False, blur_prob=0, jpeg_prob=0)
    _check(r(img, random.Random(0)), 20)


def test_eval_transform():
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    img.paste((255, 255, 255), (100, 0, 200, 100))  # right half white
    t = EvalTransform(50)
    x = t(img, None)
    _check(x, 50)
    # resized to 100x50, centre crop = columns 25..75: left half black, right half white
    assert float(x[:, :, :20].max()) < 0.05 and float(x[:, :, 30:].min()) > 0.95
    assert torch.equal(x, t(img, random.Random(3)))  # rng ignored
    _check(EvalTransform(224)(Image.new("RGB", (7, 300)), None), 224)  # tiny side upscaled


def test_eval_no_resize_mode():
    img = noise_image(60, 40, seed=6)
    x = EvalTransform(20, resize=False)(img)
    arr = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(x, arr[:, 10:30, 20:40])


def test_non_rgb_input_and_bad_args():
    _check(EvalTransform(8)(Image.new("L", (10, 10), 3)), 8)
    _check(TrainTransform(8)(Image.new("RGBA", (10, 10)), random.Random(0)), 8)
    for kw in [
        dict(crop="weird"),
        dict(blur_prob=1.5),
        dict(jpeg_quality=(50, 20)),
        dict(jpeg_quality=(0, 101)),
        dict(blur_sigma=(3.0, 1.0)),
    ]:
        with pytest.raises(ValueError):
            TrainTransform(8, **kw)
    with pytest.raises(ValueError):
        EvalTransform(0)
    with pytest.raises(TypeError):
        TrainTransform(8)(Image.new("RGB", (8, 8)), rng="not an rng")
