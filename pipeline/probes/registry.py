"""The probes: a registry of factories, each building a scikit-learn ``Pipeline``.

Every probe standardises the codes first. Linear probes reduce very wide layers
with PCA (an orthogonal projection, so their L2 penalty keeps its meaning) and
choose C by an inner cross-validation over a log-spaced grid, as in Kornblith
et al. 2019. Inner folds are passed in as explicit splits so that they respect
the same groups as the outer folds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import ProbeError
from .estimators import CosineKNN, PlattSVM

CLASS_WEIGHTS = ("balanced", None)


@dataclass(frozen=True)
class ProbeSettings:
    """How every probe is built; recorded in results files and saved probes.

    The defaults keep a whole grid (6 layers x 3 probes x 5 folds) on 3000
    images under a minute on two CPU cores; see ``bench/probe.py``.
    """

    c_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    svm_c_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    inner_folds: int = 3
    pca_above: int | None = 512  # linear probes reduce layers wider than this ...
    pca_components: int = 256  # ... to this many principal components
    class_weight: str | None = "balanced"
    max_iter: int = 1000
    lgbm_trees: int = 200
    lgbm_leaves: int = 7
    lgbm_learning_rate: float = 0.05
    knn_ks: tuple[int, ...] = (1, 3, 5, 9, 15, 25, 45)

    def __post_init__(self):
        if self.inner_folds < 2:
            raise ProbeError(f"inner folds must be at least 2, got {self.inner_folds}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ProbeError(f"class_weight must be one of {CLASS_WEIGHTS}, got {self.class_weight!r}")
        if not self.c_grid or not self.svm_c_grid or min(self.c_grid + self.svm_c_grid) <= 0:
            raise ProbeError("the C grids must hold positive values")
        object.__setattr__(self, "c_grid", tuple(float(c) for c in self.c_grid))
        object.__setattr__(self, "svm_c_grid", tuple(float(c) for c in self.svm_c_grid))
        if not self.knn_ks or min(self.knn_ks) < 1:
            raise ProbeError(f"the k grid of the kNN probe must hold positive whole numbers, got {self.knn_ks}")
        object.__setattr__(self, "knn_ks", tuple(int(k) for k in self.knn_ks))

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ProbeSettings":
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fields)


Factory = Callable[[ProbeSettings, tuple[int, int], list, int], Pipeline]


def _prepare(settings: ProbeSettings, shape: tuple[int, int], seed: int, reduce: bool) -> list[tuple]:
    n_samples, n_features = shape
    steps: list[tuple] = [("scale", StandardScaler())]
    if reduce and settings.pca_above is not None and n_features > settings.pca_above:
        components = min(settings.pca_components, n_samples - 1, n_features)
        steps.append(("pca", PCA(n_components=components, random_state=seed)))
    return steps


def logreg(settings: ProbeSettings, shape: tuple[int, int], inner: list, seed: int) -> Pipeline:
    """L2 logistic regression; C from the inner folds by log loss."""
    model = LogisticRegressionCV(
        Cs=list(settings.c_grid), l1_ratios=(0.0,), cv=inner, scoring="neg_log_loss",
        class_weight=settings.class_weight, max_iter=settings.max_iter, use_legacy_attributes=False,
    )
    return Pipeline(_prepare(settings, shape, seed, reduce=True) + [("model", model)])


def svm(settings: ProbeSettings, shape: tuple[int, int], inner: list, seed: int) -> Pipeline:
    """Linear SVM; C from the inner folds, Platt-scaled scores (see PlattSVM)."""
    model = PlattSVM(Cs=settings.svm_c_grid, cv=inner, class_weight=settings.class_weight,
                     max_iter=settings.max_iter, random_state=seed)
    return Pipeline(_prepare(settings, shape, seed, reduce=True) + [("model", model)])


def lgbm(settings: ProbeSettings, shape: tuple[int, int], inner: list, seed: int) -> Pipeline:
    """Gradient-boosted trees with small-data defaults; no tuning, so ``inner`` is unused.

    Few leaves, a slow learning rate, row and column subsampling and an L2 on
    leaf values; one thread and ``deterministic`` so results do not depend on
    ``--jobs``. Trees see every channel: a rotation by PCA would only hurt them.
    """
    from lightgbm import LGBMClassifier

    model = LGBMClassifier(
        n_estimators=settings.lgbm_trees, learning_rate=settings.lgbm_learning_rate,
        num_leaves=settings.lgbm_leaves, min_child_samples=10, subsample=0.8, subsample_freq=1,
        colsample_bytree=0.5, reg_lambda=1.0, max_bin=63, class_weight=settings.class_weight,
        random_state=seed, n_jobs=1, deterministic=True, force_col_wise=True, verbose=-1,
    )
    return Pipeline(_prepare(settings, shape, seed, reduce=False) + [("model", model)])


def knn(settings: ProbeSettings, shape: tuple[int, int], inner: list, seed: int) -> Pipeline:
    """k nearest neighbours by cosine distance on standardised codes, distance-weighted; k from the
    inner folds (see CosineKNN). Deterministic, so ``seed`` is unused."""
    return Pipeline(_prepare(settings, shape, seed, reduce=False)
                    + [("model", CosineKNN(ks=settings.knn_ks, cv=inner))])


PROBES: dict[str, Factory] = {"logreg": logreg, "svm": svm, "lgbm": lgbm, "knn": knn}


def register_probe(name: str, factory: Factory) -> None:
    """Add a probe: ``factory(settings, (n_samples, n_features), inner_splits, seed) -> Pipeline``."""
    if not name or "," in name:
        raise ProbeError(f"invalid probe name {name!r}")
    PROBES[name] = factory


def get_probe(name: str) -> Factory:
    try:
        return PROBES[name]
    except KeyError:
        raise ProbeError(f"unknown probe {name!r}; available: {', '.join(sorted(PROBES))}") from None


def build_probe(name: str, settings: ProbeSettings, shape: tuple[int, int], inner: list, seed: int) -> Pipeline:
    """The unfitted pipeline of probe ``name`` for codes of ``shape``."""
    return get_probe(name)(settings, shape, inner, seed)


def chosen_params(pipeline: Pipeline) -> dict:
    """The hyperparameters the inner cross-validation picked, for the record."""
    model = pipeline[-1]
    chosen = {}
    if hasattr(model, "C_"):
        chosen["C"] = float(np.ravel(model.C_)[0])
    if hasattr(model, "k_"):
        chosen["k"] = int(model.k_)
    if "pca" in pipeline.named_steps:
        pca = pipeline.named_steps["pca"]
        chosen["pca_components"] = int(pca.n_components_)
        chosen["pca_variance"] = round(float(pca.explained_variance_ratio_.sum()), 4)
    return chosen
