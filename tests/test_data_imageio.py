from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from data_fixtures import (
    noise_image,
    png16_bytes,
    tiff16_rgb_bytes,
    write_garbage,
    write_truncated_jpeg,
)
from synerdetect.data import UnreadableImage, image_format, load_image


def _px(img: Image.Image, xy) -> tuple[int, int, int]:
    return tuple(int(v) for v in img.getpixel(xy))


def _check_rgb(img: Image.Image, size) -> np.ndarray:
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    assert img.size == size
    return np.asarray(img)


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "ext,fmt,lossless",
    [
        ("jpg", "JPEG", False),
        ("jpeg", "JPEG", False),
        ("png", "PNG", True),
        ("webp", "WEBP", False),
        ("bmp", "BMP", True),
        ("tif", "TIFF", True),
        ("tiff", "TIFF", True),
        ("PNG", "PNG", True),
    ],
)
def test_common_formats(tmp_path, ext, fmt, lossless):
    if lossless:
        src = noise_image(40, 30, seed=3)
    else:  # smooth gradient: lossy codecs keep it close
        yy, xx = np.mgrid[0:30, 0:40]
        src = Image.fromarray(np.stack([xx * 6, yy * 8, 255 - xx * 6], -1).astype(np.uint8), "RGB")
    p = tmp_path / f"img.{ext}"
    src.save(p, format=fmt, **({"quality": 95} if not lossless else {}))
    img = load_image(p)
    arr = _check_rgb(img, (40, 30)).astype(int)
    ref = np.asarray(src).astype(int)
    if lossless:
        assert np.array_equal(arr, ref)
    else:
        assert np.abs(arr - ref).mean() < 6  # lossy but clearly the same image
    assert image_format(p) == fmt


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 12), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(p).n_frames == 3
    img = load_image(p)
    _check_rgb(img, (16, 12))
    assert _px(img, (5, 5)) == (255, 0, 0)


def test_multipage_tiff_first_page(tmp_path):
    pages = [Image.new("RGB", (8, 8), c) for c in [(10, 20, 30), (200, 100, 0)]]
    p = tmp_path / "multi.tif"
    pages[0].save(p, save_all=True, append_images=pages[1:])
    assert _px(load_image(p), (1, 1)) == (10, 20, 30)


# ----------------------------------------------------------------------------- modes


def test_grayscale_L(tmp_path):
    p = tmp_path / "g.png"
    Image.new("L", (10, 6), 100).save(p)
    img = load_image(p)
    _check_rgb(img, (10, 6))
    assert _px(img, (3, 3)) == (100, 100, 100)


def test_bilevel_1(tmp_path):
    p = tmp_path / "b.bmp"
    im = Image.new("1", (8, 8), 0)
    im.putpixel((0, 0), 1)
    im.save(p)
    img = load_image(p)
    assert _px(img, (0, 0)) == (255, 255, 255) and _px(img, (1, 1)) == (0, 0, 0)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_grayscale_16bit_scaled_not_clipped(tmp_path, ext):
    a = np.array([[0, 65535, 32896, 1000, 256]], dtype=np.uint16)
    p = tmp_path / f"g16.{ext}"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I;16")
    img = load_image(p)
    got = np.asarray(img)[0, :, 0].tolist()
    # round(v * 255 / 65535): 1000 -> 4 and 256 -> 1 (a clipping conversion would give 255)
    assert got == [0, 255, 128, 4, 1]
    assert np.array_equal(np.asarray(img)[..., 0], np.asarray(img)[..., 2])


def test_int32_I_mode(tmp_path):
    a = np.array([[0, 65535, 32896, 1000]], dtype=np.int32)
    p = tmp_path / "i32.tif"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode == "I"
    got = np.asarray(load_image(p))[0, :, 0].tolist()
    assert got == [0, 255, 128, 4]


