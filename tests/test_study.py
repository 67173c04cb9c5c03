"""A study across caches: one set of folds, rows equal to the single-cache runs, other images refused."""

import json
from dataclasses import replace

import numpy as np
import pytest

from pipeline.errors import ProbeError
from pipeline.probes import ProbeConfig, load_study, run_probes, run_study
from pipeline.probes.compare import compare_models, holdout_ratio

from .probe_data import MODEL, make_codes, write_cache

CONFIG = ProbeConfig(probes=("logreg", "knn"), folds=3, n_boot=40, seed=3)
TIMING = ("fit_seconds", "fit_cpu_seconds")


def _model(name, n_params):
    return {**MODEL, "name": name, "n_params": n_params}


def _cache(path, name, n_params, seed, groups=None, ids=None, duration=6.0, sha256=None):
    from .conftest import forge_manifest

    codes, y = make_codes(n=60, widths=(4, 8, 12), informative=(1, 2, 4), seed=0)
    rng = np.random.default_rng(seed)  # another model: other codes of the same images
    codes = {k: (v + rng.normal(scale=0.5, size=v.shape)).astype(np.float32) for k, v in codes.items()}
    model = _model(name, n_params)
    write_cache(path, codes, y, ["benign", "malignant"], groups=groups, ids=ids, model=model,
                sha256=sha256)

    def timed(manifest):
        manifest["runtime"]["duration_s"] = duration
        manifest["update"] = {"computed_rows": 60}

    return forge_manifest(path, timed)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    groups = [f"p{i // 2}" for i in range(60)]
    a = _cache(tmp / "a.h5", "net-small", 1000, seed=1, groups=groups, duration=3.0)  # 20 img/s
    b = _cache(tmp / "b.h5", "net-large", 5000, seed=2, groups=groups, duration=12.0)  # 5 img/s
    return tmp, a, b


@pytest.fixture(scope="module")
def study(pair):
    tmp, a, b = pair
    return run_probes([a, b], CONFIG, out=tmp / "ab.study.json", progress=False)


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING and k != "backbone"} for r in rows]


def test_rows_equal_the_single_cache_runs_on_the_same_folds(pair, study):
    tmp, a, b = pair
    alone = {name: run_probes(path, CONFIG, out=tmp / f"{name}.probes.json", progress=False)
             for name, path in (("net-small", a), ("net-large", b))}
    assert study.labels == ["net-small", "net-large"]
    for name, single in alone.items():
        assert np.array_equal(single.folds.test_fold, study.folds.test_fold)
        mine = [r for r in study.rows if r["backbone"] == name]
        assert len(mine) == 3 * 2
        assert _strip(mine) == _strip(single.rows)
        assert study.model_results(name).comparisons == json.loads(json.dumps(single.comparisons))
    # one file, read back the same
    back = load_study(tmp / "ab.study.json")
    assert _strip(back.rows) == _strip(json.loads(json.dumps(study.rows)))
    assert back.chosen == study.chosen and back.labels == study.labels


def test_comparison_across_models_and_the_cheapest_tied(study):
    c = compare_models(study.rows, "roc_auc", holdout_ratio(study.folds.test_fold), 2, "logreg")
    assert len(c.candidates) == 6 and c.n_estimates == 3
    means = {(x.model, x.output): x.score.mean for x in c.candidates}
    assert c.best == max(means, key=lambda k: (means[k], list(means).index(k)))
    row = next(r for r in study.rows if (r["backbone"], r["output"], r["probe"]) == (*c.best, "logreg"))
    assert means[c.best] == pytest.approx(row["metrics"]["roc_auc"]["mean"])
    stored = study.comparisons["roc_auc"]["logreg"]
    assert stored["best"] == list(c.best) and stored["tied"] == [list(t) for t in c.tied]
    # cheapest: net-small runs at 20 img/s against 5, so it wins whenever one of its outputs is tied
    tied_models = {m for m, _ in c.tied}
    expected_model = "net-small" if "net-small" in tied_models else "net-large"
    assert stored["cheapest"][0] == expected_model
    best_of_cheapest = max((x for x in c.candidates if (x.model, x.output) in c.tied and x.model == expected_model),
                           key=lambda x: x.score.mean)
    assert stored["cheapest"] == [expected_model, best_of_cheapest.output]
    costs = {m["label"]: m["cost"] for m in study.models}
    assert costs["net-small"]["images_per_s"] == 20.0 and costs["net-large"]["images_per_s"] == 5.0
    assert costs["net-large"]["n_params"] == 5000
    assert study.chosen["metric"] == "roc_auc" and study.chosen["backbone"] in study.labels
    proba = np.asarray(study.predictions["proba"])
    assert proba.shape == (1, 60, 2) and np.allclose(proba.sum(axis=2), 1.0, atol=1e-5)


