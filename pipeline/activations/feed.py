"""How decoded batches reach the forward pass: in line, one decode-ahead thread, or decoding processes.

``workers`` (``--workers``) chooses:

- ``0``: decode each batch in line, between forward passes (no overlap with them), its images side by
  side on one thread per usable CPU core (:func:`decode_threads`; PIL's decoding and resizing release the
  GIL): on 2 quiet cores whole runs of 1,200 images were 1.03-1.05x faster than decoding them one by
  one, and 1.02-1.06x faster than with the decode-ahead thread (BENCHMARKS.md, ``bench/overlap.py`` and
  ``bench/extract_stage.py``);
- ``"thread"``: one background thread decodes and preprocesses the next batches
  into a queue of :data:`DEPTH` while the forward pass runs (PIL's decoding and
  resizing release the GIL);
- ``N > 0``: N DataLoader processes decode ahead;
- ``"auto"`` (the default): measure on the machine at hand. The first batches
  of the run are decoded in turn in line and with the thread (and, where the
  old core-count rule asked for processes, with them too), each mode's run of
  batches timed as a whole, from asking for the first to the end of the last
  one's forward pass and write (:class:`Trial`: 1 + 2 rounds x 3 batches per mode, or 1 round when one mode
  is already 1.25x faster). In line (:data:`PREFERRED`) carries on unless another mode measured at least
  :data:`MARGIN` faster in every round (then the fastest of those by median); a run too short to measure
  decodes in line. The trial batches are real rows of the run: nothing is computed twice.

The batches are the same in every mode (same rows, same order, same tensors),
so the codes are bit-identical; what was chosen and the measured figures go
into the cache manifest's ``runtime.decoding``.
"""

from __future__ import annotations

import os
import queue
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, default_collate

from ..errors import PipelineError

INLINE, THREAD, PROCESSES = "in line", "thread", "processes"
#: Batches the decode-ahead thread may hold ready.
DEPTH = 2
#: What ``auto`` keeps unless another mode measures at least MARGIN faster: in line, each batch spread over
#: one thread per core. Whole runs of 1,200 images on 2 quiet cores were 1.02-1.06x faster so than with the
#: decode-ahead thread (bench/overlap.py, bench/extract_stage.py), which a 13-batch trial cannot tell apart.
#: (The thread had been preferred while in line meant one image after another: it was then 4% faster on
#: quiet cores.)
PREFERRED = INLINE
#: How much faster (fraction of time per image) another mode must measure to be chosen over PREFERRED.
MARGIN = 0.03
_POLL_S = 0.1  # how often a blocked queue call looks at the stop flag (and lets Ctrl-C in)
#: The most threads a batch decoded in line is spread over (beyond a few cores, decoding processes pay).
MAX_DECODE_THREADS = 8