def test_int32_I_mode_8bit_values_kept(tmp_path):
    a = np.array([[0, 17, 255]], dtype=np.int32)
    p = tmp_path / "i32small.tif"
    Image.fromarray(a).save(p)
    # a 32-bit file whose values fit in 0..255 keeps them (not divided by 257)
    got = np.asarray(load_image(p))[0, :, 0].tolist()
    assert got == [0, 17, 255]


def test_float_F_mode(tmp_path):
    a = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    p = tmp_path / "f.tif"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode == "F"
    assert np.asarray(load_image(p))[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_rgb_16bit_scaled(tmp_path, ext):
    arr = np.array([[[65535, 32768, 300], [0, 65280, 512]]], dtype=np.uint16)
    p = tmp_path / f"rgb16.{ext}"
    p.write_bytes(png16_bytes(arr) if ext == "png" else tiff16_rgb_bytes(arr))
    img = load_image(p)
    got = np.asarray(img).astype(int)
    want = arr.astype(int) / 257.0
    assert np.abs(got - want).max() <= 1.0  # proper scaling (300 -> ~1, never clipped to 255)
    assert got[0, 0].tolist()[:2] == [255, 128]


def test_rgba_16bit_png(tmp_path):
    arr = np.array([[[65535, 0, 0, 65535], [0, 0, 65535, 0]]], dtype=np.uint16)
    p = tmp_path / "rgba16.png"
    p.write_bytes(png16_bytes(arr))
    img = load_image(p)
    assert _px(img, (0, 0)) == (255, 0, 0)
    assert _px(img, (1, 0)) == (255, 255, 255)  # fully transparent -> white


def test_rgba_composited_on_white(tmp_path):
    im = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    im.putpixel((1, 0), (0, 0, 0, 0))  # transparent black -> white
    im.putpixel((2, 0), (0, 0, 255, 128))  # half blue -> light blue
    p = tmp_path / "rgba.png"
    im.save(p)
    img = load_image(p)
    assert _px(img, (0, 0)) == (255, 0, 0)
    assert _px(img, (1, 0)) == (255, 255, 255)
    r, g, b = _px(img, (2, 0))
    assert b == 255 and 125 <= r <= 129 and r == g


def test_la_composited_on_white(tmp_path):
    im = Image.new("LA", (2, 1), (50, 255))
    im.putpixel((1, 0), (0, 0))
    p = tmp_path / "la.png"
    im.save(p)
    img = load_image(p)
    assert _px(img, (0, 0)) == (50, 50, 50)
    assert _px(img, (1, 0)) == (255, 255, 255)


@pytest.mark.parametrize("ext", ["png", "gif"])
def test_palette_with_transparency(tmp_path, ext):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((2, 2), 1)
    p = tmp_path / f"p.{ext}"
    im.save(p, transparency=0)
    img = load_image(p)
    _check_rgb(img, (4, 4))
    assert _px(img, (0, 0)) == (255, 255, 255)  # transparent index -> white, not black
    assert _px(img, (2, 2)) == (255, 0, 0)


def test_palette_without_transparency(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    p = tmp_path / "p.bmp"
    im.save(p)
    assert _px(load_image(p), (1, 1)) == (10, 20, 30)


def test_cmyk_tiff_and_jpeg(tmp_path):
    im = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in naive CMYK
    p = tmp_path / "cmyk.tif"
    im.save(p)
    assert _px(load_image(p), (3, 3)) == (255, 0, 0)
    pj = tmp_path / "cmyk.jpg"
    im.save(pj, quality=95)
    assert Image.open(pj).mode == "CMYK"
    r, g, b = _px(load_image(pj), (3, 3))
    assert r > 230 and g < 25 and b < 25


def test_exif_rotation_applied(tmp_path):
    # stored 40x20: left half red, right half blue; orientation 6 = rotate 90 CW to display
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=95)
    assert Image.open(p).size == (40, 20)
    img = load_image(p)
    _check_rgb(img, (20, 40))  # width/height swapped
    r, g, b = _px(img, (10, 5))  # top half is the former left half: red
    assert r > 200 and b < 50
    r, g, b = _px(img, (10, 35))
    assert b > 200 and r < 50


def test_broken_exif_does_not_fail(tmp_path):
    p = tmp_path / "badexif.jpg"
    noise_image(16, 16).save(p, exif=b"Exif\x00\x00garbage-not-a-tiff-header")
    img = load_image(p)
    _check_rgb(img, (16, 16))


def test_4k_and_tiny(tmp_path):
    big = tmp_path / "4k.jpg"
    Image.new("RGB", (3840, 2160), (1, 2, 3)).save(big, quality=90)
    _check_rgb(load_image(big), (3840, 2160))
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (7, 5), (9, 8, 7)).save(tiny)
    img = load_image(tiny)
    _check_rgb(img, (7, 5))
    assert _px(img, (6, 4)) == (9, 8, 7)


