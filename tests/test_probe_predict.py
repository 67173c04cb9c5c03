"""predict: one forward pass to the probe's layer gives what the probe gives on cached codes."""

import csv
import io
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.activations import extract
from pipeline.cli import main
from pipeline.errors import InputError, ProbeError
from pipeline.inputs import from_folder
from pipeline.predict import extract_config_for, images_from_paths, predict_images
from pipeline.probes import apply_probe, fit_probe, load_probe, save_probe


@pytest.fixture
def cache(image_folder, tiny_config, tmp_path):
    return extract(from_folder(image_folder), tiny_config(pools=("avg", "gem")), out=tmp_path / "c.h5",
                   progress=False).path


@pytest.mark.parametrize(("layer", "probe"), [("blocks.2/gem", "logreg"), ("pre_logits", "svm"), ("blocks.4/avg", "lgbm")])
def test_predict_on_images_equals_the_probe_on_their_cached_codes(cache, image_folder, tmp_path, layer, probe):
    path = save_probe(fit_probe(cache, layer, probe), tmp_path / "p.probe.npz")
    loaded = load_probe(path)
    on_codes = apply_probe(loaded, cache)
    on_images = predict_images(path, from_folder(image_folder), workers=0, progress=False)
    assert list(on_images.ids) == list(on_codes.ids)
    np.testing.assert_allclose(on_images.proba, on_codes.proba, rtol=1e-6, atol=1e-9)
    assert on_images.predicted == on_codes.predicted


def test_prediction_extracts_only_the_probes_layer(cache, image_folder, tmp_path, monkeypatch):
    fitted = fit_probe(cache, "blocks.1/avg", "logreg")
    config = extract_config_for(fitted, workers=0)
    assert (config.layers, config.pools, config.img_size, config.random_init) == (("blocks.1",), ("avg",), 64, True)
    seen = {}
    real = extract

    def spy(images, config, **kwargs):
        seen["result"] = real(images, config, **kwargs)
        with __import__("pipeline").open_cache(seen["result"].path) as c:
            seen["outputs"] = c.outputs
        return seen["result"]

    monkeypatch.setattr("pipeline.activations.extract", spy)
    predict_images(fitted, from_folder(image_folder), workers=0, progress=False)
    assert seen["outputs"] == [("blocks.1", "avg")] and seen["result"].rows == 16


def _refuses_before_extracting(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("images were extracted for a probe that does not fit the model")

    monkeypatch.setattr("pipeline.activations.extract", fail)


def test_other_weights_are_refused(cache, image_folder, tmp_path, tiny_model, monkeypatch):
    import torch

    fitted = fit_probe(cache, "blocks.1/avg", "logreg")
    weights = tmp_path / "other.pth"
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in tiny_model.module.state_dict().items()}, weights)
    _refuses_before_extracting(monkeypatch)
    with pytest.raises(ProbeError, match=r"the probe was fitted on weights sha256 '\w+', but the model built for "
                                         r"prediction \(test_efficientnet, weights file\) has '\w+'"):
        predict_images(fitted, from_folder(image_folder), weights=weights, workers=0, progress=False)


def test_other_preprocessing_is_refused(cache, image_folder, monkeypatch):
    fitted = fit_probe(cache, "blocks.1/avg", "logreg")
    fitted.manifest["preprocessing"] = {**fitted.manifest["preprocessing"], "interpolation": "bilinear"}
    _refuses_before_extracting(monkeypatch)
    with pytest.raises(ProbeError, match=r"the probe was fitted on other preprocessing than the model built for "
                                         r"prediction .* \(interpolation 'bilinear' vs 'bicubic'\)"):
        predict_images(fitted, from_folder(image_folder), workers=0, progress=False)


def test_predict_command_on_a_folder_of_loose_images(cache, image_folder, tmp_path):
    probe = tmp_path / "p.probe.npz"
    save_probe(fit_probe(cache, "blocks.2/avg", "logreg"), probe)
    loose = tmp_path / "new"
    loose.mkdir()
    for path in sorted(image_folder.rglob("img0[0-2].*")):
        shutil.copy(path, loose / f"{path.parent.name}-{path.name}")
    result = CliRunner().invoke(main, ["predict", str(probe), str(loose), "--workers", "0", "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["id"] for r in rows] == sorted(p.name for p in loose.iterdir())
    assert list(rows[0]) == ["id", "predicted", "p_benign", "p_malignant"]


def test_images_from_paths(image_folder, image_csv, tmp_path):
    assert images_from_paths([image_folder]).class_names == ("benign", "malignant")
    assert len(images_from_paths([image_csv])) == 16
    files = sorted((image_folder / "benign").glob("*.png"))[:2]
    chosen = images_from_paths(files)
    assert [r.id for r in chosen.records] == [f.name for f in files] and not chosen.has_labels
    with pytest.raises(InputError, match=r"1 input path\(s\) do not exist: .*nothing.png"):
        images_from_paths([tmp_path / "nothing.png"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"not image files: .*notes.txt; pass image files, one folder or one CSV"):
        images_from_paths([tmp_path / "notes.txt"])
