"""Transferability: LogME, H-score and LEEP against independent computations and hand-worked values."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from pipeline.errors import SimilarityError
from pipeline.similarity import hscore, leep, logme
from pipeline.similarity import transfer as T


# LogME ---------------------------------------------------------------------------------------------
def _evidence_direct(f, y, alpha, beta, eps=0.0):
    """log p(y | F, alpha, beta) of Bayesian linear regression, straight from the definition."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    return (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * (((f @ m - y) ** 2).sum() + eps) - alpha / 2 * (m @ m + eps) - 0.5 * np.linalg.slogdet(a)[1])


def _brute_force_max(f, y, eps=0.0):
    """Maximise the evidence over (log alpha, log beta) from a grid of starts, with no fixed point."""
    best = None
    for la in (-4.0, 0.0, 4.0):
        for lb in (-2.0, 1.0, 4.0):
            r = minimize(lambda p: -_evidence_direct(f, y, math.exp(p[0]), math.exp(p[1]), eps), [la, lb],
                         method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
            if best is None or r.fun < best.fun:
                best = r
    return -best.fun, np.exp(best.x)


def _tiny(seed, n=14, d=3):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d))
    labels = (f[:, 0] + 0.8 * rng.normal(size=n) > 0).astype(int)
    labels[:2] = [0, 1]
    return f, labels


def test_svd_evidence_equals_the_definition(seed):
    f, labels = _tiny(seed)
    y = (labels == 1).astype(float)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    for alpha, beta in ((0.3, 2.0), (5.0, 0.7)):
        got = T._evidence(alpha, beta, len(f), f.shape[1], s**2, u.T @ y, float(y @ y))[0]
        assert got == pytest.approx(_evidence_direct(f, y, alpha, beta, eps=T.LOGME_EPS), rel=1e-10)


def test_logme_fixed_point_reaches_the_brute_force_maximum(seed, monkeypatch):
    f, labels = _tiny(seed)
    y = (labels == 1).astype(float)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    monkeypatch.setattr(T, "LOGME_EPS", 0.0)  # the exact evidence, as the brute force sees it
    value, alpha, beta = T.logme_target(s**2, u.T @ y, float(y @ y), len(f), f.shape[1])
    want, (want_alpha, want_beta) = _brute_force_max(f, y)
    assert value == pytest.approx(want, rel=1e-8, abs=1e-8)
    assert beta == pytest.approx(want_beta, rel=1e-3)
    if want_alpha < 1e6:  # else the evidence prefers w = 0 and alpha runs off to infinity in both
        assert alpha == pytest.approx(want_alpha, rel=1e-3)
    else:
        assert alpha > 1e6


def test_logme_is_the_mean_over_classes_of_the_maximised_evidence_per_image(seed):
    f, labels = _tiny(seed, n=18)
    labels[2::3] = 2  # three classes
    per_class = [_brute_force_max(f, (labels == c).astype(float), eps=T.LOGME_EPS)[0] / len(f) for c in range(3)]
    assert logme(f, labels) == pytest.approx(np.mean(per_class), rel=1e-6)


def test_logme_prefers_informative_codes_and_ignores_unlabelled_rows(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=120)
    informative = rng.normal(size=(120, 6)) + 2.0 * y[:, None]
    noise = rng.normal(size=(120, 6))
    assert logme(informative, y) > logme(noise, y)
    labels = np.r_[y, -1, -1]
    codes = np.vstack([informative, rng.normal(size=(2, 6)) * 100])
    assert logme(codes, labels) == pytest.approx(logme(informative, y))


def test_logme_stays_finite_when_images_are_fewer_than_channels():
    rng = np.random.default_rng(0)
    assert math.isfinite(logme(rng.normal(size=(8, 40)), np.r_[[0] * 4, [1] * 4]))


