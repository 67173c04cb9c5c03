"""Extraction at the limit: the allocator keeps its pages between batches, and the check decodes cheaply."""

import io
import resource

import numpy as np
import pytest
from PIL import Image

from pipeline.activations import allocator
from pipeline.inputs import check_file, decode_rgb

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="mallopt and malloc_trim are glibc's")


def _faults_of_big_arrays(times: int = 4) -> int:
    """Minor page faults of allocating, filling and freeing a 64 MB array ``times`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        block = np.ones(64 << 20, dtype=np.uint8)
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_inside_the_block_freed_maps_are_reused_and_afterwards_returned():
    assert _faults_of_big_arrays() > 100  # glibc's defaults: every 64 MB block is a fresh mmap
    with allocator.steady_allocator() as applied:
        assert applied is True
        _faults_of_big_arrays(1)  # the heap grows once
        assert _faults_of_big_arrays() == 0
    assert _faults_of_big_arrays() > 100  # ordinary settings again once extraction is over


def test_elsewhere_the_block_changes_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    with allocator.steady_allocator() as applied:
        assert applied is False
    assert allocator.set_malloc(allocator.EXTRACTING) is False


def _jpeg(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_the_check_decodes_a_jpeg_at_one_eighth_scale_and_the_extraction_in_full():
    data = _jpeg()
    assert decode_rgb(data, draft=True).size == (8, 6)
    assert decode_rgb(data).size == (64, 48)


def test_other_formats_are_checked_in_full():
    buffer = io.BytesIO()
    Image.new("I;16", (40, 30), 500).save(buffer, format="PNG")
    assert decode_rgb(buffer.getvalue(), draft=True).size == (40, 30)


@pytest.mark.parametrize("keep", [300, -50, -2])
def test_a_cut_jpeg_fails_the_cheap_check(tmp_path, keep):
    path = tmp_path / "cut.jpg"
    path.write_bytes(_jpeg()[:keep])
    found = check_file(path)
    assert found.error is not None and "truncated" in found.error


def test_the_check_names_every_bad_file_before_extraction(tmp_path):
    from pipeline.activations.checking import check_images
    from pipeline.errors import BadImageError
    from pipeline.inputs import from_folder

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.jpg").write_bytes(_jpeg())
    (tmp_path / "a" / "1.jpg").write_bytes(_jpeg()[:-40])
    (tmp_path / "b" / "2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadImageError) as caught:
        check_images(from_folder(tmp_path), "error", progress=False)
    assert sorted(p for p, _ in caught.value.problems) == [str(tmp_path / "a" / "1.jpg"), str(tmp_path / "b" / "2.jpg")]


def test_precision_is_part_of_the_cache_key_and_bf16_codes_stay_close(tmp_path, tiny_config):
    from pipeline import open_cache
    from pipeline.activations import extract
    from pipeline.inputs import from_folder

    from .conftest import make_folder, read_codes

    images = from_folder(make_folder(tmp_path / "imgs", n_per_class=4))
    fp32 = extract(images, tiny_config(device="cpu"), cache_dir=tmp_path / "c", progress=False)
    bf16 = extract(images, tiny_config(device="cpu", precision="bf16"), cache_dir=tmp_path / "c", progress=False)
    assert fp32.path != bf16.path and not bf16.reused
    with open_cache(fp32.path) as a, open_cache(bf16.path) as b:
        assert a.manifest["runtime"]["precision"] == "float32"
        assert b.manifest["runtime"]["precision"] == "bfloat16-autocast"
        assert a.settings_key != b.settings_key
    _, codes32 = read_codes(fp32.path)
    _, codes16 = read_codes(bf16.path)
    for key, x in codes32.items():
        y = codes16[key]
        cosine = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        assert y.dtype == np.float32 and cosine.min() > 0.95 and not np.array_equal(x, y), key


def test_an_unknown_precision_is_refused_naming_the_allowed_ones():
    from pipeline.activations import ExtractConfig
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="one of auto, fp32, bf16, fp16, got 'fp8'"):
        ExtractConfig(precision="fp8")
