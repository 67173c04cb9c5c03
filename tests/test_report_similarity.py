"""The HTML report's section on similarity to ImageNet, transferability and advice."""

import logging

from pipeline.activations import extract
from pipeline.inputs import from_folder
from pipeline.probes import ProbeConfig, run_probes
from pipeline.report import write_report

from .conftest import make_folder


def _results(tmp_path, tiny_config, **extract_options):
    folder = make_folder(tmp_path / "images", n_per_class=10)
    cache = extract(from_folder(folder), tiny_config(**extract_options), out=tmp_path / "c.h5", progress=False).path
    out = tmp_path / "c.probes.json"
    run_probes(cache, ProbeConfig(probes=("logreg",), folds=3, n_boot=20), out=out, progress=False)
    return cache, out


def test_report_gains_the_similarity_section_with_imagenet_distances(tmp_path, tiny_config, tiny_weights):
    _, results = _results(tmp_path, tiny_config, bn_stats=True, random_init=False, weights=tiny_weights)
    page = write_report(results).html.read_text()
    assert "Is the data set like ImageNet? Which layer transfers?" in page
    assert "<b>Use " in page and "Fine-tuning: <b>" in page
    assert page.count("data:image/png;base64,") == 2  # the probe curve and the similarity plot
    assert "No distance to ImageNet" not in page


def test_without_bn_stats_the_section_says_what_is_missing(tmp_path, tiny_config):
    _, results = _results(tmp_path, tiny_config)
    page = write_report(results).html.read_text()
    assert "No distance to ImageNet: the cache holds no BatchNorm statistics" in page


def test_a_missing_cache_leaves_the_section_out_with_a_warning(tmp_path, tiny_config, caplog):
    cache, results = _results(tmp_path, tiny_config)
    cache.unlink()
    with caplog.at_level(logging.WARNING):
        page = write_report(results).html.read_text()
    assert "Is the data set like ImageNet" not in page and "<h2>Results</h2>" in page
    assert "report without the similarity section" in caplog.text
    assert "Is the data set like ImageNet" not in write_report(results, similarity=False).html.read_text()


def test_an_untrained_model_gets_no_distance_to_imagenet(tmp_path, tiny_config):
    """Random-init BatchNorm statistics are not ImageNet's: the advice says so instead of measuring against them."""
    from pipeline.similarity import advise_cache

    cache, results = _results(tmp_path, tiny_config, bn_stats=True)
    imagenet = [f for f in advise_cache(cache, results).findings if f.topic == "imagenet"]
    assert [f.text for f in imagenet] == [
        "No distance to ImageNet: the model's weights are random-init, so its BatchNorm statistics are not "
        "ImageNet's; extract with pretrained weights to measure it."]
