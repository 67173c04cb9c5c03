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
    from pipeline.activations.extract import _check_images
    from pipeline.activations import ExtractConfig
    from pipeline.errors import BadImageError
    from pipeline.inputs import from_folder

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.jpg").write_bytes(_jpeg())
    (tmp_path / "a" / "1.jpg").write_bytes(_jpeg()[:-40])
    (tmp_path / "b" / "2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadImageError) as caught:
        _check_images(from_folder(tmp_path), ExtractConfig(), progress=False)
    assert sorted(p for p, _ in caught.value.problems) == [str(tmp_path / "a" / "1.jpg"), str(tmp_path / "b" / "2.jpg")]
