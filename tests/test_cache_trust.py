"""The record beside a cache of the checks it passed: later processes skip them while the file is unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline import open_cache
from pipeline.cache import fastread, integrity, trust, verify_cache
from pipeline.errors import CacheError

from .probe_data import write_cache
from .test_cache_fastread import counted, fresh_records  # noqa: F401 (fixtures: hashes checked, no records)
from .test_cache_fastread import cache as written

ROOT = Path(__file__).resolve().parents[1]
SETTLED_NS = 50_000_000
LAYER = "codes/pre_logits/none"

# A new process: counts the checks it ran (content hashes, string-heap walks, whole reads served from the
# chunks' bytes) while opening the cache, reading the ids and the layer; prints them with the layer's sha256.
CHILD = """
import hashlib, json, sys
from pipeline.cache import fastread, integrity, reader
from pipeline.errors import CacheError
fastread.SETTLED_NS = int(sys.argv[2])
seen = {"hashed": [], "heap_walks": 0, "fast_reads": 0}
check_hash, walk, read = integrity.check_hash, reader.check_global_heaps, fastread.read_at
integrity.check_hash = lambda name, *a: (seen["hashed"].append(name), check_hash(name, *a))[1]
def counted_walk(*a):
    seen["heap_walks"] += 1
    return walk(*a)
def counted_read(*a):
    found = read(*a)
    seen["fast_reads"] += found is not None
    return found
reader.check_global_heaps, fastread.read_at = counted_walk, counted_read
try:
    with reader.open_cache(sys.argv[1]) as cache:
        cache.ids
        seen["sha256"] = hashlib.sha256(cache.codes("pre_logits").tobytes()).hexdigest()
except CacheError as exc:
    seen["error"] = str(exc)
print(json.dumps(seen))
"""


def _child(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(SETTLED_NS)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(autouse=True)
def settled(monkeypatch):
    """A file counts as settled 50 ms after its last change (instead of a second), in this process too."""
    monkeypatch.setattr(fastread, "SETTLED_NS", SETTLED_NS)


@pytest.fixture
def cache(written):
    """A settled cache of two layers (pre_logits: 130 x 1280 in three chunks) and its pre_logits codes."""
    time.sleep(2 * SETTLED_NS / 1e9)
    return written[0], written[1][("pre_logits", "none")]


def _sha(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def _flip(path: Path, chunk: int = 1) -> None:
    """One flipped bit in a chunk of the layer's data, written through the file system (the ctime changes)."""
    with h5py.File(path, "r") as raw:
        address = raw[LAYER].id.get_chunk_info(chunk).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(address + 1000)
        byte = handle.read(1)[0]
        handle.seek(address + 1000)
        handle.write(bytes([byte ^ 4]))


