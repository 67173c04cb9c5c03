"""Transferability of a layer's codes to the user's labels, without training a probe.

* ``logme`` (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models
  for Transfer Learning"): for each class, the log marginal evidence of a
  Bayesian linear regression from the codes to the class's 0/1 indicator, with
  the prior precision ``alpha`` and noise precision ``beta`` chosen by the
  evidence-maximising fixed point on the SVD of the codes (the paper's
  Algorithm 2); divided by the number of images and averaged over classes.
  Higher is better; it is comparable across layers of different widths.
* ``hscore`` (Bao et al. 2019, "An Information-Theoretic Approach to
  Transferability in Task Transfer Learning"): ``tr(cov(f)^-1 cov(E[f | y]))``,
  how much of the codes' spread lies between the classes; at most the number
  of classes minus one. With ``shrinkage`` (the default) it is the regularised
  H-score of Ibrahim et al. 2022 ("Newer is not always better"):
  ``tr(S_a^-1 (1 - a) cov(E[f | y]))`` with ``S_a = (1 - a) S + a mu I`` the
  Ledoit-Wolf estimate, which equals ``tr((S + l I)^-1 cov(E[f | y]))`` with a
  ridge ``l = mu a / (1 - a)`` chosen by Ledoit-Wolf. It stays bounded and stable
  where images are few and channels many, where the plain score (and the
  plug-in of ``S_a`` alone) grows with the width. Higher is better.
* ``leep`` (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate
  Transferability of Learned Representations"): from the ImageNet head's
  softmax ``theta``, the empirical conditional ``P(y | z)`` of the user's label
  given the ImageNet class, and the mean log-likelihood of the "expected
  empirical predictor" ``sum_z P(y_i | z) theta_z(x_i)``. At most 0; closer to 0
  is better. One number per model, not per layer.
"""

from __future__ import annotations

import numpy as np

from ..errors import SimilarityError

LOGME_TOL = 1e-8  # relative change of alpha and beta at which the fixed point has converged
LOGME_MAX_ITER = 200
LOGME_EPS = 1e-5  # added to |m|^2 and the residual, as in the authors' code, so a perfect fit stays finite


def check_labelled(codes: np.ndarray, labels: np.ndarray, who: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Finite float64 codes of the labelled rows and their labels as 0..k-1; refuse fewer than 2 classes."""
    x = np.asarray(codes, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if x.ndim != 2 or len(x) != len(y):
        raise SimilarityError(f"{who}: codes of shape {x.shape} do not match {len(y)} labels; "
                              "pass a (rows, channels) array and one label per row")
    keep = y >= 0
    x, y = x[keep], y[keep]
    if not np.isfinite(x).all():
        raise SimilarityError(f"{who}: the codes hold NaN or infinite values")
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise SimilarityError(f"{who} needs labelled images of at least 2 classes; found {len(classes)} "
                              f"class(es) among {len(y)} labelled row(s)")
    return x, y, len(classes)


def _evidence(alpha, beta, n, d, s2, z, y2):
    """Log evidence and its parts for one target, in the SVD basis (``z = U^T y``)."""
    denom = alpha + beta * s2
    m2 = float(((beta * np.sqrt(s2) * z / denom) ** 2).sum())
    residual = float(((alpha * z / denom) ** 2).sum() + max(y2 - float(z @ z), 0.0))
    log_det = float(np.log(denom).sum() + (d - len(s2)) * np.log(alpha))
    evidence = (0.5 * n * np.log(beta) + 0.5 * d * np.log(alpha) - 0.5 * n * np.log(2 * np.pi)
                - 0.5 * beta * (residual + LOGME_EPS) - 0.5 * alpha * (m2 + LOGME_EPS) - 0.5 * log_det)
    gamma = float((beta * s2 / denom).sum())
    return evidence, gamma, m2, residual


def logme_target(s2: np.ndarray, z: np.ndarray, y2: float, n: int, d: int) -> tuple[float, float, float]:
    """Maximised log evidence of one target, and the ``alpha`` and ``beta`` that maximise it.

    ``s2`` are the squared singular values of the codes, ``z`` the target in the
    left singular basis, ``y2`` its squared norm, ``n`` rows, ``d`` channels.
    """
    alpha, beta = 1.0, 1.0
    for _ in range(LOGME_MAX_ITER):
        _, gamma, m2, residual = _evidence(alpha, beta, n, d, s2, z, y2)
        new_alpha = gamma / (m2 + LOGME_EPS)
        new_beta = (n - gamma) / (residual + LOGME_EPS)
        new_alpha, new_beta = max(new_alpha, 1e-300), max(new_beta, 1e-300)
        done = abs(new_alpha - alpha) <= LOGME_TOL * alpha and abs(new_beta - beta) <= LOGME_TOL * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return _evidence(alpha, beta, n, d, s2, z, y2)[0], alpha, beta


def logme(codes: np.ndarray, labels: np.ndarray) -> float:
    """LogME: mean over classes of the maximised log evidence per image (higher is better)."""
    x, y, k = check_labelled(codes, labels, "LogME")
    n, d = x.shape
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    s2 = s**2
    targets = np.eye(k)[y]
    z = u.T @ targets
    scores = [logme_target(s2, z[:, c], float(targets[:, c] @ targets[:, c]), n, d)[0] / n for c in range(k)]
    return float(np.mean(scores))


def class_means(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Each row replaced by the mean of its class: the conditional expectation E[f | y]."""
    means = np.stack([x[y == c].mean(axis=0) for c in range(k)])
    return means[y]


def hscore(codes: np.ndarray, labels: np.ndarray, shrinkage: bool = True) -> float:
    """H-score ``tr(cov(f)^-1 cov(E[f | y]))``; Ledoit-Wolf regularised (Ibrahim et al.) with ``shrinkage``."""
    x, y, k = check_labelled(codes, labels, "H-score")
    between = np.atleast_2d(np.cov(class_means(x, y, k), rowvar=False, bias=True))
    if shrinkage:
        from sklearn.covariance import ledoit_wolf

        total, shrinkage = ledoit_wolf(x)
        return float(np.trace(np.linalg.solve(total, (1.0 - shrinkage) * between)))
    total = np.atleast_2d(np.cov(x, rowvar=False, bias=True))
    return float(np.trace(np.linalg.pinv(total, rcond=1e-10, hermitian=True) @ between))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def leep(logits: np.ndarray, labels: np.ndarray) -> float:
    """LEEP from the source model's logits (softmaxed here) and the target labels; at most 0."""
    raw, y, k = check_labelled(logits, labels, "LEEP")
    theta = softmax(raw)
    n = len(y)
    joint = theta.T @ np.eye(k)[y] / n  # P(z, y), (source classes, target classes)
    marginal = joint.sum(axis=1, keepdims=True)  # P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    expected = (theta @ conditional)[np.arange(n), y]  # sum_z P(y_i | z) theta_z(x_i)
    return float(np.mean(np.log(expected)))
