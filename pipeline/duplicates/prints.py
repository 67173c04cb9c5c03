"""Near-duplicate pairs from image fingerprints (see :mod:`pipeline.inputs.fingerprint`), blockwise.

Two views of every stored thumbnail are compared: the linear one (invariant to
brightness and contrast windows) and the rank one (invariant to any increasing
mapping such as gamma). A pair's similarity is the higher correlation of the
two, also against the mirrored image when ``mirror`` is on. Every row's
``CANDIDATES`` nearest rows are then compared again under small warps (crops
of up to 10%, shifts, rotations of a few degrees), so a cropped, padded or
slightly rotated re-export still scores close to 1.

The threshold is placed relative to the data set itself: distinct images of
a homogeneous set (cells of one solar panel, slices of one scanner) are much
closer to each other than distinct photos are, so a pair only counts when it
is ``RATIO`` times closer than the typical distance from an image to its
``TYPICAL_K``-th nearest neighbour, and never looser than ``MAX_DISTANCE``.

A second, plainer view compares the whole thumbnails (no trimming, no detail
removed): two exports of one picture with the same framing correlate almost
perfectly there even when a new window or sharpening moved the trimmed
thumbnail's detail. Its threshold follows the same relative rule but is never
looser than ``WHOLE_MAX_DISTANCE`` (correlation 0.99, the pixel truth of the
Br35H notes). Pairs of either view count.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import PipelineError
from ..inputs.fingerprint import AREA, SIDE, WIDTH, ranks
from .find import BLOCK_ROWS, rows_per_block

CANDIDATES = 5  # nearest rows of each row compared again under warps
TYPICAL_K = 10  # the neighbour whose distance says how alike distinct images of this set are
RATIO = 0.25  # a duplicate is at least this many times closer than that (as 1 - correlation)
MAX_DISTANCE = 0.10  # and never further than this (correlation 0.90)
DETAIL_SIGMA = 4.0  # the outline every slice of a scan shares is removed: only detail is compared
IDENTICAL = 0.995  # fingerprints this close show the same picture
WHOLE_MAX_DISTANCE = 0.01  # the whole-thumbnail view: never looser than correlation 0.99


@dataclass(frozen=True)
class PrintPairs:
    """Pairs ``i < j`` whose fingerprint similarity reaches ``threshold``."""

    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray  # of the trimmed thumbnails' detail, warps included
    threshold: float
    typical: float  # median similarity of a row to its TYPICAL_K-th nearest row
    whole_threshold: float | None = None  # the whole-thumbnail view (None: fingerprints of version 1)
    whole_typical: float | None = None


def trimmed(prints: np.ndarray) -> np.ndarray:
    """The trimmed thumbnails of fingerprints of either version (rows x AREA, float32)."""
    prints = np.asarray(prints, dtype=np.float32)
    if prints.ndim != 2 or prints.shape[1] not in (AREA, WIDTH):
        raise PipelineError(f"fingerprints must be a (rows, {WIDTH}) array, got shape {prints.shape}")
    return prints[:, :AREA]


def whole(prints: np.ndarray) -> np.ndarray | None:
    """The whole-image thumbnails, None for fingerprints of version 1 (trimmed thumbnail only)."""
    prints = np.asarray(prints, dtype=np.float32)
    return prints[:, AREA:] if prints.ndim == 2 and prints.shape[1] == WIDTH else None


def views(thumbs: np.ndarray, mirror: bool = False) -> list[np.ndarray]:
    """Standardised linear and rank views of the trimmed thumbnails' detail (and their mirror images)."""
    thumbs = trimmed(thumbs)
    found = [_standardise(_detail(thumbs)), _standardise(_detail(_rank_rows(thumbs)))]
    if mirror:
        found += [_flip(v) for v in found]
    return found