# H-score -------------------------------------------------------------------------------------------
def test_hscore_by_hand_in_one_dimension():
    # f = 0, 1, 3, 4 with classes 0, 0, 1, 1: var f = 2.5, class means 0.5 and 3.5 -> var 2.25, H = 0.9;
    # in one dimension Ledoit-Wolf's target is the variance itself, so its shrinkage is 0
    f, y = np.array([[0.0], [1.0], [3.0], [4.0]]), np.array([0, 0, 1, 1])
    assert hscore(f, y, shrinkage=False) == pytest.approx(0.9)
    assert hscore(f, y) == pytest.approx(0.9)


def test_hscore_matches_the_formula_with_numpy_covariances(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=60)
    f = rng.normal(size=(60, 5)) + y[:, None] * np.array([1.0, 0.5, 0, 0, 0])
    g = np.empty_like(f)
    for c in range(3):
        g[y == c] = f[y == c].mean(axis=0)
    want = np.trace(np.linalg.pinv(np.cov(f, rowvar=False, bias=True)) @ np.cov(g, rowvar=False, bias=True))
    assert hscore(f, y, shrinkage=False) == pytest.approx(want, rel=1e-9)
    assert 0 < want <= 2.0 + 1e-9  # at most classes - 1


def test_shrinkage_hscore_is_a_ridge_with_the_ledoit_wolf_strength(seed):
    from sklearn.covariance import ledoit_wolf

    rng = np.random.default_rng(seed)
    y = np.r_[[0] * 10, [1] * 10]
    f = rng.normal(size=(20, 30)) * np.linspace(0.2, 2, 30) + 0.7 * y[:, None]
    cov, a = ledoit_wolf(f)
    mu = np.trace(np.cov(f, rowvar=False, bias=True)) / 30
    ridge = mu * a / (1 - a)
    g = np.where(y[:, None] == 0, f[y == 0].mean(0), f[y == 1].mean(0))
    s, sg = np.cov(f, rowvar=False, bias=True), np.cov(g, rowvar=False, bias=True)
    want = np.trace(np.linalg.solve(s + ridge * np.eye(30), sg))
    assert hscore(f, y) == pytest.approx(want, rel=1e-8)
    assert 0 < hscore(f, y) <= 1.0


# LEEP ------------------------------------------------------------------------------------------------
def _leep_by_loops(logits, labels):
    n, z_count = logits.shape
    theta = [[math.exp(v) / sum(math.exp(w) for w in row) for v in row] for row in logits.tolist()]
    classes = sorted(set(labels.tolist()))
    joint = {(y, z): sum(theta[i][z] for i in range(n) if labels[i] == y) / n for y in classes for z in range(z_count)}
    marginal = {z: sum(joint[(y, z)] for y in classes) for z in range(z_count)}
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[(labels[i], z)] / marginal[z] * theta[i][z] for z in range(z_count)))
    return total / n


def test_leep_matches_explicit_loops(seed):
    rng = np.random.default_rng(seed)
    logits, labels = rng.normal(size=(12, 5)) * 2, rng.integers(0, 3, size=12)
    labels[:3] = [0, 1, 2]
    assert leep(logits, labels) == pytest.approx(_leep_by_loops(logits, labels), rel=1e-12)


def test_leep_by_hand():
    labels = np.array([0, 0, 1, 1, 1])
    # a source model that is certain and whose classes are the target's: the predictor is exact
    certain = np.where(labels[:, None] == np.arange(2), 50.0, -50.0)
    assert leep(certain, labels) == pytest.approx(0.0, abs=1e-12)
    # an uninformative source model: LEEP is the log-likelihood of the class prior, -entropy
    uniform = np.zeros((5, 4))
    assert leep(uniform, labels) == pytest.approx(0.4 * math.log(0.4) + 0.6 * math.log(0.6))


# Refusals ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [logme, hscore, leep])
def test_measures_need_two_labelled_classes(fn):
    codes = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(SimilarityError, match="at least 2 classes; found 1 class"):
        fn(codes, np.array([0, 0, 0, -1, -1, 0]))
    with pytest.raises(SimilarityError, match="do not match 5 labels"):
        fn(codes, np.zeros(5, int))
    with pytest.raises(SimilarityError, match="NaN"):
        fn(np.full((4, 3), np.nan), np.array([0, 1, 0, 1]))
