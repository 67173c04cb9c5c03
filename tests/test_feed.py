"""Feeding batches: in line, a decode-ahead thread, processes, and `auto` choosing among them by measurement."""

import threading
import time
from contextlib import closing

import numpy as np
import pytest
import torch

from pipeline import open_cache
from pipeline.activations import ExtractConfig, extract
from pipeline.activations.feed import INLINE, PROCESSES, THREAD, Feeder, Trial, decode_ahead, decode_threads
from pipeline.cli import main
from pipeline.errors import InputError, PipelineError
from pipeline.inputs import UndecodableImage, from_folder

from .conftest import read_codes

CPU = torch.device("cpu")


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "layerprobe-decode-ahead"]


class Rows:
    """A stand-in for ImageFiles: row i -> (i, a tensor filled with i, a fingerprint), optionally slow."""

    def __init__(self, n: int, decode_s: float = 0.0, fail_at: int | None = None, error=None):
        self.n, self.decode_s, self.fail_at, self.error = n, decode_s, fail_at, error

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.decode_s:
            time.sleep(self.decode_s)  # releases the GIL, as PIL's decoding does
        if i == self.fail_at:
            raise self.error
        return i, torch.full((3, 2, 2), float(i)), np.full(4, i, dtype=np.float16)


def _rows_of(feeder: Feeder, dataset, work_s: float = 0.0) -> list[int]:
    seen = []
    with closing(feeder.batches(dataset)) as batches:
        for rows, images, prints in batches:
            assert images[:, 0, 0, 0].tolist() == rows.tolist() and prints[:, 0].tolist() == rows.tolist()
            seen.extend(rows.tolist())
            time.sleep(work_s)
    return seen


@pytest.mark.parametrize("workers", [0, "thread", "auto"])
@pytest.mark.parametrize("n, batch_size", [(1, 4), (7, 3), (40, 2), (41, 3)])
def test_every_feed_gives_every_row_once_in_order(workers, n, batch_size):
    feeder = Feeder(workers, CPU, batch_size, Trial(warmup=1, per_mode=3, rounds=1))
    assert _rows_of(feeder, Rows(n)) == list(range(n))
    assert not _decode_threads()


def test_auto_measures_and_picks_the_thread_when_decoding_overlaps_compute(monkeypatch):
    monkeypatch.setattr("pipeline.activations.feed.decode_threads", lambda: 1)  # in line, one row after another
    # 10 ms of decoding per row and 20 ms of compute per batch of 2: in line 40 ms a batch, overlapped 20 ms
    feeder = Feeder("auto", CPU, 2, Trial(warmup=1, per_mode=3, rounds=2))
    assert _rows_of(feeder, Rows(40, decode_s=0.01), work_s=0.02) == list(range(40))
    record = feeder.record()
    assert (record["mode"], record["processes"], record["how"]) == (THREAD, 0, "measured")
    assert record["trial_batches"] == 7  # 2x apart after one round (1.25x is decisive): the second is not run
    ms = record["ms_per_image"]
    assert set(ms) == {INLINE, THREAD}
    # in line 3 x 40 ms a batch; the thread 20 ms to decode the first batch, then 3 x 20 ms: 80 ms for 6 rows.
    # Sleeps are never shorter than asked, so these are lower bounds; a loaded machine only adds to them.
    assert ms[INLINE] >= 20 * 0.95 and ms[THREAD] >= 13.3 * 0.95
    assert ms[THREAD] * 1.25 <= ms[INLINE]  # what made the first round decisive


def test_auto_keeps_decoding_in_line_unless_another_mode_is_clearly_faster():
    from pipeline.activations.feed import MARGIN, FeedChoice, decide

    modes = [FeedChoice(INLINE, threads=2), FeedChoice(THREAD), FeedChoice(PROCESSES, 4)]
    chosen = lambda inline, thread, processes: decide(modes, {INLINE: [inline], THREAD: [thread],  # noqa: E731
                                                              PROCESSES: [processes]}).mode
    assert chosen(13.3, 13.2, 20.0) == INLINE  # a tie a 13-batch trial cannot resolve: in line
    assert chosen(13.3, 13.3 * (1 - MARGIN) + 0.01, 20.0) == INLINE
    assert chosen(13.3, 13.3 * (1 - MARGIN) - 0.01, 20.0) == THREAD  # clearly faster with the thread
    assert chosen(13.0, 12.0, 9.0) == PROCESSES
    assert chosen(13.0, 12.0, 12.9) == THREAD
    assert decide(modes, {INLINE: [13.0], THREAD: [13.1], PROCESSES: [20.0]}).threads == 2