def print_pairs(thumbs: np.ndarray, mirror: bool = True, threshold: float | None = None,
                block: int = BLOCK_ROWS) -> PrintPairs:
    """Every pair of rows whose fingerprints show the same image (``threshold``: None = from the data)."""
    n = len(thumbs)
    if n < 2:
        raise PipelineError(f"duplicate search needs at least 2 fingerprints, got {n}")
    both = views(thumbs, mirror=mirror)
    plain, mirrored = both[:2], both[2:]
    k = min(n - 1, max(CANDIDATES, TYPICAL_K))
    top_j, top_s = _nearest(plain, mirrored, k, block)
    typical = float(np.median(top_s[:, typical_k(n) - 1]))
    if threshold is None:
        threshold = relative_threshold(typical)
    # pairs close without warps are in; every row's nearest others are compared again under warps
    close_i, close_j = _above(plain, mirrored, threshold, block)
    cand = min(CANDIDATES, n - 1)
    i = np.concatenate([np.repeat(np.arange(n), cand), close_i])
    j = np.concatenate([top_j[:, :cand].ravel(), close_j])
    i, j = np.minimum(i, j), np.maximum(i, j)
    pairs = np.unique(np.stack([i, j], axis=1), axis=0)
    sims = _warped_similarity(trimmed(thumbs), pairs, mirror, block)
    keep = sims >= threshold
    i, j, sims = pairs[keep, 0].astype(np.int64), pairs[keep, 1].astype(np.int64), sims[keep].astype(np.float32)
    if whole(thumbs) is None:
        return PrintPairs(i, j, sims, float(threshold), typical)
    wi, wj, whole_threshold, whole_typical = _whole_pairs(whole(thumbs), mirror, block)
    detail = {(a, b): s for a, b, s in zip(i.tolist(), j.tolist(), sims.tolist())}
    only_whole = np.array([(a, b) for a, b in zip(wi.tolist(), wj.tolist()) if (a, b) not in detail],
                          np.int64).reshape(-1, 2)
    # the detail similarity of pairs only the whole view found (the others' is known)
    detail.update(zip(map(tuple, only_whole.tolist()), _warped_similarity(trimmed(thumbs), only_whole, mirror,
                                                                         block).tolist()))
    found = np.array(sorted(detail), np.int64).reshape(-1, 2)
    sims = np.array([detail[k] for k in map(tuple, found.tolist())], np.float32)
    return PrintPairs(found[:, 0], found[:, 1], sims, float(threshold), typical, float(whole_threshold),
                      whole_typical)


def _whole_pairs(thumbs: np.ndarray, mirror: bool, block: int):
    """Pairs whose whole thumbnails correlate at the relative threshold (never below 1 - WHOLE_MAX_DISTANCE)."""
    plain = [_standardise(thumbs)]
    mirrored = [_flip(plain[0])] if mirror else []
    n = len(thumbs)
    _, top_s = _nearest(plain, mirrored, min(n - 1, TYPICAL_K), block)
    typical = float(np.median(top_s[:, typical_k(n) - 1]))
    threshold = 1.0 - min(WHOLE_MAX_DISTANCE, RATIO * max(0.0, 1.0 - typical))
    i, j = _above(plain, mirrored, threshold, block)
    return i, j, threshold, typical


