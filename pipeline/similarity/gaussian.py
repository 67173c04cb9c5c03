"""Distances between per-channel Gaussians, summarised per layer.

Each channel of a layer is summarised by a mean and a variance, once for the
data set and once for a reference (ImageNet's BatchNorm running statistics, or
a second data set's codes). Every distance is measured in units of the
reference's standard deviation, which is what a BatchNorm layer divides by, so
the numbers of different layers (whose activations have very different scales)
can be compared along the depth:

* ``mean_shift``: ``|m - m_ref| / s_ref``, the mean of the data's activation after
  ImageNet's normalisation (0 for ImageNet itself);
* ``w2``: the 2-Wasserstein distance ``sqrt((m - m_ref)^2 + (s - s_ref)^2) / s_ref``;
* ``sym_kl``: the Jeffreys divergence ``KL(P || Q) + KL(Q || P)`` (nats), already
  scale-free.

The per-layer value is the mean over channels. A variance floor of
``FLOOR * mean(reference variances)`` is added to both variances so that a dead
channel (variance 0) cannot dominate a layer's mean.
"""

from __future__ import annotations

import numpy as np

from ..errors import SimilarityError

FLOOR = 1e-3  # variance floor, relative to the layer's mean reference variance


def _as_arrays(mean, var, ref_mean, ref_var) -> tuple[np.ndarray, ...]:
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (mean, var, ref_mean, ref_var)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise SimilarityError(f"per-channel statistics must have one length; got shapes "
                              f"{[a.shape for a in arrays]} (mean, var, reference mean, reference var)")
    if arrays[0].size == 0:
        raise SimilarityError("per-channel statistics are empty: a layer needs at least one channel")
    for name, a in zip(("mean", "var", "reference mean", "reference var"), arrays):
        if not np.isfinite(a).all():
            raise SimilarityError(f"the {name} holds NaN or infinite values; the statistics are unusable")
    if (arrays[1] < 0).any() or (arrays[3] < 0).any():
        raise SimilarityError("a variance is negative; the statistics are unusable")
    return tuple(arrays)


def _floored(mean, var, ref_mean, ref_var, floor: float):
    m, v, rm, rv = _as_arrays(mean, var, ref_mean, ref_var)
    eps = floor * float(rv.mean()) + np.finfo(np.float64).tiny
    return m, v + eps, rm, rv + eps


def mean_shift_channels(mean, var, ref_mean, ref_var, floor: float = FLOOR) -> np.ndarray:
    """Per channel ``|m - m_ref| / s_ref``."""
    m, _, rm, rv = _floored(mean, var, ref_mean, ref_var, floor)
    return np.abs(m - rm) / np.sqrt(rv)


def w2_channels(mean, var, ref_mean, ref_var, floor: float = FLOOR) -> np.ndarray:
    """Per channel 2-Wasserstein distance between N(m, v) and N(m_ref, v_ref), over ``s_ref``."""
    m, v, rm, rv = _floored(mean, var, ref_mean, ref_var, floor)
    return np.sqrt((m - rm) ** 2 + (np.sqrt(v) - np.sqrt(rv)) ** 2) / np.sqrt(rv)


def sym_kl_channels(mean, var, ref_mean, ref_var, floor: float = FLOOR) -> np.ndarray:
    """Per channel ``KL(P || Q) + KL(Q || P)`` for P = N(m, v), Q = N(m_ref, v_ref)."""
    m, v, rm, rv = _floored(mean, var, ref_mean, ref_var, floor)
    return 0.5 * (v / rv + rv / v) - 1.0 + 0.5 * (m - rm) ** 2 * (1.0 / v + 1.0 / rv)


def channel_moments(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population variance of (rows, channels) codes, in float64."""
    x = np.asarray(codes, dtype=np.float64)
    return x.mean(axis=0), x.var(axis=0)