def decode_threads() -> int:
    """Threads a batch decoded in line is spread over: one per CPU core this process may run on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DECODE_THREADS, cores))


@dataclass(frozen=True)
class Trial:
    """The measurement ``auto`` makes: ``warmup`` batches in line, not timed (the first forward passes set up
    their kernels), then up to ``rounds`` rounds in which each mode feeds ``per_mode`` consecutive batches,
    timed as a whole: from asking for the first to the end of the last one's forward pass and write. A whole
    run of batches holds all the work of decoding them, wherever it ran; timing only some of a thread's
    batches measured it 1.45x faster than decoding in line where whole runs of 1,200 images differed by 1.03
    to 1.06x (the batches timed had been decoded during an earlier batch's forward pass, and nothing was
    decoded beside theirs). The thread's start (its first batch is decoded with nothing to overlap) counts
    against it, and a process's start against processes. After a round in which one mode is at least
    ``decisive`` times faster per image than every other, measuring stops."""

    warmup: int = 1
    per_mode: int = 3
    rounds: int = 2
    decisive: float = 1.25

    def __post_init__(self):
        if self.per_mode < 2:
            raise PipelineError(f"a trial needs at least 2 batches per mode (one to overlap), got {self.per_mode}")

    def batches(self, modes: int) -> int:
        """The batches a full trial of ``modes`` modes takes: fewer and ``auto`` does not measure."""
        return self.warmup + self.rounds * modes * self.per_mode


@dataclass(frozen=True)
class FeedChoice:
    """How the batches were fed, why, and what was measured (seconds per image, median per mode)."""

    mode: str
    processes: int = 0
    how: str = "asked"
    measured: dict = field(default_factory=dict)
    trial_batches: int = 0
    threads: int = 1  # in line: the threads a batch's images are decoded on, side by side

    def as_dict(self) -> dict:
        found = {"mode": self.mode, "processes": self.processes, "how": self.how}
        if self.mode == INLINE:
            found["threads"] = self.threads
        if self.measured:
            found["ms_per_image"] = {mode: round(s * 1e3, 3) for mode, s in self.measured.items()}
            found["trial_batches"] = self.trial_batches
        return found


def rule_processes(device: torch.device) -> int:
    """The old fixed rule, kept as the process count ``auto`` tries (and uses on a GPU).

    On a GPU the CPU only decodes, so most cores decode; on a CPU of more than 4
    cores a quarter of them (at most 4), which ``auto`` then measures.
    """
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(0, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


class Feeder:
    """Batches of an :class:`~.loader.ImageFiles` dataset, in row order, fed as ``workers`` asks.

    One feeder serves every dataset of a run: ``auto`` measures on the first one
    long enough and keeps that choice for the rest.
    """

    def __init__(self, workers: int | str, device: torch.device, batch_size: int, trial: Trial = Trial()):
        self.device, self.batch_size, self.trial = device, batch_size, trial
        self.pin = device.type == "cuda"
        self.choice: FeedChoice | None = _asked(workers)
        self.short: FeedChoice | None = None  # how a run too short to measure was fed
        self.candidates = [_in_line(), FeedChoice(THREAD)]
        processes = rule_processes(device)
        if self.choice is None and device.type == "cuda" and processes:
            self.choice = FeedChoice(PROCESSES, processes, "rule: a GPU decodes with most CPU cores")
        elif processes:
            self.candidates.append(FeedChoice(PROCESSES, processes))

    def record(self) -> dict:
        """The manifest's ``runtime.decoding``: what fed the batches (``not run`` if no batch was fed)."""
        return (self.choice or self.short or FeedChoice("not run", how="no forward pass")).as_dict()

    def batches(self, dataset) -> Iterator:
        """``(rows, images, fingerprints)`` batches of ``dataset`` in order; close it (``contextlib.closing``)
        to stop a decoding thread or processes early."""
        total = -(-len(dataset) // self.batch_size)
        if self.choice is not None:
            yield from self._fed(self.choice, dataset, 0, total)
        elif total < self.trial.batches(len(self.candidates)):  # a later, longer dataset of the run may measure
            self.short = _in_line(f"too few batches to measure ({total})")
            yield from self._fed(self.short, dataset, 0, total)
        else:
            yield from self._measured(dataset, total)

    def _measured(self, dataset, total: int):
        trial, position = self.trial, self.trial.warmup
        times = {c.mode: [] for c in self.candidates}
        yield from self._fed(self.candidates[0], dataset, 0, position)
        for _ in range(trial.rounds):
            for candidate in self.candidates:
                stop = position + trial.per_mode
                yield from self._timed(candidate, dataset, position, stop, times[candidate.mode])
                position = stop
            per_image = {mode: statistics.median(found) for mode, found in times.items()}
            fastest = sorted(per_image.values())
            if fastest[0] * trial.decisive <= fastest[1]:
                break
        best = decide(self.candidates, times)
        self.choice = replace(best, how="measured", measured=per_image, trial_batches=position)
        yield from self._fed(self.choice, dataset, position, total)

    def _timed(self, candidate: FeedChoice, dataset, start: int, stop: int, into: list):
        """Feed batches ``start:stop``; append their seconds per image, timed as a whole, to ``into``."""
        rows, asked = 0, time.perf_counter()
        with closing(self._fed(candidate, dataset, start, stop)) as fed:
            for batch in fed:
                yield batch  # the consumer's forward pass and write happen here
                rows += len(batch[0])
        into.append((time.perf_counter() - asked) / rows)

    def _fed(self, choice: FeedChoice, dataset, start: int, stop: int):
        """Batches ``start:stop`` (batch numbers) of ``dataset`` fed as ``choice`` says."""
        first, last = start * self.batch_size, min(len(dataset), stop * self.batch_size)
        if first >= last:
            return
        if choice.mode == PROCESSES:
            yield from _from_processes(dataset, first, last, self.batch_size, choice.processes, self.pin)
        elif choice.mode == THREAD:
            yield from decode_ahead(lambda stopped: _decoded(dataset, first, last, self.batch_size, self.pin, stopped))
        else:
            yield from _decoded(dataset, first, last, self.batch_size, self.pin, threads=choice.threads)


def decide(candidates: list[FeedChoice], times: dict[str, list[float]]) -> FeedChoice:
    """PREFERRED, unless another candidate measured at least MARGIN faster than it in every round of the
    trial (``times``: each mode's seconds per image, one per round): then the one of those with the least
    median. One disturbed round (other work on the machine) cannot make the run leave PREFERRED."""
    preferred = next(c for c in candidates if c.mode == PREFERRED)
    faster = [c for c in candidates if c.mode != PREFERRED and all(
        mine <= theirs * (1 - MARGIN) for mine, theirs in zip(times[c.mode], times[PREFERRED], strict=True))]
    return min(faster, key=lambda c: statistics.median(times[c.mode])) if faster else preferred


def _in_line(how: str = "asked") -> FeedChoice:
    """Decoding in line, each batch spread over :func:`decode_threads` threads."""
    return FeedChoice(INLINE, how=how, threads=decode_threads())


def _asked(workers: int | str) -> FeedChoice | None:
    if workers == "auto":
        return None
    if workers == "thread":
        return FeedChoice(THREAD)
    return FeedChoice(PROCESSES, workers) if workers > 0 else _in_line()


def _decoded(dataset, first: int, last: int, batch_size: int, pin: bool, stopped=lambda: False, threads: int = 1):
    """Rows ``first:last`` of ``dataset`` decoded here, batch by batch, as a DataLoader without workers does;
    with ``threads`` > 1 each batch's rows are decoded side by side on that many threads (in row order)."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="layerprobe-decode") if threads > 1 else None
    try:
        for start in range(first, last, batch_size):
            rows = range(start, min(last, start + batch_size))
            items = list(pool.map(dataset.__getitem__, rows)) if pool else _one_by_one(dataset, rows, stopped)
            if items is None:
                return
            batch = collate(items)
            yield [t.pin_memory() for t in batch] if pin else batch
    finally:
        if pool is not None:  # an error, Ctrl-C or an early close: no row is decoded after this
            pool.shutdown(wait=True, cancel_futures=True)


def _one_by_one(dataset, rows: range, stopped) -> list | None:
    """The items of ``rows`` decoded in this thread, or None once ``stopped()`` says so."""
    items = []
    for i in rows:
        if stopped():
            return None
        items.append(dataset[i])
    return items


def collate(items: list) -> list:
    """``default_collate`` of (row, image, fingerprint) items, except that images stored channels last
    (:mod:`pipeline.model.to_tensor`) are stacked by numpy, in this thread, into a channels-last batch: the
    layout the forward pass runs in, so it is not transposed again, and no torch thread pool is involved."""
    images = [item[1] for item in items]
    if not images or not all(_channels_last(image) and image.shape == images[0].shape for image in images):
        return default_collate(items)
    stacked = torch.from_numpy(np.stack([image.permute(1, 2, 0).numpy() for image in images]))
    rest = default_collate([(item[0], item[2]) for item in items])
    return [rest[0], stacked.permute(0, 3, 1, 2), rest[1]]


def _channels_last(image) -> bool:
    return (isinstance(image, torch.Tensor) and image.ndim == 3 and image.device.type == "cpu"
            and image.permute(1, 2, 0).is_contiguous())


def _from_processes(dataset, first: int, last: int, batch_size: int, processes: int, pin: bool):
    loader = DataLoader(Subset(dataset, range(first, last)), batch_size=batch_size, shuffle=False,
                        num_workers=processes, pin_memory=pin, persistent_workers=False, prefetch_factor=4,
                        collate_fn=collate)
    yield from loader


def decode_ahead(produce, depth: int = DEPTH):
    """The items of ``produce(stopped)``, made in a background thread up to ``depth`` ahead.

    ``produce`` is called with a function that says whether to stop, and
    should look at it between items. An exception raised while producing is
    raised here, as it was raised. Closing this generator (or leaving it by an
    exception, Ctrl-C included) stops the thread and waits for it: no thread
    outlives the generator.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run():
        try:
            for item in produce(stop.is_set):
                if not _put(ready, (item, None), stop):
                    return
            _put(ready, (done, None), stop)
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer's thread
            _put(ready, (None, exc), stop)

    worker = threading.Thread(target=run, name="layerprobe-decode-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = _get(ready)
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            _drain(ready)  # a producer blocked on a full queue sees the stop flag within _POLL_S
            worker.join(_POLL_S)


def _put(ready: queue.Queue, entry, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            ready.put(entry, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(ready: queue.Queue):
    while True:  # a timed wait, so that Ctrl-C reaches the main thread on every platform
        try:
            return ready.get(timeout=_POLL_S)
        except queue.Empty:
            continue


def _drain(ready: queue.Queue) -> None:
    try:
        while True:
            ready.get_nowait()
    except queue.Empty:
        pass
