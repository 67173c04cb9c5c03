"""Distances: per-channel Gaussians, Fréchet, MMD and the domain classifier, against hand-worked values."""

import math

import numpy as np
import pytest
from scipy.linalg import sqrtm

from pipeline.errors import SimilarityError
from pipeline.similarity import (MEASURES, Measure, domain_auc, frechet, frechet_rel, get_measure, mean_shift_channels,
                                 measure_names, mmd, mmd2_unbiased, register_measure, sym_kl_channels, w2_channels)
from pipeline.similarity.samples import covariance, median_bandwidth, subsample


# Per-channel Gaussians ------------------------------------------------------------------------
def test_channel_distances_by_hand():
    # data N(1, 4) against reference N(0, 1): KL(P||Q) = log(1/2) + 5/2 - 1/2, KL(Q||P) = log 2 + 2/8 - 1/2
    args = ([1.0], [4.0], [0.0], [1.0])
    assert mean_shift_channels(*args, floor=0.0) == pytest.approx([1.0])
    assert w2_channels(*args, floor=0.0) == pytest.approx([math.sqrt(2.0)])
    kl_pq, kl_qp = math.log(0.5) + 2.5 - 0.5, math.log(2.0) + 0.25 - 0.5
    assert sym_kl_channels(*args, floor=0.0) == pytest.approx([kl_pq + kl_qp])
    assert kl_pq + kl_qp == pytest.approx(1.75)


def test_distances_are_in_units_of_the_reference_sd():
    # scaling both Gaussians by 10 leaves every measure unchanged
    mean, var, rm, rv = np.array([1.0, -2.0]), np.array([4.0, 0.5]), np.array([0.0, 1.0]), np.array([1.0, 2.0])
    for fn in (mean_shift_channels, w2_channels, sym_kl_channels):
        np.testing.assert_allclose(fn(10 * mean, 100 * var, 10 * rm, 100 * rv), fn(mean, var, rm, rv), rtol=1e-12)


def test_identical_statistics_are_at_distance_zero_and_layer_values_are_channel_means():
    rng = np.random.default_rng(0)
    mean, var = rng.normal(size=8), rng.uniform(0.5, 2, size=8)
    for name in measure_names("gaussian"):
        assert get_measure(name).compute(mean, var, mean, var) == pytest.approx(0.0, abs=1e-12)
    ref_mean, ref_var = rng.normal(size=8), rng.uniform(0.5, 2, size=8)
    assert get_measure("w2").compute(mean, var, ref_mean, ref_var) == pytest.approx(
        w2_channels(mean, var, ref_mean, ref_var).mean())


def test_a_dead_channel_is_floored_not_infinite():
    value = get_measure("sym_kl").compute([0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0])
    assert math.isfinite(value) and value > 100  # large but finite: the floor is 1e-3 of the mean reference variance


def test_bad_statistics_are_refused():
    with pytest.raises(SimilarityError, match="one length"):
        w2_channels([0.0, 1.0], [1.0], [0.0], [1.0])
    with pytest.raises(SimilarityError, match="NaN"):
        w2_channels([np.nan], [1.0], [0.0], [1.0])
    with pytest.raises(SimilarityError, match="negative"):
        w2_channels([0.0], [-1.0], [0.0], [1.0])


# Fréchet ----------------------------------------------------------------------------------------
def test_frechet_in_one_dimension_is_mean_and_sd_difference(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, size=(50, 1)), rng.normal(2, 3, size=(40, 1))
    want = (a.mean() - b.mean()) ** 2 + (a.std() - b.std()) ** 2
    assert frechet(a, b) == pytest.approx(want, rel=1e-9)


def test_frechet_matches_the_matrix_square_root_formula(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(60, 4)) @ rng.normal(size=(4, 4))
    b = rng.normal(size=(70, 4)) @ rng.normal(size=(4, 4)) + 1.0
    ca, cb = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * sqrtm(ca @ cb).real)
    assert frechet(a, b) == pytest.approx(want, rel=1e-7)
    assert frechet(a, a[::-1]) == pytest.approx(0.0, abs=1e-9)
    assert 0.0 < frechet_rel(a, b) <= 1.0


def test_covariance_shrinks_where_rows_do_not_exceed_channels():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    wide = rng.normal(size=(10, 12))
    np.testing.assert_allclose(covariance(wide), LedoitWolf().fit(wide).covariance_)
    assert np.linalg.matrix_rank(covariance(wide)) == 12
    tall = rng.normal(size=(30, 3))
    np.testing.assert_allclose(covariance(tall), np.cov(tall, rowvar=False, bias=True))
    assert math.isfinite(frechet(wide, rng.normal(size=(8, 12))))


