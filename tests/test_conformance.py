"""Conformance: for every panel model, the stored codes equal an independent reference.

Each model goes through the real extract path into an HDF5 cache (layers `all`
and `logits`, every pooling its layout accepts). The reference comes from the
model's own API: timm's ``forward_intermediates`` (maps in NCHW, prefix tokens
split off) and ``forward_head``, or torchvision's ``create_feature_extractor``
at the same module names, pooled here over the axes the panel declares for the
family. ``pre_logits`` must equal ``forward_head(x, pre_logits=True)`` (torchvision:
the classifier's input) and ``logits`` the model's output.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pipeline import open_cache
from pipeline.activations.extract import ExtractConfig, extract
from pipeline.activations.loader import ImageFiles
from pipeline.activations.pooling import accepted_poolings
from pipeline.errors import PipelineError
from pipeline.inputs import from_folder
from pipeline.model import available_layers

from .conftest import make_folder
from .model_panel import PANEL, load, reference_codes

extract_stage = sys.modules["pipeline.activations.extract"]  # the module; the package exports the function

N_IMAGES = 2  # in two batches of one


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return from_folder(make_folder(tmp_path_factory.mktemp("panel") / "images", n_per_class=1, classes=("a", "b")))


@pytest.mark.parametrize("entry", PANEL, ids=[e.id for e in PANEL])
def test_stored_codes_equal_the_reference(entry, images, tmp_path, monkeypatch):
    loaded = load(entry)
    specs = available_layers(loaded)
    stages = [s for s in specs if s.kind == "stage"]
    # the layout comes from the model: format, widths, prefix and class tokens as the panel declares
    assert [s.layout.format for s in stages] == [entry.layout] * len(entry.channels)
    assert tuple(s.channels for s in stages) == entry.channels
    assert {(s.layout.prefix_tokens, s.layout.class_token) for s in stages} == {(entry.prefix_tokens, entry.class_token)}
    pools = tuple(accepted_poolings(stages[0].layout))
    assert ("token" in pools) == entry.class_token

    monkeypatch.setattr(extract_stage, "build_model", lambda *a, **k: loaded)
    if not entry.class_token:  # the class-token pooling is refused, in one line naming the first layer
        with pytest.raises(PipelineError, match=rf"^pooling 'token' does not apply to layer '{stages[0].name}' "
                                                r"\(N(CHW|HWC|LC) [^)]*\); it accepts avg, max, avgmax, gem \("):
            extract(images, ExtractConfig(model=entry.name, random_init=True, pools=("avg", "token"), workers=0),
                    out=tmp_path / "refused.h5", progress=False)
        assert not (tmp_path / "refused.h5").exists()
    config = ExtractConfig(model=entry.name, random_init=True, layers=("all", "logits"), pools=pools,
                           batch_size=1, workers=0)
    result = extract(images, config, out=tmp_path / "codes.h5", progress=False)
    with open_cache(result.path) as cache:
        ids = list(cache.ids)
        stored = {f"{l}/{p}": cache.codes(l, p) for l, p in cache.outputs}
        manifest = cache.manifest
    assert len(ids) == N_IMAGES

    x = torch.stack([ImageFiles([images.root / i], loaded.preprocessing.transform())[0][1] for i in ids])
    loaded.module.to(memory_format=torch.contiguous_format)
    ref = reference_codes(entry, loaded.module, x, [s.name for s in stages])

    assert sorted(stored) == sorted(ref)
    for key, expected in ref.items():
        expected = expected.float().numpy()
        got = stored[key]
        layer = key.split("/")[0]
        width = next(s.channels for s in specs if s.name == layer)
        assert got.shape == (len(ids), width) == expected.shape, key
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5 * scale, err_msg=key)
    # the manifest records each output's layout and pooling
    first = f"{stages[0].name}/avg"
    recorded = manifest["output_layouts"][first]
    assert (recorded["layout"], recorded["prefix_tokens"], recorded["pooling"]) == (entry.layout, entry.prefix_tokens, "avg")
    assert manifest["output_layouts"]["pre_logits/none"]["layout"] == "NC"
