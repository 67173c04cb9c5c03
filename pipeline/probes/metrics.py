"""Metrics: scikit-learn's own for every reported number, plus a fast bootstrap.

Point values (per fold and on the pooled out-of-fold predictions) are computed
by calling scikit-learn. The bootstrap needs the same metrics a thousand times
per (layer, probe); calling scikit-learn that often would cost minutes, so the
bootstrap uses vectorised, sample-weighted versions of the same formulas (a
resample is a vector of integer weights). Tests check them against
scikit-learn on resampled arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn import metrics as skm

from ..errors import ProbeError

N_BOOT = 1000
CI_LEVEL = 0.95
_CHUNK = 250  # bootstrap samples per vectorised block, to bound memory


@dataclass(frozen=True)
class Metric:
    """A metric on labels ``y`` (0..K-1) and class probabilities ``proba`` (n, K)."""

    label: str
    higher_is_better: bool
    binary_only: bool
    point: Callable[[np.ndarray, np.ndarray], float]  # scikit-learn
    weighted: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (B, n) weights -> (B,)


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
    "roc_auc": Metric("ROC AUC", True, False, sk_roc_auc, w_roc_auc),
    "balanced_accuracy": Metric("balanced accuracy", True, False, sk_balanced_accuracy, w_balanced_accuracy),
    "accuracy": Metric("accuracy", True, False, sk_accuracy, w_accuracy),
    "f1_macro": Metric("macro F1", True, False, sk_f1_macro, w_f1_macro),
    "log_loss": Metric("log loss", False, False, sk_log_loss, w_log_loss),
    "sensitivity": Metric("sensitivity", True, True, sk_sensitivity, _recall_of(1)),
    "specificity": Metric("specificity", True, True, sk_specificity, _recall_of(0)),
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
    """(n_boot, n_rows) resampling counts; whole groups are resampled when groups are given."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot).astype(np.float64)
    names, index = np.unique(groups, return_inverse=True)
    counts = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)
    return counts[:, index].astype(np.float64)


def summarise(y: np.ndarray, oof: np.ndarray, fold_rows: list[list[np.ndarray]], weights: np.ndarray) -> dict:
    """Every metric as fold mean and sd, pooled out-of-fold value and bootstrap interval.

    ``oof`` is (repeats, n, K) out-of-fold probabilities; ``fold_rows[r]`` lists
    the test rows of each fold of repeat ``r``; ``weights`` comes from
    :func:`bootstrap_weights`. The interval is the percentile interval of the
    metric averaged over repeats.
    """
    out = {}
    alpha = (1 - CI_LEVEL) / 2 * 100
    for name in metric_names(oof.shape[2]):
        metric = METRICS[name]
        folds = [float(metric.point(y[rows], oof[r][rows])) for r in range(len(oof)) for rows in fold_rows[r]]
        pooled = float(np.mean([metric.point(y, oof[r]) for r in range(len(oof))]))
        boot = np.concatenate([np.full(0, np.nan)] + [
            np.mean([metric.weighted(weights[i:i + _CHUNK], y, oof[r]) for r in range(len(oof))], axis=0)
            for i in range(0, len(weights), _CHUNK)
        ])
        low, high = np.nanpercentile(boot, [alpha, 100 - alpha]) if np.isfinite(boot).any() else (np.nan, np.nan)
        out[name] = {
            "mean": float(np.mean(folds)),
            "sd": float(np.std(folds, ddof=1)) if len(folds) > 1 else 0.0,
            "folds": folds,
            "pooled": pooled,
            "ci": [float(low), float(high)],
        }
    return out
