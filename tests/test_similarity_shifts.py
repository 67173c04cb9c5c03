"""Controlled shifts: every distance grows as photos move further from natural images.

Tiny form: crops of scikit-image's photos through the tiny random-init model,
each shifted set compared with a natural reference set, cache against cache.
Slow form: the bundled EfficientNet-Lite0 and its ImageNet BatchNorm statistics.
"""

import numpy as np
import pytest

from pipeline.similarity import similarity_table

from .conftest import TINY_MODEL, TINY_SIZE

pytest.importorskip("skimage.data")

BLURS, NOISES = (2.0, 4.0), (0.2, 0.4)
FAMILIES = (("natural", "blur2", "blur4"), ("natural", "noise0.2", "noise0.4"))


def _extract_sets(root, config, per_image, size):
    from pipeline.activations import extract
    from pipeline.inputs import from_folder

    from .shift_data import shift_sets

    sets = shift_sets(root / "images", per_image=per_image, size=size, blurs=BLURS, noises=NOISES)
    return {name: extract(from_folder(folder), config, out=root / f"{name}.h5", progress=False).path
            for name, folder in sets.items()}


def _layer_means(table, names) -> dict[str, float]:
    return {m: float(np.mean([r.values[m] for r in table.rows])) for m in names}


@pytest.fixture(scope="module")
def tiny_shifts(tmp_path_factory):
    from threadpoolctl import threadpool_limits

    from pipeline.activations import ExtractConfig

    config = ExtractConfig(model=TINY_MODEL, random_init=True, img_size=TINY_SIZE, batch_size=32, workers=0)
    paths = _extract_sets(tmp_path_factory.mktemp("shifts"), config, per_image=6, size=64)
    # After torch has run, its OpenMP threads and a multi-threaded BLAS fight over two cores
    with threadpool_limits(1, user_api="blas"):
        return {name: similarity_table(path, paths["reference"], transfer=False)
                for name, path in paths.items() if name != "reference"}


def test_every_cache_against_cache_measure_grows_with_the_shift(tiny_shifts):
    measures = tiny_shifts["natural"].distances
    assert measures == ["w2", "sym_kl", "mean_shift", "frechet", "frechet_rel", "mmd", "domain_auc"]
    means = {name: _layer_means(table, measures) for name, table in tiny_shifts.items()}
    for measure in measures:
        for family in FAMILIES:
            values = [means[name][measure] for name in family]
            assert values == sorted(values) and len(set(values)) == 3, (measure, family, values)
        for far in ("inverted", "texture"):
            assert means[far][measure] > means["blur2"][measure], (measure, far)
            assert means[far][measure] > means["noise0.2"][measure], (measure, far)


def test_unshifted_photos_are_hard_to_tell_apart_and_shifted_ones_easy(tiny_shifts):
    auc = {name: _layer_means(table, ["domain_auc"])["domain_auc"] for name, table in tiny_shifts.items()}
    assert auc["natural"] < 0.6 and auc["inverted"] > 0.9 and auc["texture"] > 0.9
    assert tiny_shifts["natural"].n_reference == 30 and tiny_shifts["texture"].n_images == 30


@pytest.mark.slow
def test_imagenet_statistics_rank_natural_photos_closest(tmp_path):
    """EfficientNet-Lite0's BatchNorm statistics: natural crops are nearer ImageNet than any shifted version."""
    from threadpoolctl import threadpool_limits

    from pipeline.activations import ExtractConfig

    paths = _extract_sets(tmp_path, ExtractConfig(bn_stats=True, batch_size=32), per_image=4, size=96)
    with threadpool_limits(1, user_api="blas"):
        tables = {name: similarity_table(path, "imagenet", transfer=False) for name, path in paths.items()}
    means = {name: {m: float(np.mean([r.values[m] for r in t.bn_rows])) for m in t.distances}
             for name, t in tables.items()}
    for measure in ("w2", "sym_kl", "mean_shift"):
        natural = max(means["natural"][measure], means["reference"][measure])
        for name in ("blur2", "blur4", "noise0.2", "noise0.4", "inverted", "texture"):
            assert means[name][measure] > natural, (measure, name, means[name][measure], natural)
        for family in FAMILIES:
            values = [means[name][measure] for name in family]
            assert values == sorted(values), (measure, family, values)
    # inversion changes colours, not shapes: it shows most at the first stage
    first = {name: t.rows[0].values["w2"] for name, t in tables.items()}
    assert first["inverted"] > first["natural"] + 0.05
