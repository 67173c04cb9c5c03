"""Patient-level results: each group's probabilities aggregated and scored, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import ProbeError
from pipeline.probes import Predictions
from pipeline.probes.patients import PatientLevel
from pipeline.probes.splits import Folds

# four patients, two images each: A, B negative; C, D positive
GROUPS = np.array(["A", "A", "B", "B", "C", "C", "D", "D"])
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
P1 = np.array([0.2, 0.4, 0.6, 0.1, 0.7, 0.9, 0.3, 0.5])  # positive-class probability of each image
FOLD = np.array([0, 0, 1, 1, 0, 0, 1, 1])  # fold 0: A and C, fold 1: B and D


def oof() -> np.ndarray:
    return np.stack([1 - P1, P1], axis=1)[None]  # one repeat


def test_patient_metrics_equal_a_hand_computation():
    level = PatientLevel.prepare(Y, GROUPS, Folds(FOLD[None], 2, (0,), "groups"), n_boot=200, seed=0)
    assert level.names.tolist() == ["A", "B", "C", "D"] and level.y.tolist() == [0, 0, 1, 1]
    found = level.metrics(oof())
    # mean: A .3, B .35, C .8, D .4 -> both positives above both negatives: AUC 1; argmax wrong only for D
    assert found["mean"]["roc_auc"]["pooled"] == pytest.approx(1.0)
    assert found["mean"]["accuracy"]["pooled"] == pytest.approx(0.75)
    # max: A .4, B .6, C .9, D .5 -> D is below B: AUC 3/4; per fold: (A, C) 1, (B, D) 0
    assert found["max"]["roc_auc"]["pooled"] == pytest.approx(0.75)
    assert found["max"]["roc_auc"]["folds"] == [1.0, 0.0]
    assert found["max"]["roc_auc"]["mean"] == pytest.approx(0.5)
    low, high = found["mean"]["accuracy"]["ci"]
    assert 0.0 <= low <= 0.75 <= high <= 1.0  # the interval resamples patients


def test_no_patient_level_result_when_folds_split_a_patient_or_labels_differ_within_one():
    split = FOLD.copy()
    split[1] = 1  # A's second image in the other fold
    assert PatientLevel.prepare(Y, GROUPS, Folds(split[None], 2, (0,), None), 10, 0) is None
    mixed = Y.copy()
    mixed[0] = 1
    assert PatientLevel.prepare(mixed, GROUPS, Folds(FOLD[None], 2, (0,), "groups"), 10, 0) is None
    assert PatientLevel.prepare(Y, None, Folds(FOLD[None], 2, (0,), None), 10, 0) is None


def test_predictions_per_patient_by_hand():
    predictions = Predictions(np.array([f"i{k}" for k in range(8)]), ["no", "yes"], oof()[0], GROUPS)
    lines = predictions.per_group_csv().splitlines()
    assert lines[0] == "group,n_images,predicted,p_no,p_yes,max_p_yes"
    group, count, predicted, p_no, p_yes, top = lines[4].split(",")  # D: images .3 and .5
    assert (group, count, predicted) == ("D", "2", "no")
    assert (float(p_no), float(p_yes), float(top)) == pytest.approx((0.6, 0.4, 0.5))
    with pytest.raises(ProbeError, match="per-group predictions need a group column"):
        Predictions(predictions.ids, ["no", "yes"], oof()[0]).per_group_csv()
