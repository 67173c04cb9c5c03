"""The cache never lies, part two: damage to HDF5's metadata is an error, never wrong numbers or a hang.

Each test plants one fault a red-team pass found to go unnoticed (a lost chunk read back as the
fill value, a datatype message that turns the right bytes into wrong numbers, a changed BatchNorm
count, a string heap that made HDF5 loop for ever), and a seeded fuzz of the whole metadata runs
with a deadline per case.
"""

from __future__ import annotations

import json
import shutil
import struct
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import open_cache
from pipeline.cache import integrity, partial_path, verify_cache
from pipeline.cache.format import metadata_digest
from pipeline.cache.prechecks import check_global_heaps
from pipeline.cli import main
from pipeline.errors import CacheError

from . import fuzz_harness

IEEE_F32LE_MESSAGE = bytes.fromhex("11201f000400000000002000170800177f000000")  # class, bits, size, layout, bias 127


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A small finished cache with every kind of array, and everything a reader gets from it."""
    path = fuzz_harness.build_cache(tmp_path_factory.mktemp("integrity") / "ref.h5")
    return path, fuzz_harness.snapshot(path)


@pytest.fixture
def copy(reference, tmp_path):
    def make(name="c.h5"):
        target = tmp_path / name
        shutil.copyfile(reference[0], target)
        return target

    return make


def _patch(path, offset: int, new: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(new)


def _flip(path, offset: int, bit: int) -> None:
    with open(path, "rb") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
    _patch(path, offset, bytes([byte ^ (1 << bit)]))


def _chunk_key_offset(path, dataset: str, chunk: int) -> int:
    """File offset of the last coordinate in the chunk-index (v1 B-tree) key of one chunk.

    A node holds key0, child0, key1, child1, ...; a key of a 2-d dataset is chunk size (4), filter
    mask (4) and three 8-byte coordinates; a child is the chunk's address.
    """
    with h5py.File(path, "r") as handle:
        address = handle[dataset].id.get_chunk_info(chunk).byte_offset
    data = path.read_bytes()
    child = data.index(struct.pack("<Q", address))
    assert data.count(struct.pack("<Q", address)) == 1
    return child - 32 + 24  # the last coordinate (always 0: the element dimension)


def _datatype_message_offset(path, dataset: str) -> int:
    with h5py.File(path, "r") as handle:
        header = h5py.h5o.get_info(handle[dataset].id).addr
    return path.read_bytes().index(IEEE_F32LE_MESSAGE, header)


# Finding 1: checksums over what is read -------------------------------------------------------------
def test_a_lost_chunk_is_an_error_never_rows_of_fill_values(copy, reference):
    path = copy()
    _flip(path, _chunk_key_offset(path, "codes/pre_logits/none", 1), 5)  # chunk 1 (rows 51-101) is not found any more
    with h5py.File(path, "r") as handle:  # what HDF5 itself returns: the fill value, no error
        assert np.isnan(handle["codes/pre_logits/none"][51:102]).all()
    with open_cache(path) as cache:
        with pytest.raises(CacheError, match="content of codes/pre_logits/none does not match its recorded hash"):
            cache.codes("pre_logits")
        with pytest.raises(CacheError, match=r"reads back 51 row\(s\) as the NaN fill value \(from row 51\)"):
            cache.stored_codes("pre_logits", rows=slice(40, 110))  # a partial read (as merge reads) too
        cache.stored_codes("pre_logits", rows=slice(0, 51))  # the chunks that are found read as before
        np.testing.assert_array_equal(cache.codes("blocks.0"), reference[1]["codes blocks.0/avg"])  # the rest is fine
    report = verify_cache(path, check_inputs=False)
    assert not report.ok and "codes/pre_logits/none does not match its recorded hash" in " ".join(report.problems)


def test_a_damaged_float_datatype_message_is_an_error_never_shifted_values(copy, reference):
    path = copy()
    _flip(path, _datatype_message_offset(path, "codes/pre_logits/none") + 16, 0)  # exponent bias 127 -> 126
    with h5py.File(path, "r") as handle:  # HDF5 converts the right bytes into other numbers, without a word
        raw = handle["codes/pre_logits/none"][()]
    want = reference[1]["codes pre_logits/none"]
    np.testing.assert_allclose(raw, 2.0 * want, rtol=1e-6)  # every value doubled
    with pytest.raises(CacheError, match="pre_logits/none .*datatype"):
        open_cache(path)
    assert not verify_cache(path, check_inputs=False).ok


def test_changed_codes_are_an_error_on_every_whole_read(copy):
    """Bytes rewritten with a valid fletcher32 (as HDF5 would write them): only the content hash sees it."""
    path = copy()
    with h5py.File(path, "r+") as handle:
        handle["codes/blocks.2/avg"][7, 3] += 1.0
    with open_cache(path) as cache:
        with pytest.raises(CacheError, match="content of codes/blocks.2/avg does not match its recorded hash"):
            cache.codes("blocks.2")
    assert "does not match its recorded hash" in " ".join(verify_cache(path, check_inputs=False).problems)


def test_row_columns_are_checked_against_their_hashes(copy):
    path = copy()
    with h5py.File(path, "r+") as handle:
        handle["dup_cluster"][4] = 99
        handle.attrs["digest"] = metadata_digest(handle)  # even with a digest made to match
    with open_cache(path) as cache:  # open checks the layout only; the hash when the column is read
        assert cache.ids[0] == "img0000.png"
        with pytest.raises(CacheError, match="content of dup_cluster does not match"):
            cache.dup_cluster
    assert "content of dup_cluster does not match" in " ".join(verify_cache(path, check_inputs=False).problems)


def test_opening_reads_no_row_column_but_active_and_digests_fixed_size_metadata(copy, monkeypatch):
    """Opening a cache does not hash every row (seconds at a million rows): the digest covers fixed-size
    metadata, whose ``arrays`` holds each row column's hash, checked when the column is first read."""
    path = copy()
    with h5py.File(path, "r+") as handle:
        assert handle.attrs["digest"] == metadata_digest(handle) != metadata_digest(handle, legacy=True)
    hashed = []
    real = integrity.check_hash
    monkeypatch.setattr(integrity, "check_hash", lambda name, *a: (hashed.append(name), real(name, *a))[1])
    with open_cache(path) as cache:
        assert hashed == ["active"]
        cache.labels, cache.labels
        assert hashed == ["active", "labels"]  # once per column


