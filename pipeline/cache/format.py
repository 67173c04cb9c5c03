"""The activation cache's on-disk layout, in one place.

One HDF5 file per cache::

    /                 attrs: format, format_version, settings_key, key, digest,
                             manifest (JSON), arrays (JSON), rows_committed,
                             copied, complete
    /ids              (N,) utf-8 image ids, sorted
    /active           (N,) bool: the row belongs to the latest input
    /labels           (N,) int32 index into attrs["class_names"], -1 = none
    /groups, /split   (N,) utf-8, present when the input had them
    /files/size       (N,) int64 bytes of each image file
    /files/sha256     (N,) hex digest of each image file
    /dup_cluster      (N,) int64 near-duplicate cluster, present once `duplicates` ran
    /fingerprints     (N, 1024) float16 image thumbnails (pipeline.inputs.fingerprint), NaN where unknown
    /codes/<layer>/<pooling>  (N, C) float32, chunked by rows, fletcher32
    /bn_stats/<module>/...    float64 BatchNorm sums, present with --bn-stats (see bnstats.py)

``settings_key`` hashes what makes a row's numbers (model, weights, preprocessing,
precision, input root, format version); two caches with the same settings key
can share rows. ``key`` hashes the whole content (rows, outputs, labels), so an
equal key means an equal cache. ``digest`` is a sha256 over the manifest, the class
names, ``arrays`` and the two keys (fixed-size: the row columns are covered by their
hashes in ``arrays``; caches written before ``arrays`` existed, or sealed before issue
16, hash the row metadata too); the codes carry HDF5's fletcher32 chunk checksums. ``arrays``
(JSON, see ``integrity.py``) records every dataset's dtype, shape, chunking and
a hash of its content, checked on open and on every whole read; codes have NaN
as fill value. Together they turn on-disk damage into an error instead of wrong
numbers. ``/integrity/running`` holds the hashes of a file still being written.

While a cache is written, ``rows_committed`` counts the rows of the extraction
plan whose codes are flushed; only finished (``complete``) files are read.
"""

from __future__ import annotations

import hashlib
import json

FORMAT = "layerprobe-activations"
FORMAT_VERSION = 2
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
CHUNK_BYTES = 1 << 18  # ~256 KiB per chunk keeps reads of a whole layer fast
ROW_COLUMNS = ("ids", "active", "labels", "groups", "split", "files/size", "files/sha256", "dup_cluster")


def codes_path(layer: str, pooling: str) -> str:
    return f"codes/{layer}/{pooling}"


def chunk_rows(channels: int, rows: int) -> int:
    return max(1, min(rows, max(16, CHUNK_BYTES // (4 * max(1, channels)))))


def cache_key(parts: dict) -> str:
    """A sha256 over a JSON-able description (format version included)."""
    payload = json.dumps({"format_version": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def metadata_digest(handle, legacy: bool = False) -> str:
    """sha256 over the manifest, class names, array manifest and keys of an open file: fixed-size metadata.

    In a cache with an ``arrays`` attribute every row column has its own content hash there, so the
    digest need not read the rows (at a million rows that took seconds on every open); the reader
    checks a row column's hash when it first reads the column. Caches written before (and
    ``legacy=True``, how caches with ``arrays`` were sealed until issue 16) also hash every row column.
    """
    digest = hashlib.sha256()
    digest.update(str(handle.attrs["manifest"]).encode())
    digest.update(str(handle["labels"].attrs["class_names"]).encode())
    if "arrays" in handle.attrs:  # caches written since per-array hashes exist: those, and the keys too
        for name in ("arrays", "key", "settings_key"):
            digest.update(str(handle.attrs[name]).encode())
        if not legacy:
            digest.update(b"rows covered by arrays")
            return digest.hexdigest()
    for name in ROW_COLUMNS:
        if name in handle:
            digest.update(name.encode())
            digest.update(repr(handle[name][()].tolist()).encode())
    return digest.hexdigest()
