"""The colour policy: every mode becomes the RGB image a careful user expects."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from pipeline.inputs import UndecodableImage, check_file, decode_rgb


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_greyscale_is_replicated(tmp_path):
    path = _save(Image.new("L", (4, 3), 77), tmp_path / "g.png")
    out = decode_rgb(path)
    assert out.mode == "RGB" and out.size == (4, 3)
    assert np.asarray(out)[0, 0].tolist() == [77, 77, 77]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_black(tmp_path, mode):
    img = Image.new("RGBA", (2, 1), (200, 200, 200, 255))
    img.putpixel((1, 0), (200, 200, 200, 0))  # fully transparent pixel
    path = _save(img.convert(mode), tmp_path / "a.png")
    pixels = np.asarray(decode_rgb(path))
    assert pixels[0, 0].tolist() == [200, 200, 200]
    assert pixels[0, 1].tolist() == [0, 0, 0]


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    path = _save(img, tmp_path / "p.png", transparency=1)
    pixels = np.asarray(decode_rgb(path))
    assert pixels[0, 0].tolist() == [255, 0, 0]
    assert pixels[0, 1].tolist() == [0, 0, 0]


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.jpg")
    r, g, b = np.asarray(decode_rgb(path))[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60  # cyan=0, magenta=yellow=full: red


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[1000, 2000], [3000, 4000]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "d.png")
    assert Image.open(path).mode.startswith("I")
    grey = np.asarray(decode_rgb(path))[..., 0]
    assert grey.tolist() == [[0, 85], [170, 255]]


def test_32bit_integer_image_is_scaled(tmp_path):
    values = np.array([[0, 100_000], [50_000, 200_000]], dtype=np.int32)
    path = _save(Image.fromarray(values, mode="I"), tmp_path / "i.tif")
    grey = np.asarray(decode_rgb(path))[..., 0]
    assert grey.tolist() == [[0, 128], [64, 255]]


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (6, 2), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = _save(img, tmp_path / "r.jpg", exif=exif)
    assert decode_rgb(path).size == (2, 6)


def test_multi_frame_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in [(250, 0, 0), (0, 0, 250)]]
    path = tmp_path / "m.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    r, g, b = np.asarray(decode_rgb(path))[0, 0].tolist()
    assert r > 200 and b < 50


def test_bytes_and_path_decode_the_same(tmp_path):
    path = _save(Image.new("RGB", (5, 5), (1, 2, 3)), tmp_path / "x.png")
    assert np.array_equal(np.asarray(decode_rgb(path)), np.asarray(decode_rgb(path.read_bytes())))


def _jpeg_bytes():
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"hello, I am text\n", "not an image file"),
        (_jpeg_bytes()[:20], "not an image file|truncated|broken"),
        (_jpeg_bytes()[:300], "truncated|broken|image file"),
    ],
    ids=["zero-byte", "text", "header-only", "truncated"],
)
def test_bad_files_are_reported_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    check = check_file(path)
    assert check.error is not None
    assert re.search(reason, check.error, re.IGNORECASE), check.error


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = _save(Image.new("L", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UndecodableImage, match="decompression bomb"):
        decode_rgb(path)


def test_good_file_check_has_size_and_hash(tmp_path):
    path = _save(Image.new("RGB", (5, 5)), tmp_path / "ok.png")
    check = check_file(path)
    assert check.error is None and check.size == path.stat().st_size and len(check.sha256) == 64
