"""Metrics: scikit-learn's values for every reported number, plus a fast bootstrap.

Point values (per fold and on the pooled out-of-fold predictions) are
scikit-learn's. ROC AUC and log loss call scikit-learn. The bootstrap needs the
same metrics a thousand times per (layer, probe); calling scikit-learn that
often would cost minutes, so the bootstrap uses vectorised, sample-weighted
versions of the same formulas (a resample is a vector of integer weights).
Tests check them against scikit-learn on resampled arrays. The five metrics of
the confusion matrix alone (accuracy, balanced accuracy, macro F1,
sensitivity, specificity) take their point value from the same formulas at
unit weights: whole counts divided as scikit-learn divides them, so the value
is scikit-learn's to the last bit (tests assert equality), at a thirtieth of
the cost of scikit-learn's checks of its inputs, which were most of the time of
a grid without intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import sklearn
from scipy.integrate import trapezoid
from sklearn import metrics as skm

from ..errors import ProbeError

N_BOOT = 1000
CI_LEVEL = 0.95
_CHUNK = 250  # bootstrap samples per vectorised block, to bound memory
_BLOCK_CELLS = 1 << 22  # and at most this many weights per block (32 MB): bounded memory at a million rows


@dataclass(frozen=True)
class Metric:
    """A metric on labels ``y`` (0..K-1) and class probabilities ``proba`` (n, K)."""

    label: str
    higher_is_better: bool
    binary_only: bool
    reference: Callable[[np.ndarray, np.ndarray], float]  # scikit-learn's function
    weighted: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (B, n) weights -> (B,)
    of_counts: bool = False  # a function of the confusion matrix: ``weighted`` at unit weights is exact
    # scikit-learn's own arithmetic without its checks of the inputs; None where the inputs need those checks
    unchecked: Callable[[np.ndarray, np.ndarray], "float | None"] | None = None

    def point(self, y: np.ndarray, proba: np.ndarray) -> float:
        """scikit-learn's value on ``y`` and ``proba``; from the counts where the metric is one of counts."""
        if self.of_counts:
            return float(self.weighted(np.ones((1, len(y))), y, proba)[0])
        if self.unchecked is not None:
            value = self.unchecked(y, proba)
            if value is not None:
                return value
        with sklearn.config_context(skip_parameter_validation=True):  # our own constant arguments
            return float(self.reference(y, proba))


def _pred(proba: np.ndarray) -> np.ndarray:
    return np.argmax(proba, axis=1)


def _labels(proba: np.ndarray) -> np.ndarray:
    return np.arange(proba.shape[1])


def sk_roc_auc(y, proba):
    if proba.shape[1] == 2:
        return skm.roc_auc_score(y, proba[:, 1])
    return skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=_labels(proba))


def sk_balanced_accuracy(y, proba):
    return skm.balanced_accuracy_score(y, _pred(proba))


def sk_accuracy(y, proba):
    return skm.accuracy_score(y, _pred(proba))


def sk_f1_macro(y, proba):
    return skm.f1_score(y, _pred(proba), average="macro", labels=_labels(proba), zero_division=0)


def sk_log_loss(y, proba):
    return skm.log_loss(y, proba, labels=_labels(proba))


def sk_sensitivity(y, proba):
    return skm.recall_score(y, _pred(proba), pos_label=1, zero_division=0)


def sk_specificity(y, proba):
    return skm.recall_score(y, _pred(proba), pos_label=0, zero_division=0)


# scikit-learn's arithmetic, step by step, on inputs that need none of its checks --------------
# Its checks of the inputs (types, shapes, labels, finiteness) took 95% of the time of a call, and a grid
# without intervals scores every (layer, probe) six times. On any other input these return None and
# scikit-learn itself is called (with its warnings and errors). Tests assert equality to the last bit.
def unchecked_roc_auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    """``roc_auc_score(y, proba[:, 1])`` of scikit-learn 1.9 (``roc_curve`` with its dropped intermediate
    points, then ``auc``'s trapezoids) for two classes, both present, finite scores in float64."""
    if proba.ndim != 2 or proba.shape[1] != 2 or proba.dtype != np.float64 or y.ndim != 1:
        return None
    score = proba[:, 1]
    positive = y == 1
    n_positive = int(np.count_nonzero(positive))
    if n_positive == 0 or n_positive == len(y) or np.count_nonzero(y == 0) != len(y) - n_positive \
            or not np.isfinite(score).all():
        return None
    # confusion_matrix_at_thresholds: scores in decreasing order (within ties the order changes no count),
    # one threshold at the end of each run of equal scores; whole counts, exact in float64
    order = np.argsort(score, kind="stable")[::-1]
    ends = np.r_[np.flatnonzero(np.diff(score[order])), len(score) - 1]
    tps = np.cumsum(positive[order].astype(np.float64))[ends]
    fps = 1 + ends.astype(np.float64) - tps
    if len(fps) > 2:  # roc_curve(drop_intermediate=True)
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps = fps[keep], tps[keep]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return float(trapezoid(tps / tps[-1], fps / fps[-1]))  # auc(fpr, tpr): fpr never decreases


