"""Bad and unusual image files: a policy, not an accident."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.cache import partial_path
from pipeline.errors import BadImageError
from pipeline.inputs import decode_rgb, from_folder


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb() -> bytes:
    """A tiny PNG whose header claims 40000 x 40000 pixels."""
    header = struct.pack(">IIBBBBB", 40000, 40000, 1, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 5001 * 4)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _jpeg(size=(48, 40), colour=(120, 60, 30)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


BAD = {
    "truncated.jpg": lambda: _jpeg()[: len(_jpeg()) // 2],
    "header_only.jpg": lambda: _jpeg()[:40],
    "zero_bytes.jpg": lambda: b"",
    "text.jpg": lambda: b"patient notes, not an image\n",
    "bomb.png": decompression_bomb,
}


def _good_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.linspace(1000, 4000, 48 * 40, dtype=np.uint16).reshape(40, 48)).save(folder / "grey16.png")
    Image.fromarray(np.arange(48 * 40, dtype=np.int32).reshape(40, 48) * 1000, mode="I").save(folder / "int32.tif")
    Image.new("CMYK", (48, 40), (0, 200, 200, 0)).save(folder / "cmyk.jpg")
    Image.new("RGBA", (48, 40), (200, 100, 50, 128)).save(folder / "rgba.png")
    palette = Image.new("P", (48, 40), 1)
    palette.putpalette([0, 0, 0, 250, 10, 10] + [0] * 762)
    palette.save(folder / "palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (60, 30), (10, 200, 10)).save(folder / "rotated.jpg", exif=exif)
    frames = [Image.new("RGB", (48, 40), c) for c in [(250, 0, 0), (0, 0, 250)]]
    frames[0].save(folder / "frames.gif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "pages.tif", save_all=True, append_images=frames[1:])


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    _good_images(root / "good")
    _good_images(root / "other")
    for name, make in BAD.items():
        (root / "other" / name).write_bytes(make())
    return root


def test_default_stops_before_writing_and_names_every_bad_file(corpus, tiny_config, tmp_path):
    out = tmp_path / "c.h5"
    with pytest.raises(BadImageError) as info:
        extract(from_folder(corpus), tiny_config(), out=out, progress=False)
    problems = dict((p.rsplit("/", 1)[-1], why) for p, why in info.value.problems)
    assert set(problems) == set(BAD)
    assert problems["zero_bytes.jpg"].startswith("empty file")
    assert problems["text.jpg"] == "not an image file PIL can read"
    assert "decompression bomb" in problems["bomb.png"]
    assert "truncated" in problems["truncated.jpg"] or "broken" in problems["truncated.jpg"]
    assert not out.exists() and not partial_path(out).exists()


def test_skip_keeps_ids_labels_and_codes_aligned(corpus, tiny_config, tmp_path):
    result = extract(from_folder(corpus), tiny_config(on_bad_image="skip"), out=tmp_path / "c.h5", progress=False)
    assert sorted(s["id"].rsplit("/", 1)[-1] for s in result.skipped) == sorted(BAD)
    with open_cache(result.path) as cache:
        ids = list(cache.ids)
        assert len(ids) == 16 and not any(name in i for i in ids for name in BAD)
        assert [cache.class_names[l] for l in cache.labels] == [i.split("/")[0] for i in ids]
        assert len(cache.manifest["input"]["skipped"]) == 5
        notes = {n["id"]: n["note"] for n in cache.manifest["input"]["notes"]}
        assert notes["good/frames.gif"] == "first of 2 frames used"
        assert notes["good/pages.tif"] == "first of 2 frames used"
        codes = cache.codes("pre_logits")
    # the same image under two class folders gives the same codes: nothing was substituted
    half = len(ids) // 2
    np.testing.assert_array_equal(codes[:half], codes[half:])


def test_special_modes_decode_as_stated(corpus):
    good = corpus / "good"
    grey = np.asarray(decode_rgb(good / "grey16.png"))[..., 0]
    assert grey.min() == 0 and grey.max() == 255 and 100 < grey.mean() < 155  # scaled, not clipped
    assert np.asarray(decode_rgb(good / "int32.tif")).max() == 255
    assert decode_rgb(good / "rotated.jpg").size == (30, 60)
    rgba = np.asarray(decode_rgb(good / "rgba.png"))[0, 0]
    assert np.allclose(rgba, [100, 50, 25], atol=2)  # half transparent over black
    assert np.asarray(decode_rgb(good / "palette.png"))[0, 0].tolist() == [250, 10, 10]
    assert np.asarray(decode_rgb(good / "pages.tif"))[0, 0].tolist() == [250, 0, 0]
