"""Native-resolution views: E_v and CConv see a crop of the image's own pixels, the SD path its own resized view,
both from one decode."""

import numpy as np
import pytest
import torch
from PIL import Image

from synerdetect.data import Views, ViewTransform


def _noise(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_eval_clip_view_is_the_centre_pixels_exactly(tiny_model):
    img = _noise(96, 96)
    v = tiny_model.preprocess(img)
    assert isinstance(v, Views) and v.clip.shape == (1, 3, 64, 64) and v.sd.shape == (1, 3, 64, 64)
    centre = np.asarray(img)[16:80, 16:80].astype(np.float32) / 255  # hand-cut centre 64 x 64
    assert torch.equal(v.clip[0], torch.from_numpy(centre).permute(2, 0, 1))
    # the model uses that view as it is (no resampling) ...
    assert torch.equal(tiny_model.clip_pixels(v), v.clip)
    # ... and the SD view is the whole image resized (shorter side to 64, bicubic), not the crop
    resized = np.asarray(img.resize((64, 64), Image.Resampling.BICUBIC)).astype(np.float32) / 255
    torch.testing.assert_close(v.sd[0], torch.from_numpy(resized).permute(2, 0, 1), rtol=0, atol=0)


def test_small_images_are_upscaled_and_resize_view_is_the_old_protocol():
    small = _noise(40, 50, seed=1)
    v = ViewTransform(64, 64)(small)
    assert v.clip.shape == (3, 64, 64)  # shorter side 40 -> 64 (bicubic), then the centre crop
    big = _noise(200, 120, seed=2)
    crop = ViewTransform(64, 64, clip_view="crop")(big).clip
    resize = ViewTransform(64, 64, clip_view="resize")(big).clip
    expected = np.asarray(big)[28:92, 68:132].astype(np.float32) / 255
    assert torch.equal(crop, torch.from_numpy(expected).permute(2, 0, 1))
    w = round(200 * 64 / 120)
    left = round((w - 64) / 2)  # the centre crop's offset, rounded like EvalTransform's
    old = np.asarray(big.resize((w, 64), Image.Resampling.BICUBIC))[:, left : left + 64]
    torch.testing.assert_close(resize, torch.from_numpy(old.astype(np.float32) / 255).permute(2, 0, 1), rtol=0, atol=0)


def test_training_views_are_random_crops_with_shared_augmentation():
    import random

    img = _noise(128, 128, seed=3)
    t = ViewTransform(64, 64, train=True, blur_prob=0.0, jpeg_prob=0.0, flip=False)
    a, b = t(img, random.Random(0)), t(img, random.Random(0))
    assert torch.equal(a.clip, b.clip)  # a function of the rng state
    crops = {tuple(t(img, random.Random(s)).clip[:, 0, 0].tolist()) for s in range(8)}
    assert len(crops) > 1  # the position varies with the draws
    src = np.asarray(img).astype(np.float32) / 255
    c = t(img, random.Random(5)).clip.permute(1, 2, 0).numpy()
    hits = [(y, x) for y in range(65) for x in range(65) if np.array_equal(src[y : y + 64, x : x + 64], c)]
    assert len(hits) == 1  # an exact window of the original pixels


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_predict_and_losses_accept_views(tiny_model):
    imgs = [_noise(96, 96, seed=s) for s in range(4)]
    v = tiny_model.preprocess(imgs)
    out = tiny_model.predict(v)
    assert out["logit"].shape == (4,) and torch.isfinite(out["logit"]).all()
    losses = tiny_model.compute_losses(v, torch.tensor([0, 1, 0, 1]))
    assert torch.isfinite(losses["total"])
    # a 64 px image: both views are the image itself, so views and the plain tensor agree exactly
    small = [_noise(64, 64, seed=9)]
    plain = torch.from_numpy(np.asarray(small[0]).astype(np.float32) / 255).permute(2, 0, 1)[None]
    torch.testing.assert_close(
        tiny_model.predict(tiny_model.preprocess(small))["logit"], tiny_model.predict(plain)["logit"], rtol=0, atol=0
    )
    with pytest.raises(Exception, match="preprocess needs"):
        tiny_model.preprocess([])


def test_every_loader_reads_the_native_views(tiny_model, tmp_path):
    """Training, evaluation/prediction and the feature cache all read files through view_transform: the CLIP view
    of a 96 x 96 file is its own centre (evaluation) or an exact window (training) of its pixels, not a resampling."""
    from synerdetect.cache import feature_key
    from synerdetect.config import merge
    from synerdetect.data import ImageDataset, Sample
    from synerdetect.engine.scoring import Scorer
    from synerdetect.model.detector import view_transform

    img = _noise(96, 96, seed=7)
    path = tmp_path / "a.png"
    img.save(path)
    src = np.asarray(img).astype(np.float32) / 255
    cfg = tiny_model.cfg
    assert cfg.data.image_size is None  # the default: two views
    # evaluation, prediction and the service: the Scorer's decoder
    prepared = Scorer(tiny_model).prepare(str(path))
    assert isinstance(prepared.image, Views)
    assert torch.equal(prepared.image.clip, torch.from_numpy(src[16:80, 16:80]).permute(2, 0, 1))
    # training: the dataset the train loop builds, without blur/JPEG/flip, gives a window of the file's pixels
    plain = merge(cfg, {"data": {"blur_prob": 0.0, "jpeg_prob": 0.0, "flip": False}})
    ds = ImageDataset([Sample(str(path), 1, "g", None)], view_transform(plain, train=True), seed=0)
    clip = ds[0]["image"].clip.permute(1, 2, 0).numpy()
    assert any(np.array_equal(src[y : y + 64, x : x + 64], clip) for y in range(33) for x in range(33))
    # the feature cache's key names the view geometry: crop, resize and a single resized view are three caches
    keys = {
        feature_key(tiny_model, image_size=None)[0],
        feature_key(tiny_model, image_size=96)[0],
    }
    tiny_model.cfg = merge(cfg, {"data": {"clip_view": "resize"}})
    try:
        keys.add(feature_key(tiny_model, image_size=None)[0])
    finally:
        tiny_model.cfg = cfg
    assert len(keys) == 3
    # an explicit data.image_size keeps the older single resized view
    single = view_transform(cfg, train=False, image_size=96)(img)
    assert isinstance(single, torch.Tensor) and single.shape == (3, 96, 96)


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_cache_build_and_cascade_take_the_views(tiny_model, tmp_path):
    """The feature cache and the cascade stack per-image views (not tensors): the cached latents are those of the
    SD view, and the cascade's full pass equals predict on the same views."""
    from synerdetect.cache import CachedFeatures, build_cache
    from synerdetect.engine.cascade import cascade_predict

    paths = []
    for s in range(3):
        p = tmp_path / f"{s}.png"
        _noise(96, 80, seed=10 + s).save(p)
        paths.append(str(p))
    views = tiny_model.preprocess([Image.open(p) for p in paths])
    st = build_cache(tiny_model, paths, tmp_path / "cache", image_size=None, batch_size=2, progress=False)
    assert st["n_computed"] == 3 and st["n_unreadable"] == 0
    hit = CachedFeatures(tmp_path / "cache", tiny_model, None).lookup(paths)
    assert hit is not None
    with torch.no_grad():
        torch.testing.assert_close(hit.latents, tiny_model.encode_latents(views), rtol=1e-5, atol=1e-5)
    # a band that holds every margin: every image takes the full pass, in batches of 2 across the input batch
    got = dict((i, out) for i, out, how in cascade_predict(tiny_model, [(views, [0, 1, 2])], (-1e9, 1e9), batch_size=2))
    ref = tiny_model.predict(views)
    for i in range(3):
        assert got[i]["logit"] == pytest.approx(float(ref["logit"][i]), abs=1e-5)
