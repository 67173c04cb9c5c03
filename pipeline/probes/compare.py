"""Paired comparisons of probe rows on their shared folds: the corrected resampled t-test.

Every (output, probe) row of a results file is scored on the same stored
folds and repeats, so two rows give ``J = folds x repeats`` paired
differences. The folds' training parts overlap, so these differences are
correlated and the naive t-test is far too confident; Nadeau & Bengio (2003)
correct the variance of their mean from ``s^2 / J`` to
``(1 / J + n_test / n_train) s^2``. The same corrected Student t is the
posterior of the mean difference in the Bayesian correlated t-test (Corani &
Benavoli 2015), which gives the probability that one row is worse than
another directly.

Why this test and not a paired bootstrap of out-of-fold predictions: it needs
only the per-fold scores that every results file already stores (old files
included), it keeps the pairing by fold exactly, and it accounts for the
variance due to the training set, which a bootstrap of one set of
out-of-fold predictions does not see. It needs several estimates: with one
5-fold run (``J = 5``) the interval is about 1.7 times wider than with
5 x 5 (``J = 25``), hence the default repeats on small data
(:func:`default_repeats`).

Public API (stable; used by ``bench/advice.py`` and the advice):

- ``corrected_t(diffs, ratio, confidence) -> Difference``: mean, interval,
  probability that the mean difference is above 0, t and degrees of freedom.
- ``compare_outputs(results, metric, probe=None) -> Comparison``: one probe's
  rows (the best probe's by default) against the best and against the last
  output: tied set, chosen output, P(last worse), the three-valued verdict.
- ``compare_all(results) -> dict``: ``{metric: {probe: Comparison.as_dict()}}``
  for ROC AUC and balanced accuracy, as stored in results files.
- ``default_repeats(n_rows, folds, repeats) -> int``.

Which output is chosen: the last when the data are shown "similar" (no output
beats it by more than ``MARGIN``, an equivalence test) or when no output beats
chance (a default, said so); otherwise the best. Being tied with the best at
95% only says the last output is not *shown* worse: on 200 images it can be
tied while it is probably worse (P(last worse) 0.94 on the advice panel's JPEG
task, where the held-out set puts it 0.05 ROC AUC behind). The advice then
names it as the simpler alternative with the loss it may cost.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ProbeError

CONFIDENCE = 0.95
MIN_ESTIMATES = 25  # folds x repeats wanted by default below SMALL_DATA rows
SMALL_DATA = 2000
MARGIN = 0.02  # how much better than the last output another may be while the data still count as "similar"
CEILING = 0.99  # a tied output at or above this score means the task is saturated
LOGITS = "logits"
ADVICE_METRICS = ("roc_auc", "balanced_accuracy")


def chance_level(metric: str, n_classes: int) -> float:
    """The score of a probe that learned nothing."""
    if metric == "roc_auc":
        return 0.5
    if metric == "balanced_accuracy":
        return 1.0 / n_classes
    raise ProbeError(f"comparisons read roc_auc or balanced_accuracy, not {metric!r}")


def default_repeats(n_rows: int, folds: int, repeats: int | None = None) -> int:
    """``repeats`` if given; else enough repeats for ``MIN_ESTIMATES`` paired estimates below
    ``SMALL_DATA`` rows, one repeat above (where one run already gives tight intervals)."""
    if repeats is not None:
        return repeats
    if n_rows >= SMALL_DATA:
        return 1
    return max(1, math.ceil(MIN_ESTIMATES / folds))


@dataclass(frozen=True)
class Difference:
    """The mean of paired differences ``a - b`` with a corrected interval.

    ``p_above`` is the probability that the true mean difference is above 0
    (the posterior of the correlated t-test), i.e. that ``b`` is worse than ``a``.
    """

    mean: float
    low: float
    high: float
    p_above: float
    t: float | None  # None when every difference is the same (zero spread)
    df: int
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def corrected_t(diffs, ratio: float, confidence: float = CONFIDENCE) -> Difference:
    """Nadeau & Bengio's corrected resampled t on paired fold differences.

    ``diffs``: one difference per (repeat, fold); ``ratio``: test rows / training
    rows of one fold (about ``1 / (folds - 1)``). Undefined (NaN) differences are
    dropped. With zero spread the interval collapses to the mean and the
    probability is 1, 0 or one half.
    """
    from scipy.stats import t as student

    d = np.asarray([v for v in np.ravel(np.asarray(diffs, dtype=np.float64)) if math.isfinite(v)])
    if d.size < 2:
        raise ProbeError(f"a paired comparison needs at least 2 fold estimates, got {d.size}")
    if not 0 < confidence < 1:
        raise ProbeError(f"confidence must lie between 0 and 1, got {confidence}")
    mean, df = float(d.mean()), d.size - 1
    var = float(d.var(ddof=1))
    se = math.sqrt((1.0 / d.size + ratio) * var)
    if se == 0.0 or se < 1e-12 * max(1.0, abs(mean)):
        return Difference(mean, mean, mean, 0.5 if mean == 0 else float(mean > 0), None, df, int(d.size))
    q = float(student.ppf(0.5 + confidence / 2, df))
    t = mean / se
    return Difference(mean, mean - q * se, mean + q * se, float(student.cdf(t, df)), t, df, int(d.size))


def holdout_ratio(test_fold: np.ndarray) -> float:
    """Mean over every (repeat, fold) of test rows / training rows."""
    test_fold = np.asarray(test_fold)
    ratios = []
    for r in range(test_fold.shape[0]):
        for k in np.unique(test_fold[r]):
            n_test = int((test_fold[r] == k).sum())
            ratios.append(n_test / (test_fold.shape[1] - n_test))
    return float(np.mean(ratios))


@dataclass(frozen=True)
class OutputScore:
    """One output of the compared probe: its fold mean, and the best minus it."""

    output: str
    mean: float
    sd: float
    interval: tuple[float, float]  # corrected interval of its own mean
    behind_best: Difference  # best - this
    tied: bool  # the interval of best - this covers 0

    def as_dict(self) -> dict:
        return {"output": self.output, "mean": self.mean, "sd": self.sd, "interval": list(self.interval),
                "behind_best": self.behind_best.as_dict(), "tied": self.tied}


@dataclass(frozen=True)
class Comparison:
    """One probe's outputs compared pairwise on the shared folds, for one metric.

    ``verdict`` is "different" when the last output is worse than the best with
    ``confidence``; "similar" when the task has signal and no output beats the
    last by more than ``margin`` (upper bounds of every ``output - last``);
    "uncertain" otherwise. ``chosen`` is the last output when the verdict is
    "similar" or nothing beats chance, else the best (equal means: the deeper).
    """

    metric: str
    probe: str
    confidence: float
    margin: float
    n_estimates: int
    ratio: float
    chance: float
    outputs: tuple[OutputScore, ...]  # depth order
    best: str
    last: str
    chosen: str
    tied: tuple[str, ...]  # in depth order, the best included
    last_behind_best: Difference  # best - last
    beats_last_by_at_most: float  # the largest upper bound of (output - last), 0 if last is the only output
    signal: bool  # the best output's interval lies above chance
    saturated: bool  # a tied output scores at least CEILING
    verdict: str

    def score(self, output: str) -> OutputScore:
        return next(o for o in self.outputs if o.output == output)

    @property
    def p_last_worse(self) -> float:
        return self.last_behind_best.p_above

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("metric", "probe", "confidence", "margin", "n_estimates", "ratio",
                                             "chance", "best", "last", "chosen", "beats_last_by_at_most", "signal",
                                             "saturated", "verdict")}
        return {**out, "tied": list(self.tied), "p_last_worse": self.p_last_worse,
                "last_behind_best": self.last_behind_best.as_dict(), "outputs": [o.as_dict() for o in self.outputs]}


def fold_scores(row: dict, metric: str) -> np.ndarray:
    values = row["metrics"].get(metric, {}).get("folds")
    if not values:
        raise ProbeError(f"row {row['output']} / {row['probe']} stores no per-fold {metric}; run `layerprobe probe` "
                         "again to store them")
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def feature_rows(rows: list[dict], metric: str) -> list[dict]:
    return [r for r in rows if not r["output"].startswith(f"{LOGITS}/") and metric in r["metrics"]
            and r["metrics"][metric].get("mean") is not None and math.isfinite(r["metrics"][metric]["mean"])]


def best_probe(rows: list[dict], metric: str) -> str:
    """The probe of the row with the highest fold mean (ties: the probe listed first)."""
    scored = feature_rows(rows, metric)
    if not scored:
        raise ProbeError(f"the results hold no finite {metric} on any feature layer")
    return max(scored, key=lambda r: (r["metrics"][metric]["mean"], -scored.index(r)))["probe"]


def score_against_best(folds: dict[str, np.ndarray], ratio: float, chance: float,
                       confidence: float = CONFIDENCE) -> tuple[list[OutputScore], str]:
    """Each candidate's fold mean and corrected interval, and the best minus it on the shared folds.

    ``folds`` maps candidate names, in order, to per-fold scores in the same fold
    order. Equal means go to the later candidate (the deeper output of one model).
    Used for the layers of one model (:func:`compare_rows`) and for every
    (model, layer) of a study (``study.compare_models``).
    """
    names = list(folds)
    means = {o: float(np.nanmean(v)) for o, v in folds.items()}
    best = max(names, key=lambda o: (means[o], names.index(o)))
    scores = []
    for o in names:
        own = corrected_t(folds[o] - chance, ratio, confidence)
        behind = corrected_t(folds[best] - folds[o], ratio, confidence)
        tied = o == best or behind.low <= 0.0
        interval = (max(0.0, own.low + chance), min(1.0, own.high + chance))  # both metrics lie in [0, 1]
        scores.append(OutputScore(o, means[o], float(np.nanstd(folds[o], ddof=1)), interval, behind, tied))
    return scores, best


def compare_rows(rows: list[dict], metric: str, ratio: float, n_classes: int, probe: str | None = None,
                 confidence: float = CONFIDENCE, margin: float = MARGIN) -> Comparison:
    """Compare one probe's rows (depth order, each with per-fold scores in the same fold order)."""
    chance = chance_level(metric, n_classes)
    probe = probe or best_probe(rows, metric)
    mine = [r for r in feature_rows(rows, metric) if r["probe"] == probe]
    if not mine:
        raise ProbeError(f"the results hold no {metric} of probe {probe!r} on any feature layer")
    folds = {r["output"]: fold_scores(r, metric) for r in mine}
    if len({len(v) for v in folds.values()}) != 1:
        raise ProbeError(f"the rows of probe {probe!r} were scored on different numbers of folds; rerun probe")
    names = [r["output"] for r in mine]
    scores, best = score_against_best(folds, ratio, chance, confidence)
    last = names[-1]
    by = {s.output: s for s in scores}
    tied = tuple(s.output for s in scores if s.tied)
    ahead = [corrected_t(folds[o] - folds[last], ratio, confidence).high for o in names if o != last]
    beats = max(ahead) if ahead else 0.0
    signal = by[best].interval[0] > chance
    saturated = any(by[o].mean >= CEILING for o in tied)
    if not signal or len(names) == 1:  # one output alone says nothing about the others
        verdict = "uncertain"
    elif not by[last].tied:
        verdict = "different"
    elif beats <= margin:
        verdict = "similar"
    else:
        verdict = "uncertain"
    chosen = last if verdict == "similar" or not signal else best
    return Comparison(metric, probe, confidence, margin, len(folds[last]), ratio, chance, tuple(scores), best, last,
                      chosen, tied, by[last].behind_best, float(beats), bool(signal), bool(saturated), verdict)


