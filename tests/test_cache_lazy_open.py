"""A cache opened from the record beside it: no HDF5 until something needs it, the answers of a full open."""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline import open_cache
from pipeline.cache import add_row_column, fastread, trust
from pipeline.errors import CacheError

from .probe_data import write_cache
from .test_cache_fastread import counted, fresh_records  # noqa: F401 (fixtures: hashes checked, no records)
from .test_cache_trust import LAYER, SETTLED_NS, _flip, _reseal, settled  # noqa: F401 (fixture: 50 ms settling)

N = 130
SOME_HIDDEN = np.array([i % 9 not in (2, 3) and not 60 <= i < 75 for i in range(N)])


@pytest.fixture
def opens(monkeypatch):
    """Every path HDF5 was asked to open, in order."""
    seen = []
    original = h5py.File

    def counting(name, *args, **kwargs):
        seen.append(str(name))
        return original(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", counting)
    return seen


def _write(folder: Path, active=None, seed=0) -> tuple[Path, dict]:
    """A settled cache of two layers, groups and a dup_cluster column, hiding the rows ``active`` hides."""
    rng = np.random.default_rng(seed)
    codes = {("blocks.0", "avg"): rng.standard_normal((N, 24), dtype=np.float32),
             ("pre_logits", "none"): rng.standard_normal((N, 1280), dtype=np.float32)}
    path = write_cache(folder / "c.h5", codes, rng.integers(0, 2, N), ["a", "b"], groups=[f"g{i % 7}" for i in range(N)],
                       ids=[f"s{seed}-{i:04d}.png" for i in range(N)], active=active)
    shown = N if active is None else int(np.sum(active))
    add_row_column(path, "dup_cluster", np.arange(shown) % 5, {"threshold": 0.9})
    time.sleep(2 * SETTLED_NS / 1e9)
    return path, codes


def _record(path: Path) -> None:
    """What a first process leaves beside the cache: its open checks and both layers, verified."""
    with open_cache(path) as cache:
        cache.codes("blocks.0")
        cache.codes("pre_logits")
    fastread.forget()  # what a new process knows: the record only


@pytest.fixture
def recorded(tmp_path):
    path, codes = _write(tmp_path)
    _record(path)
    return path, codes


def test_open_and_read_of_a_recorded_layer_open_no_hdf5(recorded, opens, counted):
    path, codes = recorded
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
        np.testing.assert_array_equal(cache.codes("blocks.0/avg"), codes[("blocks.0", "avg")])
        assert (cache.n_rows, cache.n_stored, cache.outputs) == (N, N, [("blocks.0", "avg"), ("pre_logits", "none")])
    assert opens == [] and counted == []  # no HDF5, no hash: the record said all of it


def _answers(cache) -> dict:
    """Everything the public reader API answers, as plain values."""
    plain = lambda v: v.tolist() if isinstance(v, np.ndarray) else v  # noqa: E731
    found = {name: plain(getattr(cache, name)) for name in
             ("ids", "labels", "groups", "split", "class_names", "file_sha256", "dup_cluster", "fingerprints",
              "manifest", "provenance", "key", "settings_key", "n_rows", "n_stored", "outputs", "has_hashes")}
    found.update(stored_fingerprints=cache.stored_fingerprints(), stored_rows=cache.stored_rows(),
                 extras=cache.extras(), bn_members=cache.bn_members(), bn_stats=cache.bn_stats(),
                 bn_state=cache.bn_state(), columns=cache.check_columns())
    for layer, pooling in cache.outputs:
        found[layer] = (cache.output_info(layer, pooling), cache.recorded_hash(layer, pooling),
                        cache.codes(layer).tolist(), cache.stored_codes(layer).tolist(),
                        cache.stored_codes(layer, pooling, rows=slice(10, 60)).tolist())
    return found


@pytest.mark.parametrize("active", [None, SOME_HIDDEN], ids=["all rows active", "some rows hidden"])
def test_a_recorded_open_answers_every_call_as_a_full_open(tmp_path, opens, active):
    path, codes = _write(tmp_path, active)
    _record(path)
    opens.clear()
    with open_cache(path, recheck=True) as checked:
        assert len(opens) == 1  # verify's open: HDF5 and every check
        expected = _answers(checked)
    with open_cache(path) as cache:
        assert len(opens) == 1  # from the record
        assert (cache.n_rows, cache.ids.tolist()) == (expected["n_rows"], expected["ids"])
        assert len(opens) == 2  # the ids are read through HDF5, opened when first needed, once
        assert _answers(cache) == expected
    shown = N if active is None else int(SOME_HIDDEN.sum())
    assert expected["n_rows"] == shown and expected["dup_cluster"] == (np.arange(shown) % 5).tolist()
    assert expected["pre_logits"][2] == codes[("pre_logits", "none")][active if active is not None else slice(None)].tolist()
    assert expected["groups"][:3] == ["g0", "g1", "g4" if active is not None else "g2"]


def test_what_a_recorded_open_keeps_of_active_rows_is_them():
    runs = {"none": np.zeros(5, bool), "all": np.ones(5, bool), "empty": np.zeros(0, bool),
            "ends": np.array([1, 0, 0, 1, 1, 0, 1], bool), "hidden": SOME_HIDDEN}
    for name, active in runs.items():
        meta = trust.metadata({"manifest": "{}", "key": "k", "settings_key": "s"}, active)
        assert trust.active_rows(meta).tolist() == active.tolist(), name
        assert trust.active_count(meta) == int(active.sum()), name
    assert trust.metadata({"manifest": "{}", "key": "k", "settings_key": "s"}, np.arange(8) % 2 == 0)["active"] == \
        [0, 1, 2, 3, 4, 5, 6, 7]
    assert trust.metadata({}, np.arange(2 * trust.MAX_RUNS + 2) % 2 == 0) is None  # too fragmented: not kept


def _append(path: Path) -> None:
    with open(path, "ab") as handle:
        handle.write(b"\0" * 16)


def _touch(path: Path) -> None:
    os.utime(path)


@pytest.mark.parametrize("change", [_flip, _append, _touch], ids=["a flipped bit", "appended bytes", "touched"])
def test_a_file_changed_after_the_record_is_opened_through_every_check(recorded, opens, counted, change):
    path, codes = recorded
    change(path)
    opens.clear()  # _flip finds the chunk through HDF5
    with open_cache(path) as cache:
        assert len(opens) == 1 and counted == ["active"]  # HDF5, the string heaps, the digest, active's hash
        if change is _flip:
            with pytest.raises(CacheError, match="reading /codes/pre_logits/none failed.*filter returned failure"):
                cache.codes("pre_logits")
        else:
            np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
            assert counted == ["active", LAYER]


def _as_before_meta(record: dict) -> None:
    """A record as written before the recorded open existed: no ``meta``, no chunk addresses."""
    del record["meta"]
    for entry in record["arrays"].values():
        entry.pop("chunks", None)


def test_a_record_of_before_opens_through_hdf5_skipping_its_checks_and_is_completed(recorded, opens, counted):
    path, codes = recorded
    _reseal(path, _as_before_meta)
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
    assert len(opens) == 1 and counted == []  # HDF5 opened, but no check the record lists
    record = json.loads(trust.record_path(path).read_text())
    assert record["meta"]["rows"] == N and record["meta"]["active"] == [0, N]
    assert "chunks" in record["arrays"][LAYER]  # the layer read walked the chunk index and kept what it gave
    assert "chunks" not in record["arrays"]["codes/blocks.0/avg"]  # not read: left as it was
    fastread.forget()
    opens.clear()
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
    assert opens == [] and counted == []


def _meta_rows_text(record):
    record["meta"]["rows"] = str(record["meta"]["rows"])


def _meta_runs_beyond(record):
    record["meta"]["active"] = [0, N + 5]


def _meta_attribute_missing(record):
    del record["meta"]["attrs"]["key"]


def _chunks_moved(record):
    rows, width, _ = record["arrays"][LAYER]["chunks"]
    record["arrays"][LAYER]["chunks"] = [rows, width, trust._chunks(fastread.Verified((8, 16, 24), rows, width))[2]]


@pytest.mark.parametrize("damage", [_meta_rows_text, _meta_runs_beyond, _meta_attribute_missing])
def test_a_record_whose_open_entries_are_malformed_means_every_check(recorded, opens, counted, damage):
    path, codes = recorded
    _reseal(path, damage)
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
    assert len(opens) == 1 and counted == ["active", LAYER]


def test_chunk_addresses_the_layout_digest_does_not_name_are_not_read(recorded, opens, counted):
    path, codes = recorded
    _reseal(path, _chunks_moved)
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
    assert len(opens) == 1 and counted == [LAYER]  # the open is still recorded; the layer is checked again


def test_a_closed_recorded_handle_reads_nothing_and_holds_no_descriptor(recorded, opens):
    path, codes = recorded
    with open_cache(path) as cache:
        closer = cache._own_fd
        assert closer.alive
    assert not closer.alive and opens == []
    for read in (lambda: cache.codes("pre_logits"), lambda: cache.ids, lambda: cache.labels):
        with pytest.raises(CacheError, match="was closed; open it again"):
            read()
    cache.close()  # twice: nothing more
    dropped = open_cache(path)._own_fd
    gc.collect()
    assert not dropped.alive  # a handle never closed gives its descriptor back when collected


def _replace(path: Path) -> dict:
    """Another cache renamed over ``path`` (as an extraction or a stored column publishes); its codes."""
    other = path.parent / "other"
    other.mkdir()
    newer, codes = _write(other, seed=1)
    os.replace(newer, path)
    return codes


def test_a_recorded_handle_whose_file_was_written_before_it_needed_hdf5_refuses_to_read(recorded):
    path, codes = recorded
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
        _flip(path)
        for read in (lambda: cache.ids, lambda: cache.codes("pre_logits"), lambda: cache.codes("blocks.0")):
            with pytest.raises(CacheError, match="changed since it was opened; open it again"):
                read()


def test_a_recorded_handle_reads_on_the_file_it_opened_after_another_is_renamed_over_it(recorded, counted, opens):
    """As a notebook does: a handle open while `duplicates` stores its column (a new file renamed over the
    path). Unlinking changed the opened file's ctime only; the handle reads it on, every read checked."""
    path, codes = recorded
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
        new_codes = _replace(path)
        counted.clear()
        assert cache.ids[0] == "s0-0000.png" and cache.labels.shape == (N,)
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
        np.testing.assert_array_equal(cache.codes("blocks.0"), codes[("blocks.0", "avg")])
        assert not opens[-1].endswith("c.h5")  # through the descriptor it holds: the path names the new file
        assert LAYER in counted  # checked again: the record was for the file while it was linked
    with open_cache(path) as cache:  # the path names the new file
        assert cache.ids[0] == "s1-0000.png"
        np.testing.assert_array_equal(cache.codes("pre_logits"), new_codes[("pre_logits", "none")])


def test_a_recorded_handle_that_opened_hdf5_reads_the_file_it_opened_after_another_is_renamed_over_it(
        recorded, counted):
    path, codes = recorded
    with open_cache(path) as cache:
        assert cache.ids[0] == "s0-0000.png"  # HDF5 opened
        _replace(path)
        counted.clear()
        assert cache.labels.shape == (N,)
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
    assert counted == ["labels", LAYER]  # the file's ctime changed with the unlink: checked again


def test_a_missing_cache_is_named_before_any_record_is_looked_for(tmp_path):
    with pytest.raises(CacheError, match="does not exist; create it with `layerprobe extract`"):
        open_cache(tmp_path / "absent.h5")


def test_a_process_parses_a_record_once_and_again_when_its_bytes_change(recorded, monkeypatch):
    path, codes = recorded
    trust._PARSED.clear()
    parsed = []
    well_formed = trust._well_formed
    monkeypatch.setattr(trust, "_well_formed", lambda data: (parsed.append(1), well_formed(data))[1])
    for _ in range(3):
        with open_cache(path) as cache:
            np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
    assert len(parsed) == 1
    _reseal(path, lambda record: record["arrays"].pop("codes/blocks.0/avg"))  # other bytes, still sound
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), codes[("pre_logits", "none")])
    assert len(parsed) == 2


def test_a_handle_on_a_file_since_replaced_leaves_the_new_files_record_alone(tmp_path, settled):
    path, codes = _write(tmp_path)
    old = open_cache(path)
    assert old.ids[0] == "s0-0000.png"  # HDF5 open on the first file
    new_codes = _replace(path)
    time.sleep(2 * SETTLED_NS / 1e9)  # both files settled (the unlink changed the first one's ctime)
    _record(path)  # the new file's record, by another handle
    kept = trust.record_path(path).read_bytes()
    np.testing.assert_array_equal(old.codes("pre_logits"), codes[("pre_logits", "none")])  # checked, noted
    old.close()  # what it checked was for the file renamed away: not written over the new file's record
    assert trust.record_path(path).read_bytes() == kept
    with open_cache(path) as cache:
        np.testing.assert_array_equal(cache.codes("pre_logits"), new_codes[("pre_logits", "none")])
