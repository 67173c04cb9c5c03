"""Patient-level results: each patient's (group's) out-of-fold probabilities aggregated, then scored.

Many slices or frames of one patient are not independent evidence. Here every
group of the cache's group column (DICOM PatientID, a NIfTI volume, a CSV's
group) gets one prediction: the mean of its rows' probabilities, and (two
classes) the maximum probability of the positive class, "any slice
positive". These are scored with the same metrics, folds and bootstrap as the
per-image rows (:func:`pipeline.probes.metrics.summarise`), resampling
patients. It needs every patient within one test fold and one label per
patient; otherwise there is no patient-level result, and the log says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .metrics import Resamples, summarise
from .splits import Folds

log = logging.getLogger(__name__)


def aggregate_mean(proba: np.ndarray, index: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, K): the mean of each group's rows."""
    sums = np.zeros((n_groups, proba.shape[1]))
    np.add.at(sums, index, proba)
    return sums / np.bincount(index, minlength=n_groups)[:, None]


def aggregate_max(proba: np.ndarray, index: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, 2): the largest positive-class probability of each group, and one minus it."""
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, index, proba[:, 1])
    return np.stack([1.0 - top, top], axis=1)


AGGREGATIONS = {"mean": aggregate_mean, "max": aggregate_max}  # max: two classes only


@dataclass(frozen=True)
class PatientLevel:
    """Groups, their labels, folds and bootstrap weights; :meth:`metrics` scores one row's predictions."""

    names: np.ndarray
    index: np.ndarray  # group of each row
    y: np.ndarray  # label of each group
    test_fold: np.ndarray  # (repeats, groups)
    weights: Resamples

    @classmethod
    def prepare(cls, y: np.ndarray, groups: np.ndarray | None, folds: Folds, n_boot: int, seed: int):
        """None (logged) where patient-level results cannot be had: no groups, split groups, mixed labels."""
        if groups is None:
            return None
        names, first, index = np.unique(groups, return_index=True, return_inverse=True)
        if len(names) == len(y):
            log.info("no patient-level results: every row is its own group")
            return None
        mixed = int((y != y[first][index]).sum())
        if mixed:
            log.warning("no patient-level results: %d row(s) have another label than the rest of their group", mixed)
            return None
        split = int(sum((f != f[first][index]).any() for f in folds.test_fold))
        if split:
            log.info("no patient-level results: the folds split groups (use --groups auto or the group column)")
            return None
        weights = Resamples(len(names), None, n_boot, seed)
        return cls(names, index, y[first], folds.test_fold[:, first], weights)

    def metrics(self, oof: np.ndarray) -> dict:
        """``{"mean": summary, "max": summary}`` of out-of-fold probabilities ``oof`` (repeats, rows, K)."""
        n, k = len(self.names), oof.shape[2]
        fold_rows = [[np.flatnonzero(f == fold) for fold in np.unique(f)] for f in self.test_fold]
        out = {}
        for how, combine in AGGREGATIONS.items():
            if how == "max" and k != 2:
                continue
            grouped = np.stack([combine(oof[r], self.index, n) for r in range(len(oof))])
            out[how] = summarise(self.y, grouped, fold_rows, self.weights)
        return out
