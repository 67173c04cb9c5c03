"""Advice rules on hand-made tables, and which BatchNorm layers belong to which output."""

import numpy as np
import pytest

from pipeline.errors import SimilarityError
from pipeline.probes.compare import compare_rows
from pipeline.similarity import Curve, LayerRow, advise, measure_names, summarise_bn
from pipeline.similarity import advice as advice_module
from tests.advice_tables import rows_from_folds

OUTPUTS = ("blocks.0/avg", "blocks.1/avg", "blocks.2/avg", "blocks.3/avg", "pre_logits/none")


def _probe(levels, spread=0.005, metric="roc_auc", n=25):
    """A comparison of one probe whose folds sit at ``levels`` with a shared fold effect and a little noise."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.02, n)
    rows = rows_from_folds({o: {metric: np.clip(v + shared + rng.normal(0, spread, n), 0, 1)}
                            for o, v in zip(OUTPUTS, levels)})
    return compare_rows(rows, metric, 0.25, 2)


def _logme(values):
    return Curve("logme", OUTPUTS, tuple(values))


def _topics(advice):
    return {f.topic: f for f in advice.findings}


def test_best_at_the_top_means_similar_and_no_fine_tuning():
    probes = _probe([0.80, 0.90, 0.95, 0.97, 0.985])
    advice = advise(3000, 2, None, _logme([0.1, 0.2, 0.3, 0.4, 0.5]), probes)
    assert advice.layer == "pre_logits/none" and advice.layer_by == "probe logreg, roc_auc"
    assert advice.similarity == "similar" and advice.fine_tune == "unlikely" and advice.tied == ["pre_logits/none"]
    found = _topics(advice)
    value, (low, high) = probes.score("pre_logits/none").mean, probes.score("pre_logits/none").interval
    assert found["layer"].text == (f"Use pre_logits/none: the logreg probe scores {value:.3f} ROC AUC there "
                                   f"(95% interval {low:.3f} to {high:.3f}, over 25 folds).")
    assert found["similarity"].text.startswith("Similar to ImageNet for this task: the last output, pre_logits/none")
    assert found["fine_tune"].numbers["headroom"] == pytest.approx((1 - value) / 0.5)
    assert "agree on the best layer (pre_logits/none vs pre_logits/none)" in found["agreement"].text
    assert "Spearman correlation 1.00 over 5 layers" in found["agreement"].text


def test_a_best_layer_below_a_worse_top_means_different_and_fine_tuning():
    probes = _probe([0.80, 0.93, 0.95, 0.90, 0.88])
    advice = advise(3000, 2, None, _logme([0.1, 0.2, 0.3, 0.4, 0.5]), probes)
    assert advice.layer == "blocks.2/avg" and advice.similarity == "different" and advice.fine_tune == "likely"
    found = _topics(advice)
    gap = probes.last_behind_best
    assert found["similarity"].numbers["gap"] == gap.mean and gap.low > 0 and probes.p_last_worse > 0.999
    assert (f"behind the best, blocks.2/avg, by {gap.mean:.3f} (95% interval {gap.low:.3f} to {gap.high:.3f}; "
            "probability 1.000 that it is worse)") in found["similarity"].text
    assert "fine-tune from blocks.2/avg up" in found["fine_tune"].text
    assert "disagree" in found["agreement"].text
    # the same table on too few images: different, yet fine-tuning would fit noise
    few = advise(60, 2, None, _logme([0.1] * 5), probes)
    assert few.similarity == "different" and few.fine_tune == "unlikely"


def test_a_last_layer_shown_as_good_as_the_best_is_chosen_and_ties_are_named():
    probes = _probe([0.80, 0.90, 0.95, 0.957, 0.955], spread=0.006)
    advice = advise(3000, 2, None, _logme([0.1] * 5), probes)
    assert probes.best == "blocks.3/avg" and probes.verdict == "similar" and advice.layer == "pre_logits/none"
    assert advice.tied == list(probes.tied) and "blocks.3/avg" in advice.tied
    found = _topics(advice)
    assert "It is the last output and tied with the highest, blocks.3/avg" in found["layer"].text
    assert "ties go to the last output, the simplest choice" in found["layer"].text


def test_a_last_layer_merely_tied_is_named_as_the_simpler_alternative():
    probes = _probe([0.80, 0.90, 0.95, 0.96, 0.955], spread=0.03)
    advice = advise(3000, 2, None, _logme([0.1] * 5), probes)
    assert probes.best == "blocks.3/avg" and probes.verdict == "uncertain" and advice.layer == "blocks.3/avg"
    assert "pre_logits/none" in advice.tied
    text = _topics(advice)["layer"].text
    assert text.startswith("Use blocks.3/avg:")
    assert (f"The last output, pre_logits/none ({probes.score('pre_logits/none').mean:.3f}), is tied with it at 95% "
            f"confidence and is the simpler choice, but may be worse by up to {probes.last_behind_best.high:.3f}"
            ) in text


def test_headroom_leaves_fine_tuning_uncertain_on_a_similar_task():
    # best at the top but only 0.75 AUC: half the way from chance to perfect is left
    advice = advise(5000, 2, None, _logme([0.1] * 5), _probe([0.6, 0.65, 0.7, 0.72, 0.75]))
    assert advice.similarity == "similar" and advice.fine_tune == "uncertain"
    assert "leaves 50% of the way from chance to perfect" in _topics(advice)["fine_tune"].text


def test_a_saturated_task_is_named_and_gets_no_fine_tuning():
    rows = rows_from_folds({o: {"roc_auc": np.full(25, v)} for o, v in zip(OUTPUTS, [0.9, 1, 1, 1, 1])})
    advice = advise(3000, 2, None, _logme([0.1] * 5), compare_rows(rows, "roc_auc", 0.25, 2))
    assert (advice.layer, advice.saturated, advice.similarity, advice.fine_tune) == (
        "pre_logits/none", True, "similar", "unlikely")
    assert _topics(advice)["saturated"].text.startswith("The task is saturated: blocks.1/avg (1.000), ")


def test_without_probes_logme_chooses_with_a_margin_but_claims_no_verdict():
    advice = advise(3000, 3, None, _logme([0.1, 0.5, 0.3, 0.2, 0.1]))
    assert advice.layer == "blocks.1/avg" and advice.layer_by == "LogME" and advice.similarity == "uncertain"
    assert advice.fine_tune == "uncertain" and "LogME leans 'different'" in _topics(advice)["similarity"].text
    assert "agreement" not in _topics(advice)
    close = advise(3000, 3, None, _logme([0.1, 0.2, 0.3, 0.5, 0.495]))
    assert close.layer == "pre_logits/none" and close.tied == ["blocks.3/avg", "pre_logits/none"]
    assert "LogME leans 'similar'" in _topics(close)["similarity"].text


def test_the_imagenet_distance_is_placed_against_the_best_layer():
    early = Curve("w2", OUTPUTS, (0.9, 0.4, 0.3, 0.2, 0.2))
    advice = advise(3000, 2, early, _logme([0.1, 0.2, 0.3, 0.4, 0.5]))
    found = _topics(advice)["imagenet"]
    assert found.numbers["furthest"] == "blocks.0/avg" and found.numbers["closest_value"] == 0.2
    assert "closest at blocks.3/avg (0.200) and furthest at blocks.0/avg (0.900)" in found.text
    assert "peaks before the best layer" in found.text
    late = Curve("w2", OUTPUTS, (0.1, 0.2, 0.3, 0.4, 0.9))
    found = _topics(advise(3000, 2, late, _logme([0.1] * 5), _probe([0.95, 0.9, 0.85, 0.8, 0.75])))["imagenet"]
    assert found.numbers["peak_vs_best"] == "at_or_after" and "agrees with choosing an earlier layer" in found.text
    harmless = _topics(advise(3000, 2, late, _logme([0.1] * 5), _probe([0.8, 0.85, 0.9, 0.95, 0.97])))["imagenet"]
    assert "does not hurt the task" in harmless.text
    neutral = _topics(advise(3000, 2, late, _logme([0.5, 0.4, 0.3, 0.2, 0.1])))["imagenet"]  # LogME: no verdict
    assert neutral.text.endswith("The distance peaks at or after the chosen layer.")


def test_advice_refuses_what_it_cannot_use():
    with pytest.raises(SimilarityError, match="at least 2 classes; got 10 image.* in 1 class"):
        advise(10, 1, None, _logme([0.1] * 5))
    with pytest.raises(SimilarityError, match="no finite value"):
        advise(10, 2, None, _logme([None] * 5))
    with pytest.raises(SimilarityError, match="5 outputs but 2 values"):
        Curve("logme", OUTPUTS, (0.1, 0.2))


def test_every_rule_constant_is_reported():
    advice = advise(100, 2, None, _logme([0.1] * 5))
    m = advice_module
    assert advice.rules == {"confidence": 0.95, "margin": m.MARGIN, "ceiling": m.CEILING,
                            "few_per_class": m.FEW_PER_CLASS, "headroom": m.HEADROOM,
                            "logme_margin": m.LOGME_MARGIN, "small_gain": m.SMALL_GAIN}
    assert advice.as_dict()["findings"][0] == {"topic": "data", "numbers": {"n_images": 100, "n_classes": 2,
                                                                             "per_class": 50.0},
                                               "text": "100 images in 2 classes, about 50 per class: enough "
                                                       "images for training a network."}


def test_output_rows_average_their_stored_batchnorm_members():
    bn_rows = [LayerRow(name, i, 2, {m: float(i) for m in measure_names("gaussian")})
               for i, name in enumerate(["bn1", "blocks.0.0.bn1", "blocks.1.0.bn1", "bn2"])]
    members = {"blocks.0": ["bn1", "blocks.0.0.bn1"], "blocks.1": ["blocks.1.0.bn1"], "pre_logits": []}
    summary = summarise_bn(bn_rows, ["blocks.0/avg", "blocks.0/max", "blocks.1/avg", "pre_logits/none"], members)
    assert summary["blocks.0/avg"] == ({m: 0.5 for m in measure_names("gaussian")}, ["bn1", "blocks.0.0.bn1"])
    assert summary["blocks.0/max"] == summary["blocks.0/avg"]
    assert summary["blocks.1/avg"][0]["w2"] == 2.0
    assert summary["pre_logits/none"] == ({m: None for m in measure_names("gaussian")}, [])


def test_a_layer_named_where_no_layer_beats_chance_is_called_a_default():
    advice = advise(3000, 2, None, _logme([0.1] * 5), _probe([0.5, 0.5, 0.5, 0.5, 0.5], spread=0.05))
    layer = _topics(advice)["layer"]
    assert layer.text.endswith("No layer is shown to beat chance (0.500), so this is a default, not a finding: "
                               "the codes may carry nothing about these labels.")
    assert layer.numbers["chance"] == 0.5
    informative = _topics(advise(3000, 2, None, _logme([0.1] * 5), _probe([0.7, 0.8, 0.9, 0.95, 0.95])))["layer"]
    assert "default, not a finding" not in informative.text
