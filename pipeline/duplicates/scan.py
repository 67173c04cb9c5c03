"""Scanning a cache for near-duplicates, and what they mean for its splits."""

from __future__ import annotations

import csv
import datetime
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..cache import WriterLock, add_row_column, open_cache, require_cache
from ..errors import PipelineError
from ..inputs.fingerprint import FINGERPRINT_POLICY, WIDTH, fingerprint_files
from .find import (DEFAULT_THRESHOLD, BLOCK_ROWS, Pairs, auto_threshold, clusters, normalise, relative_threshold,
                   similar_pairs, typical_similarity)
from .prints import IDENTICAL, pair_similarity, print_pairs

log = logging.getLogger(__name__)
VIEWS = ("both", "fingerprint", "code")


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
    kind: np.ndarray | None = None  # per pair: "fingerprint", "code" or "both" (which views found it)
    print_similarity: np.ndarray | None = None  # per pair: fingerprint similarity (NaN without fingerprints)
    views: dict = field(default_factory=dict)  # per view: threshold, its source, pairs found
    new_prints: np.ndarray | None = None  # fingerprints computed by this scan (the cache had none)

    def groups(self) -> list[np.ndarray]:
        """Row indices of every cluster with two or more members, largest first."""
        order = np.argsort(self.cluster, kind="stable")
        split_at = np.flatnonzero(np.diff(self.cluster[order])) + 1
        found = [g for g in np.split(order, split_at) if len(g) > 1]
        return sorted(found, key=lambda g: (-len(g), g[0]))

    def label_conflicts(self) -> list[dict]:
        """Clusters whose members carry different labels, and what they are: ``"same image"`` when a pair
        with two labels has identical fingerprints (the same picture labelled two ways), else
        ``"look-alike"`` (check the labels, or expect these images to be hard)."""
        conflicts = []
        for rows in self.groups():
            labels = {int(l) for l in self.labels[rows] if l >= 0}
            if len(labels) > 1:
                conflicts.append({"ids": self.ids[rows].tolist(),
                                  "labels": [self.class_names[l] if l >= 0 else "" for l in self.labels[rows]],
                                  "kind": "same image" if self._identical_across(rows) else "look-alike"})
        return conflicts

    def _identical_across(self, rows: np.ndarray) -> bool:
        """Whether a pair of ``rows`` with two different labels has identical fingerprints."""
        if self.print_similarity is None:
            return False
        members = set(rows.tolist())
        for i, j, s in zip(self.pairs.i, self.pairs.j, self.print_similarity):
            if i in members and self.labels[i] != self.labels[j] and s >= IDENTICAL:
                return True
        return False

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
            "views": self.views,
            "rows": int(len(self.ids)),
            "pairs": int(len(self.pairs.i)),
            "pair_kinds": {} if self.kind is None else {str(k): int(v) for k, v in
                                                          zip(*np.unique(self.kind, return_counts=True))},
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


def scan_cache(path: str | Path, output: str | None = None, threshold: float | str = "relative",
               block: int = BLOCK_ROWS, view: str = "both", mirror: bool = True,
               print_threshold: float | None = None) -> DuplicateReport:
    """Find near-duplicates among the rows of a cache, from its fingerprints and/or its codes.

    ``threshold`` (code view): a cosine, ``"relative"`` (from the data set's own neighbour distances) or
    ``"auto"`` (Otsu). ``print_threshold`` (fingerprint view): a correlation, None = relative.
    ``view``: ``"both"`` (clusters from the union of the pairs), ``"fingerprint"`` or ``"code"``.
    """
    if view not in VIEWS:
        raise PipelineError(f"unknown duplicate view {view!r}; choose one of {', '.join(VIEWS)}")
    with open_cache(path) as cache:
        output = output or default_output(cache.outputs)
        codes = cache.codes(output) if view != "fingerprint" else None
        if codes is not None and cache.provenance.model.weights.source == "random-init":
            log.warning("%s holds codes of an untrained model (random-init): pairs found by the code view say "
                        "little about which images are alike; trust the fingerprint view (view='fingerprint', "
                        "--view fingerprint)", Path(path).name)
        ids, labels, class_names, split, key = cache.ids, cache.labels, cache.class_names, cache.split, cache.key
        prints, new_prints = _fingerprints(cache)
    found, views = [], {}
    if codes is not None:
        value, source = _code_threshold(codes, threshold, block)
        code = similar_pairs(codes, value, block)
        found.append(("code", code.i, code.j))
        views["code"] = {"threshold": round(value, 4), "threshold_source": source, "pairs": int(len(code.i))}
    else:
        value, source = float("nan"), "unused"
    if view != "code" and prints is not None:
        usable = np.flatnonzero(np.isfinite(prints.astype(np.float32)).all(axis=1))
        fp = print_pairs(prints[usable], mirror=mirror, threshold=print_threshold, block=block)
        found.append(("fingerprint", usable[fp.i], usable[fp.j]))
        views["fingerprint"] = {"threshold": round(fp.threshold, 4), "threshold_source":
                                "given" if print_threshold is not None else "relative", "typical": round(fp.typical, 4),
                                "pairs": int(len(fp.i)), "mirror": mirror}
        if fp.whole_threshold is not None:  # the whole-thumbnail view (always relative)
            views["fingerprint"].update(whole_threshold=round(fp.whole_threshold, 4),
                                        whole_typical=round(fp.whole_typical, 4))
    elif view == "fingerprint":
        raise PipelineError(f"{path}: no fingerprints could be made (the image files are not readable); "
                            "use --view code")
    pairs, kind = _union(found, len(ids), codes, block)
    similarity = (pair_similarity(prints.astype(np.float32), pairs.i, pairs.j, mirror) if prints is not None
                  else None)
    cluster = clusters(len(ids), pairs.i, pairs.j)
    return DuplicateReport(Path(path), output, value, source, ids, labels, class_names, split, pairs, cluster,
                           cache_key=key, kind=kind, print_similarity=similarity, views=views, new_prints=new_prints)


