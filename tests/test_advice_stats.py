"""The paired statistics behind the advice: exact answers, and the verdicts on tables of known shape."""

import math

import numpy as np
import pytest

from pipeline.errors import ProbeError
from pipeline.probes.compare import compare_rows, corrected_t, default_repeats, holdout_ratio
from tests.advice_tables import OUTPUTS, rows_from_folds

T_975_DF4 = 2.7764451051977934  # Student t quantile, from any table (2.776)


def _t_cdf_df4(t: float) -> float:
    """Student t CDF with 4 degrees of freedom in closed form."""
    x = 1 + t * t / 4
    return 0.5 + 3 / 8 * t / math.sqrt(x) * (1 - t * t / (12 * x))


def test_corrected_t_by_hand():
    diffs = [0.02, 0.01, 0.03, 0.00, 0.04]
    # mean 0.02; sample variance (0 + 1e-4 + 1e-4 + 4e-4 + 4e-4) / 4 = 2.5e-4;
    # Nadeau-Bengio variance of the mean (1/5 + 0.25) * 2.5e-4 = 1.125e-4
    se = math.sqrt(1.125e-4)
    d = corrected_t(diffs, ratio=0.25)
    assert d.mean == pytest.approx(0.02) and d.n == 5 and d.df == 4
    assert d.t == pytest.approx(0.02 / se)
    assert (d.low, d.high) == (pytest.approx(0.02 - T_975_DF4 * se), pytest.approx(0.02 + T_975_DF4 * se))
    assert d.p_above == pytest.approx(_t_cdf_df4(0.02 / se))
    # the naive t-test (ratio 0) is narrower: the correction is what makes the interval honest
    naive = corrected_t(diffs, ratio=0.0)
    assert naive.high - naive.low == pytest.approx(2 * T_975_DF4 * math.sqrt(2.5e-4 / 5))


def test_corrected_t_edge_cases():
    same = corrected_t([0.0] * 5, 0.25)
    assert (same.mean, same.low, same.high, same.p_above, same.t) == (0.0, 0.0, 0.0, 0.5, None)
    shifted = corrected_t([0.01] * 5, 0.25)
    assert (shifted.low, shifted.high, shifted.p_above) == (pytest.approx(0.01), pytest.approx(0.01), 1.0)
    assert corrected_t([0.01, float("nan"), 0.03], 0.25).n == 2  # undefined folds are dropped
    with pytest.raises(ProbeError, match="at least 2 fold estimates, got 1"):
        corrected_t([0.1], 0.25)


def test_holdout_ratio_and_default_repeats():
    assert holdout_ratio(np.array([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]])) == 1.0
    assert holdout_ratio(np.repeat(np.arange(5), 2)[None, :]) == pytest.approx(2 / 8)
    assert default_repeats(200, 5) == 5 and default_repeats(200, 3) == 9 and default_repeats(200, 10) == 3
    assert default_repeats(5000, 5) == 1 and default_repeats(200, 5, repeats=2) == 2


def _table(levels, spread=0.01, n=25, seed=0):
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.03, n)
    return rows_from_folds({o: {"roc_auc": np.clip(v + shared + rng.normal(0, spread, n), 0, 1)}
                            for o, v in zip(OUTPUTS, levels)})


def test_a_falling_curve_is_different_and_picks_the_best():
    c = compare_rows(_table([0.80, 0.90, 0.95, 0.90, 0.85]), "roc_auc", 0.25, 2)
    assert c.verdict == "different" and c.best == "blocks.2/avg" and c.chosen == "blocks.2/avg"
    assert c.tied == ("blocks.2/avg",) and c.p_last_worse > 0.999 and c.signal and not c.saturated
    assert c.last_behind_best.mean == pytest.approx(c.score("blocks.2/avg").mean - c.score("pre_logits/none").mean)


def test_a_last_output_shown_as_good_is_chosen_never_the_earliest():
    c = compare_rows(_table([0.80, 0.95, 0.951, 0.95, 0.95], spread=0.002), "roc_auc", 0.25, 2)
    assert c.best != "pre_logits/none" and c.verdict == "similar" and c.chosen == "pre_logits/none"
    assert c.beats_last_by_at_most <= c.margin


def test_a_last_output_only_tied_leaves_the_choice_to_the_best():
    """Tied at 95% is not shown as good: with a wide spread the last may be worse by more than the margin."""
    c = compare_rows(_table([0.80, 0.95, 0.951, 0.95, 0.95], spread=0.02), "roc_auc", 0.25, 2)
    assert "pre_logits/none" in c.tied and c.verdict == "uncertain" and c.beats_last_by_at_most > c.margin
    assert c.chosen == c.best != "blocks.0/avg"


def test_a_saturated_task_is_similar_saturated_and_chooses_the_last():
    rows = rows_from_folds({o: {"roc_auc": np.full(25, v)} for o, v in zip(OUTPUTS, [0.9, 1, 1, 1, 1])})
    c = compare_rows(rows, "roc_auc", 0.25, 2)
    assert (c.best, c.chosen, c.verdict, c.saturated) == ("pre_logits/none", "pre_logits/none", "similar", True)
    assert c.tied == OUTPUTS[1:] and c.beats_last_by_at_most == 0.0


def test_no_signal_is_uncertain():
    rng = np.random.default_rng(3)
    rows = rows_from_folds({o: {"roc_auc": rng.normal(0.5, 0.08, 25)} for o in OUTPUTS})
    c = compare_rows(rows, "roc_auc", 0.25, 2)
    assert c.verdict == "uncertain" and not c.signal
    assert c.score(c.best).interval[0] <= 0.5


def test_balanced_accuracy_chance_depends_on_the_classes():
    rows = rows_from_folds({o: {"balanced_accuracy": np.full(10, 0.4) + 0.01 * np.arange(10)} for o in OUTPUTS})
    assert compare_rows(rows, "balanced_accuracy", 0.25, 3).signal  # 0.445 is above chance 1/3
    assert not compare_rows(rows, "balanced_accuracy", 0.25, 2).signal  # but not above 1/2
    with pytest.raises(ProbeError, match="roc_auc or balanced_accuracy, not 'log_loss'"):
        compare_rows(rows, "log_loss", 0.25, 2)


def test_one_output_alone_is_never_a_verdict():
    from pipeline.similarity import Curve, advise

    rows = rows_from_folds({"pre_logits/none": {"roc_auc": np.full(25, 0.9) + 0.001 * np.arange(25)}})
    c = compare_rows(rows, "roc_auc", 0.25, 2)
    assert (c.verdict, c.chosen, c.tied, c.beats_last_by_at_most) == ("uncertain", "pre_logits/none",
                                                                      ("pre_logits/none",), 0.0)
    advice = advise(400, 2, None, Curve("logme", ("pre_logits/none",), (0.1,)), c)
    found = {f.topic: f.text for f in advice.findings}
    assert found["similarity"] == ("Uncertain whether the data set is like ImageNet: only pre_logits/none was probed "
                                   "(0.912); probe the other layers (run_probes without layers; layerprobe probe "
                                   "without --layers) to compare them.")