def compare_outputs(results, metric: str = "roc_auc", probe: str | None = None,
                    confidence: float = CONFIDENCE, margin: float = MARGIN) -> Comparison:
    """Compare one probe's outputs in a ``ProbeResults`` (default: the probe with the best row)."""
    ratio = holdout_ratio(results.folds.test_fold)
    return compare_rows(results.rows, metric, ratio, len(results.data["class_names"]), probe, confidence, margin)


def compare_all(results) -> dict:
    """``{metric: {probe: Comparison.as_dict()}}`` for the advice metrics that every row holds."""
    out: dict = {}
    for metric in ADVICE_METRICS:
        rows = feature_rows(results.rows, metric)
        for probe in dict.fromkeys(r["probe"] for r in rows):
            out.setdefault(metric, {})[probe] = compare_outputs(results, metric, probe).as_dict()
    return out


# Across models: every (model, output) of one probe in a study, on the folds they all share --------------
SEP = " | "  # between model and output in a candidate's name; study labels never hold it


@dataclass(frozen=True)
class Candidate:
    """One (model, output) of a study and its score against the best on the shared folds."""

    model: str
    output: str
    score: OutputScore

    def as_dict(self) -> dict:
        return {"backbone": self.model, **self.score.as_dict(), "output": self.output}