def test_a_second_process_reads_what_the_first_one_checked_without_checking_it(cache):
    path, values = cache
    first = _child(path)
    assert first == {"hashed": ["active", "ids", LAYER], "heap_walks": 1, "fast_reads": 0, "sha256": _sha(values)}
    record = json.loads(trust.record_path(path).read_text())
    assert trust.record_path(path) == path.parent / ".layerprobe" / "checked-c.h5.json"
    st = os.stat(path)
    assert record["file"] == [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    assert sorted(record["arrays"]) == ["active", LAYER, "ids"]
    second = _child(path)
    assert second == {"hashed": [], "heap_walks": 0, "fast_reads": 1, "sha256": _sha(values)}


def test_damage_after_the_record_sends_the_next_process_through_every_check(cache):
    path, _ = cache
    assert "error" not in _child(path)
    _flip(path)
    damaged = _child(path)
    assert damaged["heap_walks"] == 1 and damaged["fast_reads"] == 0 and damaged["hashed"] == ["active", "ids"]
    assert "reading /codes/pre_logits/none failed" in damaged["error"]
    assert "filter returned failure" in damaged["error"]  # fletcher32 of the flipped chunk


def test_a_file_written_within_the_settling_time_is_not_recorded(tmp_path, counted, monkeypatch):
    monkeypatch.setattr(fastread, "SETTLED_NS", 10**12)
    path = write_cache(tmp_path / "c.h5", {("pre_logits", "none"): np.ones((20, 8), np.float32)}, [0, 1] * 10,
                       ["a", "b"])
    with open_cache(path) as cache_:
        cache_.codes("pre_logits")
    assert not trust.record_path(path).exists()


def _reseal(path: Path, change) -> None:
    """Rewrite the record with ``change`` applied and a matching seal: well formed, and wrong."""
    record = json.loads(trust.record_path(path).read_text())
    change(record)
    body = {k: v for k, v in record.items() if k != "sha256"}
    record["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    trust.record_path(path).write_text(json.dumps(record))


def _wrong_layout(record):
    record["arrays"][LAYER]["layout"] = "0" * 64


def _wrong_hash(record):
    record["arrays"][LAYER]["hash"] = "rows:" + "0" * 64


def _other_file(record):
    record["file"][1] += 1  # another inode


def _other_reader(record):
    record["reader"][0] += 1  # records of other checks


def _bad_type(record):
    record["arrays"][LAYER]["hash"] = 7


def _unsealed(path: Path) -> None:
    text = trust.record_path(path).read_text()
    trust.record_path(path).write_text(text.replace('"rows:', '"rows:0', 1))


CORRUPTIONS = {
    "garbage": lambda path: trust.record_path(path).write_bytes(b"\x00\xff" * 40),
    "truncated": lambda path: trust.record_path(path).write_text(trust.record_path(path).read_text()[:200]),
    "not an object": lambda path: trust.record_path(path).write_text("[1, 2]"),
    "seal does not match": _unsealed,
    "sealed, wrong chunk layout": lambda path: _reseal(path, _wrong_layout),
    "sealed, another layer hash": lambda path: _reseal(path, _wrong_hash),
    "sealed, another file": lambda path: _reseal(path, _other_file),
    "sealed, wrong type": lambda path: _reseal(path, _bad_type),
    "sealed, another reader": lambda path: _reseal(path, _other_reader),
    "a folder": lambda path: (trust.record_path(path).unlink(), trust.record_path(path).mkdir()),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupt_or_foreign_record_means_full_checks(cache, counted, corruption):
    path, values = cache
    with open_cache(path) as first:
        first.codes("pre_logits")
    CORRUPTIONS[corruption](path)
    fastread.forget()  # as in a new process
    counted.clear()
    with open_cache(path) as again:
        np.testing.assert_array_equal(again.codes("pre_logits"), values)
    if corruption in ("sealed, wrong chunk layout", "sealed, another layer hash"):
        assert counted == [LAYER]  # the open record is still sound; the layer's entry is not trusted
    else:
        assert counted == ["active", LAYER]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_record_owned_by_another_user_is_not_trusted(cache, counted):
    path, _ = cache
    with open_cache(path) as first:
        first.codes("pre_logits")
    os.chown(trust.record_path(path), 54321, -1)
    fastread.forget()
    counted.clear()
    with open_cache(path) as again:
        again.codes("pre_logits")
    assert counted == ["active", LAYER]


def test_a_read_only_cache_folder_reads_as_before(cache, counted, monkeypatch):
    path, values = cache
    folder = path.parent
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:  # root writes into read-only folders: fail the write as the file system would
        def refuse(*_):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(trust, "atomic_write", refuse)
    try:
        for _ in range(2):
            fastread.forget()
            counted.clear()
            with open_cache(path) as cache_:
                np.testing.assert_array_equal(cache_.codes("pre_logits"), values)
            assert counted == ["active", LAYER]  # checked again each time: nothing could be recorded
        assert not trust.record_path(path).exists()
    finally:
        folder.chmod(stat.S_IRWXU)


def test_verify_checks_everything_whatever_the_record_says(cache, counted):
    """A record claiming a damaged layer passed (no write can make one: the ctime changes; this one is
    forged for the damaged file) is believed by reads, and verify still finds the damage."""
    path, values = cache
    _flip(path)
    time.sleep(2 * SETTLED_NS / 1e9)
    with h5py.File(path, "r") as raw:
        recorded = integrity.load(raw.attrs)["arrays"][LAYER]["hash"]
        body = {"format": trust.FORMAT, "reader": trust.READER, "open": str(raw.attrs["digest"]),
                "file": list(fastread.identity(fastread.file_descriptor(raw))),
                "arrays": {LAYER: {"hash": recorded, "layout": trust.layout_digest(fastread.layout(raw[LAYER]))}}}
    trust.record_path(path).parent.mkdir()
    trust.record_path(path).write_text(json.dumps({**body, "sha256": trust._sealed(body)}))
    with open_cache(path) as cache_:
        read = cache_.codes("pre_logits")  # served from the chunks' bytes, as recorded
    assert counted == ["active"] and not np.array_equal(read, values)
    report = verify_cache(path, check_inputs=False)  # fletcher32 fails before the content hash is reached
    assert any("reading /codes/pre_logits/none failed" in p and "filter returned failure" in p
               for p in report.problems), report.problems
    with pytest.raises(CacheError, match="filter returned failure"):
        open_cache(path, recheck=True).codes("pre_logits")