def test_a_cache_sealed_with_the_row_digest_still_opens(copy, reference):
    """Caches sealed before issue 16 carry the digest over every row column: they open as before."""
    path = copy()
    with h5py.File(path, "r+") as handle:
        handle.attrs["digest"] = metadata_digest(handle, legacy=True)
    assert fuzz_harness.same(fuzz_harness.snapshot(path), reference[1])
    with h5py.File(path, "r+") as handle:
        handle.attrs["digest"] = "0" * 64
    with pytest.raises(CacheError, match="metadata digest does not match"):
        open_cache(path)


# Finding 2: BatchNorm statistics are protected ----------------------------------------------------------
def test_a_changed_batchnorm_count_is_an_error(copy, reference):
    path = copy()
    with h5py.File(path, "r+") as handle:
        handle["bn_stats/blocks.1.bn"].attrs["count"] = 2
    with open_cache(path) as cache:
        with pytest.raises(CacheError, match=r"bn_stats/blocks.1.bn \(\{'count': 2.*differ from the recorded"):
            cache.bn_stats()
    report = verify_cache(path, check_inputs=False)
    assert not report.ok and "bn_stats/blocks.1.bn" in " ".join(report.problems)


def test_changed_batchnorm_sums_are_an_error(copy):
    path = copy()
    with h5py.File(path, "r+") as handle:
        handle["bn_stats/blocks.0.bn/sumsq"][2] *= 1.5
    with open_cache(path) as cache, pytest.raises(CacheError, match="bn_stats/blocks.0.bn/sumsq does not match"):
        cache.bn_stats()


def test_the_manifest_records_every_array(reference):
    path, _ = reference
    with h5py.File(path, "r") as handle:
        arrays = json.loads(handle.attrs["arrays"])
        names = []
        handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    recorded = set(arrays["arrays"])
    assert recorded == set(names) - {"integrity/running"}
    assert arrays["arrays"]["codes/pre_logits/none"] | {"hash": ""} == {
        "dtype": "<f4", "shape": [160, 1280], "chunks": [51, 1280], "hash": "", "fill": "nan"}
    assert arrays["attrs"]["bn_stats/blocks.2.bn"] == {"count": 3000, "depth": 2, "stride": 4}
    with open_cache(path) as cache:  # the recorded hash is the hash of what reads back
        codes = cache.codes("blocks.0")
        assert arrays["arrays"]["codes/blocks.0/avg"]["hash"] == integrity.array_hash(codes, "rows")


@pytest.mark.parametrize("running", ["kept", "lost"])
def test_a_resumed_write_records_the_hash_of_the_whole_array(reference, tmp_path, running, caplog):
    """Running hashes are saved with every commit; a partial file without them (from an earlier
    layerprobe) gets them from its data when it is sealed. Either way the sealed cache reads exactly."""
    path = tmp_path / "c.h5"
    fuzz_harness.build_cache(path, stop_after=2)
    if running == "lost":
        with h5py.File(partial_path(path), "r+") as handle:
            del handle["integrity/running"]
    with caplog.at_level("INFO", logger="pipeline.cache.writer"):
        fuzz_harness.build_cache(path)
    assert "resuming" in caplog.text and "96 rows already committed" in caplog.text
    assert ("has no running content hashes" in caplog.text) == (running == "lost")
    assert fuzz_harness.same(fuzz_harness.snapshot(path), reference[1])
    assert verify_cache(path, check_inputs=False).ok


