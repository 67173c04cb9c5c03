"""Every reported number equals scikit-learn's on the same arrays, folds and seeds."""

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.probes import METRICS, ProbeConfig, ProbeSettings, bootstrap_weights, metric_names, run_probes
from pipeline.probes import metrics as metrics_module
from pipeline.probes.metrics import Resamples, summarise

from .probe_data import make_codes, write_cache

SK = {
    "balanced_accuracy": lambda y, p: skm.balanced_accuracy_score(y, p.argmax(1)),
    "accuracy": lambda y, p: skm.accuracy_score(y, p.argmax(1)),
    "f1_macro": lambda y, p: skm.f1_score(y, p.argmax(1), average="macro", labels=range(p.shape[1]), zero_division=0),
    "log_loss": lambda y, p: skm.log_loss(y, p, labels=range(p.shape[1])),
    "sensitivity": lambda y, p: skm.recall_score(y, p.argmax(1), pos_label=1),
    "specificity": lambda y, p: skm.recall_score(y, p.argmax(1), pos_label=0),
    "roc_auc": lambda y, p: (skm.roc_auc_score(y, p[:, 1]) if p.shape[1] == 2 else
                             skm.roc_auc_score(y, p, multi_class="ovr", average="macro")),
}


def _predictions(rng, n, k):
    y = np.r_[np.arange(k), rng.integers(0, k, n - k)]
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    logits[: n // 4] = np.round(logits[: n // 4], 1)  # ties in the scores
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3])
def test_metric_set_matches_the_issue(k):
    expected = {"roc_auc", "balanced_accuracy", "accuracy", "f1_macro", "log_loss"}
    assert set(metric_names(k)) == expected | ({"sensitivity", "specificity"} if k == 2 else set())


@pytest.mark.parametrize("k", [2, 3])
def test_point_metrics_are_scikit_learns(seed, k):
    y, p = _predictions(np.random.default_rng(seed), 90, k)
    for name in metric_names(k):
        assert METRICS[name].point(y, p) == SK[name](y, p), name