def _code_threshold(codes: np.ndarray, threshold: float | str, block: int) -> tuple[float, str]:
    if threshold == "relative":
        return relative_threshold(typical_similarity(codes, block=block)), "relative"
    if threshold == "auto":
        return auto_threshold(similar_pairs(codes, 1.0, block).nearest), "auto"
    if isinstance(threshold, str):
        raise PipelineError(f"threshold must be a number between -1 and 1, 'relative' or 'auto', got {threshold!r}")
    return float(threshold), ("default" if threshold == DEFAULT_THRESHOLD else "given")


def _fingerprints(cache) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The cache's fingerprints, or ones made now by a cheap pass over its image files (also returned
    second, to be stored); None when the files cannot be read."""
    stored = cache.fingerprints
    current = stored is not None and stored.shape[1] == WIDTH
    if current and np.isfinite(stored.astype(np.float32)).all():
        return stored, None
    root = Path(cache.provenance.input.root_resolved)
    paths = [root / i for i in cache.ids]
    if not any(p.is_file() for p in paths[:50]):
        if stored is not None and not current:
            log.warning("%s stores fingerprints of an older version and its images are not under %s: only their "
                        "trimmed thumbnails are compared", cache.path.name, root)
            return stored, None
        log.warning("%s stores no fingerprints and its images are not under %s: only codes are compared",
                    cache.path.name, root)
        return None, None
    what = "no fingerprints" if stored is None or current else "fingerprints of an older version"
    log.info("%s stores %s: making them from its %d image files", cache.path.name, what, len(paths))
    made = fingerprint_files(paths)
    return made, made


def _union(found: list, n: int, codes: np.ndarray | None, block: int) -> tuple[Pairs, np.ndarray]:
    """One pair list from every view's pairs, each with the views that found it."""
    by_pair: dict[tuple[int, int], set] = {}
    for name, i, j in found:
        for a, b in zip(i.tolist(), j.tolist()):
            by_pair.setdefault((min(a, b), max(a, b)), set()).add(name)
    keys = sorted(by_pair)
    i = np.array([k[0] for k in keys], np.int64)
    j = np.array([k[1] for k in keys], np.int64)
    kind = np.array(["both" if len(by_pair[k]) > 1 else next(iter(by_pair[k])) for k in keys], dtype=object)
    if codes is not None and len(keys):
        x = normalise(codes)
        similarity = np.einsum("pc,pc->p", x[i], x[j]).astype(np.float32)
    else:
        similarity = np.full(len(keys), np.nan, np.float32)
    return Pairs(i, j, similarity, np.zeros(n, np.float32)), kind


def store_clusters(report: DuplicateReport, locked: bool = False) -> None:
    """Write the clusters into the cache as its ``dup_cluster`` column (codes untouched).

    Refused when the cache was replaced after the scan (its content key changed).
    """
    summary = report.summary()
    about = {key: summary[key] for key in ("output", "threshold", "threshold_source", "views", "pairs", "clusters",
                                          "rows_in_clusters")}
    about["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if report.new_prints is not None:
        add_row_column(report.cache, "fingerprints", report.new_prints, {**FINGERPRINT_POLICY, "made": "by a scan"},
                       expected_key=report.cache_key, locked=locked)
    add_row_column(report.cache, "dup_cluster", report.cluster, about, expected_key=report.cache_key, locked=locked)


def scan_and_store(path: str | Path, output: str | None = None, threshold: float | str = "relative",
                   block: int = BLOCK_ROWS, store: bool = True, wait: bool = False, view: str = "both",
                   mirror: bool = True, print_threshold: float | None = None) -> DuplicateReport:
    """:func:`scan_cache`, then :func:`store_clusters`, holding the writer lock across both when storing.

    ``wait``: wait for another writer of the cache instead of failing at once.
    """
    options = dict(view=view, mirror=mirror, print_threshold=print_threshold)
    if not store:
        return scan_cache(path, output, threshold, block, **options)
    require_cache(Path(path))
    with WriterLock(Path(path), wait=wait):
        report = scan_cache(path, output, threshold, block, **options)
        store_clusters(report, locked=True)
    return report


def write_pairs(report: DuplicateReport, path: str | Path) -> Path:
    """A CSV of every pair: ids, labels, code and fingerprint similarity, which views found it, cluster."""
    path = Path(path)
    names = lambda r: report.class_names[report.labels[r]] if report.labels[r] >= 0 else ""  # noqa: E731
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["id_a", "id_b", "similarity", "fingerprint_similarity", "kind", "label_a", "label_b", "cluster"])
    n = len(report.pairs.i)
    prints = report.print_similarity if report.print_similarity is not None else np.full(n, np.nan)
    kinds = report.kind if report.kind is not None else np.full(n, "code", dtype=object)
    text_of = lambda v: "" if not np.isfinite(v) else f"{v:.5f}"  # noqa: E731
    rows = sorted(zip(report.pairs.i, report.pairs.j, report.pairs.similarity, prints, kinds),
                  key=lambda t: (-np.nan_to_num(t[3], nan=-2), -np.nan_to_num(t[2], nan=-2)))
    for i, j, s, p, k in rows:
        writer.writerow([report.ids[i], report.ids[j], text_of(s), text_of(p), k, names(i), names(j),
                         int(report.cluster[i])])
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
