"""What the per-array content hashes cost: hashing a layer, and a whole read with and without the check.

Hashes 3000 x 1280 float32 codes (EfficientNet-Lite0's pre_logits of the bundled Br35H set: 15.4 MB) with
the row hash the codes use and with one sha256 over the bytes, then writes a cache of that size with
CacheWriter and reads the layer whole through `open_cache` (content hash checked) and straight through
h5py (no check). Prints the median of --repeats runs of each.

Usage: .venv/bin/python bench/integrity.py [--rows 3000] [--channels 1280] [--repeats 7] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from pipeline import open_cache
from pipeline.cache import CacheWriter, OutputSpec, RowTable
from pipeline.cache.integrity import array_hash, whole_hash


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def _write(path: Path, codes: np.ndarray) -> Path:
    n = len(codes)
    rows = RowTable(ids=[f"img{i:06d}.png" for i in range(n)], labels=[i % 2 for i in range(n)], class_names=["a", "b"],
                    sizes=[1] * n, sha256=["0" * 64] * n)
    spec = OutputSpec("pre_logits", "none", codes.shape[1], {"name": "pre_logits", "channels": codes.shape[1]})
    manifest = {"outputs": ["pre_logits/none"], "layers": [{"name": "pre_logits", "channels": codes.shape[1]}]}
    writer = CacheWriter(path, "k" * 64, "s" * 64, manifest, rows, [spec])
    try:
        writer.copy_rows(None, [], np.zeros(0, int), np.zeros(0, int))
        for start in range(0, n, 64):
            writer.write(start, np.arange(start, min(n, start + 64)), {("pre_logits", "none"): codes[start : start + 64]})
        writer.finish(manifest, n)
    finally:
        writer.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--channels", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    codes = np.random.default_rng(0).normal(size=(args.rows, args.channels)).astype(np.float32)
    mb = codes.nbytes / 1e6
    row_ms = _median_ms(lambda: array_hash(codes, "rows"), args.repeats)
    whole_ms = _median_ms(lambda: whole_hash(codes), args.repeats)
    print(f"codes: {args.rows} x {args.channels} float32 = {mb:.1f} MB")
    print(f"row hash (sum of per-row sha256):  {row_ms:7.1f} ms  ({mb / row_ms * 1e3:6.0f} MB/s)")
    print(f"one sha256 over the bytes:         {whole_ms:7.1f} ms  ({mb / whole_ms * 1e3:6.0f} MB/s)")
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = _write(Path(folder) / "bench.h5", codes)

        def checked():
            with open_cache(path) as cache:
                return cache.codes("pre_logits")

        def raw():
            with h5py.File(path, "r") as handle:
                return handle["codes/pre_logits/none"][()]

        assert np.array_equal(checked(), codes) and np.array_equal(raw(), codes)
        checked_ms, raw_ms = _median_ms(checked, args.repeats), _median_ms(raw, args.repeats)
        print(f"open_cache + codes() (checked):    {checked_ms:7.1f} ms")
        print(f"h5py open + read (no check):       {raw_ms:7.1f} ms")
        print(f"cost of the checks on a whole read: {checked_ms - raw_ms:.1f} ms ({checked_ms / raw_ms:.2f}x)")


if __name__ == "__main__":
    main()
