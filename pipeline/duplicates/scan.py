"""Scanning a cache for near-duplicates, and what they mean for its splits."""

from __future__ import annotations

import csv
import datetime
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..cache import WriterLock, add_row_column, open_cache
from ..errors import PipelineError
from .find import DEFAULT_THRESHOLD, BLOCK_ROWS, Pairs, auto_threshold, clusters, similar_pairs


@dataclass
class DuplicateReport:
    """Pairs and clusters of near-duplicates among a cache's rows."""

    cache: Path
    output: str
    threshold: float
    threshold_source: str  # "default", "given" or "auto"
    ids: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    split: np.ndarray | None
    pairs: Pairs
    cluster: np.ndarray  # one cluster index per row; singletons have their own
    extra: dict = field(default_factory=dict)
    cache_key: str | None = None  # the cache's content key when it was scanned

    def groups(self) -> list[np.ndarray]:
        """Row indices of every cluster with two or more members, largest first."""
        order = np.argsort(self.cluster, kind="stable")
        split_at = np.flatnonzero(np.diff(self.cluster[order])) + 1
        found = [g for g in np.split(order, split_at) if len(g) > 1]
        return sorted(found, key=lambda g: (-len(g), g[0]))

    def label_conflicts(self) -> list[dict]:
        """Clusters whose members carry different labels: the same image labelled two ways."""
        conflicts = []
        for rows in self.groups():
            labels = {int(l) for l in self.labels[rows] if l >= 0}
            if len(labels) > 1:
                conflicts.append({"ids": self.ids[rows].tolist(),
                                  "labels": [self.class_names[l] if l >= 0 else "" for l in self.labels[rows]]})
        return conflicts

    def split_crossings(self) -> list[dict]:
        """Clusters that sit on both sides of the input's own ``split`` column."""
        if self.split is None:
            return []
        return [{"ids": self.ids[rows].tolist(), "splits": self.split[rows].tolist()}
                for rows in self.groups() if len(set(self.split[rows])) > 1]

    def summary(self) -> dict:
        groups = self.groups()
        in_clusters = int(sum(len(g) for g in groups))
        return {
            "cache": str(self.cache),
            "output": self.output,
            "threshold": round(float(self.threshold), 4),
            "threshold_source": self.threshold_source,
            "rows": int(len(self.ids)),
            "pairs": int(len(self.pairs.i)),
            "clusters": len(groups),
            "rows_in_clusters": in_clusters,
            "distinct_images": int(len(self.ids) - in_clusters + len(groups)),
            "cluster_sizes": {str(k): v for k, v in sorted(Counter(len(g) for g in groups).items())},
            "label_conflicts": self.label_conflicts(),
            "split_crossings": self.split_crossings(),
            **self.extra,
        }


def default_output(outputs: list[tuple[str, str]]) -> str:
    """A late layer: ``pre_logits`` when cached, else the deepest output."""
    for layer, pooling in outputs:
        if layer == "pre_logits":
            return f"{layer}/{pooling}"
    layer, pooling = outputs[-1]
    return f"{layer}/{pooling}"


def scan_cache(path: str | Path, output: str | None = None, threshold: float | str = DEFAULT_THRESHOLD,
               block: int = BLOCK_ROWS) -> DuplicateReport:
    """Find near-duplicates among the rows of a cache (``threshold``: a cosine, or ``"auto"``)."""
    with open_cache(path) as cache:
        output = output or default_output(cache.outputs)
        codes = cache.codes(output)
        ids, labels, class_names, split, key = cache.ids, cache.labels, cache.class_names, cache.split, cache.key
    if isinstance(threshold, str):
        if threshold != "auto":
            raise PipelineError(f"threshold must be a number between -1 and 1 or 'auto', got {threshold!r}")
        nearest = similar_pairs(codes, 1.0, block).nearest
        value, source = auto_threshold(nearest), "auto"
    else:
        value, source = float(threshold), ("default" if threshold == DEFAULT_THRESHOLD else "given")
    pairs = similar_pairs(codes, value, block)
    cluster = clusters(len(ids), pairs.i, pairs.j)
    return DuplicateReport(Path(path), output, value, source, ids, labels, class_names, split, pairs, cluster,
                           cache_key=key)


def store_clusters(report: DuplicateReport, locked: bool = False) -> None:
    """Write the clusters into the cache as its ``dup_cluster`` column (codes untouched).

    Refused when the cache was replaced after the scan (its content key changed).
    """
    summary = report.summary()
    about = {key: summary[key] for key in ("output", "threshold", "threshold_source", "pairs", "clusters",
                                          "rows_in_clusters")}
    about["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    add_row_column(report.cache, "dup_cluster", report.cluster, about, expected_key=report.cache_key, locked=locked)


def scan_and_store(path: str | Path, output: str | None = None, threshold: float | str = DEFAULT_THRESHOLD,
                   block: int = BLOCK_ROWS, store: bool = True, wait: bool = False) -> DuplicateReport:
    """:func:`scan_cache`, then :func:`store_clusters`, holding the writer lock across both when storing.

    ``wait``: wait for another writer of the cache instead of failing at once.
    """
    if not store:
        return scan_cache(path, output, threshold, block)
    with WriterLock(Path(path), wait=wait):
        report = scan_cache(path, output, threshold, block)
        store_clusters(report, locked=True)
    return report


def write_pairs(report: DuplicateReport, path: str | Path) -> Path:
    """A CSV of every pair: ids, labels, similarity, cluster."""
    path = Path(path)
    names = lambda r: report.class_names[report.labels[r]] if report.labels[r] >= 0 else ""  # noqa: E731
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["id_a", "id_b", "similarity", "label_a", "label_b", "cluster"])
    for i, j, s in sorted(zip(report.pairs.i, report.pairs.j, report.pairs.similarity), key=lambda t: -t[2]):
        writer.writerow([report.ids[i], report.ids[j], f"{s:.5f}", names(i), names(j), int(report.cluster[i])])
    return atomic_write(path, text.getvalue().encode())


def leaked_rows(cluster: np.ndarray, test_fold: np.ndarray) -> np.ndarray:
    """Rows whose near-duplicate sits in another fold: in training when that row is tested."""
    order = np.argsort(cluster, kind="stable")
    leaked = np.zeros(len(cluster), bool)
    split_at = np.flatnonzero(np.diff(cluster[order])) + 1
    for rows in np.split(order, split_at):
        if len(rows) > 1:
            folds = test_fold[rows]
            for r, f in zip(rows, folds):
                leaked[r] = bool((folds != f).any())
    return leaked