def test_one_disturbed_round_of_the_trial_does_not_leave_decoding_in_line():
    from pipeline.activations.feed import FeedChoice, decide

    modes = [FeedChoice(INLINE, threads=2), FeedChoice(THREAD)]
    # a quiet round, then one in which other work slowed the in-line batches (measured so on 2 cores)
    assert decide(modes, {INLINE: [10.1, 16.5], THREAD: [12.4, 15.3]}).mode == INLINE
    assert decide(modes, {INLINE: [16.0, 16.5], THREAD: [12.4, 15.3]}).mode == THREAD  # faster in both rounds


def test_auto_keeps_decoding_in_line_when_a_run_is_too_short_to_measure(monkeypatch):
    monkeypatch.setattr("pipeline.activations.feed.decode_threads", lambda: 3)
    feeder = Feeder("auto", CPU, 4)  # the default trial needs 13 batches with two modes
    assert _rows_of(feeder, Rows(48)) == list(range(48))
    assert feeder.record() == {"mode": INLINE, "processes": 0, "how": "too few batches to measure (12)", "threads": 3}


class Where(Rows):
    """Rows that note the thread each was decoded on."""

    def __init__(self, n, **kwargs):
        super().__init__(n, **kwargs)
        self.threads = {}

    def __getitem__(self, i):
        self.threads[i] = threading.current_thread().name
        return super().__getitem__(i)


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("layerprobe-decode_")]