# MMD ----------------------------------------------------------------------------------------------
def _mmd_by_loops(a, b, h):
    k = lambda x, y: math.exp(-sum((xi - yi) ** 2 for xi, yi in zip(x, y)) / h)  # noqa: E731
    m, n = len(a), len(b)
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_unbiased_mmd_matches_explicit_loops(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(5, 2)), rng.normal(1, 1, size=(4, 2))
    assert mmd2_unbiased(a, b, 1.7) == pytest.approx(_mmd_by_loops(a.tolist(), b.tolist(), 1.7), rel=1e-12)
    pooled = np.vstack([a, b])
    d2 = [((pooled[i] - pooled[j]) ** 2).sum() for i in range(9) for j in range(i + 1, 9)]
    assert median_bandwidth(a, b) == pytest.approx(np.median(d2))
    assert mmd(a, b, seed=seed) == pytest.approx(_mmd_by_loops(a.tolist(), b.tolist(), np.median(d2)), rel=1e-12)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_the_shift(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(150, 3))
    values = [mmd(a, rng.normal(size=(150, 3)) + shift, seed=seed) for shift in (0.0, 0.5, 2.0)]
    assert abs(values[0]) < 0.02 and values[0] < values[1] < values[2]


def test_subsampling_bounds_the_rows_and_depends_only_on_the_seed():
    x = np.arange(100.0).reshape(50, 2)
    rng = np.random.default_rng(3)
    part = subsample(x, 10, rng)
    assert part.shape == (10, 2) and (np.diff(part[:, 0]) > 0).all()
    assert subsample(x, 80, rng) is x
    a, b = np.random.default_rng(0).normal(size=(40, 2)), np.random.default_rng(1).normal(size=(40, 2))
    assert mmd(a, b, seed=5, max_rows=20) == mmd(a, b, seed=5, max_rows=20)
    assert mmd(a, b, seed=5, max_rows=20) != mmd(a, b, seed=6, max_rows=20)


# Domain classifier --------------------------------------------------------------------------------
def test_domain_auc_is_chance_for_one_distribution_and_one_for_separate_ones(seed):
    rng = np.random.default_rng(seed)
    # the null spread of a cross-validated AUC on 200 + 200 rows is about 0.04
    same = domain_auc(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)), seed=seed)
    apart = domain_auc(rng.normal(size=(80, 4)), rng.normal(size=(80, 4)) + 3.0, seed=seed)
    assert abs(same - 0.5) < 0.15 and apart > 0.99


def test_sample_measures_refuse_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(SimilarityError, match="4 and 3 channels"):
        frechet(rng.normal(size=(9, 4)), rng.normal(size=(9, 3)))
    with pytest.raises(SimilarityError, match="3 row.*at least 5"):
        domain_auc(rng.normal(size=(3, 2)), rng.normal(size=(9, 2)))
    with pytest.raises(SimilarityError, match="NaN"):
        mmd(np.full((4, 2), np.nan), rng.normal(size=(4, 2)))
    with pytest.raises(SimilarityError, match=r"\(rows, channels\)"):
        frechet(np.zeros(5), np.zeros((5, 1)))


# Registry -------------------------------------------------------------------------------------------
def test_registry_lists_valid_names_and_kinds():
    with pytest.raises(SimilarityError, match="unknown measure 'fid'; available: .*domain_auc.*logme.*w2"):
        get_measure("fid")
    assert measure_names("gaussian") == ["w2", "sym_kl", "mean_shift"]
    assert measure_names("sample") == ["frechet", "frechet_rel", "mmd", "domain_auc"]
    assert measure_names("transfer") == ["logme", "hscore"] and measure_names("source") == ["leep"]
    with pytest.raises(SimilarityError, match="kinds are gaussian, sample, transfer, source"):
        measure_names("distance")
    with pytest.raises(SimilarityError, match="kind 'other'"):
        Measure("x", "other", "x", "further", len)


def test_a_registered_measure_is_used_by_name():
    register_measure(Measure("max_shift", "gaussian", "largest mean shift", "further",
                             lambda m, v, rm, rv: float(mean_shift_channels(m, v, rm, rv).max())))
    try:
        value = get_measure("max_shift").compute([0.0, 3.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0])
        assert value == pytest.approx(3.0, rel=1e-3)
        assert "max_shift" in measure_names("gaussian")
    finally:
        del MEASURES["max_shift"]
    with pytest.raises(SimilarityError, match="invalid measure name"):
        register_measure(Measure("a,b", "gaussian", "x", "further", len))


def test_similarity_runs_without_torch(tmp_path):
    """The similarity stage reads caches only: importing and running it must not load torch."""
    import subprocess
    import sys

    from .probe_data import make_codes, write_cache

    codes, y = make_codes(n=20, widths=(4,), informative=(1,))
    path = write_cache(tmp_path / "c.h5", codes, y, ["a", "b"])
    script = (f"import sys; from pipeline.similarity import similarity_table, advise_cache; "
              f"similarity_table({str(path)!r}, {str(path)!r}); advise_cache({str(path)!r}); "
              f"import pipeline.similarity.plots, pipeline.cli; assert 'torch' not in sys.modules, 'torch loaded'")
    subprocess.run([sys.executable, "-c", script], check=True)
