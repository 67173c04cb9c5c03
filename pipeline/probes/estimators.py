"""Two small estimators no library ships: a Platt-scaled linear SVM and a read-back LightGBM model.

Both follow scikit-learn's conventions (parameters stored by ``__init__``,
learned attributes ending in ``_``) so they sit as the last step of a
``Pipeline`` like any other classifier.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import check_cv, cross_val_predict
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted, validate_data

# Platt's sigmoid on one score (binary) or a multinomial map of the K one-vs-rest
# scores; a mild L2 keeps it finite when the inner folds separate perfectly.
CALIBRATOR_C = 1.0


def _as_2d(scores: np.ndarray) -> np.ndarray:
    return scores.reshape(-1, 1) if scores.ndim == 1 else scores


class PlattSVM(ClassifierMixin, BaseEstimator):
    """Linear SVM with C chosen by inner cross-validation and Platt-scaled probabilities.

    For every C in ``Cs`` the inner folds give out-of-fold decision values; a
    logistic calibrator is fitted on them, and the C whose calibrated
    out-of-fold probabilities have the lowest log loss wins. The SVM is then
    refitted on all rows at that C and keeps the winning calibrator, which has
    seen only out-of-fold scores (as ``CalibratedClassifierCV(ensemble=False)``).
    One pass over the grid both selects C and calibrates.
    """

    def __init__(self, Cs=(0.01, 0.1, 1.0), cv=3, class_weight=None, max_iter=1000, random_state=None):
        self.Cs = Cs
        self.cv = cv
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def _svm(self, C: float) -> LinearSVC:
        return LinearSVC(C=C, dual="auto", class_weight=self.class_weight, max_iter=self.max_iter,
                         random_state=self.random_state)

    def _calibrator(self) -> LogisticRegression:
        return LogisticRegression(C=CALIBRATOR_C, class_weight=self.class_weight, max_iter=self.max_iter)

    def fit(self, X, y):
        X, y = validate_data(self, X, y)
        self.classes_ = np.unique(y)
        splits = list(check_cv(self.cv, y, classifier=True).split(X, y))
        best = None
        self.cv_log_loss_ = []
        for C in self.Cs:
            scores = _as_2d(cross_val_predict(self._svm(C), X, y, cv=splits, method="decision_function"))
            calibrator = self._calibrator().fit(scores, y)
            loss = log_loss(y, calibrator.predict_proba(scores), labels=self.classes_)
            self.cv_log_loss_.append(float(loss))
            if best is None or loss < best[0]:
                best = (loss, float(C), calibrator)
        _, self.C_, self.calibrator_ = best
        self.svm_ = self._svm(self.C_).fit(X, y)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "svm_")
        return self.svm_.decision_function(X)

    def predict_proba(self, X) -> np.ndarray:
        return self.calibrator_.predict_proba(_as_2d(self.decision_function(X)))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class BoosterClassifier(ClassifierMixin, BaseEstimator):
    """A LightGBM model read back from its own text format; predicts as ``LGBMClassifier`` does."""

    def __init__(self, model_text: str = ""):
        self.model_text = model_text

    def fit(self, X, y):
        raise TypeError("BoosterClassifier only replays a saved LightGBM model; fit an LGBMClassifier instead")

    @classmethod
    def from_text(cls, model_text: str, classes: np.ndarray) -> "BoosterClassifier":
        import lightgbm

        model = cls(model_text)
        model.booster_ = lightgbm.Booster(model_str=model_text)
        model.classes_ = np.asarray(classes)
        model.n_features_in_ = model.booster_.num_feature()
        return model

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "booster_")
        X = validate_data(self, X, reset=False, ensure_all_finite=False)
        result = self.booster_.predict(X)
        if result.ndim == 1:  # binary: LightGBM returns P(class 1) only
            return np.vstack((1.0 - result, result)).transpose()
        return result

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class CosineKNN(ClassifierMixin, BaseEstimator):
    """k nearest neighbours by cosine distance with distance-weighted votes; k chosen by inner CV.

    The standard frozen-feature evaluation (DINOv2, MedMNIST+). For every k in
    ``ks`` that the inner training parts can fill, the inner folds give
    out-of-fold probabilities; the k with the lowest Brier score wins (a proper
    score that stays finite when a vote is unanimous, unlike log loss; on a tie
    the larger k, the smoother vote). The training codes are kept as arrays
    (``X_train_``, ``y_train_``): they are the model, and they are what a saved
    probe stores.
    """

    def __init__(self, ks=(1, 3, 5, 9, 15, 25, 45), cv=3):
        self.ks = ks
        self.cv = cv

    @staticmethod
    def _knn(k: int):
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance", algorithm="brute")

    def fit(self, X, y):
        X, y = validate_data(self, X, y)
        self.classes_ = np.unique(y)
        splits = list(check_cv(self.cv, y, classifier=True).split(X, y))
        room = min(len(train) for train, _ in splits)
        ks = [int(k) for k in self.ks if k <= room] or [max(1, room)]
        onehot = (y[:, None] == self.classes_[None, :]).astype(np.float64)
        self.cv_brier_ = []
        for k in ks:
            proba = cross_val_predict(self._knn(k), X, y, cv=splits, method="predict_proba")
            self.cv_brier_.append(float(np.mean(np.sum((proba - onehot) ** 2, axis=1))))
        best = min(range(len(ks)), key=lambda i: (self.cv_brier_[i], -ks[i]))
        self.k_ = min(ks[best], len(X))
        self.X_train_, self.y_train_ = np.asarray(X, dtype=np.float64), np.asarray(y)
        self.knn_ = self._knn(self.k_).fit(self.X_train_, self.y_train_)
        return self

    @classmethod
    def from_arrays(cls, ks, k: int, X_train: np.ndarray, y_train: np.ndarray, cv_brier: list) -> "CosineKNN":
        """Rebuild a fitted model from its saved training codes (fitting a kNN only stores them)."""
        model = cls(ks=tuple(ks), cv=None)
        model.classes_ = np.unique(y_train)
        model.k_, model.cv_brier_ = int(k), list(cv_brier)
        model.X_train_, model.y_train_ = np.asarray(X_train, dtype=np.float64), np.asarray(y_train)
        model.n_features_in_ = model.X_train_.shape[1]
        model.knn_ = cls._knn(model.k_).fit(model.X_train_, model.y_train_)
        return model

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "knn_")
        X = validate_data(self, X, reset=False)
        return self.knn_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
