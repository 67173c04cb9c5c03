"""What sealing on a copy costs: the final step of an extraction, for caches of a given size.

The partial cache is never modified by the seal (a failed HDF5 metadata write can
leave a file HDF5 cannot reopen); instead it is copied to ``<cache>.sealing``,
sealed there and renamed into place. This times that step against sealing the
partial file in place (the old way), on a cache of N rows of lite0's stage and
pre-logits widths (16+24+40+112+320+1280 channels, float32).

Usage: .venv/bin/python bench/seal.py [ROWS ...]   (default: 3000 20000)
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.atomic import publish
from pipeline.cache.format import metadata_digest
from pipeline.cache.writer import CacheWriter, OutputSpec, RowTable

WIDTHS = {"blocks.0": 16, "blocks.1": 24, "blocks.2": 40, "blocks.3": 112, "blocks.4": 320, "pre_logits": 1280}


def _partial(folder: Path, rows: int) -> CacheWriter:
    table = RowTable(ids=[f"img{i:06d}.png" for i in range(rows)], labels=[i % 2 for i in range(rows)],
                     class_names=["a", "b"], sizes=[1] * rows, sha256=["0" * 64] * rows)
    specs = [OutputSpec(layer, "avg", width, {}) for layer, width in WIDTHS.items()]
    writer = CacheWriter(folder / "c.h5", "k", "s", {"name": "bench"}, table, specs)
    rng = np.random.default_rng(0)
    for start in range(0, rows, 1000):
        index = np.arange(start, min(rows, start + 1000))
        writer.write(start, index, {(s.layer, "avg"): rng.normal(size=(len(index), s.channels)).astype(np.float32)
                                    for s in specs})
    writer.copy_rows(None, [], np.zeros(0, int), np.zeros(0, int))
    return writer


def _in_place(writer: CacheWriter, manifest: dict, planned: int) -> None:
    """The seal before this change: attributes written into the partial file itself, fsynced, renamed."""
    handle = writer.file
    handle.attrs["manifest"] = json.dumps(manifest)
    handle.attrs["rows_planned"] = planned
    handle.attrs["digest"] = metadata_digest(handle)
    handle.attrs["complete"] = True
    handle.flush()
    handle.close()
    publish(writer.partial, writer.final)


def main(sizes: list[int]) -> None:
    print(f"{'rows':>7} {'cache MB':>9} {'in place s':>11} {'on a copy s':>12}")
    for rows in sizes:
        timings = {}
        for way in ("in place", "on a copy"):
            folder = Path(tempfile.mkdtemp(prefix="layerprobe-seal-"))
            try:
                writer = _partial(folder, rows)
                size = writer.partial.stat().st_size
                started = time.perf_counter()
                if way == "in place":
                    _in_place(writer, {"name": "bench"}, rows)
                else:
                    writer.finish({"name": "bench"}, rows)
                timings[way] = time.perf_counter() - started
            finally:
                shutil.rmtree(folder)
        print(f"{rows:>7} {size / 1e6:>9.1f} {timings['in place']:>11.3f} {timings['on a copy']:>12.3f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [3000, 20000])