def test_in_line_spreads_each_batch_over_one_thread_per_core_and_keeps_row_order(monkeypatch):
    from pipeline.activations import feed

    monkeypatch.setattr(feed.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert feed.decode_threads() == 3
    monkeypatch.setattr(feed.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert feed.decode_threads() == feed.MAX_DECODE_THREADS
    monkeypatch.setattr(feed, "decode_threads", lambda: 2)
    feeder, rows = Feeder(0, CPU, 4), Where(10, decode_s=0.005)
    assert _rows_of(feeder, rows) == list(range(10))
    assert feeder.record() == {"mode": INLINE, "processes": 0, "how": "asked", "threads": 2}
    # every row on a decoding thread, both threads used, none left running afterwards
    assert {name.rsplit("_", 1)[0] for name in rows.threads.values()} == {"layerprobe-decode"}
    assert len(set(rows.threads.values())) == 2
    assert not _pool_threads()


@pytest.mark.parametrize("error", [InputError("x.png can no longer be decoded"), MemoryError("no room")],
                         ids=["input", "memory"])
def test_an_error_while_decoding_side_by_side_is_raised_as_raised_and_no_later_row_is_decoded(monkeypatch, error):
    monkeypatch.setattr("pipeline.activations.feed.decode_threads", lambda: 2)
    rows = Where(40, fail_at=5, error=error)
    with pytest.raises(type(error)) as raised:
        _rows_of(Feeder(0, CPU, 4), rows)
    assert raised.value is error
    assert max(rows.threads) < 8  # the failing batch (rows 4-7) at most
    assert not _pool_threads()


def test_ctrl_c_while_a_batch_is_decoded_side_by_side_leaves_no_thread(monkeypatch):
    monkeypatch.setattr("pipeline.activations.feed.decode_threads", lambda: 2)
    with pytest.raises(KeyboardInterrupt):
        with closing(Feeder(0, CPU, 2).batches(Rows(20, decode_s=0.001))) as batches:
            for k, _ in enumerate(batches):
                if k == 3:
                    raise KeyboardInterrupt
    assert not _pool_threads()


def test_a_short_first_part_of_a_run_does_not_keep_a_longer_later_part_from_measuring():
    feeder = Feeder("auto", CPU, 2, Trial(warmup=1, per_mode=3, rounds=1))  # 7 batches with two modes
    assert _rows_of(feeder, Rows(6)) == list(range(6))
    assert feeder.record()["how"] == "too few batches to measure (3)"
    assert _rows_of(feeder, Rows(20)) == list(range(20))
    assert feeder.record()["how"] == "measured" and feeder.record()["trial_batches"] == 7


def test_auto_tries_the_old_rules_processes_on_a_large_cpu_and_uses_them_on_a_gpu(monkeypatch):
    monkeypatch.setattr("pipeline.activations.feed.os.cpu_count", lambda: 8)
    feeder = Feeder("auto", CPU, 2, Trial(warmup=1, per_mode=3, rounds=1))
    assert [(c.mode, c.processes) for c in feeder.candidates] == [(INLINE, 0), (THREAD, 0), (PROCESSES, 2)]
    assert _rows_of(feeder, Rows(30)) == list(range(30))
    assert set(feeder.record()["ms_per_image"]) == {INLINE, THREAD, PROCESSES}
    gpu = Feeder("auto", torch.device("cuda"), 2)
    assert gpu.record() == {"mode": PROCESSES, "processes": 7, "how": "rule: a GPU decodes with most CPU cores"}


@pytest.mark.parametrize("error", [InputError("x.png can no longer be decoded"), KeyboardInterrupt(),
                                   MemoryError("no room")], ids=["input", "ctrl-c", "memory"])
def test_an_error_while_decoding_ahead_is_raised_as_raised_and_the_thread_ends(error):
    feeder = Feeder("thread", CPU, 2)
    with pytest.raises(type(error)) as raised:
        _rows_of(feeder, Rows(20, fail_at=9, error=error))
    assert raised.value is error
    assert not _decode_threads()


def test_leaving_early_stops_the_thread_even_with_a_full_queue():
    produced = []

    def produce(stopped):
        for i in range(1000):
            if stopped():
                return
            produced.append(i)
            yield i

    with closing(decode_ahead(produce, depth=2)) as items:
        assert next(items) == 0
        time.sleep(0.05)  # the producer fills the queue and waits
    assert not _decode_threads()
    assert len(produced) <= 5  # one taken, two queued, one waiting to be put (and one being made)


def test_ctrl_c_in_the_consumer_stops_the_thread():
    feeder = Feeder("thread", CPU, 2)
    with pytest.raises(KeyboardInterrupt):
        with closing(feeder.batches(Rows(20, decode_s=0.001))) as batches:
            for k, _ in enumerate(batches):
                if k == 3:
                    raise KeyboardInterrupt
    assert not _decode_threads()


# --- through extract: the same codes, the same errors, the choice in the manifest ---------------------------------


@pytest.fixture
def reference(image_folder, tiny_config, tmp_path, monkeypatch):
    """Codes decoded in the main thread, one image after another: torch's own ToTensor + Normalize."""
    with monkeypatch.context() as patched:
        patched.setattr("pipeline.activations.feed.decode_threads", lambda: 1)
        return extract(from_folder(image_folder), tiny_config(batch_size=1, workers=0), out=tmp_path / "ref.h5",
                       progress=False).path


@pytest.mark.parametrize("workers", [0, "thread", "auto"])
def test_overlap_gives_bit_identical_codes_in_the_same_order(image_folder, tiny_config, tmp_path, reference, workers):
    result = extract(from_folder(image_folder), tiny_config(batch_size=1, workers=workers), out=tmp_path / "o.h5",
                     progress=False)
    ids_ref, ref = read_codes(reference)
    ids, codes = read_codes(result.path)
    assert ids == ids_ref
    for key in ref:
        np.testing.assert_array_equal(codes[key], ref[key], err_msg=key)
    with open_cache(result.path) as cache:
        decoding = cache.provenance.runtime.extra["decoding"]
        assert cache.provenance.runtime.workers == 0
    if workers == "thread":
        assert decoding == {"mode": THREAD, "processes": 0, "how": "asked"}
    elif workers == 0:
        assert decoding == {"mode": INLINE, "processes": 0, "how": "asked", "threads": decode_threads()}
    else:  # 16 images in batches of 1: enough for the default trial (13 batches)
        assert decoding["how"] == "measured" and decoding["mode"] in (INLINE, THREAD)
        assert set(decoding["ms_per_image"]) == {INLINE, THREAD} and min(decoding["ms_per_image"].values()) > 0
    assert not _decode_threads()


def test_a_trial_gives_each_mode_batches_to_overlap():
    with pytest.raises(PipelineError, match="at least 2 batches per mode"):
        Trial(per_mode=1)


def test_the_default_is_auto():
    assert ExtractConfig().workers == "auto" and ExtractConfig(workers=None).workers == "auto"
    assert ExtractConfig(workers="3").workers == 3


@pytest.mark.parametrize("bad", [-1, "two", 1.5, True])
def test_bad_workers_are_refused_naming_the_choices(bad):
    with pytest.raises(PipelineError, match=r"workers \(--workers\) must be auto, thread or a number"):
        ExtractConfig(workers=bad)


@pytest.mark.parametrize("workers", [0, "thread"])
def test_a_file_that_changed_during_extraction_is_named_as_before(image_folder, tiny_config, tmp_path, monkeypatch,
                                                                  workers):
    from pipeline.activations import loader

    real = loader.ImageFiles.__getitem__

    def changed(self, i):
        if self.paths[i].name == "img05.png":
            monkeypatch.setattr(self, "decoder", _Broken())
        return real(self, i)

    monkeypatch.setattr(loader.ImageFiles, "__getitem__", changed)
    with pytest.raises(InputError) as raised:
        extract(from_folder(image_folder), tiny_config(batch_size=2, workers=workers), out=tmp_path / "c.h5",
                progress=False)
    path = image_folder / "benign" / "img05.png"
    assert str(raised.value) == f"{path} can no longer be decoded (truncated); it changed during extraction"
    assert not _decode_threads()


class _Broken:
    def decode(self, path, frame=None):
        raise UndecodableImage("truncated")


def test_ctrl_c_during_an_overlapped_extraction_keeps_committed_rows(image_folder, tiny_config, tmp_path, monkeypatch,
                                                                     reference):
    from pipeline.cache import CacheWriter

    original, calls = CacheWriter.write, {"n": 0}

    def write_then_stop(self, *args, **kwargs):
        position = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return position

    monkeypatch.setattr(CacheWriter, "write", write_then_stop)
    config = tiny_config(batch_size=1, workers="thread")
    with pytest.raises(KeyboardInterrupt):
        extract(from_folder(image_folder), config, out=tmp_path / "c.h5", progress=False)
    assert not _decode_threads()
    monkeypatch.setattr(CacheWriter, "write", original)
    resumed = extract(from_folder(image_folder), config, out=tmp_path / "c.h5", progress=False)
    assert resumed.forward_passes == 11  # 16 rows in batches of 1, five committed before the Ctrl-C
    _, ref = read_codes(reference)
    _, codes = read_codes(resumed.path)
    for key in ref:
        np.testing.assert_array_equal(codes[key], ref[key], err_msg=key)


def test_cli_workers_option(image_folder, tmp_path):
    from click.testing import CliRunner

    from .conftest import TINY_MODEL

    runner = CliRunner()

    tiny = ["--model", TINY_MODEL, "--random-init", "--img-size", "64", "--batch-size", "8", "-q"]
    result = runner.invoke(main, ["extract", "--images", str(image_folder), *tiny, "--workers", "thread",
                                  "--out", str(tmp_path / "t.h5")])
    assert result.exit_code == 0, result.output
    with open_cache(tmp_path / "t.h5") as cache:
        assert cache.provenance.runtime.extra["decoding"]["mode"] == THREAD
    bad = runner.invoke(main, ["extract", "--images", str(image_folder), *tiny, "--workers", "many"])
    assert bad.exit_code == 2
    assert "'many' is none of auto, thread or a number of decoding processes" in bad.output
    shown = runner.invoke(main, ["extract", "--help"]).output
    assert "auto (default): the first batches are decoded in turn" in " ".join(shown.split())


def test_channels_last_images_are_stacked_into_a_channels_last_batch_of_the_same_values():
    from torch.utils.data import default_collate

    from pipeline.activations.feed import collate

    rng = np.random.default_rng(0)
    hwc = [torch.from_numpy(rng.random((5, 7, 3), dtype=np.float32)) for _ in range(4)]
    items = [(10 + k, image.permute(2, 0, 1), np.full(6, k, np.float16)) for k, image in enumerate(hwc)]
    rows, batch, prints = collate(items)
    expected = default_collate(items)
    assert batch.is_contiguous(memory_format=torch.channels_last) and batch.shape == (4, 3, 5, 7)
    assert torch.equal(batch, expected[1]) and torch.equal(rows, expected[0]) and torch.equal(prints, expected[2])
    # channels-first images, or a mix, are stacked as before
    mixed = [items[0], (11, hwc[1].permute(2, 0, 1).contiguous(), items[1][2])]
    for case in (mixed, [(1, torch.zeros(3, 2, 2), np.zeros(6, np.float16))]):
        got, want = collate(case), default_collate(case)
        assert all(torch.equal(a, b) for a, b in zip(got, want)) and got[1].is_contiguous()
