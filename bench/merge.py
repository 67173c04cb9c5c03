"""Throughput of `merge_shards` on synthetic shard caches (no model, no images).

Builds N shard caches with CacheWriter whose outputs have the widths of
EfficientNet-Lite0's stages and pre_logits (16, 24, 40, 112, 320, 1280 floats:
7,168 bytes of codes per row), rows assigned to shards by sha256(id) mod N as
`extract --shard` assigns them. Then, for each round, merges them into one cache
and prints the codes moved per second, twice:

  * warm: the shards were just read, so they are in the page cache;
  * cold: the shard files' pages are dropped first (fsync + POSIX_FADV_DONTNEED),
    so the shards come from the disk, as after a multi-machine extraction.

A plain copy of the shard files (`shutil.copyfile`, cold too) gives the disk's
own rate on the same files for comparison.

Usage: .venv/bin/python bench/merge.py [--rows 48000] [--shards 4] [--rounds 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.cache import CacheWriter, OutputSpec, RowTable, cache_key, merge_shards
from pipeline.cache.shards import ASSIGNMENT, ids_digest, input_digest, shard_of, shard_path
from pipeline.cache.writer import input_fingerprint

WIDTHS = {"blocks.0": 16, "blocks.1": 24, "blocks.2": 40, "blocks.4": 112, "blocks.6": 320, "pre_logits": 1280}


def _settings() -> dict:
    return {"model": {"name": "synthetic-lite0", "family": "timm", "weights": {"sha256": "ab" * 32}},
            "preprocessing": {"input_size": [3, 224, 224]}, "runtime": {"precision": "float32"}}


def write_shards(folder: Path, rows: int, count: int, seed: int = 0) -> list[Path]:
    """``count`` shard caches of ``rows`` synthetic rows in all, as `extract --shard I/count` writes them."""
    rng = np.random.default_rng(seed)
    ids = sorted(f"class{i % 2}/img{i:08d}.png" for i in range(rows))
    labels = {i: int(i.startswith("class1")) for i in ids}
    table = {"input_images": rows, "input_ids_sha256": ids_digest(ids),
             "input_table_sha256": input_digest((i, labels[i], None, None) for i in ids)}
    settings = _settings()
    settings_key = cache_key({"bench": "merge", **settings})
    outputs = [(layer, "none" if layer == "pre_logits" else "avg") for layer in WIDTHS]
    specs = [OutputSpec(layer, pooling, WIDTHS[layer], {"name": layer, "channels": WIDTHS[layer]})
             for layer, pooling in outputs]
    paths = []
    for index in range(count):
        mine = [i for i in ids if shard_of(i, count) == index]
        table_rows = RowTable(ids=mine, labels=[labels[i] for i in mine], class_names=["a", "b"],
                              sizes=[1000] * len(mine), sha256=["0" * 64] * len(mine))
        key = cache_key({"settings": settings_key, "rows": input_fingerprint(table_rows), "shard": [index, count]})
        manifest = {
            **settings, "key": key, "created": "bench", "layers": [], "poolings": ["avg"],
            "outputs": [f"{l}/{p}" for l, p in outputs],
            "input": {"name": "synthetic", "source": "synthetic", "root": ".", "root_resolved": "/synthetic",
                      "n_images": len(mine), "skipped": [], "notes": []},
            "config": {"shard": [index, count]},
            "shard": {"index": index, "count": count, "assignment": ASSIGNMENT, **table},
        }
        manifest["runtime"] = {**manifest["runtime"], "device": "cpu:synthetic", "duration_s": 0.0}
        path = shard_path(folder / "bench.h5", index, count)
        writer = CacheWriter(path, key, settings_key, manifest, table_rows, specs)
        try:
            writer.copy_rows(None, [], np.zeros(0, int), np.zeros(0, int))
            codes = {(s.layer, s.pooling): rng.standard_normal((len(mine), s.channels), dtype=np.float32)
                     for s in specs}
            writer.write(0, np.arange(len(mine)), codes)
            writer.finish(manifest, len(mine))
        finally:
            writer.close()
        paths.append(path)
    return paths


def drop_from_page_cache(paths) -> None:
    """Evict the files' pages (no root needed), so the next read comes from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=48000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="Folder for the temporary files (default: the system's).")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="layerprobe-merge-", dir=args.dir))
    try:
        started = time.perf_counter()
        shards = write_shards(folder, args.rows, args.shards)
        code_bytes = args.rows * 4 * sum(WIDTHS.values())
        file_bytes = sum(p.stat().st_size for p in shards)
        print(f"{args.shards} shards, {args.rows} rows, {len(WIDTHS)} outputs ({sum(WIDTHS.values())} floats/row): "
              f"{code_bytes / 1e6:.0f} MB of codes, {file_bytes / 1e6:.0f} MB of files "
              f"(written in {time.perf_counter() - started:.1f} s); median of {args.rounds} rounds")
        out = folder / "merged.h5"
        times: dict[str, list[float]] = {"warm": [], "cold": [], "copy": []}
        for _ in range(args.rounds):
            for mode in ("warm", "cold"):
                out.unlink(missing_ok=True)
                if mode == "cold":
                    drop_from_page_cache(shards)
                result = merge_shards(shards, out)
                times[mode].append(result.seconds)
                drop_from_page_cache([out])
            drop_from_page_cache(shards)
            start = time.perf_counter()
            for i, path in enumerate(shards):
                shutil.copyfile(path, folder / f"copy{i}.h5")
                drop_from_page_cache([folder / f"copy{i}.h5"])
            times["copy"].append(time.perf_counter() - start)
        for mode, label in (("warm", "merge, shards in the page cache"), ("cold", "merge, shards read from disk"),
                            ("copy", "plain copy of the shard files (cold)")):
            seconds = statistics.median(times[mode])
            moved = file_bytes if mode == "copy" else code_bytes
            print(f"{label:<40} {seconds:6.2f} s  {moved / seconds / 1e9:5.2f} GB/s  "
                  f"({args.rows / seconds:,.0f} rows/s)")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
