"""How well do code-based near-duplicates match a pixel-level ground truth on Br35H?

Ground truth (OFFLINE.md): images resized to 64x64 greyscale, pairs whose pixel
correlation exceeds 0.99. Detected: `layerprobe duplicates` pairs at the default
threshold, at 'auto', and over a sweep. Prints precision and recall of the
detected pairs, and of "same cluster" relations, plus the time of the scan.

Usage: .venv/bin/python bench/duplicates.py [CACHE]   (default: extract all 3000 with the demo settings)
       .venv/bin/python bench/duplicates.py --synthetic 50000   (time and peak memory of a 50,000-image scan)
"""

from __future__ import annotations

import sys
import time

import numpy as np
from PIL import Image

from pipeline import open_cache
from pipeline.duplicates import DEFAULT_THRESHOLD, auto_threshold, clusters, similar_pairs
from pipeline.duplicates.scan import default_output
from pipeline.inputs import bundled, decode_rgb

PIXEL_SIDE, PIXEL_CORRELATION = 64, 0.99


def pixel_pairs(paths) -> set[tuple[int, int]]:
    grey = np.stack([np.asarray(decode_rgb(p).convert("L").resize((PIXEL_SIDE, PIXEL_SIDE), Image.BILINEAR),
                                dtype=np.float32).ravel() for p in paths])
    grey -= grey.mean(axis=1, keepdims=True)
    grey /= np.maximum(np.linalg.norm(grey, axis=1, keepdims=True), 1e-6)
    corr = grey @ grey.T
    i, j = np.nonzero(np.triu(corr > PIXEL_CORRELATION, k=1))
    return set(zip(i.tolist(), j.tolist()))


def same_cluster_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    found = set()
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        found |= {(int(a), int(b)) for k, a in enumerate(rows) for b in rows[k + 1:]}
    return found


def score(found: set, truth: set) -> tuple[float, float]:
    hit = len(found & truth)
    return hit / max(1, len(found)), hit / max(1, len(truth))


def synthetic(n: int, dim: int = 1280) -> None:
    """Scan n random codes with 1% planted near-copies: wall time and peak memory, no N x N matrix."""
    import resource

    rng = np.random.default_rng(0)
    codes = rng.normal(size=(n, dim)).astype(np.float32)
    copies = rng.choice(n, size=(n // 100, 2), replace=False)
    codes[copies[:, 1]] = codes[copies[:, 0]] + rng.normal(scale=0.05, size=(len(copies), dim)).astype(np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    pairs = similar_pairs(codes, DEFAULT_THRESHOLD)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = set(zip(pairs.i.tolist(), pairs.j.tolist()))
    planted = {tuple(sorted(map(int, p))) for p in copies}
    print(f"{n} x {dim} synthetic codes: scan {seconds:.1f} s, peak memory {peak:.0f} MB "
          f"(codes alone {codes.nbytes / 2**20:.0f} MB, before the scan {before:.0f} MB; an N x N float32 matrix "
          f"would be {n * n * 4 / 2**30:.1f} GB); planted pairs found {len(found & planted)}/{len(planted)}, "
          f"other pairs {len(found - planted)}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--synthetic":
        return synthetic(int(sys.argv[2]))
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        from pipeline.activations import ExtractConfig, extract

        path = extract(bundled("br35h"), ExtractConfig(), progress=False).path
    with open_cache(path) as cache:
        output = default_output(cache.outputs)
        codes, ids = cache.codes(output), cache.ids
        root = cache.provenance.input.root_resolved
    paths = [f"{root}/{i}" for i in ids]
    started = time.perf_counter()
    truth = pixel_pairs(paths)
    print(f"{len(ids)} images; pixel ground truth ({PIXEL_SIDE}x{PIXEL_SIDE} grey, corr > {PIXEL_CORRELATION}): "
          f"{len(truth)} pairs, {time.perf_counter() - started:.1f} s")
    truth_clusters = same_cluster_pairs(clusters(len(ids), *map(np.array, zip(*truth))))
    started = time.perf_counter()
    nearest = similar_pairs(codes, 1.0).nearest
    auto = auto_threshold(nearest)
    print(f"codes: {output}; nearest-neighbour scan {time.perf_counter() - started:.2f} s; auto threshold {auto:.3f}")
    print(f"{'threshold':>10} {'pairs':>7} {'pair P':>7} {'pair R':>7} {'clusters':>9} {'cluster P':>10} {'cluster R':>10}")
    for threshold in sorted({0.85, 0.9, 0.93, DEFAULT_THRESHOLD, 0.97, 0.98, round(auto, 3)}):
        pairs = similar_pairs(codes, threshold)
        found = set(zip(pairs.i.tolist(), pairs.j.tolist()))
        labels = clusters(len(ids), pairs.i, pairs.j)
        p, r = score(found, truth)
        cp, cr = score(same_cluster_pairs(labels), truth_clusters)
        n_clusters = int((np.bincount(labels) > 1).sum())
        mark = " (default)" if threshold == DEFAULT_THRESHOLD else (" (auto)" if threshold == round(auto, 3) else "")
        print(f"{threshold:>10.3f} {len(found):>7} {p:>7.3f} {r:>7.3f} {n_clusters:>9} {cp:>10.3f} {cr:>10.3f}{mark}")


if __name__ == "__main__":
    main()