def unchecked_log_loss(y: np.ndarray, proba: np.ndarray) -> float | None:
    """``log_loss(y, proba, labels=range(K))`` of scikit-learn 1.9 for float64 probabilities in [0, 1] whose
    rows sum to one (as its check has it) and labels 0..K-1: the mean of -log of each row's probability of
    its own class, clipped to [eps, 1 - eps] (the one-hot sum adds only zeros to it)."""
    if proba.ndim != 2 or proba.dtype != np.float64 or y.ndim != 1 or len(y) != len(proba) or len(y) == 0:
        return None
    k = proba.shape[1]
    if k < 2 or y.min() < 0 or y.max() >= k or proba.min() < 0 or proba.max() > 1:
        return None
    eps = np.finfo(np.float64).eps
    if not np.isclose(proba.sum(axis=1), 1.0, rtol=np.sqrt(eps), atol=1e-8).all():
        return None  # scikit-learn warns that these are not probabilities
    own = np.clip(proba[np.arange(len(y)), y], eps, 1 - eps)
    return float(np.mean(-np.log(own)))


# Weighted versions: W is (B, n) non-negative weights, one row per resample --------------
def _confusion(W, y, proba) -> np.ndarray:
    """(B, K, K) weighted confusion matrices, true class by predicted class."""
    k = proba.shape[1]
    cell = y * k + _pred(proba)
    out = np.stack([W[:, cell == c].sum(axis=1) for c in range(k * k)], axis=1)
    return out.reshape(len(W), k, k)


def w_accuracy(W, y, proba):
    cm = _confusion(W, y, proba)
    return np.trace(cm, axis1=1, axis2=2) / cm.sum(axis=(1, 2))


def w_balanced_accuracy(W, y, proba):
    cm = _confusion(W, y, proba)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diagonal(cm, axis1=1, axis2=2) / cm.sum(axis=2)
        return np.nanmean(recall, axis=1)  # like scikit-learn, classes absent from y are skipped


def w_f1_macro(W, y, proba):
    cm = _confusion(W, y, proba)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    denominator = cm.sum(axis=2) + cm.sum(axis=1)  # 2 tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    return f1.mean(axis=1)


def _recall_of(c: int):
    def recall(W, y, proba):
        cm = _confusion(W, y, proba)
        total = cm[:, c, :].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, cm[:, c, c] / total, 0.0)

    return recall


def w_log_loss(W, y, proba):
    eps = np.finfo(proba.dtype).eps
    loss = -np.log(np.clip(proba[np.arange(len(y)), y], eps, 1 - eps))
    return (W @ loss) / W.sum(axis=1)


