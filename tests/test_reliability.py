"""The cache never lies and never loses work: kills, Ctrl-C, locks, damage, full disks, determinism."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.cache import WriterLock, partial_path, verify_cache
from pipeline.errors import CacheError, CacheInProgressError
from pipeline.inputs import from_csv, from_folder

from .conftest import TINY_MODEL, make_folder, read_codes

HARNESS = Path(__file__).with_name("crash_harness.py")
ROOT = HARNESS.parent.parent


def _cli_args(folder, out, batch_size=4, workers="0"):
    return ["extract", "--images", str(folder), "--model", TINY_MODEL, "--random-init", "--img-size", "64",
            "--workers", workers, "--batch-size", str(batch_size), "--out", str(out), "-q"]


def _spawn(args, **env):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **{k: str(v) for k, v in env.items()}}
    # A test run started in the background (`cmd &`) ignores SIGINT, and a child inherits that: Python then
    # never raises KeyboardInterrupt. Give the child the default, as an interactive shell would.
    return subprocess.Popen([sys.executable, str(HARNESS), *args], env=environment, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))



def _assert_identical(path, reference):
    ids, got = read_codes(path)
    ref_ids, want = read_codes(reference)
    assert ids == ref_ids
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """32 images and an uninterrupted reference cache, extracted with batch size 4."""
    from pipeline.activations import ExtractConfig

    root = tmp_path_factory.mktemp("reliability")
    folder = make_folder(root / "images", n_per_class=16)
    config = ExtractConfig(model=TINY_MODEL, random_init=True, img_size=64, batch_size=4, workers=0)
    reference = extract(from_folder(folder), config, out=root / "reference.h5", progress=False).path
    return folder, reference, config


def _resume_in_process(corpus, out):
    folder, _, config = corpus
    return extract(from_folder(folder), config, out=out, progress=False)


@pytest.mark.parametrize("crash_at", ["after_data:3", "after_commit:3", "finalise"])
def test_kill_at_a_fixed_point_then_resume(corpus, tmp_path, crash_at):
    folder, reference, _ = corpus
    out = tmp_path / "c.h5"
    child = _spawn(_cli_args(folder, out), CRASH_AT=crash_at)
    child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert not out.exists() and partial_path(out).exists()
    with pytest.raises(CacheInProgressError, match="was interrupted"):
        open_cache(out)
    result = _resume_in_process(corpus, out)
    expected_passes = {"after_data:3": 6, "after_commit:3": 5, "finalise": 0}[crash_at]
    assert result.forward_passes == expected_passes  # 8 batches; committed ones are not redone
    _assert_identical(out, reference)
    assert not partial_path(out).exists()


def test_kill_at_random_times_then_resume(corpus, tmp_path):
    folder, reference, _ = corpus
    out = tmp_path / "c.h5"
    rng = random.Random(1234)
    for _ in range(3):
        child = _spawn(_cli_args(folder, out), SLOW_BATCH=0.1)
        deadline = time.monotonic() + 60
        while not partial_path(out).exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        if out.exists():
            break  # it finished before the kill landed: still a valid outcome
        with pytest.raises(CacheInProgressError):
            open_cache(out)
    _resume_in_process(corpus, out)
    _assert_identical(out, reference)


@pytest.mark.parametrize("workers", ["0", "thread"], ids=["in-line", "decode-ahead"])
@pytest.mark.parametrize("sent, code, said", [(signal.SIGINT, 130, "Interrupted"), (signal.SIGTERM, 143, "Terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_exit_printing_the_resume_command(corpus, tmp_path, sent, code, said, workers):
    folder, reference, _ = corpus
    out = tmp_path / "c.h5"
    child = _spawn(_cli_args(folder, out, workers=workers), SLOW_BATCH=0.2)
    deadline = time.monotonic() + 60
    while not partial_path(out).exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert child.poll() is None, "the extraction ended before it could be interrupted"
    child.send_signal(sent)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == code, stderr
    assert f"{said}; committed rows are kept. Resume with:\n  layerprobe extract --images" in stderr
    assert "Traceback" not in stderr
    assert partial_path(out).exists() and not out.exists()
    _resume_in_process(corpus, out)
    _assert_identical(out, reference)


def test_a_second_writer_fails_fast_naming_the_holder(corpus, tmp_path):
    folder, _, config = corpus
    out = tmp_path / "c.h5"
    with WriterLock(out):
        with pytest.raises(CacheInProgressError, match=f"being written by process {os.getpid()}.*--wait"):
            extract(from_folder(folder), config, out=out, progress=False)


def test_the_lock_is_free_after_its_holder_is_killed_even_without_hdf5_locking(corpus, tmp_path, monkeypatch):
    folder, reference, config = corpus
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
    out = tmp_path / "c.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from pipeline.cache import WriterLock; "
         "WriterLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(120)", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CacheInProgressError, match=f"process {holder.pid}"):
            extract(from_folder(folder), config, out=out, progress=False)
    finally:
        holder.kill()
        holder.wait()
    extract(from_folder(folder), config, out=out, progress=False)
    _assert_identical(out, reference)


def test_wait_waits_for_the_other_writer(corpus, tmp_path):
    folder, reference, config = corpus
    from dataclasses import replace

    out = tmp_path / "c.h5"
    lock = WriterLock(out).acquire()
    threading.Timer(1.0, lock.release).start()
    started = time.monotonic()
    extract(from_folder(folder), replace(config, wait=True), out=out, progress=False)
    assert time.monotonic() - started >= 0.9
    _assert_identical(out, reference)


def test_readers_see_extraction_in_progress(tmp_path):
    out = tmp_path / "c.h5"
    partial_path(out).write_bytes(b"")
    with WriterLock(out):
        with pytest.raises(CacheInProgressError, match="extraction into .* is in progress; wait for it to finish"):
            open_cache(out)


def test_leftover_partial_of_other_settings_is_cleaned_up(corpus, tmp_path):
    folder, reference, config = corpus
    out = tmp_path / "c.h5"
    partial_path(out).write_bytes(b"half a file from a crashed run")
    extract(from_folder(folder), config, out=out, progress=False)
    assert not partial_path(out).exists()
    _assert_identical(out, reference)


def _mutate(data: bytearray, rng: random.Random) -> bytearray:
    kind = rng.choice(["flip", "flip", "truncate", "zero"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
        return data
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    start = rng.randrange(len(data))
    size = rng.choice([64, 512, 4096])
    data[start : start + size] = bytes(len(data[start : start + size]))
    return data


def _read_everything(path):
    with open_cache(path) as cache:
        return (list(cache.ids), cache.labels.tolist(), cache.class_names,
                {f"{l}/{p}": cache.codes(l, p) for l, p in cache.outputs})


def test_damaged_files_give_exact_numbers_or_an_error(corpus, tmp_path):
    _, reference, _ = corpus
    original = reference.read_bytes()
    ids, labels, classes, codes = _read_everything(reference)
    rng = random.Random(7)
    outcomes = {"exact": 0, "error": 0}
    for trial in range(80):
        damaged = tmp_path / f"d{trial}.h5"
        damaged.write_bytes(bytes(_mutate(bytearray(original), rng)))
        try:
            got_ids, got_labels, got_classes, got_codes = _read_everything(damaged)
        except CacheError:
            outcomes["error"] += 1
            assert not verify_cache(damaged, check_inputs=False).ok
            continue
        assert (got_ids, got_labels, got_classes) == (ids, labels, classes), f"trial {trial}"
        assert list(got_codes) == list(codes)
        for key in codes:
            np.testing.assert_array_equal(got_codes[key], codes[key], err_msg=f"trial {trial} {key}")
        outcomes["exact"] += 1
    assert outcomes["error"] > 0 and sum(outcomes.values()) == 80


def test_verify_reports_sound_and_stale_caches(corpus, tmp_path):
    folder, _, config = corpus
    work = make_folder(tmp_path / "imgs", n_per_class=4)
    out = extract(from_folder(work), config, out=tmp_path / "c.h5", progress=False).path
    report = verify_cache(out)
    assert report.ok, report.problems
    assert any("input files against their stored sha256" in line for line in report.checked)
    (work / "benign" / "img00.png").write_bytes((work / "benign" / "img01.jpg").read_bytes())
    (work / "malignant" / "img02.png").unlink()
    problems = " ".join(verify_cache(out).problems)
    assert "1 input image(s) missing, e.g. malignant/img02.png" in problems
    assert "1 input image(s) changed since extraction, e.g. benign/img00.png" in problems


def test_a_full_disk_names_the_cause_and_loses_nothing(corpus, tmp_path):
    """Every chunk is allocated when the cache is created, so a full disk stops the run
    before any row is committed (a file whose extension failed cannot be reopened)."""
    folder, reference, config = corpus
    out = tmp_path / "c.h5"
    child = _spawn(_cli_args(folder, out) + ["--layers", "all,logits"], FSIZE_LIMIT=120_000)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 1, stderr
    assert "the file size limit was reached" in stderr and "Rows committed so far are kept" in stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not partial_path(out).exists()
    from dataclasses import replace

    extract(from_folder(folder), replace(config, layers=("all", "logits")), out=out, progress=False)
    _, got = read_codes(out)
    _, want = read_codes(reference)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_the_space_estimate_is_checked_before_a_run(corpus, tmp_path, monkeypatch):
    import shutil

    folder, _, config = corpus
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(CacheError, match=r"the cache needs about .* MB but only 0.0 MB are free"):
        extract(from_folder(folder), config, out=tmp_path / "c.h5", progress=False)
    assert not partial_path(tmp_path / "c.h5").exists()


def test_the_same_command_twice_is_bit_identical(corpus, tmp_path):
    folder, reference, config = corpus
    again = extract(from_folder(folder), config, out=tmp_path / "again.h5", progress=False).path
    _assert_identical(again, reference)


def test_thread_count_does_not_change_theread_codes(corpus, tmp_path):
    import torch

    folder, reference, config = corpus
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = extract(from_folder(folder), config, out=tmp_path / "t1.h5", progress=False).path
    finally:
        torch.set_num_threads(threads)
    _, got = read_codes(single)
    _, want = read_codes(reference)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_input_order_does_not_matter(corpus, tmp_path):
    folder, reference, config = corpus
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    random.Random(3).shuffle(files)
    table = tmp_path / "shuffled.csv"
    table.write_text("path,label\n" + "".join(f"{p.relative_to(folder)},{p.parent.name}\n" for p in files))
    # the CSV sits in another folder than the images: give it the same ids by placing it in the image root
    inside = folder / "shuffled.csv"
    inside.write_text(table.read_text())
    try:
        shuffled = extract(from_csv(inside), config, out=tmp_path / "s.h5", progress=False).path
    finally:
        inside.unlink()
    _assert_identical(shuffled, reference)
