"""The kNN probe: cosine distance on standardised codes, distance-weighted votes, k from inner folds."""

import numpy as np
import pytest

from pipeline.errors import ProbeError
from pipeline.probes import ProbeSettings, build_probe, fit_probe, load_probe, save_probe
from pipeline.probes.estimators import CosineKNN

from .probe_data import make_codes, write_cache


def test_votes_are_weighted_by_cosine_distance():
    # two training points per class on the unit circle; the query lies at 10 degrees from class 0's first point
    angles = np.radians([0.0, 90.0, 180.0, 270.0])
    X = np.c_[np.cos(angles), np.sin(angles)]
    y = np.array([0, 1, 0, 1])
    model = CosineKNN.from_arrays((3,), 3, X, y, [])
    q = np.radians(10.0)
    proba = model.predict_proba(np.array([[np.cos(q), np.sin(q)]]))
    # neighbours: 0 deg (d = 1 - cos 10), 90 deg (d = 1 - cos 80), 270 deg (d = 1 - cos 100)
    w0, w1, w2 = 1 / (1 - np.cos(q)), 1 / (1 - np.cos(np.radians(80))), 1 / (1 - np.cos(np.radians(100)))
    assert proba[0] == pytest.approx([w0 / (w0 + w1 + w2), (w1 + w2) / (w0 + w1 + w2)])
    # cosine: the length of a code does not matter
    assert np.allclose(model.predict_proba(np.array([[5 * np.cos(q), 5 * np.sin(q)]])), proba)


def test_k_is_chosen_by_the_inner_folds():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5))
    y = (X[:, 0] + 0.8 * rng.normal(size=90) > 0).astype(int)  # noisy labels: a larger k should win over k=1
    model = CosineKNN(ks=(1, 15), cv=3).fit(X, y)
    assert model.k_ == 15 and len(model.cv_brier_) == 2 and model.cv_brier_[1] < model.cv_brier_[0]
    # a k larger than an inner training part is skipped
    assert CosineKNN(ks=(1, 500), cv=3).fit(X, y).k_ == 1


def test_the_knn_probe_standardises_first_and_saves_its_training_codes(tmp_path):
    codes, y = make_codes(n=60, widths=(6,), informative=(3,))
    cache = write_cache(tmp_path / "c.h5", codes, y, ["no", "yes"])
    fitted = fit_probe(cache, "blocks.0/avg", "knn")
    assert [name for name, _ in fitted.pipeline.steps] == ["scale", "model"]
    assert fitted.manifest["chosen"]["k"] in ProbeSettings().knn_ks
    path = save_probe(fitted, tmp_path / "k.probe.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert archive["model/X_train_"].shape == (60, 6)
    X = np.random.default_rng(1).normal(size=(10, 6))
    assert np.array_equal(load_probe(path).predict_proba(X), fitted.predict_proba(X))


def test_bad_k_grids_are_refused():
    with pytest.raises(ProbeError, match=r"k grid of the kNN probe must hold positive whole numbers, got \(0, 3\)"):
        ProbeSettings(knn_ks=(0, 3))
    pipe = build_probe("knn", ProbeSettings(knn_ks=(3,)), (20, 4), 3, 0)
    assert pipe[-1].ks == (3,)


def test_the_knn_probe_runs_in_the_grid_on_the_shared_folds(tmp_path):
    from pipeline.probes import ProbeConfig, run_probes

    codes, y = make_codes(n=120, widths=(6, 8), informative=(4, 0))
    cache = write_cache(tmp_path / "c.h5", codes, y, ["no", "yes"])
    results = run_probes(cache, ProbeConfig(probes=("logreg", "knn"), folds=3, n_boot=10), progress=False)
    knn = results.row("blocks.0/avg", "knn")
    assert len(knn["metrics"]["roc_auc"]["folds"]) == 3 and all("k" in c for c in knn["chosen"])
    assert knn["metrics"]["roc_auc"]["mean"] > 0.9  # the informative layer (logistic regression: 0.95)
    assert results.row("blocks.1/avg", "knn")["metrics"]["roc_auc"]["mean"] < 0.7  # the uninformative one
    assert set(results.comparisons["roc_auc"]) == {"logreg", "knn"}