def _binary_auc(W, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC (ties count one half) for each row of W."""
    order = np.argsort(score, kind="mergesort")
    s, pos = score[order], positive[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    Ws = W[:, order]
    P = np.add.reduceat(Ws * pos, starts, axis=1)
    N = np.add.reduceat(Ws * ~pos, starts, axis=1)
    below = np.cumsum(N, axis=1) - N
    with np.errstate(invalid="ignore", divide="ignore"):
        return (P * (below + 0.5 * N)).sum(axis=1) / (P.sum(axis=1) * N.sum(axis=1))


def w_roc_auc(W, y, proba):
    if proba.shape[1] == 2:
        return _binary_auc(W, y == 1, proba[:, 1])
    return np.mean([_binary_auc(W, y == c, proba[:, c]) for c in range(proba.shape[1])], axis=0)


METRICS: dict[str, Metric] = {
    "roc_auc": Metric("ROC AUC", True, False, sk_roc_auc, w_roc_auc, unchecked=unchecked_roc_auc),
    "balanced_accuracy": Metric("balanced accuracy", True, False, sk_balanced_accuracy, w_balanced_accuracy, True),
    "accuracy": Metric("accuracy", True, False, sk_accuracy, w_accuracy, True),
    "f1_macro": Metric("macro F1", True, False, sk_f1_macro, w_f1_macro, True),
    "log_loss": Metric("log loss", False, False, sk_log_loss, w_log_loss, unchecked=unchecked_log_loss),
    "sensitivity": Metric("sensitivity", True, True, sk_sensitivity, _recall_of(1), True),
    "specificity": Metric("specificity", True, True, sk_specificity, _recall_of(0), True),
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ProbeError(f"unknown metric {name!r}; available: {', '.join(METRICS)}") from None


def metric_names(n_classes: int) -> list[str]:
    """The metrics that apply to ``n_classes`` classes (sensitivity/specificity: binary only)."""
    return [name for name, m in METRICS.items() if n_classes == 2 or not m.binary_only]


def bootstrap_weights(n_rows: int, groups: np.ndarray | None, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_rows) resampling counts; whole groups are resampled when groups are given.

    The whole matrix: n_boot x n_rows x 8 bytes (8 GB at a million rows). :func:`summarise` takes a
    :class:`Resamples` instead, which makes the same rows a block at a time.
    """
    return np.concatenate([np.zeros((0, n_rows))] + list(Resamples(n_rows, groups, n_boot, seed).blocks(n_boot)))


@dataclass(frozen=True)
class Resamples:
    """The bootstrap resamples of :func:`bootstrap_weights`, made block by block (memory bounded by one block).

    The generator is consumed in the same order as for the whole matrix, so the blocks stacked are
    exactly ``bootstrap_weights(n_rows, groups, n_boot, seed)``.
    """

    n_rows: int
    groups: np.ndarray | None
    n_boot: int
    seed: int

    def __len__(self) -> int:
        return self.n_boot

    def block_size(self) -> int:
        """Resamples per block: at most _CHUNK, and at most _BLOCK_CELLS weights."""
        return max(1, min(_CHUNK, _BLOCK_CELLS // max(1, self.n_rows)))

    def blocks(self, size: int | None = None):
        """Yield (b, n_rows) float64 weight blocks, n_boot rows in all."""
        size = size or self.block_size()
        rng = np.random.default_rng(self.seed)
        if self.groups is None:
            index, n_units = None, self.n_rows
        else:
            names, index = np.unique(self.groups, return_inverse=True)
            n_units = len(names)
        p = np.full(n_units, 1.0 / max(1, n_units))
        for start in range(0, self.n_boot, size):
            counts = rng.multinomial(n_units, p, size=min(size, self.n_boot - start))
            yield (counts if index is None else counts[:, index]).astype(np.float64)


def summarise(y: np.ndarray, oof: np.ndarray, fold_rows: list[list[np.ndarray]],
              weights: "Resamples | np.ndarray") -> dict:
    """Every metric as fold mean and sd, pooled out-of-fold value and bootstrap interval.

    ``oof`` is (repeats, n, K) out-of-fold probabilities; ``fold_rows[r]`` lists
    the test rows of each fold of repeat ``r``; ``weights`` is a :class:`Resamples`
    (made block by block, every metric scored on each block) or the matrix of
    :func:`bootstrap_weights`. The interval is the percentile interval of the
    metric averaged over repeats.
    """
    names = metric_names(oof.shape[2])
    blocks = weights.blocks() if isinstance(weights, Resamples) else (
        weights[i:i + _CHUNK] for i in range(0, len(weights), _CHUNK))
    scores: dict[str, list[np.ndarray]] = {name: [np.full(0, np.nan)] for name in names}
    for block in blocks:
        for name in names:
            scores[name].append(np.mean([METRICS[name].weighted(block, y, oof[r]) for r in range(len(oof))], axis=0))
    out = {}
    alpha = (1 - CI_LEVEL) / 2 * 100
    for name in names:
        metric = METRICS[name]
        folds = [metric.point(y[rows], oof[r][rows]) for r in range(len(oof)) for rows in fold_rows[r]]
        pooled = float(np.mean([metric.point(y, oof[r]) for r in range(len(oof))]))
        boot = np.concatenate(scores[name])
        low, high = np.nanpercentile(boot, [alpha, 100 - alpha]) if np.isfinite(boot).any() else (np.nan, np.nan)
        out[name] = {
            "mean": float(np.mean(folds)),
            "sd": float(np.std(folds, ddof=1)) if len(folds) > 1 else 0.0,
            "folds": folds,
            "pooled": pooled,
            "ci": [float(low), float(high)],
        }
    return out
