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


# ----------------------------------------------------------------------------- decode memory (issue 18 §3)

# Bytes per pixel a decode adds: Pillow's storage of the file's mode (1 for L/P, 2 for I;16, 4 otherwise,
# RGB included) plus the 4-byte RGB result; an EXIF rotation adds one more copy of the decoded image.
_BYTES_PER_PIXEL = {"RGBA": 8, "RGB": 8, "P": 5, "L": 5, "I;16": 6}


def _mode_image(mode: str, size=(30, 20)) -> Image.Image:
    rng = np.random.default_rng(0)
    w, h = size
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode in ("P", "L"):
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").convert(mode)
    return Image.fromarray(rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8), mode)


@pytest.mark.parametrize("mode", sorted(_BYTES_PER_PIXEL))
def test_decoded_bytes_cap_names_the_limit(tmp_path, mode):
    from synerdetect.data.imageio import decode_cost
    from synerdetect.engine.scoring import decode_image_bytes, error_kind

    p = tmp_path / "x.png"
    _mode_image(mode).save(p)
    with Image.open(p) as im:
        assert im.mode == mode
    need = 30 * 20 * _BYTES_PER_PIXEL[mode]
    assert decode_cost(mode, 30, 20) == need
    err = _assert_unreadable(p, match="decompression bomb", max_decode_bytes=need - 1)
    assert f"max_decode_bytes={need - 1}" in err.reason and f"30x20 {mode}" in err.reason
    assert error_kind(err.reason) == "too_many_pixels"
    with pytest.raises(UnreadableImage, match=f"max_decode_bytes={need - 1}"):
        decode_image_bytes(p.read_bytes(), "x.png", max_decode_bytes=need - 1)
    assert load_image(p, max_decode_bytes=need).size == (30, 20)


def test_decoded_bytes_cap_counts_the_exif_rotation(tmp_path):
    p = tmp_path / "r.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    _mode_image("RGB").save(p, exif=exif)
    need = 30 * 20 * (4 + 4 + 4)
    _assert_unreadable(p, match=f"max_decode_bytes={need - 1}", max_decode_bytes=need - 1)
    assert load_image(p, max_decode_bytes=need).size == (20, 30)


def _alpha_png_modes() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    h, w = 41, 53
    rgba = _mode_image("RGBA", (w, h))
    la = Image.fromarray(rng.integers(0, 256, (h, w, 2), dtype=np.uint8), "LA")
    pal = _mode_image("P", (w, h))
    pal.info["transparency"] = 7
    grey_t = _mode_image("L", (w, h))
    grey_t.info["transparency"] = 9
    rgb_t = _mode_image("RGB", (w, h))
    rgb_t.info["transparency"] = tuple(int(v) for v in np.asarray(rgb_t)[3, 4])
    i32 = Image.fromarray(rng.integers(-70_000, 200_000, (h, w), dtype=np.int32), "I")
    f = rng.normal(0, 3, (h, w)).astype(np.float32)
    f[0, 0], f[1, 1], f[2, 2] = np.nan, np.inf, -np.inf
    return [rgba, la, pal, grey_t, rgb_t, _mode_image("I;16", (w, h)), i32, Image.fromarray(f, "F")]


@pytest.mark.parametrize(
    "img", _alpha_png_modes(), ids=lambda im: im.mode + ("+trns" if "transparency" in im.info else "")
)
def test_strip_conversion_gives_the_whole_image_conversion(img, monkeypatch):
    """The RGB result is converted strip by strip (bounded temporaries): exactly the pixels of one whole-image
    conversion, for strips that do not divide the height."""
    from synerdetect.data import imageio

    whole = imageio.to_rgb8(img, "x")
    monkeypatch.setattr(imageio, "_STRIP_PIXELS", 97)  # 1 row of 53 px per strip
    strips = imageio.to_rgb8(img, "x")
    monkeypatch.setattr(imageio, "_STRIP_PIXELS", 53 * 5)  # 5 rows per strip, 41 rows
    strips5 = imageio.to_rgb8(img, "x")
    assert whole.mode == strips.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(strips), np.asarray(whole))
    np.testing.assert_array_equal(np.asarray(strips5), np.asarray(whole))


