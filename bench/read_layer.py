"""Reading one layer through the cache API against `np.load` of the same array.

Writes a synthetic cache with one (rows x width) float32 layer (as pre_logits of
EfficientNet-Lite0 is: 3,000 x 1,280 by default) and the same array as .npy, waits
until the file is settled (pipeline/cache/fastread.py), then times in interleaved
rounds, each the median of --reads calls:

  * np.load of the .npy;
  * first read in the process: open + read with full checks (fletcher32 and the
    content hash), records dropped before each round so every round pays them;
  * read on an open cache with full checks (every read before this change);
  * open + read once the layer was verified in this process;
  * read on an open cache once verified.

Prints milliseconds and the speed ratio np.load time / cache time (>= 0.8 is the
issue's target). Usage: .venv/bin/python bench/read_layer.py [--rows 3000] [--width 1280] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.integrity import _median_ms
from pipeline import open_cache
from pipeline.cache import fastread
from tests.probe_data import write_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=9)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="read_layer-"))
    values = np.random.default_rng(0).standard_normal((args.rows, args.width), dtype=np.float32)
    path = write_cache(folder / "c.h5", {("pre_logits", "none"): values}, np.arange(args.rows) % 2, ["a", "b"])
    np.save(folder / "x.npy", values)
    time.sleep(fastread.SETTLED_NS / 1e9 + 0.1)

    def first_read():
        fastread.forget()
        with open_cache(path) as cache:
            return cache.codes("pre_logits")

    def open_read():
        with open_cache(path) as cache:
            return cache.codes("pre_logits")

    assert np.array_equal(first_read(), values) and np.array_equal(open_read(), values)
    cache = open_cache(path)
    cache.codes("pre_logits")
    def checked_read():
        fastread.forget()
        return cache.codes("pre_logits")

    variants = {"np.load": lambda: np.load(folder / "x.npy"), "first read (open + full checks)": first_read,
                "read on an open cache, full checks": checked_read,
                "open + read, verified": open_read, "read on an open cache, verified": lambda: cache.codes("pre_logits")}
    found = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, call in variants.items():
            found[name].append(_median_ms(call, args.reads) / 1e3)
    cache.close()
    shutil.rmtree(folder)
    base = statistics.median(found["np.load"])
    print(f"{args.rows} x {args.width} float32 ({values.nbytes / 1e6:.1f} MB), {args.rounds} interleaved rounds, "
          f"median of {args.reads} reads each")
    for name, times in found.items():
        ms = statistics.median(times) * 1000
        print(f"{name:34s} {ms:7.2f} ms (rounds {min(times) * 1000:.2f}-{max(times) * 1000:.2f})  "
              f"speed vs np.load {base * 1000 / ms:.2f}x")


if __name__ == "__main__":
    main()
