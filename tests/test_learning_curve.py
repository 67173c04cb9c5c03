"""Learning curves: nested, group-aware pieces of each training fold, the same test folds."""

import numpy as np
import pytest

from pipeline.errors import ProbeError
from pipeline.probes import ProbeConfig, run_probes
from pipeline.probes.curve import learning_curve, nested_pieces
from pipeline.probes.metrics import sk_roc_auc

from .probe_data import make_codes, write_cache


def test_pieces_are_nested_stratified_and_keep_groups_whole():
    y = np.repeat([0, 1], 40)
    groups = np.arange(80) // 2  # pairs
    pieces = nested_pieces(y, groups, 4, 0, ["a", "b"], "pairs")
    assert [len(p) for p in pieces][-1] == 80 and all(set(a) < set(b) for a, b in zip(pieces, pieces[1:]))
    for p in pieces[:-1]:
        assert set(np.unique(y[p])) == {0, 1}
        inside = set(groups[p])
        assert all(set(np.flatnonzero(groups == g)) <= set(p) for g in inside)  # no pair is cut
    with pytest.raises(ProbeError, match=r"cuts each training part into 4 pieces, but .*use fewer steps "
                                         r"\(--curve-steps\)"):
        nested_pieces(np.array([0, 0, 0, 1, 1, 1, 1, 1]), None, 4, 0, ["a", "b"])


def test_a_curve_reuses_the_stored_folds_and_row(tmp_path):
    codes, y = make_codes(n=120, widths=(6,), informative=(4,))
    cache = write_cache(tmp_path / "c.h5", codes, y, ["no", "yes"])
    results = run_probes(cache, ProbeConfig(probes=("logreg",), folds=3, repeats=2, n_boot=10), progress=False)
    curve = learning_curve(cache, results, "blocks.0/avg", "logreg", steps=2)
    row = results.row("blocks.0/avg", "logreg")
    assert [p.fraction for p in curve.points] == [0.5, 1.0]
    assert list(curve.points[-1].scores) == row["metrics"]["roc_auc"]["folds"]  # the full share is the stored fit
    assert curve.points[0].n_train == pytest.approx(40, abs=2) and curve.points[1].n_train == 80
    assert len(curve.points[0].scores) == 6 and curve.points[0].low <= curve.points[0].mean <= curve.points[0].high
    gain = curve.last_doubling
    diffs = np.subtract(curve.points[1].scores, curve.points[0].scores)
    assert gain.mean == pytest.approx(diffs.mean()) and gain.n == 6
    # an output without a stored row is fitted at every share, on the same test folds
    missing = learning_curve(cache, results, "blocks.0/avg", "knn", steps=2)
    assert len(missing.points[-1].scores) == 6 and missing.probe == "knn"
    # the half-share scores are ROC AUCs of the stored test folds: check one by refitting by hand
    from pipeline.probes.curve import nested_pieces as pieces_of
    from pipeline.probes.grid import _fit_fold
    from pipeline.probes.registry import ProbeSettings
    from pipeline.probes.splits import inner_splits

    r, k, train, test = results.folds.splits()[0]
    sub = train[pieces_of(y[train], None, 2, 0 + r, ["no", "yes"])[0]]
    X = codes[("blocks.0", "avg")].astype(np.float64)
    fit = _fit_fold("logreg", ProbeSettings(), X, y, sub, test, inner_splits(y[sub], None, 3, 0, ["no", "yes"]), 0)
    assert curve.points[0].scores[0] == pytest.approx(sk_roc_auc(y[test], fit["proba"]))
