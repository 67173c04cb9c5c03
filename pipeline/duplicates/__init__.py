"""Duplicates: near-duplicate images found from their fingerprints and codes, and leakage-safe groups (no torch)."""

from .find import DEFAULT_THRESHOLD, Pairs, auto_threshold, clusters, normalise, similar_pairs
from .groups import auto_groups, duplicate_clusters
from .prints import PrintPairs, pair_similarity, print_pairs
from .scan import (DuplicateReport, default_output, leaked_rows, scan_and_store, scan_cache, store_clusters,
                   write_pairs)

__all__ = [
    "DEFAULT_THRESHOLD",
    "DuplicateReport",
    "Pairs",
    "PrintPairs",
    "auto_groups",
    "auto_threshold",
    "duplicate_clusters",
    "clusters",
    "default_output",
    "leaked_rows",
    "normalise",
    "pair_similarity",
    "print_pairs",
    "scan_and_store",
    "scan_cache",
    "similar_pairs",
    "store_clusters",
    "write_pairs",
]
