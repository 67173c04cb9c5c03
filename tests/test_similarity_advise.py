"""Advice rules on hand-made curves, and which BatchNorm layers belong to which output."""

import pytest

from pipeline.errors import SimilarityError
from pipeline.similarity import Curve, LayerRow, advise, measure_names, probe_curve, summarise_bn
from pipeline.similarity import advice as advice_module

OUTPUTS = ("blocks.0/avg", "blocks.1/avg", "blocks.2/avg", "blocks.3/avg", "pre_logits/none")


def _probe(values, sd=0.01):
    return Curve("roc_auc", OUTPUTS, tuple(values), tuple([sd] * len(values)), source="logreg")


def _logme(values):
    return Curve("logme", OUTPUTS, tuple(values))


def _topics(advice):
    return {f.topic: f for f in advice.findings}


def test_best_at_the_top_means_similar_and_no_fine_tuning():
    advice = advise(3000, 2, None, _logme([0.1, 0.2, 0.3, 0.4, 0.5]), _probe([0.80, 0.90, 0.95, 0.97, 0.99]))
    assert advice.layer == "pre_logits/none" and advice.layer_by == "probe logreg, roc_auc"
    assert advice.different is False and advice.fine_tune == "unlikely"
    found = _topics(advice)
    assert found["layer"].text == ("Use pre_logits/none: it has the logreg probe's highest ROC AUC, 0.990 ± 0.010 "
                                   "(fold sd).")
    assert "'similar' to ImageNet" in found["different"].text
    assert found["fine_tune"].numbers["headroom"] == pytest.approx(0.02)
    assert "agree on the best layer (pre_logits/none vs pre_logits/none)" in found["agreement"].text
    assert "Spearman correlation 1.00 over 5 layers" in found["agreement"].text


def test_a_best_layer_far_below_the_top_means_different_and_fine_tuning():
    curve = _probe([0.80, 0.93, 0.95, 0.90, 0.88])
    advice = advise(3000, 2, None, _logme([0.1, 0.2, 0.3, 0.4, 0.5]), curve)
    assert advice.layer == "blocks.2/avg" and advice.different is True and advice.fine_tune == "likely"
    found = _topics(advice)
    assert found["different"].numbers == {"best": "blocks.2/avg", "last": "pre_logits/none", "layers_below_last": 2,
                                          "best_value": 0.95, "last_value": 0.88, "gap": pytest.approx(0.07),
                                          "noise": 0.01}
    assert "2 output(s) below the last, pre_logits/none, which scores 0.070 lower (0.880)" in found["different"].text
    assert "the best layer is 2 outputs below the top" in found["fine_tune"].text
    assert "disagree" in found["agreement"].text
    # the same curve on fewer images: possible, then unlikely
    assert advise(400, 2, None, _logme([0.1] * 5), curve).fine_tune == "possible"
    assert advise(60, 2, None, _logme([0.1] * 5), curve).fine_tune == "unlikely"


def test_a_last_layer_within_noise_is_not_different_and_ties_are_named():
    advice = advise(3000, 2, None, _logme([0.1] * 5), _probe([0.80, 0.90, 0.95, 0.96, 0.955], sd=0.02))
    assert advice.layer == "blocks.3/avg" and advice.different is False
    found = _topics(advice)
    ties = "Within the noise, one fold sd (0.020) of it: blocks.2/avg (0.950), pre_logits/none (0.955)."
    assert ties in found["layer"].text
    assert found["layer"].numbers["ties"] == ["blocks.2/avg", "pre_logits/none"]
    assert "within the noise" in found["different"].text


def test_headroom_alone_makes_fine_tuning_likely():
    # best at the top but only 0.75 AUC: half the way from chance to perfect is left
    advice = advise(5000, 2, None, _logme([0.1] * 5), _probe([0.6, 0.65, 0.7, 0.72, 0.75]))
    assert advice.fine_tune == "likely" and not advice.different
    assert "leaves 50% of the way from chance to perfect" in _topics(advice)["fine_tune"].text


def test_without_probes_logme_chooses_with_a_margin():
    advice = advise(3000, 3, None, _logme([0.1, 0.5, 0.3, 0.2, 0.1]))
    assert advice.layer == "blocks.1/avg" and advice.layer_by == "LogME" and advice.different is True
    assert "margin of 0.01 nats" in _topics(advice)["different"].text
    assert "agreement" not in _topics(advice)
    close = advise(3000, 3, None, _logme([0.1, 0.2, 0.3, 0.5, 0.495]))
    assert close.different is False and close.fine_tune == "unlikely"


