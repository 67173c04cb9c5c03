"""Damages the HDF5 metadata of a small cache, one bit or one 512-byte block at a time, and classifies
what every reader then does: "exact" (everything reads back equal), "error" (a one-line CacheError),
"wrong" (different numbers, silently), "traceback" (any other exception) or "hang" (no answer in time).

The cases run in a worker process that reads them from stdin and answers one JSON line each; the
parent gives every case a deadline, and kills and replaces a worker that misses it, so a hang is
counted instead of blocking. Used by tests/test_cache_integrity.py and bench/metadata_fuzz.py.

    python tests/fuzz_harness.py worker REFERENCE.h5 WORKDIR   # the worker side
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 512
OUTCOMES = ("exact", "error", "wrong", "traceback", "hang")


# The small cache ------------------------------------------------------------------------------------
def build_cache(path: Path, n: int = 160, seed: int = 0, stop_after: int | None = None) -> Path:
    """A finished cache with every kind of array: three outputs (one chunk, and four chunks of a
    1280-wide layer), groups and splits, BatchNorm sums of three modules and a dup_cluster column.

    ``stop_after`` batches (of 48 rows) leaves ``<path>.partial`` unfinished instead; the same call
    without it resumes and finishes it."""
    from pipeline.cache import CacheWriter, OutputSpec, RowTable, add_row_column, cache_key

    rng = np.random.default_rng(seed)
    widths = {"blocks.0": 16, "blocks.2": 64, "pre_logits": 1280}
    ids = [f"img{i:04d}.png" for i in range(n)]
    rows = RowTable(ids=ids, labels=[i % 2 for i in range(n)], class_names=["a", "b"], sizes=[100 + i for i in range(n)],
                    sha256=[hashlib.sha256(i.encode()).hexdigest() for i in ids],
                    groups=[f"p{i // 3}" for i in range(n)], split=["test" if i % 5 == 0 else "train" for i in range(n)])
    outputs = [OutputSpec(layer, "avg" if layer != "pre_logits" else "none", c,
                          {"name": layer, "kind": "stage", "channels": c, "stride": 2 ** d})
               for d, (layer, c) in enumerate(widths.items())]
    bn = {f"blocks.{k}.bn": {"sum": rng.normal(size=8 * (k + 1)), "sumsq": rng.uniform(1, 2, size=8 * (k + 1)),
                             "running_mean": rng.normal(size=8 * (k + 1)), "running_var": rng.uniform(1, 2, 8 * (k + 1)),
                             "count": 1000 * (k + 1), "depth": k, "stride": 2 ** k} for k in range(3)}
    key = cache_key({"fuzz": seed, "n": n})
    manifest = {"key": key, "model": {"name": "fuzz", "weights": {"source": "random-init", "sha256": "00" * 32}},
                "preprocessing": {"input_size": [3, 64, 64], "interpolation": "bicubic", "crop_pct": 0.875,
                                  "mean": [0.5] * 3, "std": [0.5] * 3},
                "layers": [{"name": o.layer, "channels": o.channels} for o in outputs], "poolings": ["avg"],
                "outputs": [f"{o.layer}/{o.pooling}" for o in outputs], "bn_stats": {"modules": 3, "images": n},
                "input": {"name": "fuzz", "source": "synthetic", "root": "."}, "created": "2026-01-01T00:00:00+00:00",
                "runtime": {"device": "cpu", "precision": "float32", "duration_s": 0.0}}
    writer = CacheWriter(path, key, "settings-" + key, manifest, rows, outputs, bn)
    try:
        writer.copy_rows(None, [], np.zeros(0, int), np.zeros(0, int))
        codes = {(o.layer, o.pooling): rng.normal(size=(n, o.channels)).astype(np.float32) for o in outputs}
        for batch, start in enumerate(range(0, n, 48)):
            if batch == stop_after:
                return path
            stop = min(n, start + 48)
            if start >= writer.rows_committed:
                writer.write(start, np.arange(start, stop), {k: v[start:stop] for k, v in codes.items()}, bn)
        writer.finish(manifest, n)
    finally:
        writer.close()
    add_row_column(path, "dup_cluster", np.arange(n) // 2, {"threshold": 0.9})
    return path


def raw_data_ranges(path: Path) -> list[tuple[int, int]]:
    """The byte ranges of raw dataset data (every chunk, every contiguous dataset): not metadata."""
    import h5py

    ranges = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.chunks is not None:
            obj.id.chunk_iter(lambda info: ranges.append((info.byte_offset, info.byte_offset + info.size)))
        elif obj.id.get_offset() is not None:
            ranges.append((obj.id.get_offset(), obj.id.get_offset() + obj.id.get_storage_size()))

    with h5py.File(path, "r") as handle:
        handle.visititems(visit)
    return sorted(ranges)


def metadata_regions(path: Path) -> list[tuple[int, int]]:
    """Every byte range of the file outside raw data: superblock, object headers, B-trees, heaps, ..."""
    size, regions, position = path.stat().st_size, [], 0
    for start, end in raw_data_ranges(path):
        if start > position:
            regions.append((position, start))
        position = max(position, end)
    if position < size:
        regions.append((position, size))
    return regions


def make_cases(path: Path, count: int, seed: int) -> list[dict]:
    """``count`` seeded cases: 3 in 4 single-bit flips, 1 in 4 zeroed 512-byte blocks, each starting at a
    byte drawn uniformly from the metadata regions."""
    regions = metadata_regions(path)
    weights = [end - start for start, end in regions]
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        start, end = rng.choices(regions, weights)[0]
        offset = rng.randrange(start, end)
        if rng.random() < 0.75:
            cases.append({"case": i, "kind": "flip", "offset": offset, "bit": rng.randrange(8)})
        else:
            cases.append({"case": i, "kind": "zero", "offset": offset, "size": BLOCK})
    return cases


def damage(data: bytes, case: dict) -> bytes:
    damaged = bytearray(data)
    if case["kind"] == "flip":
        damaged[case["offset"]] ^= 1 << case["bit"]
    else:
        end = min(len(damaged), case["offset"] + case["size"])
        damaged[case["offset"] : end] = bytes(end - case["offset"])
    return bytes(damaged)


# What a reader sees -----------------------------------------------------------------------------------
def snapshot(path: Path) -> dict:
    """Everything the stages read from a cache (each array whole, and the codes in two halves as merge reads)."""
    from pipeline import open_cache

    with open_cache(path) as cache:
        found = {"manifest": cache.manifest, "key": cache.key, "settings_key": cache.settings_key,
                 "ids": cache.ids.tolist(),
                 "labels": cache.labels.tolist(), "class_names": cache.class_names,
                 "groups": cache.groups.tolist(), "split": cache.split.tolist(),
                 "dup_cluster": cache.dup_cluster.tolist(), "rows": cache.stored_rows(), "outputs": cache.outputs}
        for layer, pooling in cache.outputs:
            found[f"info {layer}/{pooling}"] = cache.output_info(layer, pooling)
            found[f"codes {layer}/{pooling}"] = cache.codes(layer, pooling)
            half = cache.n_stored // 2
            found[f"slices {layer}/{pooling}"] = np.concatenate(
                [cache.stored_codes(layer, pooling, rows=slice(0, half)),
                 cache.stored_codes(layer, pooling, rows=slice(half, None))])
        found["bn_state"] = cache.bn_state()
        found["bn_stats"] = cache.bn_stats()
    return found


def same(a, b) -> bool:
    """Exact equality of two snapshots (arrays bit for bit, NaN where NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and same(vars(a), vars(b))
    return a == b


def classify(path: Path, reference: dict) -> dict:
    """One damaged file: read everything, then `verify` it; errors must be one line."""
    from pipeline.cache import verify_cache
    from pipeline.errors import CacheError

    try:
        outcome, message = ("exact" if same(snapshot(path), reference) else "wrong"), ""
    except CacheError as exc:
        outcome, message = ("error" if "\n" not in str(exc) else "traceback"), str(exc)
    except Exception as exc:  # noqa: BLE001 - anything else is what the test counts as a failure
        outcome, message = "traceback", f"{type(exc).__name__}: {exc}"
    try:
        report = verify_cache(path, check_inputs=False)
        verified = "ok" if report.ok else "problem"
        if outcome == "error" and report.ok:
            verified = "missed"  # the readers refused it but verify said OK
        if any("\n" in p for p in report.problems):
            verified = "multiline"
    except Exception as exc:  # noqa: BLE001
        verified, message = "traceback", message or f"verify: {type(exc).__name__}: {exc}"
    return {"outcome": outcome, "verify": verified, "message": message.splitlines()[0][:300] if message else ""}


def worker(reference_path: str, workdir: str) -> None:
    import logging

    logging.disable(logging.CRITICAL)
    reference_path, workdir = Path(reference_path), Path(workdir)
    data = reference_path.read_bytes()
    reference = snapshot(reference_path)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        target = workdir / f"case{case['case']}.h5"
        target.write_bytes(damage(data, case))
        result = classify(target, reference)
        target.unlink()
        print(json.dumps({**case, **result}), flush=True)


# The parent side -----------------------------------------------------------------------------------
class _Worker:
    def __init__(self, reference: Path, workdir: Path):
        env = {**os.environ, "PYTHONPATH": _code_root()}
        self.process = subprocess.Popen([sys.executable, __file__, "worker", str(reference), str(workdir)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, env=env, cwd=ROOT)
        if self.answer(120) is None:
            self.kill()
            raise RuntimeError("the fuzz worker did not start")

    def answer(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else {"outcome": "traceback", "message": "the worker died"}

    def ask(self, case: dict, timeout: float) -> dict:
        self.process.stdin.write(json.dumps(case) + "\n")
        self.process.stdin.flush()
        found = self.answer(timeout)
        if found is None:
            return {**case, "outcome": "hang", "verify": "hang", "message": f"no answer within {timeout:g} s"}
        return found if "case" in found else {**case, **found}

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def run_cases(reference: Path, cases: list[dict], workdir: Path, timeout: float = 10.0) -> list[dict]:
    """Every case's outcome; a worker that hangs or dies is replaced."""
    results, worker_ = [], None
    try:
        for case in cases:
            if worker_ is None:
                worker_ = _Worker(reference, workdir)
            found = worker_.ask(case, timeout)
            results.append(found)
            if found["outcome"] == "hang" or worker_.process.poll() is not None:
                worker_.kill()
                worker_ = None
    finally:
        if worker_ is not None:
            worker_.process.stdin.close()
            worker_.kill()
    return results


def counts(results: list[dict]) -> dict:
    table = {name: 0 for name in OUTCOMES}
    for r in results:
        table[r["outcome"]] += 1
    table["verify missed"] = sum(r["verify"] in ("missed", "traceback", "multiline", "hang") for r in results)
    return table


def _code_root() -> str:
    """The layerprobe checkout under test: this one, or FUZZ_CODE_ROOT (bench/metadata_fuzz.py --code)."""
    return os.environ.get("FUZZ_CODE_ROOT", str(ROOT))


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "worker":
    sys.path.insert(0, _code_root())
    worker(sys.argv[2], sys.argv[3])
