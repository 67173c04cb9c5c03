"""What the per-array content hashes cost: hashing a layer, opening a cache, and a whole read with and
without the checks.

Hashes 3000 x 1280 float32 codes (EfficientNet-Lite0's pre_logits of the bundled Br35H set: 15.4 MB) with
the row hash the codes use and with one sha256 over the bytes. Then writes, with CacheWriter, a cache shaped
like the demo's (3000 rows, the six outputs of Lite0 with 16 to 1280 channels, BatchNorm sums of 49
modules) and times `open_cache` (string heaps walked, every dataset's layout checked, row columns hashed),
the same cache without its ``arrays`` attribute (as written before per-array hashes), `bn_stats()`
(hashes and counts checked), and the pre_logits layer read whole through `open_cache`
(content hash checked) and straight through h5py (no check). Prints the median of --repeats runs of each.

Usage: .venv/bin/python bench/integrity.py [--rows 3000] [--channels 1280] [--repeats 7] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from pipeline import open_cache
from pipeline.cache import CacheWriter, OutputSpec, RowTable
from pipeline.cache.format import metadata_digest
from pipeline.cache.integrity import array_hash, whole_hash


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


WIDTHS = {"blocks.0": 16, "blocks.1": 24, "blocks.2": 40, "blocks.4": 112, "blocks.6": 320, "pre_logits": 1280}


def _write(path: Path, codes: np.ndarray, bn_modules: int = 49) -> Path:
    n = len(codes)
    rng = np.random.default_rng(1)
    rows = RowTable(ids=[f"img{i:06d}.png" for i in range(n)], labels=[i % 2 for i in range(n)], class_names=["a", "b"],
                    sizes=[1] * n, sha256=["0" * 64] * n)
    specs = [OutputSpec(layer, "none" if layer == "pre_logits" else "avg", c, {"name": layer, "channels": c})
             for layer, c in WIDTHS.items()]
    blocks = {(s.layer, s.pooling): codes if s.layer == "pre_logits" else
              rng.normal(size=(n, s.channels)).astype(np.float32) for s in specs}
    bn = {f"bn{k}": {"sum": rng.normal(size=96), "sumsq": rng.uniform(1, 2, 96), "running_mean": rng.normal(size=96),
                     "running_var": rng.uniform(1, 2, 96), "count": 1000, "depth": k, "stride": 2}
          for k in range(bn_modules)}
    manifest = {"outputs": [f"{s.layer}/{s.pooling}" for s in specs], "bn_stats": {"modules": bn_modules},
                "layers": [{"name": s.layer, "channels": s.channels} for s in specs],
                "model": {"name": "synthetic", "weights": {"sha256": "0" * 64}}, "preprocessing": {},
                "input": {"name": "synthetic", "source": "synthetic", "root": "."},
                "runtime": {"device": "cpu:synthetic", "precision": "float32"}}
    writer = CacheWriter(path, "k" * 64, "s" * 64, manifest, rows, specs, bn)
    try:
        writer.copy_rows(None, [], np.zeros(0, int), np.zeros(0, int))
        for start in range(0, n, 64):
            stop = min(n, start + 64)
            writer.write(start, np.arange(start, stop), {k: v[start:stop] for k, v in blocks.items()}, bn)
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

        def opened():
            with open_cache(path) as cache:
                return cache.n_rows

        def bn_stats():
            with open_cache(path) as cache:
                return cache.bn_stats()

        def checked():
            with open_cache(path) as cache:
                return cache.codes("pre_logits")

        def raw():
            with h5py.File(path, "r") as handle:
                return handle["codes/pre_logits/none"][()]

        unhashed = Path(folder) / "unhashed.h5"  # the same cache as written before per-array hashes
        shutil.copyfile(path, unhashed)
        with h5py.File(unhashed, "r+") as handle:
            del handle.attrs["arrays"]
            handle.attrs["digest"] = metadata_digest(handle)

        def opened_unhashed():
            with open_cache(unhashed) as cache:
                return cache.n_rows

        assert np.array_equal(checked(), codes) and np.array_equal(raw(), codes)
        open_ms, bn_ms = _median_ms(opened, args.repeats), _median_ms(bn_stats, args.repeats)
        print(f"open_cache, no per-array hashes:   {_median_ms(opened_unhashed, args.repeats):7.1f} ms")
        checked_ms, raw_ms = _median_ms(checked, args.repeats), _median_ms(raw, args.repeats)
        print(f"open_cache (all open-time checks): {open_ms:7.1f} ms")
        print(f"open_cache + bn_stats() (49 modules): {bn_ms - open_ms:5.1f} ms more")
        print(f"open_cache + codes() (checked):    {checked_ms:7.1f} ms")
        print(f"h5py open + read (no check):       {raw_ms:7.1f} ms")
        print(f"the read's hash check and more:    {checked_ms - open_ms - raw_ms:7.1f} ms")


if __name__ == "__main__":
    main()
