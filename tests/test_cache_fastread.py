"""Whole-layer reads: full checks the first time in a process, the bytes straight from disk after that."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from pipeline import open_cache
from pipeline.cache import fastread, integrity
from pipeline.errors import CacheError

from .probe_data import write_cache

WIDTH = 1280  # 51 rows per chunk: 130 rows are three chunks, the last one partly filled


@pytest.fixture(autouse=True)
def fresh_records():
    fastread.forget()
    yield
    fastread.forget()


@pytest.fixture
def cache(tmp_path):
    rng = np.random.default_rng(0)
    codes = {("blocks.0", "avg"): rng.standard_normal((130, 24), dtype=np.float32),
             ("pre_logits", "none"): rng.standard_normal((130, WIDTH), dtype=np.float32)}
    path = write_cache(tmp_path / "c.h5", codes, rng.integers(0, 2, 130), ["a", "b"])
    return path, codes


@pytest.fixture
def counted(monkeypatch):
    """How often a content hash was checked."""
    calls = []
    original = integrity.check_hash
    monkeypatch.setattr(integrity, "check_hash", lambda *a: (calls.append(a[0]), original(*a))[1])
    return calls


def _settled(monkeypatch, seconds=0.05):
    monkeypatch.setattr(fastread, "SETTLED_NS", int(seconds * 1e9))
    time.sleep(2 * seconds)


def test_a_verified_layer_is_read_again_without_hashing_and_identical(cache, counted, monkeypatch):
    path, codes = cache
    _settled(monkeypatch)
    with open_cache(path) as first:
        counted.clear()  # the row columns are hashed on open
        a = first.codes("pre_logits")
        assert counted == ["codes/pre_logits/none"]
        b = first.codes("pre_logits")
    with open_cache(path) as second:
        counted.clear()
        c = second.codes("pre_logits")
        assert counted == []  # another handle on the same, unchanged file: no hash either
        with h5py.File(path, "r") as raw:
            assert raw["codes/pre_logits/none"].chunks == (51, WIDTH)
    for values in (a, b, c):
        np.testing.assert_array_equal(values, codes[("pre_logits", "none")])
    assert b is not a and c is not a and b.flags.writeable  # every read is the caller's own array
    b[0, 0] = 99.0
    np.testing.assert_array_equal(open_cache(path).codes("pre_logits"), codes[("pre_logits", "none")])


def test_a_chunk_damaged_after_verification_is_an_error_on_the_next_read(cache, monkeypatch):
    path, _ = cache
    _settled(monkeypatch)
    with open_cache(path) as cache_:
        cache_.codes("pre_logits")
        with h5py.File(path, "r") as raw:
            address = raw["codes/pre_logits/none"].id.get_chunk_info(1).byte_offset
        with open(path, "r+b") as handle:  # one flipped bit in chunk 1's data: bit rot, no HDF5 write
            handle.seek(address + 1000)
            byte = handle.read(1)[0]
            handle.seek(address + 1000)
            handle.write(bytes([byte ^ 4]))
        with pytest.raises(CacheError, match="reading /codes/pre_logits/none failed.*filter returned failure"):
            cache_.codes("pre_logits")  # the same open handle: the file's ctime changed
    with open_cache(path) as again:
        with pytest.raises(CacheError, match="reading /codes/pre_logits/none failed.*filter returned failure"):
            again.codes("pre_logits")


def test_a_file_changed_within_the_settling_time_is_not_remembered(cache, counted):
    path, codes = cache  # just written: its ctime is younger than fastread.SETTLED_NS
    with open_cache(path) as cache_:
        cache_.codes("pre_logits")
        counted.clear()
        np.testing.assert_array_equal(cache_.codes("pre_logits"), codes[("pre_logits", "none")])
        assert counted == ["codes/pre_logits/none"]


def test_partial_reads_keep_their_checks(cache, counted, monkeypatch):
    path, codes = cache
    _settled(monkeypatch)
    with open_cache(path) as cache_:
        cache_.codes("pre_logits")
        np.testing.assert_array_equal(cache_.stored_codes("pre_logits", rows=slice(40, 110)),
                                      codes[("pre_logits", "none")][40:110])
        assert fastread.read(cache_._file["codes/pre_logits/none"], "rows:" + "0" * 64) is None  # another hash