@pytest.mark.parametrize("k", [2, 3, 5])
def test_metrics_of_counts_are_scikit_learns_to_the_last_bit(seed, k):
    """Their point value comes from the counts (the bootstrap's formulas at unit weights), not from scikit-learn:
    it must be scikit-learn's value exactly, on folds of any size, with ties, classes never predicted
    and predictions of classes absent from the fold."""
    rng = np.random.default_rng(seed)
    counts = [name for name in metric_names(k) if METRICS[name].of_counts]
    assert set(counts) == {"accuracy", "balanced_accuracy", "f1_macro"} | ({"sensitivity", "specificity"} if k == 2
                                                                             else set())
    for n in (k, 7, 19, 60, 233):
        y, p = _predictions(rng, max(n, k), k)
        for rows in (np.arange(len(y)), rng.choice(len(y), size=max(2, len(y) // 3), replace=False)):
            p_rows = p[rows].copy()
            p_rows[: len(rows) // 2, 0] = 1.0  # many rows predicted as class 0: some classes never predicted
            if len(np.unique(y[rows])) < 2:
                continue
            for name in counts:
                assert METRICS[name].point(y[rows], p_rows) == SK[name](y[rows], p_rows), (name, n)


def _hard_cases(rng, n, k):
    """Predictions that stress the arithmetic: ties, constant and 0/1 scores, rounding, extreme confidence."""
    y = np.r_[np.arange(k), rng.integers(0, k, n - k)]
    yield "smooth", y, _predictions(rng, n, k)[1]
    for decimals in (0, 1, 2):  # ties, many of them at 0 decimals
        logits = np.round(rng.normal(scale=2.0, size=(n, k)), decimals)
        p = np.exp(logits)
        yield f"ties {decimals}", y, p / p.sum(axis=1, keepdims=True)
    yield "constant", y, np.full((n, k), 1.0 / k)
    hard = np.eye(k)[rng.integers(0, k, n)]  # probabilities of exactly 0 and 1: clipped by log loss
    yield "zeros and ones", y, hard
    logits = rng.normal(scale=40.0, size=(n, k))  # confident: probabilities within eps of 0 and 1
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    yield "confident", y, p / p.sum(axis=1, keepdims=True)
    p = rng.random((n, k)).astype(np.float32)  # float32, rows summing to one only roughly
    yield "float32", y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", ["roc_auc", "log_loss"])
def test_auc_and_log_loss_are_scikit_learns_to_the_last_bit(seed, k, name):
    """ROC AUC and log loss run scikit-learn's arithmetic without its input checks where the inputs need none,
    and call scikit-learn itself otherwise: either way the value is scikit-learn's exactly (same float)."""
    rng = np.random.default_rng(seed)
    unchecked = {"roc_auc": metrics_module.unchecked_roc_auc, "log_loss": metrics_module.unchecked_log_loss}[name]
    used = 0
    for n in (k, 5, 19, 80, 401):
        for case, y, p in _hard_cases(rng, max(n, k), k):
            for rows in (np.arange(len(y)), np.sort(rng.choice(len(y), size=max(2, len(y) // 3), replace=False))):
                if len(np.unique(y[rows])) < (k if name == "roc_auc" else 2):  # scikit-learn's multiclass AUC
                    continue  # needs every class present
                expected = SK[name](y[rows], p[rows])
                assert METRICS[name].point(y[rows], p[rows]) == expected, (case, n)
                fast = unchecked(y[rows], p[rows])
                assert fast is None or (type(fast) is float and fast == expected), (case, n)
                used += fast is not None
    if k == 2 or name == "log_loss":
        assert used > 20  # the unchecked path did the work in the ordinary cases


def test_auc_and_log_loss_leave_odd_inputs_to_scikit_learn():
    """A fold with one class, non-finite scores, probabilities that are not probabilities: scikit-learn's own
    answer (NaN with its warning, or its error), not an unchecked one."""
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    one_class = np.zeros(4, dtype=int)
    assert metrics_module.unchecked_roc_auc(one_class, p) is None
    with pytest.warns(UndefinedMetricWarning, match="Only one class"):
        assert np.isnan(METRICS["roc_auc"].point(one_class, p))
    assert metrics_module.unchecked_roc_auc(y, np.where(p == 0.1, np.nan, p)) is None
    with pytest.raises(ValueError):
        METRICS["roc_auc"].point(y, np.where(p == 0.1, np.nan, p))
    not_summing = p * 0.5
    assert metrics_module.unchecked_log_loss(y, not_summing) is None
    with pytest.warns(UserWarning, match="do not sum to one"):
        assert METRICS["log_loss"].point(y, not_summing) == skm.log_loss(y, not_summing, labels=[0, 1])
    assert metrics_module.unchecked_log_loss(y, p * 2) is None
    with pytest.raises(ValueError, match="greater than 1"):
        METRICS["log_loss"].point(y, p * 2)
    assert metrics_module.unchecked_roc_auc(y, np.c_[p, p[:, :1]] / 2) is None  # three classes: scikit-learn's


@pytest.mark.parametrize("k", [2, 3])
def test_bootstrap_metrics_equal_scikit_learn_on_the_resampled_arrays(seed, k):
    rng = np.random.default_rng(seed)
    y, p = _predictions(rng, 80, k)
    W = bootstrap_weights(len(y), None, 6, seed)
    W = np.vstack([np.ones(len(y)), W])  # unit weights: the plain metric
    for name in metric_names(k):
        fast = METRICS[name].weighted(W, y, p)
        for b in range(len(W)):
            rows = np.repeat(np.arange(len(y)), W[b].astype(int))
            if len(np.unique(y[rows])) < k:
                continue  # a resample without some class: scikit-learn refuses AUC; we return nan
            assert fast[b] == pytest.approx(SK[name](y[rows], p[rows]), rel=1e-12, abs=1e-12), (name, b)


def test_group_bootstrap_resamples_whole_groups(seed):
    groups = np.array(["a", "a", "b", "c", "c", "c", "d"])
    W = bootstrap_weights(len(groups), groups, 200, seed)
    assert np.all(W[:, 0] == W[:, 1]) and np.all(W[:, 3] == W[:, 4]) and np.all(W[:, 4] == W[:, 5])
    assert np.all(W[:, [0, 2, 3, 6]].sum(axis=1) == 4)  # four groups drawn, each with all its rows
    assert np.array_equal(W, bootstrap_weights(len(groups), groups, 200, seed))


def _whole_matrix(n_rows, groups, n_boot, seed):
    """The bootstrap weights as they were made before Resamples: one (n_boot, n_rows) matrix at once."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot).astype(np.float64)
    names, index = np.unique(groups, return_inverse=True)
    return rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)[:, index].astype(float)


@pytest.mark.parametrize("size", [1, 7, 250, None])
@pytest.mark.parametrize("grouped", [False, True])
def test_resamples_made_block_by_block_are_the_whole_matrix(seed, size, grouped):
    groups = np.array(list("aabcccdeef" * 3)) if grouped else None
    resamples = Resamples(30, groups, 1000, seed)
    blocks = list(resamples.blocks(size))
    assert all(len(b) <= (size or 250) for b in blocks)
    assert np.array_equal(np.vstack(blocks), _whole_matrix(30, groups, 1000, seed))
    assert np.array_equal(bootstrap_weights(30, groups, 1000, seed), _whole_matrix(30, groups, 1000, seed))


def test_resample_blocks_stay_small_at_a_million_rows():
    resamples = Resamples(1_000_000, None, 1000, 0)
    assert resamples.block_size() == 4  # 4 x 1M float64 = 32 MB per block, not 8 GB for the whole matrix
    first = next(resamples.blocks())
    assert first.shape == (4, 1_000_000) and np.all(first.sum(axis=1) == 1_000_000)


@pytest.mark.parametrize("k", [2, 3])
def test_intervals_from_resample_blocks_equal_those_of_the_whole_matrix(seed, k, monkeypatch):
    rng = np.random.default_rng(seed)
    y, p = _predictions(rng, 90, k)
    oof = np.stack([p, np.roll(p, 1, axis=0)])
    fold_rows = [[np.arange(0, 45), np.arange(45, 90)]] * 2
    whole = summarise(y, oof, fold_rows, _whole_matrix(90, None, 300, seed))
    assert Resamples(90, None, 300, seed).block_size() == 250  # the blocks the whole matrix was cut into
    assert summarise(y, oof, fold_rows, Resamples(90, None, 300, seed)) == whole
    monkeypatch.setattr(metrics_module, "_BLOCK_CELLS", 90 * 7)  # blocks of 7 resamples, as at large n
    assert Resamples(90, None, 300, seed).block_size() == 7
    small = summarise(y, oof, fold_rows, Resamples(90, None, 300, seed))
    assert {k: v for k, v in small.items() if k != "log_loss"} == {k: v for k, v in whole.items() if k != "log_loss"}
    # log loss is a matrix product (W @ loss), whose rounding BLAS may change with the block's height
    assert small["log_loss"]["ci"] == pytest.approx(whole["log_loss"]["ci"], rel=1e-13)


def _plain_logreg(settings, X, y, train, seed, groups=None):
    """The logreg probe written out in plain scikit-learn."""
    splitter = (StratifiedGroupKFold if groups is not None else StratifiedKFold)(
        settings.inner_folds, shuffle=True, random_state=seed)
    inner = list(splitter.split(X[train], y[train], None if groups is None else groups[train]))
    model = LogisticRegressionCV(Cs=list(settings.c_grid), l1_ratios=(0.0,), cv=inner, scoring="neg_log_loss",
                                 class_weight="balanced", max_iter=settings.max_iter, use_legacy_attributes=False)
    return Pipeline([("scale", StandardScaler()), ("model", model)]).fit(X[train], y[train])


def _plain_lgbm(settings, X, y, train, seed, groups=None):
    from lightgbm import LGBMClassifier

    model = LGBMClassifier(n_estimators=settings.lgbm_trees, learning_rate=settings.lgbm_learning_rate,
                           num_leaves=settings.lgbm_leaves, min_child_samples=10, subsample=0.8, subsample_freq=1,
                           colsample_bytree=0.5, reg_lambda=1.0, max_bin=63, class_weight="balanced",
                           random_state=seed, n_jobs=1, deterministic=True, force_col_wise=True, verbose=-1)
    return Pipeline([("scale", StandardScaler()), ("model", model)]).fit(X[train], y[train])


@pytest.mark.parametrize("grouped", [False, True])
def test_probe_results_equal_plain_scikit_learn_on_the_same_folds(tmp_path, seed, grouped):
    codes, y = make_codes(n=72, widths=(6, 12), seed=seed)
    groups = np.array([f"p{i // 3}" for i in range(len(y))]) if grouped else None
    cache = write_cache(tmp_path / "c.h5", codes, y, ["benign", "malignant"], groups=groups)
    config = ProbeConfig(probes=("logreg", "lgbm"), folds=4, seed=seed, n_boot=50,
                         groups="groups" if grouped else "none")
    results = run_probes(cache, config, out=tmp_path / "r.json", progress=False)
    settings = ProbeSettings()

    splitter = (StratifiedGroupKFold if grouped else StratifiedKFold)(4, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros(len(y)), y, groups))
    for k, (_, test) in enumerate(folds):
        assert np.array_equal(np.flatnonzero(results.folds.test_fold[0] == k), np.sort(test))

    for (layer, pooling), X in codes.items():
        X = X.astype(np.float64)
        for probe, plain in (("logreg", _plain_logreg), ("lgbm", _plain_lgbm)):
            row = results.row(f"{layer}/{pooling}", probe)
            oof = np.zeros((len(y), 2))
            for k, (train, test) in enumerate(folds):
                model = plain(settings, X, y, train, seed, groups)
                oof[test] = model.predict_proba(X[test])
                for name in metric_names(2):
                    assert row["metrics"][name]["folds"][k] == SK[name](y[test], oof[test]), (probe, name, k)
            for name in metric_names(2):
                per_fold = [SK[name](y[test], oof[test]) for _, test in folds]
                assert row["metrics"][name]["mean"] == np.mean(per_fold)
                assert row["metrics"][name]["sd"] == np.std(per_fold, ddof=1)
                assert row["metrics"][name]["pooled"] == SK[name](y, oof)


def test_interval_is_seeded_and_brackets_the_pooled_value(tmp_path):
    codes, y = make_codes(n=60, widths=(10,), informative=(3,))
    cache = write_cache(tmp_path / "c.h5", codes, y, ["a", "b"])
    config = ProbeConfig(probes=("logreg",), folds=3, n_boot=300)
    first = run_probes(cache, config, out=tmp_path / "1.json", progress=False).rows[0]["metrics"]["roc_auc"]
    again = run_probes(cache, config, out=tmp_path / "2.json", progress=False).rows[0]["metrics"]["roc_auc"]
    assert first == again
    assert first["ci"][0] < first["pooled"] < first["ci"][1]
