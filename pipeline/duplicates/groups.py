"""Leakage-safe groups: duplicate clusters joined with the user's own groups."""

from __future__ import annotations

import logging

import numpy as np

from ..cache import ActivationCache
from .find import clusters
from .scan import scan_cache

log = logging.getLogger(__name__)


def duplicate_clusters(cache: ActivationCache, scan_if_missing: bool = True) -> np.ndarray | None:
    """The stored ``dup_cluster`` of every row, or a fresh scan at the default settings."""
    stored = cache.dup_cluster
    if stored is not None or not scan_if_missing:
        return stored
    report = scan_cache(cache.path)
    summary = report.summary()
    log.warning(
        "%s has no stored duplicate clusters; found %d cluster(s) holding %d images at threshold %s on %s "
        "(run `layerprobe duplicates` to inspect and store them)",
        cache.path.name, summary["clusters"], summary["rows_in_clusters"], summary["threshold"], summary["output"],
    )
    return report.cluster


def _same_value_edges(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges chaining the rows that share a value (empty values share nothing)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    same = (ordered[1:] == ordered[:-1]) & (ordered[1:] != "")
    return order[:-1][same], order[1:][same]


def auto_groups(cache: ActivationCache) -> np.ndarray:
    """One group per set of rows linked by a near-duplicate or by the user's group column.

    Two rows end in the same group when they are near-duplicates, share a group
    (patient, lesion), or are linked through a chain of either, so no fold split
    can separate anything that should stay together.
    """
    dup = duplicate_clusters(cache).astype(str)
    edges = [_same_value_edges(dup)]
    if cache.groups is not None:
        edges.append(_same_value_edges(np.asarray(cache.groups).astype(str)))
    i = np.concatenate([e[0] for e in edges])
    j = np.concatenate([e[1] for e in edges])
    labels = clusters(len(dup), i, j)
    return np.char.add("auto:", labels.astype(str))
