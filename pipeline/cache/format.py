"""The activation cache's on-disk layout, in one place.

One HDF5 file per cache::

    /                 attrs: format, format_version, key, manifest (JSON),
                             rows_committed (the commit marker), complete
    /ids              (N,) utf-8 image ids, sorted
    /labels           (N,) int32 index into attrs["class_names"], -1 = none
    /groups, /split   (N,) utf-8, present when the input had them
    /files/size       (N,) int64 bytes of each image file
    /files/sha256     (N,) hex digest of each image file
    /codes/<layer>/<pooling>  (N, C) float32, chunked by rows, fletcher32

Only rows below ``rows_committed`` are ever read: data is flushed before the
marker moves, so a killed writer never exposes a half-written row.
"""

from __future__ import annotations

import hashlib
import json

FORMAT = "layerprobe-activations"
FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
CHUNK_BYTES = 1 << 18  # ~256 KiB per chunk keeps reads of a whole layer fast


def codes_path(layer: str, pooling: str) -> str:
    return f"codes/{layer}/{pooling}"


def chunk_rows(channels: int, rows: int) -> int:
    return max(1, min(rows, max(16, CHUNK_BYTES // (4 * max(1, channels)))))


def cache_key(parts: dict) -> str:
    """A sha256 over everything that changes the numbers in a cache."""
    payload = json.dumps({"format_version": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
