"""Synthetic activation caches for the probe tests: codes from make_classification, no model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.cache import CacheWriter, OutputSpec, RowTable

MODEL = {"name": "synthetic-net", "family": "timm",
         "weights": {"source": "random-init", "sha256": "ab" * 32, "path": None}}
PREPROCESSING = {"input_size": [3, 64, 64], "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5],
                 "std": [0.5, 0.5, 0.5], "crop_pct": 0.875, "crop_mode": "center", "colour": "rgb"}


def make_codes(n=120, widths=(8, 24), n_classes=2, seed=0, informative=(1, 4)):
    """Per-layer codes whose class signal grows with depth, and their labels."""
    from sklearn.datasets import make_classification

    rng = np.random.default_rng(seed)
    base, y = make_classification(n_samples=n, n_features=max(widths), n_informative=max(informative),
                                  n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                                  class_sep=1.0, shuffle=False, random_state=seed)
    codes = {}
    for i, (width, k) in enumerate(zip(widths, informative)):
        x = rng.normal(size=(n, width))
        x[:, :k] += base[:, :k]
        codes[(f"blocks.{i}", "avg")] = x.astype(np.float32)
    return codes, y


def write_cache(path: Path, codes: dict, labels, class_names, groups=None, ids=None, model=None,
                preprocessing=None, sha256=None, active=None) -> Path:
    """A finished cache at ``path`` holding ``codes`` {(layer, pooling): (n, c)} in the given depth order;
    ``active`` (a mask) hides rows as a later extraction over fewer images does."""
    n = len(labels)
    ids = ids or [f"img{i:04d}.png" for i in range(n)]
    rows = RowTable(ids=list(ids), labels=[int(v) for v in labels], class_names=list(class_names),
                    sizes=[1] * n, sha256=list(sha256 or ["0" * 64] * n), groups=None if groups is None else [str(g) for g in groups],
                    active=None if active is None else [bool(a) for a in active])
    outputs = [OutputSpec(layer, pooling, x.shape[1],
                          {"name": layer, "kind": "stage", "depth": depth, "channels": x.shape[1], "stride": 2 ** depth})
               for depth, ((layer, pooling), x) in enumerate(codes.items())]
    digest = hashlib.sha256(repr((ids, list(labels), [x.tobytes() for x in codes.values()])).encode()).hexdigest()
    manifest = {
        "key": digest, "model": model or MODEL, "preprocessing": preprocessing or PREPROCESSING,
        "layers": [], "poolings": ["avg"], "outputs": [f"{l}/{p}" for l, p in codes],
        "input": {"name": "synthetic", "source": "synthetic", "root": ".", "n_images": n, "fingerprint": digest},
        "config": {"model": (model or MODEL)["name"]}, "created": "2026-01-01T00:00:00+00:00",
        "runtime": {"device": "cpu:synthetic", "precision": "float32", "duration_s": 0.0},
    }
    # The writer's protocol: reused rows are copied first (none here), then batches are committed.
    writer = CacheWriter(Path(path), digest, digest, manifest, rows, outputs)
    try:
        writer.copy_rows(None, [], np.zeros(0, np.int64), np.zeros(0, np.int64))
        writer.write(0, np.arange(n), {k: np.asarray(v, dtype=np.float32) for k, v in codes.items()})
        writer.finish(manifest, n)
    finally:
        writer.close()
    return Path(path)
