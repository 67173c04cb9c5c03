"""Saved probes: no pickle, identical probabilities after loading, refused on the wrong codes."""

import json

import numpy as np
import pytest

from pipeline.errors import ProbeError
from pipeline.probes import PROBES, ProbeSettings, apply_probe, fit_probe, load_probe, save_probe

from .probe_data import MODEL, PREPROCESSING, make_codes, write_cache

# PCA above 16 channels, so the wide layer exercises the PCA step of the linear probes.
SETTINGS = ProbeSettings(pca_above=16, pca_components=8)


@pytest.fixture(params=[2, 3], ids=["binary", "3-class"])
def cache(request, tmp_path):
    k = request.param
    codes, y = make_codes(n=72, widths=(6, 40), n_classes=k, informative=(3, 4))
    return write_cache(tmp_path / "c.h5", codes, y, ["a", "b", "c"][:k])


@pytest.mark.parametrize("probe", sorted(PROBES))
@pytest.mark.parametrize("layer", ["blocks.0/avg", "blocks.1/avg"])
def test_saved_and_loaded_probe_gives_identical_probabilities(cache, tmp_path, probe, layer):
    fitted = fit_probe(cache, layer, probe, SETTINGS)
    path = save_probe(fitted, tmp_path / f"{probe}.probe.npz")
    loaded = load_probe(path)
    width = fitted.manifest["channels"]
    X = np.random.default_rng(1).normal(size=(25, width))
    assert np.array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    assert np.array_equal(apply_probe(loaded, cache).proba, apply_probe(fitted, cache).proba)
    assert [name for name, _ in loaded.pipeline.steps] == [name for name, _ in fitted.pipeline.steps]
    assert loaded.manifest == json.loads(json.dumps(fitted.manifest))


def test_manifest_names_what_the_codes_must_come_from(cache):
    m = fit_probe(cache, "blocks.1", "logreg", SETTINGS).manifest
    assert (m["layer"], m["pooling"], m["output"], m["channels"]) == ("blocks.1", "avg", "blocks.1/avg", 40)
    assert m["model"] == MODEL and m["preprocessing"] == PREPROCESSING
    assert m["chosen"]["C"] in SETTINGS.c_grid and m["chosen"]["pca_components"] == 8


def test_probe_file_holds_no_pickle(cache, tmp_path):
    path = save_probe(fit_probe(cache, "blocks.0/avg", "svm"), tmp_path / "p.probe.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[k].dtype != object for k in archive.files)


def test_a_pickled_object_in_a_probe_file_is_refused(cache, tmp_path):
    path = save_probe(fit_probe(cache, "blocks.0/avg", "logreg"), tmp_path / "p.probe.npz")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["model/coef_"] = np.array([{"would run": "code on unpickling"}], dtype=object)
    np.savez(path, **arrays)  # numpy pickles object arrays when writing
    with pytest.raises(ProbeError, match=r"is not a readable probe file \(.*allow_pickle=False"):
        load_probe(path)


def test_unknown_step_kinds_are_refused(cache, tmp_path):
    path = save_probe(fit_probe(cache, "blocks.0/avg", "logreg"), tmp_path / "p.probe.npz")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    manifest = json.loads(arrays["manifest.json"].tobytes())
    manifest["steps"][-1]["kind"] = "os.system"
    arrays["manifest.json"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ProbeError, match=r"has a step of unknown kind 'os.system'; known: StandardScaler, PCA"):
        load_probe(path)


def test_not_a_probe_file(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(ProbeError, match=r"x.npz is not a readable probe file"):
        load_probe(tmp_path / "x.npz")
    with pytest.raises(ProbeError, match=r"probe file '.*missing.npz' does not exist; create one with `layerprobe fit`"):
        load_probe(tmp_path / "missing.npz")


@pytest.mark.parametrize(("change", "message"), [
    ({"model": {**MODEL, "name": "other-net"}},
     r"the probe was fitted on model 'synthetic-net', but .*other.h5 has 'other-net'"),
    ({"model": {**MODEL, "weights": {**MODEL["weights"], "sha256": "cd" * 32}}},
     r"the probe was fitted on weights sha256 'abab.*', but .*other.h5 has 'cdcd"),
    ({"preprocessing": {**PREPROCESSING, "input_size": [3, 96, 96]}},
     r"the probe was fitted on other preprocessing than .*other.h5 \(input_size \[3, 64, 64\] vs \[3, 96, 96\]\)"),
])
def test_codes_from_another_model_are_refused(cache, tmp_path, change, message):
    fitted = fit_probe(cache, "blocks.0/avg", "logreg")
    codes, y = make_codes(n=20, widths=(6, 40))
    other = write_cache(tmp_path / "other.h5", codes, y, ["a", "b"], **change)
    with pytest.raises(ProbeError, match=message):
        apply_probe(fitted, other)


def test_a_cache_without_the_probes_layer_is_refused(cache, tmp_path):
    fitted = fit_probe(cache, "blocks.1/avg", "logreg")
    codes, y = make_codes(n=20, widths=(6,))
    other = write_cache(tmp_path / "other.h5", codes, y, ["a", "b"])
    with pytest.raises(ProbeError, match=r"the probe needs layer blocks.1/avg, but .* holds only blocks.0/avg"):
        apply_probe(fitted, other)


def test_codes_of_the_wrong_width_are_refused(cache):
    fitted = fit_probe(cache, "blocks.0/avg", "lgbm")
    with pytest.raises(ProbeError, match=r"takes codes of blocks.0/avg with 6 channels, got an array of shape \(3, 5\)"):
        fitted.predict_proba(np.zeros((3, 5)))


def test_fit_needs_one_pooling(tmp_path):
    codes, y = make_codes(n=30, widths=(4, 4))
    codes = {("blocks.0", "avg"): codes[("blocks.0", "avg")], ("blocks.0", "max"): codes[("blocks.1", "avg")]}
    cache = write_cache(tmp_path / "c.h5", codes, y, ["a", "b"])
    with pytest.raises(ProbeError, match=r"layer 'blocks.0' is stored with poolings avg, max; name one as blocks.0/<pooling>"):
        fit_probe(cache, "blocks.0", "logreg")
