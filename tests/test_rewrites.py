"""Rewrites of a finished cache (duplicates) are locked, keyed and never touch an extraction's work."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.cache import is_locked, partial_path
from pipeline.cache.writer import CacheWriter
from pipeline.cli import main
from pipeline.duplicates import scan_cache, store_clusters
from pipeline.errors import CacheError
from pipeline.inputs import from_folder

from .conftest import make_folder, read_codes


@pytest.fixture
def cache(tmp_path, image_folder, tiny_config):
    return extract(from_folder(image_folder), tiny_config(), out=tmp_path / "c.h5", progress=False).path


def test_clusters_of_an_older_cache_are_refused(cache, image_folder, tiny_config):
    with open_cache(cache) as scanned:
        key = scanned.key
    report = scan_cache(cache, threshold=0.999)
    # another extraction replaces the cache: same number of rows, one image changed
    (image_folder / "benign" / "img00.png").write_bytes((image_folder / "benign" / "img02.png").read_bytes())
    extract(from_folder(image_folder), tiny_config(), out=cache, progress=False)
    with open_cache(cache) as now:
        assert now.n_rows == len(report.ids) and now.key != key
    with pytest.raises(CacheError, match=r"changed since its dup_cluster was computed \(content key [0-9a-f]{12}, now "
                                         r"[0-9a-f]{12}: another extraction replaced it\); nothing was stored"):
        store_clusters(report)
    with open_cache(cache) as now:
        assert now.dup_cluster is None


def test_duplicates_holds_the_writer_lock_from_scan_to_store(cache, monkeypatch):
    import pipeline.duplicates.scan as scan

    seen, similar_pairs = [], scan.similar_pairs

    def spying(codes, threshold, block):
        seen.append(is_locked(cache))
        return similar_pairs(codes, threshold, block)

    monkeypatch.setattr(scan, "similar_pairs", spying)
    result = CliRunner().invoke(main, ["duplicates", str(cache), "--threshold", "0.999"])
    assert result.exit_code == 0, result.output
    assert seen == [True] and not is_locked(cache)
    result = CliRunner().invoke(main, ["duplicates", str(cache), "--no-store", "--threshold", "0.999"])
    assert seen == [True, False]  # a report only reads


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_duplicates_never_touches_an_interrupted_extraction(tmp_path, image_folder, tiny_config, monkeypatch):
    config = tiny_config(batch_size=2)
    cache = extract(from_folder(image_folder), config, out=tmp_path / "c.h5", progress=False).path
    make_folder(tmp_path / "more", n_per_class=4, seed=7)
    for name in ("benign", "malignant"):
        for i, path in enumerate(sorted((tmp_path / "more" / name).iterdir())):
            path.rename(image_folder / name / f"new{i}{path.suffix}")
    commit, calls = CacheWriter._commit, {"n": 0}

    def interrupted(self, committed):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        commit(self, committed)

    monkeypatch.setattr(CacheWriter, "_commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(from_folder(image_folder), config, out=cache, progress=False)
    monkeypatch.setattr(CacheWriter, "_commit", commit)
    work = partial_path(cache)
    before = _sha(work)

    result = CliRunner().invoke(main, ["duplicates", str(cache), "--threshold", "0.999"])
    assert result.exit_code == 0, result.output
    assert _sha(work) == before  # the extraction's two committed batches are still there
    with open_cache(cache) as stored:
        assert stored.dup_cluster is not None and stored.n_rows == 16

    resumed = extract(from_folder(image_folder), config, out=cache, progress=False)
    assert resumed.forward_passes == 2  # 8 new images in batches of 2, two batches were committed
    reference = extract(from_folder(image_folder), config, out=tmp_path / "ref.h5", progress=False).path
    ids, got = read_codes(cache)
    ref_ids, want = read_codes(reference)
    assert ids == ref_ids and len(ids) == 24
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_duplicates_fails_fast_while_another_process_writes_the_cache(cache):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pipeline.cache import WriterLock; "
                               f"lock = WriterLock(__import__('pathlib').Path({str(cache)!r})).acquire(); "
                               "print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(Path(__file__).parent.parent)})
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(main, ["duplicates", str(cache), "--threshold", "0.999"])
        assert result.exit_code == 1
        assert f"is being written by process {holder.pid}; wait for it to finish (or pass wait=True (--wait))" in result.output
        with open_cache(cache) as stored:
            assert stored.dup_cluster is None
    finally:
        holder.kill()
        holder.wait()
    assert CliRunner().invoke(main, ["duplicates", str(cache), "--wait", "--threshold", "0.999"]).exit_code == 0