def test_jpeg_over_the_byte_cap_is_decoded_at_reduced_scale(tmp_path):
    p = tmp_path / "big.jpg"
    noise_image(800, 600).save(p, quality=95)
    full = 800 * 600 * 8
    assert load_image(p).size == (800, 600)  # under the default cap: native pixels, as before
    img = load_image(p, max_decode_bytes=full // 3)  # 1/2 scale fits (a quarter of the bytes)
    with Image.open(p) as ref:  # independent: libjpeg's own DCT scaling
        ref.draft("RGB", (400, 300))
        expected = np.asarray(ref.convert("RGB"))
    assert img.size == (400, 300)
    np.testing.assert_array_equal(np.asarray(img), expected)
    assert load_image(p, max_decode_bytes=full // 40).size == (100, 75)  # 1/8
    _assert_unreadable(p, match="max_decode_bytes=100", max_decode_bytes=100)  # even 1/8 is too big
    png = tmp_path / "big.png"  # no reduced decode for PNG: refused
    noise_image(800, 600).save(png)
    _assert_unreadable(png, match="decompression bomb", max_decode_bytes=full // 3)


# ----------------------------------------------------------------------------- formats opened (issue 18 §10)

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\nnewpath 0 0 moveto 16 16 lineto stroke\n"


def test_postscript_named_png_is_refused_and_never_reaches_ghostscript(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    from synerdetect.data.imageio import IMAGE_FORMATS
    from synerdetect.engine.evaluate import header_size
    from synerdetect.engine.scoring import decode_image_bytes
    from synerdetect.provenance import read_provenance

    reached = []

    def eps_open(_self):
        reached.append("EpsImageFile._open")
        raise SyntaxError("stop")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", eps_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *_a, **_k: reached.append("gs"))
    p = tmp_path / "x.png"
    p.write_bytes(EPS)
    expected = f"unsupported format EPS (supported: {', '.join(IMAGE_FORMATS).replace('WEBP', 'WebP')})"
    err = _assert_unreadable(p, match="unsupported format eps")
    assert err.reason == expected
    with pytest.raises(UnreadableImage, match="unsupported format EPS"):
        decode_image_bytes(EPS, "x.png")
    assert image_format(p) == "PNG"  # from the extension: the content is no supported format
    assert header_size(str(p)) is None
    assert read_provenance(p)["error"] == "not a recognised image"
    assert reached == []
    with pytest.raises(Exception):  # noqa: B017 - only whether Pillow's unrestricted open reaches the plugin
        Image.open(p)
    assert reached == ["EpsImageFile._open"]  # the bytes are what Pillow's EPS plugin takes


def test_public_loader_helpers_are_what_scoring_uses(tmp_path):
    from synerdetect.data import imageio
    from synerdetect.engine.scoring import decode_image_bytes

    p = tmp_path / "a.png"
    _mode_image("RGBA").save(p)
    img, fmt = decode_image_bytes(p.read_bytes(), "a.png")
    ref, ref_fmt = imageio.load_image_with_format(p)
    assert fmt == ref_fmt == "PNG"
    np.testing.assert_array_equal(np.asarray(img), np.asarray(ref))
    for name in ("decode_open_file", "pil_to_rgb8", "to_rgb8", "exif_transpose", "open_image", "IMAGE_FORMATS"):
        assert name in imageio.__all__ and hasattr(imageio, name)


def test_decoded_bytes_cap_is_checked_before_the_png_is_decoded(tmp_path, monkeypatch):
    """Pillow's PNG plugin decodes the whole image to look for EXIF after the pixel data: the cap must be
    checked before that, from the header."""
    from PIL import PngImagePlugin

    p = tmp_path / "x.png"
    _mode_image("RGBA").save(p)
    decoded = []
    real_load = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: (decoded.append(1), real_load(self))[1])
    _assert_unreadable(p, match="max_decode_bytes=100", max_decode_bytes=100)
    assert decoded == []
    assert load_image(p).size == (30, 20) and decoded