def test_the_row_hash_does_not_depend_on_the_order_rows_are_written():
    rng = np.random.default_rng(0)
    block = rng.normal(size=(40, 6)).astype(np.float32)
    order = rng.permutation(40)
    pieces = sum(integrity.rows_sum(block[order[i : i + 7]], order[i : i + 7]) for i in range(0, 40, 7))
    assert integrity.rows_hash(pieces) == integrity.array_hash(block, "rows")
    swapped = block.copy()
    swapped[[3, 4]] = swapped[[4, 3]]  # the same rows at other indices is other content
    assert integrity.array_hash(swapped, "rows") != integrity.array_hash(block, "rows")


def test_caches_without_hashes_still_open_and_verify_says_so(copy, reference):
    """A cache written before per-array hashes (no ``arrays`` attribute) opens and reads as before."""
    path = copy()
    with h5py.File(path, "r+") as handle:
        del handle.attrs["arrays"]
        handle.attrs["digest"] = metadata_digest(handle)
    assert fuzz_harness.same(fuzz_harness.snapshot(path), reference[1])
    report = verify_cache(path, check_inputs=False)
    assert report.ok, report.problems
    assert any(line.startswith("no per-array content hashes") for line in report.checked)
    _flip(path, _datatype_message_offset(path, "codes/pre_logits/none") + 16, 0)  # still checked without hashes
    with pytest.raises(CacheError, match="not stored as IEEE float32"):
        open_cache(path)


# Bounded work on damaged files --------------------------------------------------------------------------
def _zero_a_string_heap_object(path) -> None:
    """Zero the first object header of the first global heap collection: HDF5 then loops for ever."""
    start = path.read_bytes().index(b"GCOL\x01\x00\x00\x00")
    _patch(path, start + 16, bytes(16))


def test_a_string_heap_that_would_make_hdf5_loop_is_an_error_at_once(copy):
    path = copy()
    _zero_a_string_heap_object(path)
    started = time.monotonic()
    with pytest.raises(CacheError, match="is damaged \\(the string heap at byte \\d+ has a damaged object"):
        open_cache(path)
    report = verify_cache(path, check_inputs=False)
    assert not report.ok and "string heap" in report.problems[0]
    assert time.monotonic() - started < 5


def test_every_string_heap_of_a_sound_cache_passes(reference, tmp_path):
    assert check_global_heaps(reference[0]) >= 2


@pytest.mark.parametrize("command", [["info"], ["info", "--json"], ["similarity"], ["verify", "--no-inputs"]])
@pytest.mark.parametrize("fault", ["string heap", "lost chunk", "truncated", "datatype"])
def test_commands_on_a_damaged_cache_say_so_in_one_line(copy, command, fault):
    path = copy()
    if fault == "string heap":
        _zero_a_string_heap_object(path)
    elif fault == "lost chunk":
        _flip(path, _chunk_key_offset(path, "codes/pre_logits/none", 1), 5)
    elif fault == "datatype":
        _flip(path, _datatype_message_offset(path, "codes/pre_logits/none") + 16, 0)
    else:
        path.write_bytes(path.read_bytes()[:5000])
    result = CliRunner().invoke(main, [command[0], str(path), *command[1:]])
    if command[0] == "info" and fault == "lost chunk":  # info reads no codes, and what it shows is true
        assert result.exit_code == 0 and "pre_logits/none" in result.output, result.output
        return
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    if command[0] == "verify":
        problems = [line for line in lines if line.startswith("PROBLEM")]
        assert problems and all("\n" not in p for p in problems)
    else:
        assert len(lines) == 1 and lines[0].startswith("Error: ") and str(path) in lines[0], result.output


def test_metadata_fuzz_gives_exact_numbers_or_a_one_line_error(reference, tmp_path):
    """Seeded single-bit flips and zeroed 512-byte blocks over every metadata byte range of the cache,
    each read whole and in slices, then verified, in a worker process with a deadline per case."""
    path, _ = reference
    cases = fuzz_harness.make_cases(path, 300, seed=12)
    results = fuzz_harness.run_cases(path, cases, tmp_path, timeout=10.0)
    table = fuzz_harness.counts(results)
    bad = [r for r in results if r["outcome"] not in ("exact", "error") or r["verify"] not in ("ok", "problem")]
    assert not bad, (table, bad[:5])
    assert table["error"] >= 50 and table["exact"] + table["error"] == 300, table