def test_the_imagenet_distance_is_placed_against_the_best_layer():
    early = Curve("w2", OUTPUTS, (0.9, 0.4, 0.3, 0.2, 0.2))
    advice = advise(3000, 2, early, _logme([0.1, 0.2, 0.3, 0.4, 0.5]))
    found = _topics(advice)["imagenet"]
    assert found.numbers["furthest"] == "blocks.0/avg" and found.numbers["closest_value"] == 0.2
    assert "closest at blocks.3/avg (0.200) and furthest at blocks.0/avg (0.900)" in found.text
    assert "peaks before the best layer" in found.text
    late = Curve("w2", OUTPUTS, (0.1, 0.2, 0.3, 0.4, 0.9))
    found = _topics(advise(3000, 2, late, _logme([0.5, 0.4, 0.3, 0.2, 0.1])))["imagenet"]
    assert found.numbers["peak_vs_best"] == "at_or_after" and "agrees with choosing an earlier layer" in found.text
    harmless = _topics(advise(3000, 2, late, _logme([0.1, 0.2, 0.3, 0.4, 0.5])))["imagenet"]
    assert "does not hurt the task" in harmless.text


def test_advice_refuses_what_it_cannot_use():
    with pytest.raises(SimilarityError, match="at least 2 classes; got 10 image.* in 1 class"):
        advise(10, 1, None, _logme([0.1] * 5))
    with pytest.raises(SimilarityError, match="no finite value"):
        advise(10, 2, None, _logme([None] * 5))
    with pytest.raises(SimilarityError, match="5 outputs but 2 values"):
        Curve("logme", OUTPUTS, (0.1, 0.2))


def test_every_rule_constant_is_reported():
    advice = advise(100, 2, None, _logme([0.1] * 5))
    rules = advice_module
    assert advice.rules == {"few_per_class": rules.FEW_PER_CLASS, "enough_per_class": rules.ENOUGH_PER_CLASS,
                            "far": rules.FAR, "headroom": rules.HEADROOM, "logme_margin": rules.LOGME_MARGIN}
    assert advice.as_dict()["findings"][0] == {"topic": "data", "numbers": {"n_images": 100, "n_classes": 2,
                                                                             "per_class": 50.0},
                                               "text": "100 images in 2 classes, about 50 per class: a moderate number "
                                                       "of images for training a network."}


class _Results:
    """A stand-in with what advice reads of ProbeResults: rows and best(metric)."""

    def __init__(self, rows):
        self.rows = rows

    def best(self, metric):
        best = {}
        for r in self.rows:
            if r["probe"] not in best or r["metrics"][metric]["mean"] > best[r["probe"]]["metrics"][metric]["mean"]:
                best[r["probe"]] = r
        return best


def _row(output, probe, auc):
    return {"output": output, "probe": probe, "metrics": {"roc_auc": {"mean": auc, "sd": 0.01},
                                                          "balanced_accuracy": {"mean": auc - 0.1, "sd": 0.02}}}


def test_probe_curve_follows_the_probe_with_the_best_score():
    rows = [_row(o, p, v) for o, a, b in zip(OUTPUTS, (0.7, 0.8, 0.9, 0.85, 0.8), (0.75, 0.8, 0.82, 0.93, 0.92))
            for p, v in (("logreg", a), ("svm", b))] + [_row("logits/none", "svm", 0.99)]
    curve = probe_curve(_Results(rows))
    assert curve.source == "svm" and curve.measure == "roc_auc" and curve.outputs == OUTPUTS
    assert curve.values == (0.75, 0.8, 0.82, 0.93, 0.92) and curve.spread == (0.01,) * 5
    assert probe_curve(_Results(rows), "balanced_accuracy").spread == (0.02,) * 5
    with pytest.raises(SimilarityError, match="roc_auc or balanced_accuracy, not 'log_loss'"):
        probe_curve(_Results(rows), "log_loss")


def test_output_rows_average_their_stored_batchnorm_members():
    bn_rows = [LayerRow(name, i, 2, {m: float(i) for m in measure_names("gaussian")})
               for i, name in enumerate(["bn1", "blocks.0.0.bn1", "blocks.1.0.bn1", "bn2"])]
    members = {"blocks.0": ["bn1", "blocks.0.0.bn1"], "blocks.1": ["blocks.1.0.bn1"], "pre_logits": []}
    summary = summarise_bn(bn_rows, ["blocks.0/avg", "blocks.0/max", "blocks.1/avg", "pre_logits/none"], members)
    assert summary["blocks.0/avg"] == ({m: 0.5 for m in measure_names("gaussian")}, ["bn1", "blocks.0.0.bn1"])
    assert summary["blocks.0/max"] == summary["blocks.0/avg"]
    assert summary["blocks.1/avg"][0]["w2"] == 2.0
    assert summary["pre_logits/none"] == ({m: None for m in measure_names("gaussian")}, [])