def test_result_detached_from_file(tmp_path):
    p = tmp_path / "x.png"
    noise_image().save(p)
    img = load_image(p)
    p.unlink()  # image must be fully loaded, file closed
    assert img.getpixel((0, 0)) is not None


# ----------------------------------------------------------------------------- failures


def _assert_unreadable(path, *, match: str | None = None, **kw) -> UnreadableImage:
    with pytest.raises(UnreadableImage) as ei:
        load_image(path, **kw)
    err = ei.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert err.reason
    if match:
        assert match in err.reason.lower(), err.reason
    return err


def test_truncated_jpeg(tmp_path):
    _assert_unreadable(write_truncated_jpeg(tmp_path / "trunc.jpg"), match="truncated")


def test_truncated_png(tmp_path):
    p = tmp_path / "trunc.png"
    noise_image(64, 64).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _assert_unreadable(p)


def test_garbage_bytes(tmp_path):
    _assert_unreadable(write_garbage(tmp_path / "garbage.jpg"), match="not an image")


def test_text_file_with_jpg_extension(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n" * 20)
    _assert_unreadable(p, match="not an image")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    _assert_unreadable(p, match="empty")


def test_missing_file_and_directory(tmp_path):
    _assert_unreadable(tmp_path / "nope.jpg", match="not found")
    d = tmp_path / "dir.jpg"
    d.mkdir()
    _assert_unreadable(d, match="not a regular file")


def test_decompression_bomb_own_cap(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("RGB", (40, 30), (0, 0, 0)).save(p)
    err = _assert_unreadable(p, match="decompression bomb", max_pixels=1000)
    assert "1200" in err.reason
    assert load_image(p, max_pixels=1200).size == (40, 30)


def test_decompression_bomb_pillow_limits_become_errors(tmp_path, monkeypatch):
    warn_p = tmp_path / "warn.png"  # above MAX_IMAGE_PIXELS: Pillow only warns -> must be an error
    Image.new("RGB", (12, 12)).save(warn_p)
    err_p = tmp_path / "err.png"  # above 2 x MAX_IMAGE_PIXELS: Pillow raises
    Image.new("RGB", (20, 20)).save(err_p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    _assert_unreadable(warn_p, match="decompression bomb", max_pixels=None)
    _assert_unreadable(err_p, match="decompression bomb", max_pixels=None)


def test_unreadable_image_is_picklable_and_informative():
    e = UnreadableImage("/x/y.jpg", "empty file (0 bytes)")
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.path, e2.reason) == ("/x/y.jpg", "empty file (0 bytes)")
    assert "/x/y.jpg" in str(e2) and "empty" in str(e2)


def test_image_format_content_and_fallback(tmp_path):
    p = tmp_path / "actually_png.jpg"
    noise_image().save(p, format="PNG")
    assert image_format(p) == "PNG"  # from content, not extension
    assert image_format(write_garbage(tmp_path / "bad.jpeg")) == "JPEG"
    assert image_format(write_garbage(tmp_path / "bad.tif")) == "TIFF"
    assert image_format(write_garbage(tmp_path / "bad.xyz")) == "XYZ"
    assert image_format(tmp_path / "missing.webp") == "WEBP"
