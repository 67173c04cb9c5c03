"""Distances between two samples of codes of one layer (data set A against data set B).

* ``frechet``: ``|mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2))``, the Fréchet
  (2-Wasserstein) distance between Gaussians fitted to the two samples. Where a
  sample has no more rows than the layer has channels, its covariance is the
  Ledoit-Wolf shrinkage estimate (the plain one is singular there).
* ``frechet_rel``: the same divided by ``|mu_a - mu_b|^2 + Tr C_a + Tr C_b``, its
  largest possible value, so it lies in [0, 1] whatever the layer's scale.
* ``mmd``: the unbiased estimate of the squared maximum mean discrepancy with an
  RBF kernel ``exp(-|x - y|^2 / h)``, ``h`` the median squared distance between
  the pooled rows (the median heuristic); about 0 when the sets are alike.
* ``domain_auc``: the cross-validated ROC AUC of a standardised logistic
  regression telling A's rows from B's; 0.5 means indistinguishable, 1 fully
  separable.

MMD and the domain classifier use at most ``max_rows`` rows of each set, drawn
with ``seed``, so that their cost stays bounded on large caches.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from ..errors import SimilarityError

MAX_ROWS = 1000
CV_FOLDS = 5


def check_pair(a: np.ndarray, b: np.ndarray, who: str = "comparison",
               min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Two finite float64 (rows, channels) arrays of the same width, each with ``min_rows`` rows."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for name, x in (("first", a), ("second", b)):
        if x.ndim != 2:
            raise SimilarityError(f"{who}: the {name} set of codes must be a (rows, channels) array, "
                                  f"got shape {x.shape}")
        if len(x) < min_rows:
            raise SimilarityError(f"{who}: the {name} set has {len(x)} row(s); at least {min_rows} are needed")
        if not np.isfinite(x).all():
            raise SimilarityError(f"{who}: the {name} set of codes holds NaN or infinite values")
    if a.shape[1] != b.shape[1]:
        raise SimilarityError(f"{who}: the sets have {a.shape[1]} and {b.shape[1]} channels; they must match")
    return a, b


def covariance(x: np.ndarray) -> np.ndarray:
    """Maximum-likelihood covariance, or the Ledoit-Wolf shrinkage estimate where rows <= channels."""
    if len(x) <= x.shape[1]:
        from sklearn.covariance import ledoit_wolf  # the function: the estimator also inverts the matrix

        return ledoit_wolf(x)[0]
    return np.cov(x, rowvar=False, bias=True).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_parts(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The Fréchet distance and its upper bound ``|mu_a - mu_b|^2 + Tr C_a + Tr C_b``."""
    a, b = check_pair(a, b, "Fréchet distance")
    ca, cb = covariance(a), covariance(b)
    root = _sqrt_psd(ca)
    # Tr (C_a C_b)^(1/2) = sum of sqrt(eigenvalues of C_a^(1/2) C_b C_a^(1/2)), a symmetric PSD matrix
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ cb @ root), 0.0, None)).sum()
    shift = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    bound = shift + float(np.trace(ca) + np.trace(cb))
    return max(bound - 2.0 * float(cross), 0.0), bound


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to ``a`` and ``b`` (see the module docstring)."""
    return frechet_parts(a, b)[0]


def frechet_rel(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance over its largest possible value: 0 identical, 1 at most."""
    distance, bound = frechet_parts(a, b)
    return distance / bound if bound > 0 else 0.0


def subsample(x: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_rows`` rows of ``x``, drawn without replacement, in their original order."""
    if len(x) <= max_rows:
        return x
    return x[np.sort(rng.choice(len(x), size=max_rows, replace=False))]


def median_bandwidth(a: np.ndarray, b: np.ndarray) -> float:
    """Median squared Euclidean distance between distinct rows of the pooled sample."""
    pooled = np.vstack([a, b])
    d2 = cdist(pooled, pooled, "sqeuclidean")[np.triu_indices(len(pooled), k=1)]
    positive = d2[d2 > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def mmd2_unbiased(a: np.ndarray, b: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD^2 with the kernel ``exp(-|x - y|^2 / bandwidth)`` (Gretton et al. 2012, eq. 3)."""
    a, b = check_pair(a, b, "MMD")
    m, n = len(a), len(b)
    kaa = np.exp(-cdist(a, a, "sqeuclidean") / bandwidth)
    kbb = np.exp(-cdist(b, b, "sqeuclidean") / bandwidth)
    kab = np.exp(-cdist(a, b, "sqeuclidean") / bandwidth)
    within_a = (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
    within_b = (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * kab.mean())


def mmd(a: np.ndarray, b: np.ndarray, seed: int = 0, max_rows: int = MAX_ROWS) -> float:
    """Unbiased RBF-kernel MMD^2 on at most ``max_rows`` rows per set, median-heuristic bandwidth."""
    a, b = check_pair(a, b, "MMD")
    rng = np.random.default_rng(seed)
    a, b = subsample(a, max_rows, rng), subsample(b, max_rows, rng)
    return mmd2_unbiased(a, b, median_bandwidth(a, b))


def domain_auc(a: np.ndarray, b: np.ndarray, seed: int = 0, max_rows: int = MAX_ROWS, folds: int = CV_FOLDS) -> float:
    """Cross-validated ROC AUC of a logistic regression telling ``a`` (0) from ``b`` (1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = check_pair(a, b, "domain classifier", min_rows=folds)
    rng = np.random.default_rng(seed)
    a, b = subsample(a, max_rows, rng), subsample(b, max_rows, rng)
    x = np.vstack([a, b])
    y = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=splits, method="decision_function")
    return float(roc_auc_score(y, scores))