def typical_k(n: int) -> int:
    """Which neighbour is "typical": the TYPICAL_K-th, nearer in small sets (a tenth of the rows, at least
    the 2nd) so that it stays among the images of the same kind."""
    return max(1, min(TYPICAL_K, n - 1, max(2, n // 10)))


def relative_threshold(typical: float) -> float:
    """The similarity a pair needs, given the median similarity of rows to their TYPICAL_K-th neighbour."""
    return 1.0 - min(MAX_DISTANCE, RATIO * max(0.0, 1.0 - typical))


def pair_similarity(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, mirror: bool = True) -> np.ndarray:
    """The fingerprint similarity (warps included) of given pairs, e.g. to tell identical from look-alike."""
    if not len(i):
        return np.zeros(0, np.float32)
    return _warped_similarity(trimmed(thumbs), np.stack([i, j], axis=1), mirror, BLOCK_ROWS)


def whole_similarity(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, mirror: bool = True) -> np.ndarray:
    """The correlation of the whole thumbnails of given pairs (the better of plain and mirrored), the
    figure the whole view thresholds; for threshold sweeps and reports."""
    w = _standardise(whole(thumbs))
    found = np.einsum("pw,pw->p", w[i], w[j])
    return np.maximum(found, np.einsum("pw,pw->p", w[i], _flip(w)[j])) if mirror else found


def _detail(values: np.ndarray) -> np.ndarray:
    """The thumbnails less their coarse shading (a Gaussian of DETAIL_SIGMA pixels)."""
    from scipy.ndimage import gaussian_filter

    square = np.asarray(values, np.float32).reshape(-1, SIDE, SIDE)
    return (square - gaussian_filter(square, (0, DETAIL_SIGMA, DETAIL_SIGMA), mode="nearest")).reshape(-1, AREA)


def _standardise(values: np.ndarray) -> np.ndarray:
    values = values - values.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return np.where(norms > 1e-6, values / np.maximum(norms, 1e-6), 0.0).astype(np.float32)


def _rank_rows(thumbs: np.ndarray) -> np.ndarray:
    return np.stack([ranks(t) for t in thumbs]).astype(np.float32) if len(thumbs) else thumbs


def _flip(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows.reshape(-1, SIDE, SIDE)[:, :, ::-1].reshape(rows.shape))


def _base_similarity(plain, mirrored, start: int, stop: int) -> np.ndarray:
    """Rows start..stop against every row, without warps (each row against itself: -inf)."""
    sims = None
    for a, b in [(v, v) for v in plain] + list(zip(plain, mirrored)):
        s = a[start:stop] @ b.T
        sims = s if sims is None else np.maximum(sims, s)
    rows = np.arange(start, stop)
    sims[rows - start, rows] = -np.inf
    return sims


def _above(plain, mirrored, threshold: float, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``i < j`` whose similarity without warps already reaches ``threshold``."""
    n = len(plain[0])
    block = rows_per_block(n, block)
    found_i, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start in range(0, n, block):
        stop = min(n, start + block)
        bi, bj = np.nonzero(_base_similarity(plain, mirrored, start, stop) >= threshold)
        keep = bj > bi + start
        found_i.append(bi[keep] + start)
        found_j.append(bj[keep])
    return np.concatenate(found_i), np.concatenate(found_j)


def _nearest(plain: list[np.ndarray], mirrored: list[np.ndarray], k: int, block: int):
    """The ``k`` most similar other rows of every row, and their similarities (descending)."""
    n = len(plain[0])
    block = rows_per_block(n, block)
    top_j = np.zeros((n, k), np.int64)
    top_s = np.zeros((n, k), np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = _base_similarity(plain, mirrored, start, stop)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-vals, axis=1)
        top_j[start:stop] = np.take_along_axis(part, order, axis=1)
        top_s[start:stop] = np.take_along_axis(vals, order, axis=1)
    return top_j, top_s


@functools.lru_cache(maxsize=1)
def warps():
    """A sparse (variants * AREA, AREA) matrix: bilinear resampling of a thumbnail under each warp."""
    from scipy.sparse import csr_matrix

    params = [(1.0, 1.0, 0.0, 0.0, 0.0)]
    for zx, zy in [(0.95, 0.95), (0.9, 0.9), (0.9, 1.0), (1.0, 0.9), (0.95, 1.0), (1.0, 0.95), (0.9, 0.95),
                   (0.95, 0.9)]:
        for sx in (-1, 0, 1):
            for sy in (-1, 0, 1):
                params.append((zx, zy, sx * (1 - zx) / 2, sy * (1 - zy) / 2, 0.0))
    params += [(1.0, 1.0, 0.0, 0.0, a) for a in (-5.0, -2.5, 2.5, 5.0)]
    params += [(0.95, 0.95, 0.0, 0.0, a) for a in (-5.0, -2.5, 2.5, 5.0)]
    rows, cols, weights = [], [], []
    centre = (SIDE - 1) / 2
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    for v, (zx, zy, sx, sy, angle) in enumerate(params):
        # output pixel -> where it comes from in the source thumbnail (a crop, shifted, rotated)
        u, w = (xx - centre) * zx, (yy - centre) * zy
        t = np.deg2rad(angle)
        x = centre + np.cos(t) * u - np.sin(t) * w + sx * SIDE
        y = centre + np.sin(t) * u + np.cos(t) * w + sy * SIDE
        x, y = np.clip(x, 0, SIDE - 1), np.clip(y, 0, SIDE - 1)
        x0, y0 = np.minimum(np.floor(x).astype(int), SIDE - 2), np.minimum(np.floor(y).astype(int), SIDE - 2)
        fx, fy = x - x0, y - y0
        out = v * AREA + np.arange(AREA)
        for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                               (1, 1, fx * fy)):
            rows.append(out)
            cols.append(((y0 + dy) * SIDE + x0 + dx).ravel())
            weights.append(weight.ravel())
    matrix = csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(params) * AREA, AREA), dtype=np.float32)
    return matrix, len(params)


def _warped_similarity(thumbs: np.ndarray, pairs: np.ndarray, mirror: bool, block: int) -> np.ndarray:
    """For each pair (a, b): the best correlation of a warped a with b, or a warped b with a, both views."""
    matrix, variants = warps()
    thumbs, rank_rows = _detail(thumbs), _detail(_rank_rows(thumbs))  # detail commutes with small warps
    targets = [_standardise(thumbs), _standardise(rank_rows)]
    if mirror:
        targets += [_flip(t) for t in targets]
    best = np.full(len(pairs), -1.0, np.float32)
    per_block = max(1, block // max(1, variants // 8))
    for side in (0, 1):
        source, other = pairs[:, side], pairs[:, 1 - side]
        order = np.argsort(source, kind="stable")
        for start in range(0, len(order), per_block):
            chosen = order[start : start + per_block]
            rows, where = np.unique(source[chosen], return_inverse=True)
            for view, raw in enumerate((thumbs, rank_rows)):
                warped = (matrix @ raw[rows].T).T.reshape(len(rows), variants, AREA)
                warped = _standardise(warped.reshape(-1, AREA)).reshape(len(rows), variants, AREA)
                for target in targets[view::2]:
                    sims = np.einsum("pvw,pw->pv", warped[where], target[other[chosen]]).max(axis=1)
                    best[chosen] = np.maximum(best[chosen], sims)
    return best
