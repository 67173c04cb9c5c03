"""Folds: stratified, group-tight, seeded, stored and reused."""

import json

import numpy as np
import pytest

from pipeline.errors import ProbeError
from pipeline.probes import Folds, ProbeConfig, inner_splits, load_results, make_folds, run_probes

from .probe_data import make_codes, write_cache

NAMES = ["a", "b", "c"]


def _groups(rng, n):
    """Groups of uneven size (1 to 6 rows), like duplicate clusters or patients."""
    sizes = rng.integers(1, 7, size=n)
    return np.repeat([f"g{i}" for i in range(n)], sizes)[:n]


def test_no_group_is_ever_in_two_folds(seed):
    rng = np.random.default_rng(seed)
    groups = _groups(rng, 300)
    y = rng.integers(0, 3, size=300)
    folds = make_folds(y, groups, n_folds=5, repeats=3, seed=seed, class_names=NAMES, group_name="groups")
    assert folds.kind == "StratifiedGroupKFold" and folds.repeats == 3
    for r in range(folds.repeats):
        for g in np.unique(groups):
            assert len(np.unique(folds.test_fold[r][groups == g])) == 1, g
    for _, _, train, test in folds.splits():
        assert not set(groups[train]) & set(groups[test])
        assert sorted(np.r_[train, test]) == list(range(300))


def test_stratified_folds_keep_class_proportions(seed):
    y = np.r_[np.zeros(80, int), np.ones(20, int)]
    folds = make_folds(y, None, n_folds=5, repeats=2, seed=seed, class_names=["no", "yes"])
    assert folds.kind == "StratifiedKFold" and folds.seeds == (seed, seed + 1)
    for _, _, _, test in folds.splits():
        assert (y[test] == 1).sum() == 4 and len(test) == 20
    assert not np.array_equal(folds.test_fold[0], folds.test_fold[1])


def test_folds_round_trip_through_json(seed):
    y = np.arange(40) % 2
    folds = make_folds(y, None, 4, 2, seed, ["x", "y"])
    back = Folds.from_dict(json.loads(json.dumps(folds.as_dict())))
    assert np.array_equal(back.test_fold, folds.test_fold) and back.seeds == folds.seeds and back.groups is None


def test_inner_folds_respect_groups(seed):
    rng = np.random.default_rng(seed)
    groups = _groups(rng, 120)
    y = rng.integers(0, 2, size=120)
    for train, test in inner_splits(y, groups, 3, seed, ["x", "y"]):
        assert not set(groups[train]) & set(groups[test])


def test_stored_folds_are_reused_when_rows_are_added(tmp_path):
    codes, y = make_codes(n=60, widths=(5, 9))
    cache = write_cache(tmp_path / "c.h5", codes, y, ["a", "b"], groups=[f"p{i // 2}" for i in range(60)])
    out = tmp_path / "r.json"
    first = run_probes(cache, ProbeConfig(probes=("logreg",), layers=("blocks.0",), folds=3, n_boot=20), out=out,
                       progress=False)
    assert first.folds.groups == "groups" and [r["output"] for r in first.rows] == ["blocks.0/avg"]
    # Change the stored folds: a second run must use them, not make new ones.
    doc = json.loads(out.read_text())
    doc["folds"]["test_fold"] = [[(k + 1) % 3 for k in doc["folds"]["test_fold"][0]]]
    out.write_text(json.dumps(doc))
    second = run_probes(cache, ProbeConfig(probes=("logreg", "lgbm"), folds=3, n_boot=20), out=out, progress=False)
    assert np.array_equal(second.folds.test_fold, np.asarray(doc["folds"]["test_fold"]))
    assert [(r["output"], r["probe"]) for r in second.rows] == [
        ("blocks.0/avg", "logreg"), ("blocks.0/avg", "lgbm"), ("blocks.1/avg", "logreg"), ("blocks.1/avg", "lgbm")]
    assert second.rows[0] == doc["rows"][0]  # kept, not refitted
    assert load_results(out).rows == second.rows


