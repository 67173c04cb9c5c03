"""Near-duplicate pairs and clusters from cached codes, blockwise (no N x N matrix).

Codes are centred on the data set's mean and scaled to unit length, so the
similarity of two images is the cosine of their codes' deviations from the
typical image of the set. Near-identical images score close to 1; distinct
images of the same modality (two different MRI slices) score far lower than
their raw cosine would suggest, because what they share is removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PipelineError

DEFAULT_THRESHOLD = 0.90
BLOCK_ROWS = 1024
BLOCK_BYTES = 64 << 20  # one (block x rows) float32 similarity matrix; a scan holds a few such at once


@dataclass(frozen=True)
class Pairs:
    """Pairs ``(i, j)`` with ``i < j`` whose similarity reaches the threshold, and each row's nearest-neighbour similarity."""

    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray
    nearest: np.ndarray  # highest similarity of each row to any other row


def rows_per_block(rows: int, block: int = BLOCK_ROWS) -> int:
    """How many rows to compare against all others at once: ``block``, or fewer where a (block x rows)
    float32 matrix would pass BLOCK_BYTES, so a scan's memory stays flat in the number of rows (16 at a
    million rows). Up to 16,384 rows the block is the full 1,024: small data sets scan as before. (A
    similarity may differ in its last bit with the block's height: BLAS picks its kernel by shape.)"""
    return max(1, min(block, BLOCK_BYTES // (4 * max(1, rows))))


def normalise(codes: np.ndarray) -> np.ndarray:
    """Centre on the mean, scale rows to unit length (float32)."""
    x = np.asarray(codes, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2:
        raise PipelineError(f"duplicate search needs a (rows, channels) array with at least 2 rows, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise PipelineError("the codes hold NaN or infinite values; run `layerprobe verify` on the cache")
    x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def similar_pairs(codes: np.ndarray, threshold: float, block: int = BLOCK_ROWS) -> Pairs:
    """Every pair at or above ``threshold``; memory grows with ``block x rows``, not ``rows x rows``."""
    if not -1.0 <= threshold <= 1.0:
        raise PipelineError(f"threshold must be a cosine similarity between -1 and 1, got {threshold}")
    x = normalise(codes)
    n = len(x)
    block = rows_per_block(n, block)
    nearest = np.full(n, -1.0, dtype=np.float32)
    found_i, found_j, found_s = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = x[start:stop] @ x.T  # (block, n)
        rows = np.arange(start, stop)
        sims[rows - start, rows] = -np.inf  # never pair a row with itself
        nearest[start:stop] = sims.max(axis=1)
        bi, bj = np.nonzero(sims >= threshold)
        keep = bj > bi + start  # each pair once
        found_i.append(bi[keep] + start)
        found_j.append(bj[keep])
        found_s.append(sims[bi[keep], bj[keep]])
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    return Pairs(cat(found_i, np.int64), cat(found_j, np.int64), cat(found_s, np.float32), nearest)


def typical_similarity(codes: np.ndarray, k: int = 10, block: int = BLOCK_ROWS) -> float:
    """Median over rows of the similarity to the ``k``-th nearest other row: how alike distinct images of
    this data set are (``k`` reaches past the few copies an image may have)."""
    x = normalise(codes)
    n = len(x)
    k = max(1, min(k, n - 1, max(2, n // 10)))  # nearer in small sets: among images of the same kind
    block = rows_per_block(n, block)
    found = np.zeros(n, np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = x[start:stop] @ x.T
        rows = np.arange(start, stop)
        sims[rows - start, rows] = -np.inf
        found[start:stop] = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
    return float(np.median(found))


def relative_threshold(typical: float, ratio: float = 0.25, loosest: float = DEFAULT_THRESHOLD) -> float:
    """A pair counts when it is ``ratio`` times closer (as 1 - similarity) than the typical k-th
    neighbour, and never below ``loosest``: a homogeneous set gets a stricter threshold."""
    return 1.0 - min(1.0 - loosest, ratio * max(0.0, 1.0 - typical))


def clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the pair graph: one cluster index per row (singletons included)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # number clusters by their first row, so the labelling does not depend on scipy's order
    first = {}
    return np.array([first.setdefault(label, len(first)) for label in labels], dtype=np.int64)


def auto_threshold(nearest: np.ndarray, floor: float = 0.8) -> float:
    """A threshold from the data: Otsu's split of the nearest-neighbour similarities.

    Near-duplicates form a mode close to 1 in the distribution of each image's
    highest similarity to any other image; Otsu's method places the cut in the
    valley between that mode and the rest. It never goes below ``floor``, so a
    set without duplicates does not get a loose threshold.
    """
    values = np.sort(np.clip(nearest[np.isfinite(nearest)], -1, 1))
    if len(values) < 2:
        return DEFAULT_THRESHOLD
    hist, edges = np.histogram(values, bins=200, range=(float(values[0]), 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    total = weight[-1]
    mean_low = np.cumsum(hist * centres) / np.maximum(weight, 1)
    mean_all = (hist * centres).sum() / total
    mean_high = (mean_all * total - mean_low * weight) / np.maximum(total - weight, 1)
    between = weight * (total - weight) * (mean_low - mean_high) ** 2
    cut = float(edges[int(np.argmax(between[:-1])) + 1])
    return max(floor, cut)
