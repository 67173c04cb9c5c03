"""Reading one layer through the cache API against `np.load` of the same array, in a process and in new ones.

Writes a synthetic cache with one (rows x width) float32 layer (as pre_logits of
EfficientNet-Lite0 is: 3,000 x 1,280 by default) and the same array as .npy, waits
until the file is settled (pipeline/cache/fastread.py), then times in interleaved
rounds, each the median of --reads calls in this process after --warmup untimed
ones (the first calls after another variant pay for the memory that variant left
the allocator: after the every-check read, 3-4 ms for any 15 MB read):

  * np.load of the .npy;
  * first read ever: open + read with every check (string heaps, digest, layouts,
    fletcher32, content hash), the record beside the cache (pipeline/cache/trust.py)
    deleted and this process's records dropped before each call, so each call also
    writes the record again;
  * open only, with every check (`recheck=True`), and with the checks recorded;
  * read on an open cache with every check (`recheck=True`: every read before issue 16);
  * open + read once the layer was verified in this process;
  * read on an open cache once verified;

and, in the same rounds, --children new Python processes per variant, each timing
its first call after its imports (what a `layerprobe probe` pays), the record of an
earlier process beside the cache:

  * np.load, first call in a new process (fresh memory: page faults for both);
  * first read in a new process of a layer an earlier process verified (cache opened, untimed);
  * open + read in a new process.

Prints milliseconds and the speed ratio np.load time / cache time (>= 0.8 is the
issue's target), new processes against np.load in a new process, and the load average.
Usage: .venv/bin/python bench/read_layer.py [--rows 3000] [--width 1280] [--rounds 5] [--children 5] [--warmup 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.integrity import _median_ms
from pipeline import open_cache
from pipeline.cache import fastread, trust
from tests.probe_data import write_cache

ROOT = Path(__file__).resolve().parents[1]
# One new process: imports, then times its first call of one variant (milliseconds on stdout).
CHILD = """
import sys, time
import numpy as np
from pipeline import open_cache
variant, path, npy = sys.argv[1:4]
if variant == "np.load":
    started = time.perf_counter(); np.load(npy); took = time.perf_counter() - started
elif variant == "read":
    cache = open_cache(path)
    started = time.perf_counter(); cache.codes("pre_logits"); took = time.perf_counter() - started
else:
    started = time.perf_counter()
    with open_cache(path) as cache:
        cache.codes("pre_logits")
    took = time.perf_counter() - started
print(took * 1e3)
"""
NEW = {"np.load, first call in a new process": "np.load",
       "new process: first read, verified by an earlier process": "read",
       "new process: open + read": "open"}


def _child_ms(variant: str, path: Path, npy: Path, children: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = [float(subprocess.run([sys.executable, "-c", CHILD, variant, str(path), str(npy)], check=True, env=env,
                                  capture_output=True, text=True).stdout) for _ in range(children)]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--children", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="read_layer-"))
    values = np.random.default_rng(0).standard_normal((args.rows, args.width), dtype=np.float32)
    path = write_cache(folder / "c.h5", {("pre_logits", "none"): values}, np.arange(args.rows) % 2, ["a", "b"])
    npy = folder / "x.npy"
    np.save(npy, values)
    time.sleep(fastread.SETTLED_NS / 1e9 + 0.1)

    def first_read():
        fastread.forget()
        trust.record_path(path).unlink(missing_ok=True)
        with open_cache(path) as cache:
            return cache.codes("pre_logits")

    def open_read():
        with open_cache(path) as cache:
            return cache.codes("pre_logits")

    assert np.array_equal(first_read(), values) and np.array_equal(open_read(), values)
    cache, checked = open_cache(path), open_cache(path, recheck=True)
    cache.codes("pre_logits")
    checked.codes("pre_logits")  # writes the record once; later calls check again and write nothing
    handles = []  # opened in the timed calls, closed after them
    variants = {"np.load": lambda: np.load(npy), "first read ever (open + every check)": first_read,
                "open only, every check (recheck=True)": lambda: handles.append(open_cache(path, recheck=True)),
                "open only, checks recorded": lambda: handles.append(open_cache(path)),
                "read on an open cache, every check": lambda: checked.codes("pre_logits"),
                "open + read, verified in this process": open_read,
                "read on an open cache, verified": lambda: cache.codes("pre_logits")}
    found = {name: [] for name in [*variants, *NEW]}
    loads = []
    for _ in range(args.rounds):
        for name, call in variants.items():
            for _ in range(args.warmup):
                call()
            found[name].append(_median_ms(call, args.reads) / 1e3)
            while handles:
                handles.pop().close()
        first_read()  # leave a record as a finished process leaves it, for the new processes
        open_read()
        for name, variant in NEW.items():
            found[name].append(_child_ms(variant, path, npy, args.children) / 1e3)
        loads.append(os.getloadavg()[0])
    cache.close()
    checked.close()
    shutil.rmtree(folder)
    print(f"{args.rows} x {args.width} float32 ({values.nbytes / 1e6:.1f} MB), {args.rounds} interleaved rounds, "
          f"median of {args.reads} reads each in this process (after {args.warmup} untimed), of {args.children} new "
          f"processes each; "
          f"load average (1 min) {min(loads):.2f}-{max(loads):.2f}")
    base, fresh = statistics.median(found["np.load"]), statistics.median(found["np.load, first call in a new process"])
    for name, times in found.items():
        ms = statistics.median(times) * 1000
        against = f"speed vs np.load {base * 1000 / ms:.2f}x"
        if name in NEW:
            against += f", vs np.load in a new process {fresh * 1000 / ms:.2f}x"
        print(f"{name:58s} {ms:7.2f} ms (rounds {min(times) * 1000:.2f}-{max(times) * 1000:.2f})  {against}")


if __name__ == "__main__":
    main()
