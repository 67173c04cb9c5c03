"""Duplicates: near-duplicate images found from their codes, and leakage-safe groups (no torch)."""

from .find import DEFAULT_THRESHOLD, Pairs, auto_threshold, clusters, normalise, similar_pairs
from .groups import auto_groups, duplicate_clusters
from .scan import (DuplicateReport, default_output, leaked_rows, scan_and_store, scan_cache, store_clusters,
                   write_pairs)

__all__ = [
    "DEFAULT_THRESHOLD",
    "DuplicateReport",
    "Pairs",
    "auto_groups",
    "auto_threshold",
    "duplicate_clusters",
    "clusters",
    "default_output",
    "leaked_rows",
    "normalise",
    "scan_and_store",
    "scan_cache",
    "similar_pairs",
    "store_clusters",
    "write_pairs",
]
