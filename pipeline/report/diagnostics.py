"""What a person checks on the chosen probe: confusion, ROC, calibration, an operating point.

All from stored out-of-fold probabilities (one repeat of the folds: each image
predicted once, by the probe that did not see it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ProbeError

N_BINS = 10
TARGETS = ("sensitivity", "specificity")


@dataclass(frozen=True)
class Calibration:
    """Equal-width bins of the predicted probability: the reliability diagram, ECE and Brier score."""

    edges: tuple[float, ...]
    mean_predicted: tuple[float | None, ...]  # per bin; None where a bin is empty
    observed: tuple[float | None, ...]
    counts: tuple[int, ...]
    ece: float  # sum over bins of (bin share) x |observed - mean predicted|
    brier: float  # mean squared error of the probabilities (binary: of the positive class)
    what: str  # what was binned

    def as_dict(self) -> dict:
        return asdict(self)


def calibration(y: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> Calibration:
    """Binary: P(positive class, index 1) against the share of positives. More classes: the top-label
    confidence against accuracy, and the multi-class Brier score (sum over classes, mean over rows)."""
    y, proba = np.asarray(y), np.asarray(proba, dtype=np.float64)
    if proba.shape[1] == 2:
        p, hit, what = proba[:, 1], (y == 1).astype(float), "P(positive class) against the share of positives"
        brier = float(np.mean((p - hit) ** 2))
    else:
        p, hit = proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float)
        what = "top-class confidence against accuracy"
        brier = float(np.mean(((np.eye(proba.shape[1])[y] - proba) ** 2).sum(axis=1)))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    mean_p, observed, counts, ece = [], [], [], 0.0
    for b in range(n_bins):
        inside = which == b
        n = int(inside.sum())
        counts.append(n)
        if n == 0:
            mean_p.append(None)
            observed.append(None)
            continue
        mean_p.append(float(p[inside].mean()))
        observed.append(float(hit[inside].mean()))
        ece += n / len(p) * abs(observed[-1] - mean_p[-1])
    return Calibration(tuple(edges.tolist()), tuple(mean_p), tuple(observed), tuple(counts), float(ece), brier, what)


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on P(positive) chosen to reach a stated sensitivity or specificity, and what it gives."""

    target: str
    wanted: float
    threshold: float
    sensitivity: float
    specificity: float
    ppv: float | None
    npv: float | None
    counts: dict  # tp, fp, tn, fn

    def as_dict(self) -> dict:
        return asdict(self)


def operating_point(y: np.ndarray, p: np.ndarray, target: str = "sensitivity", wanted: float = 0.95) -> OperatingPoint:
    """The highest threshold whose sensitivity reaches ``wanted`` (or the lowest whose specificity does)."""
    if target not in TARGETS:
        raise ProbeError(f"an operating point is set by {' or '.join(TARGETS)}, not {target!r}")
    if not 0.0 < wanted <= 1.0:
        raise ProbeError(f"the wanted {target} must lie in (0, 1], got {wanted}")
    y, p = np.asarray(y) == 1, np.asarray(p, dtype=np.float64)
    candidates = np.unique(np.concatenate([p, [np.inf]]))

    def at(t):
        predicted = p >= t
        tp, fn = int((predicted & y).sum()), int((~predicted & y).sum())
        tn, fp = int((~predicted & ~y).sum()), int((predicted & ~y).sum())
        return tp, fp, tn, fn

    if target == "sensitivity":  # sensitivity falls as the threshold rises: the highest one that still reaches it
        ok = [t for t in candidates if (lambda c: c[0] / max(1, c[0] + c[3]))(at(t)) >= wanted]
        threshold = float(max(ok))
    else:
        ok = [t for t in candidates if (lambda c: c[2] / max(1, c[2] + c[1]))(at(t)) >= wanted]
        threshold = float(min(ok))
    tp, fp, tn, fn = at(threshold)
    return OperatingPoint(target, wanted, threshold, tp / max(1, tp + fn), tn / max(1, tn + fp),
                          tp / (tp + fp) if tp + fp else None, tn / (tn + fn) if tn + fn else None,
                          {"tp": tp, "fp": fp, "tn": tn, "fn": fn})


def confusion(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Counts of (true class, predicted class) with the most probable class predicted."""
    k = proba.shape[1]
    out = np.zeros((k, k), dtype=np.int64)
    np.add.at(out, (np.asarray(y), np.asarray(proba).argmax(axis=1)), 1)
    return out