def test_tidy_table(study):
    records = study.records(("roc_auc",))
    assert len(records) == 12
    first = records[0]
    assert first["backbone"] == "net-small" and first["metric"] == "roc_auc" and first["channels"] == 4
    assert first["mean"] == study.rows[0]["metrics"]["roc_auc"]["mean"]
    table = study.table(("roc_auc",))
    assert len(table) == 12  # a DataFrame with pandas, the records without


def test_other_images_are_refused_with_the_ids_named(tmp_path):
    ids = [f"img{i:04d}.png" for i in range(60)]
    a = _cache(tmp_path / "a.h5", "net-small", 1000, seed=1, ids=ids)
    other = ids[:58] + ["extra1.png", "extra2.png"]
    b = _cache(tmp_path / "b.h5", "net-large", 5000, seed=2, ids=other)
    with pytest.raises(ProbeError, match=r"b.h5 and a.h5 hold different labelled images: img0058.png, img0059.png "
                                         r"only in the first \(2\), extra1.png, extra2.png only in the second \(2\)"):
        run_study([a, b], CONFIG, out=tmp_path / "s.json", progress=False)
    with pytest.raises(ProbeError, match="a cache is listed twice"):
        run_study([a, a], CONFIG, out=tmp_path / "s.json", progress=False)


def test_same_ids_other_files_are_refused(tmp_path):
    a = _cache(tmp_path / "a.h5", "net-small", 1000, seed=1)
    b = _cache(tmp_path / "b.h5", "net-large", 5000, seed=2, sha256=["0" * 64] * 7 + ["f" * 64] + ["0" * 64] * 52)
    with pytest.raises(ProbeError, match=r"1 image\(s\) have the same id but other file contents in b.h5 than in "
                                         r"a.h5: img0007.png; extract every model from the same files"):
        run_study([a, b], CONFIG, out=tmp_path / "s.json", progress=False)


def test_groups_are_joined_over_the_caches(tmp_path):
    a = _cache(tmp_path / "a.h5", "net-small", 1000, seed=1, groups=[f"p{i // 2}" for i in range(60)])
    # b groups rows 1 and 2 only: joined, rows 0-3 form one group (p0 = {0, 1}, link = {1, 2}, p1 = {2, 3})
    b = _cache(tmp_path / "b.h5", "net-large", 5000, seed=2,
               groups=["link" if i in (1, 2) else f"s{i}" for i in range(60)])
    study = run_study([a, b], replace(CONFIG, probes=("knn",)), out=tmp_path / "s.json", progress=False)
    assert study.data["groups"] == "groups (joined over 2 caches)"
    assert study.data["n_groups"] == 29
    for fold in study.folds.test_fold:
        assert len(set(fold[:4])) == 1
        for i in range(4, 60, 2):
            assert fold[i] == fold[i + 1]


def test_two_tiny_random_init_models_of_the_same_images(image_folder, tiny_config, tmp_path):
    """Real extraction: the tiny model at 64 and at 48 px is two models; their study rows equal single runs."""
    from pipeline.activations import extract
    from pipeline.inputs import from_folder

    images = from_folder(image_folder)
    a = extract(images, tiny_config(layers=("-2", "-1")), out=tmp_path / "a.h5", progress=False).path
    b = extract(images, tiny_config(layers=("-2", "-1"), img_size=48), out=tmp_path / "b.h5", progress=False).path
    config = ProbeConfig(probes=("knn",), folds=2, n_boot=20, groups="none")
    study = run_study([a, b], config, out=tmp_path / "s.study.json", progress=False)
    assert study.labels == ["test_efficientnet@64px", "test_efficientnet@48px"]
    costs = [m["cost"] for m in study.models]
    assert all(c["n_params"] > 0 and c["images_per_s"] > 0 and c["images_computed"] == 16 for c in costs)
    assert costs[0]["n_params"] == costs[1]["n_params"]  # one architecture at two sizes
    for label, path in zip(study.labels, (a, b)):
        single = run_probes(path, config, out=tmp_path / f"{path.stem}.probes.json", progress=False)
        assert _strip([r for r in study.rows if r["backbone"] == label]) == _strip(single.rows)
