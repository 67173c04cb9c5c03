"""Learning curves: one probe on one output, scored at growing shares of each training part.

Every stored outer fold keeps its test part; its training part is cut once
into ``steps`` pieces that keep groups whole and classes balanced (the same
splitter as the outer folds), and the probe is fitted on the first piece, the
first two, and so on, so the subsamples are nested and the points are paired
by fold. The full share reuses the stored fold scores of the results row (the
same fit). The interval of each point is the corrected resampled t interval of
its fold mean (see :mod:`.compare`); the gain of the last doubling (half the
training part to all of it) is a paired difference over the folds.

Public API (stable): ``learning_curve(cache_path, results, output, probe,
metric="roc_auc", steps=4, jobs=1) -> LearningCurve`` with ``.points``
(``CurvePoint``: fraction, n_train, mean, low, high, scores) and
``.last_doubling`` (a ``compare.Difference``, or None when ``steps`` is odd).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import open_cache
from ..errors import ProbeError
from .compare import Difference, corrected_t
from .data import load_probe_data
from .task import fit_fold
from .metrics import get_metric
from .registry import ProbeSettings, get_probe
from .splits import inner_splits, make_folds

log = logging.getLogger(__name__)

DEFAULT_STEPS = 4


@dataclass(frozen=True)
class CurvePoint:
    fraction: float
    n_train: float  # mean training rows over the folds
    mean: float
    low: float
    high: float
    scores: tuple[float, ...]  # one per (repeat, fold), in the stored fold order

    def as_dict(self) -> dict:
        return {"fraction": self.fraction, "n_train": self.n_train, "mean": self.mean, "low": self.low,
                "high": self.high, "scores": list(self.scores)}


@dataclass(frozen=True)
class LearningCurve:
    output: str
    probe: str
    metric: str
    steps: int
    points: tuple[CurvePoint, ...]  # growing fractions, the last one 1
    last_doubling: Difference | None  # score(1) - score(1/2), paired over folds

    def as_dict(self) -> dict:
        return {"output": self.output, "probe": self.probe, "metric": self.metric, "steps": self.steps,
                "points": [p.as_dict() for p in self.points],
                "last_doubling": None if self.last_doubling is None else self.last_doubling.as_dict()}


def nested_pieces(y: np.ndarray, groups: np.ndarray | None, steps: int, seed: int, class_names: list[str],
                  group_name: str | None = None) -> list[np.ndarray]:
    """Positions into ``y`` of the first 1, 2, ..., ``steps`` pieces of a stratified (group) split."""
    try:
        piece = make_folds(y, groups, steps, 1, seed, class_names, group_name).test_fold[0]
    except ProbeError as exc:
        raise ProbeError(f"the learning curve cuts each training part into {steps} pieces, but {exc}; "
                         "use fewer steps (--curve-steps)") from None
    return [np.flatnonzero(piece <= s) for s in range(steps)]


def _score(metric: str, y: np.ndarray, proba: np.ndarray) -> float:
    return float(get_metric(metric).point(y, proba))


def learning_curve(cache_path: str | Path, results, output: str, probe: str, metric: str = "roc_auc",
                   steps: int = DEFAULT_STEPS, jobs: int = 1) -> LearningCurve:
    """Score ``probe`` on ``output`` at fractions 1/steps, 2/steps, ..., 1 of every stored training part.

    ``results`` is the ``ProbeResults`` of ``cache_path`` (its folds, groups,
    settings and seed are reused; its row of (output, probe), if present, gives
    the full share without refitting).
    """
    from joblib import Parallel, delayed

    get_probe(probe)
    get_metric(metric)
    if steps < 2:
        raise ProbeError(f"steps (--curve-steps) must be at least 2, got {steps}")
    settings = ProbeSettings.from_dict(results.config["settings"])
    seed = int(results.config["seed"])
    with open_cache(cache_path) as cache:
        if cache.key != results.cache.get("key"):
            raise ProbeError(f"the results were made from another cache than {Path(cache_path).name}; "
                             "run `layerprobe probe` on it")
        data = load_probe_data(cache, (output,), results.data.get("groups"))
    if data.ids_sha256 != results.data.get("ids_sha256") or data.groups_sha256 != results.data.get("groups_sha256"):
        raise ProbeError("the cache's labelled rows or groups changed since the probe results were made; "
                         "run `layerprobe probe` again")
    name = data.outputs[0].name
    X, y, groups, folds = data.codes[name], data.y, data.groups, results.folds
    calls, keys, sizes = [], [], {}
    for r, k, train, test in folds.splits():
        pieces = nested_pieces(y[train], None if groups is None else groups[train], steps, seed + r,
                               data.class_names, data.group_name)
        for s, rows in enumerate(pieces[:-1]):
            sub = train[rows]
            inner = inner_splits(y[sub], None if groups is None else groups[sub], settings.inner_folds, seed,
                                 data.class_names)
            keys.append((s, r, k))
            sizes.setdefault(s, []).append(len(sub))
            calls.append(delayed(fit_fold)(probe, settings, X, y, sub, test, inner, seed))
        sizes.setdefault(steps - 1, []).append(len(train))
    log.info("learning curve of %s on %s: %d fits", probe, name, len(calls))
    done = dict(zip(keys, Parallel(n_jobs=jobs)(calls)))
    tests = {(r, k): test for r, k, _, test in folds.splits()}
    scores = {s: [_score(metric, y[tests[(r, k)]], done[(s, r, k)]["proba"]) for r, k, _, _ in folds.splits()]
              for s in range(steps - 1)}
    scores[steps - 1] = _full_scores(results, name, probe, metric, X, y, folds, settings, seed, data, jobs)
    return _curve(name, probe, metric, steps, scores, sizes, folds)


def _full_scores(results, output, probe, metric, X, y, folds, settings, seed, data, jobs) -> list[float]:
    row = results.row(output, probe)
    if row is not None and row["metrics"].get(metric, {}).get("folds"):
        return [float("nan") if v is None else float(v) for v in row["metrics"][metric]["folds"]]
    from joblib import Parallel, delayed

    calls = []
    for r, k, train, test in folds.splits():
        inner = inner_splits(y[train], None if data.groups is None else data.groups[train], settings.inner_folds,
                             seed, data.class_names)
        calls.append(delayed(fit_fold)(probe, settings, X, y, train, test, inner, seed))
    fits = Parallel(n_jobs=jobs)(calls)
    return [_score(metric, y[test], fit["proba"]) for (_, _, _, test), fit in zip(folds.splits(), fits)]


def _curve(output: str, probe: str, metric: str, steps: int, scores: dict, sizes: dict, folds) -> LearningCurve:
    n_total = folds.test_fold.shape[1]
    test_rows = np.mean([len(test) for _, _, _, test in folds.splits()])
    points = []
    for s in range(steps):
        n_train = float(np.mean(sizes[s]))
        d = corrected_t(scores[s], test_rows / n_train)
        points.append(CurvePoint((s + 1) / steps, n_train, d.mean, d.low, d.high, tuple(scores[s])))
    doubling = None
    if steps % 2 == 0:
        half = steps // 2 - 1
        diffs = np.asarray(scores[steps - 1]) - np.asarray(scores[half])
        doubling = corrected_t(diffs, test_rows / (n_total - test_rows))
    return LearningCurve(output, probe, metric, steps, tuple(points), doubling)