@dataclass(frozen=True)
class ModelComparison:
    """One probe's (model, output) candidates of a study compared pairwise with the best, for one metric."""

    metric: str
    probe: str
    confidence: float
    n_estimates: int
    ratio: float
    chance: float
    candidates: tuple[Candidate, ...]  # study order: model, then depth
    best: tuple[str, str]
    tied: tuple[tuple[str, str], ...]  # the best included
    signal: bool  # the best candidate's interval lies above chance

    def as_dict(self) -> dict:
        return {"metric": self.metric, "probe": self.probe, "confidence": self.confidence,
                "n_estimates": self.n_estimates, "ratio": self.ratio, "chance": self.chance,
                "best": list(self.best), "tied": [list(t) for t in self.tied], "signal": self.signal,
                "candidates": [c.as_dict() for c in self.candidates]}


def compare_models(rows: list[dict], metric: str, ratio: float, n_classes: int, probe: str | None = None,
                   confidence: float = CONFIDENCE) -> ModelComparison:
    """Compare one probe's rows of every model (rows carry ``model``) on their shared folds."""
    chance = chance_level(metric, n_classes)
    probe = probe or best_probe(rows, metric)
    mine = [r for r in feature_rows(rows, metric) if r["probe"] == probe]
    if not mine:
        raise ProbeError(f"the study holds no {metric} of probe {probe!r} on any feature layer")
    folds = {f"{r['backbone']}{SEP}{r['output']}": fold_scores(r, metric) for r in mine}
    if len({len(v) for v in folds.values()}) != 1:
        raise ProbeError(f"the rows of probe {probe!r} were scored on different numbers of folds; rerun the study")
    scores, best = score_against_best(folds, ratio, chance, confidence)
    split = lambda name: tuple(name.split(SEP, 1))  # noqa: E731
    candidates = tuple(Candidate(*split(s.output), s) for s in scores)
    best_score = next(s for s in scores if s.output == best)
    return ModelComparison(metric, probe, confidence, len(folds[best]), ratio, chance, candidates, split(best),
                           tuple(split(s.output) for s in scores if s.tied), bool(best_score.interval[0] > chance))