def test_results_do_not_depend_on_jobs(tmp_path):
    codes, y = make_codes(n=48, widths=(4, 30), n_classes=3, informative=(2, 3))
    cache = write_cache(tmp_path / "c.h5", codes, y, NAMES)
    config = ProbeConfig(probes=("logreg", "svm", "lgbm"), folds=3, n_boot=30)
    one = run_probes(cache, config, out=tmp_path / "1.json", jobs=1, progress=False)
    two = run_probes(cache, config, out=tmp_path / "2.json", jobs=2, progress=False)
    three = run_probes(cache, config, out=tmp_path / "3.json", jobs=3, progress=False)  # here and 2 workers
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("fit_")} for r in rows]  # noqa: E731
    assert strip(one.rows) == strip(two.rows) == strip(three.rows)


def test_each_row_is_scored_as_soon_as_its_folds_are_in(tmp_path, monkeypatch):
    """Rows are scored while later fits run (not all after the last fit), and equal rows scored after the last fit."""
    from pipeline.probes import grid
    from pipeline.probes.metrics import Resamples, summarise

    codes, y = make_codes(n=48, widths=(4, 30), n_classes=3, informative=(2, 3))
    cache = write_cache(tmp_path / "c.h5", codes, y, NAMES)
    config = ProbeConfig(probes=("logreg", "lgbm"), folds=3, n_boot=30)
    fits_in, every, row = [], {}, grid._row

    def scored(data, output, probe, folds, done, *rest):
        fits_in.append(len(done))
        every["done"], every["y"] = done, data.y
        return row(data, output, probe, folds, done, *rest)

    monkeypatch.setattr(grid, "_row", scored)
    results = run_probes(cache, config, out=tmp_path / "r.json", jobs=1, progress=False)
    assert fits_in == [3, 6, 9, 12]  # 2 outputs x 2 probes, each scored as soon as its 3 folds are fitted
    folds = results.folds
    fold_rows = [[test for _, _, _, test in folds.splits()]]
    for r in results.rows:  # scored again from every fit, after the last one
        oof = grid.out_of_fold(every["done"], r["output"], r["probe"], folds, len(y), len(NAMES))
        assert r["metrics"] == summarise(every["y"], oof, fold_rows, Resamples(len(y), None, 30, 0))


def test_group_column_too_coarse_for_the_folds_is_refused():
    y = np.array([0] * 6 + [1] * 6)
    groups = np.array(["p1"] * 6 + ["p2", "p2", "p3", "p3", "p4", "p4"])
    with pytest.raises(ProbeError, match=r"groups 'groups' \(--groups\): class 'a' spans only 1 group\(s\), fewer "
                                         r"than folds=3 \(--folds\), so stratified group folds are impossible"):
        make_folds(y, groups, 3, 1, 0, ["a", "b"], "groups")


def test_stored_folds_are_refused_when_the_groups_changed(tmp_path):
    from pipeline.probes import register_group_source
    from pipeline.probes.data import GROUP_SOURCES

    codes, y = make_codes(n=60, widths=(5,))
    cache = write_cache(tmp_path / "c.h5", codes, y, ["a", "b"])
    clusters = {"values": np.array([f"c{i // 2}" for i in range(60)])}
    register_group_source("clusters", lambda c: clusters["values"])  # the hook a duplicate finder uses
    try:
        out = tmp_path / "r.json"
        config = ProbeConfig(probes=("logreg",), folds=3, n_boot=10, groups="clusters")
        assert run_probes(cache, config, out=out, progress=False).folds.groups == "clusters"
        clusters["values"] = np.array([f"c{i // 3}" for i in range(60)])  # a new scan, other clusters
        with pytest.raises(ProbeError, match=r"was made with other groups in groups 'clusters' \(the column changed "
                                             r"since\); its folds no longer keep groups apart"):
            run_probes(cache, ProbeConfig(probes=("lgbm",), folds=3, n_boot=10, groups="clusters"), out=out,
                       progress=False)
    finally:
        GROUP_SOURCES.pop("clusters")
