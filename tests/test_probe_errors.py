"""The issue's bad-input list: each is a one-line error that says what to do, raised before any fit."""

import numpy as np
import pytest

from pipeline.errors import PipelineError, ProbeError
from pipeline.probes import Folds, ProbeConfig, ProbeSettings, run_probes
from pipeline.probes.splits import check_folds

from .probe_data import make_codes, write_cache


@pytest.fixture(autouse=True)
def no_fitting(monkeypatch):
    """Every error here must come before the first fit."""

    def fail(*args, **kwargs):
        raise AssertionError("a probe was fitted before the bad input was noticed")

    monkeypatch.setattr("pipeline.probes.grid._fit_fold", fail)


def _cache(tmp_path, n=40, labels=None, names=("a", "b"), groups=None, codes=None, name="c.h5"):
    made, y = make_codes(n=n, widths=(4, 6))
    return write_cache(tmp_path / name, codes or made, y if labels is None else labels, list(names), groups=groups)


def _run(cache, **config):
    return run_probes(cache, ProbeConfig(**{"n_boot": 10, **config}), out=cache.with_suffix(".json"), progress=False)


def _check(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message and isinstance(exc_info.value, PipelineError)


def test_cache_without_labels(tmp_path):
    cache = _cache(tmp_path, labels=[-1] * 40, names=())
    with pytest.raises(ProbeError, match=r"c.h5 has no labels \(40 unlabelled rows\); probing needs labelled images: "
                                         r"extract from one sub-folder per class or a CSV with a 'label' column") as e:
        _run(cache)
    _check(e)
    assert not cache.with_suffix(".json").exists()


def test_one_class_only(tmp_path):
    cache = _cache(tmp_path, labels=[0] * 30 + [-1] * 10, names=("tumour",))
    with pytest.raises(ProbeError, match=r"all 30 labelled images of c.h5 are of one class \('tumour'\); "
                                         r"probing needs at least two classes") as e:
        _run(cache)
    _check(e)


def test_class_with_fewer_images_than_folds(tmp_path):
    cache = _cache(tmp_path, labels=[0] * 37 + [1] * 3, names=("common", "rare"))
    with pytest.raises(ProbeError, match=r"class 'rare' has 3 labelled image\(s\), fewer than folds=5 \(--folds\): "
                                         r"use folds=3 or fewer, or add images of that class") as e:
        _run(cache)
    _check(e)


def test_group_column_that_makes_stratified_folds_impossible(tmp_path):
    # every 'b' image belongs to one of two patients
    labels = [0] * 20 + [1] * 20
    groups = [f"p{i}" for i in range(20)] + ["q1"] * 10 + ["q2"] * 10
    cache = _cache(tmp_path, labels=labels, groups=groups)
    with pytest.raises(ProbeError, match=r"groups 'groups' \(--groups\): class 'b' spans only 2 group\(s\), fewer "
                                         r"than folds=5 \(--folds\), so stratified group folds are impossible; use "
                                         r"folds=2 or fewer, finer groups, groups='dup_cluster' \(--groups "
                                         r"dup_cluster: near-duplicates only.*or groups='none' \(--groups none\)"
                       ) as e:
        _run(cache)
    _check(e)


def test_groups_too_few_for_the_inner_folds(tmp_path):
    # class b: three groups, so a training part holds only two of them for three inner folds
    labels = [0] * 30 + [1] * 12
    groups = [f"p{i}" for i in range(30)] + ["q1"] * 10 + ["q2", "q3"]
    cache = _cache(tmp_path, n=42, labels=labels, groups=groups)
    with pytest.raises(ProbeError, match=r"class 'b' has only 2 group\(s\) in a training part, fewer than the 3 "
                                         r"inner folds that choose C; use fewer folds \(--folds\), finer groups or "
                                         r"groups='none' \(--groups none\)") as e:
        _run(cache, folds=3)
    _check(e)


def test_stored_folds_without_a_class_in_a_test_part():
    y = np.array([0, 0, 0, 1, 1, 1])
    folds = Folds(np.array([[0, 1, 0, 1, 1, 1]]), 2, (0,), "groups")
    with pytest.raises(ProbeError, match=r"the test part of fold 0 has no image of class 'b' \(groups too large or "
                                         r"too few\); use fewer folds \(--folds\), finer groups or groups='none' "
                                         r"\(--groups none\)"):
        check_folds(folds, y, np.array(["1", "2", "3", "4", "5", "6"]), ["a", "b"])


def test_non_finite_codes_in_a_layer(tmp_path):
    codes, y = make_codes(n=40, widths=(4, 6))
    codes[("blocks.1", "avg")][[3, 7], 2] = [np.nan, np.inf]
    cache = write_cache(tmp_path / "c.h5", codes, y, ["a", "b"])
    with pytest.raises(ProbeError, match=r"layer blocks.1/avg has 2 row\(s\) with NaN or infinite codes \(first: "
                                         r"img0003.png, img0007.png\); re-extract those images or leave the layer "
                                         r"out of layers \(--layers\)") as e:
        _run(cache)
    _check(e)


def test_unknown_probe_name():
    with pytest.raises(ProbeError, match=r"unknown probe 'rf'; available: knn, lgbm, logreg, svm"):
        ProbeConfig(probes=("logreg", "rf"))


def test_unknown_layer_name(tmp_path):
    cache = _cache(tmp_path)
    with pytest.raises(ProbeError, match=r"'blocks.9' is not a layer of c.h5; it holds blocks.0/avg, blocks.1/avg "
                                         r"\(`layerprobe info` lists them\)"):
        _run(cache, layers=("blocks.9",))
    with pytest.raises(ProbeError, match=r"layer index 5 is out of range \(-2 to 1\) for c.h5, which holds 2 outputs"):
        _run(cache, layers=("5",))


def test_unknown_group_source(tmp_path):
    cache = _cache(tmp_path)
    with pytest.raises(ProbeError, match=r"unknown groups 'patient' \(--groups\); available: none, groups"):
        _run(cache, groups="patient")
    with pytest.raises(ProbeError, match=r"groups 'groups' \(--groups groups\): c.h5 has no such column; extract from "
                                         r"a CSV with a 'group' column, or pass groups='none' \(--groups none\)"):
        _run(cache, groups="groups")


def test_results_file_from_another_cache(tmp_path, monkeypatch):
    monkeypatch.undo()  # the first run must fit
    first = _cache(tmp_path, name="first.h5")
    out = tmp_path / "results.json"
    run_probes(first, ProbeConfig(probes=("logreg",), folds=3, n_boot=10), out=out, progress=False)
    codes, y = make_codes(n=40, widths=(4, 6), seed=5)
    second = write_cache(tmp_path / "second.h5", codes, y, ["a", "b"])
    with pytest.raises(ProbeError, match=r"results file .*results.json was made from another cache \(.*first.h5, key "
                                         r"\w{12}\), not from .*second.h5 \(key \w{12}\); pass another out \(--out\), or "
                                         r"delete it to start afresh"):
        run_probes(second, ProbeConfig(probes=("logreg",), folds=3, n_boot=10), out=out, progress=False)
    with pytest.raises(ProbeError, match=r"was made with other split settings \(folds 3 -> 4\); rerun with the same "
                                         r"options to add rows to it, or pass another out \(--out\)"):
        run_probes(first, ProbeConfig(probes=("logreg",), folds=4, n_boot=10), out=out, progress=False)


def test_bad_options():
    with pytest.raises(ProbeError, match=r"folds \(--folds\) must be at least 2, got 1"):
        ProbeConfig(folds=1)
    with pytest.raises(ProbeError, match=r"repeats \(--repeats\) must be at least 1, got 0"):
        ProbeConfig(repeats=0)
    with pytest.raises(ProbeError, match=r"class_weight must be one of \('balanced', None\), got 'auto'"):
        ProbeSettings(class_weight="auto")
