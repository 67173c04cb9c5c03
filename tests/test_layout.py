"""Layouts come from the model: channels-last stages, hooked modules, refusals, the width check."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from pipeline import open_cache
from pipeline.activations import LayerTap
from pipeline.activations.extract import ExtractConfig, extract
from pipeline.cli import main
from pipeline.errors import ModelError
from pipeline.inputs import from_folder
from pipeline.model import resolve_layers
from pipeline.model.layout import NCHW, NHWC

from .conftest import TINY_MODEL, make_folder
from .model_panel import load, panel_model

extract_stage = sys.modules["pipeline.activations.extract"]
SWIN = "swin_tiny_patch4_window7_224"


@pytest.fixture(scope="module")
def swin():
    return load(panel_model(SWIN))


@pytest.fixture(scope="module")
def convnext():
    """ConvNeXt with its channels-last MLP (convnext_atto's own default is the 1x1-convolution MLP)."""
    return load(replace(panel_model("convnext_atto"), kwargs=(("conv_mlp", False),)))


@pytest.mark.slow  # Swin-T at its full 224 px: about 8 s on 2 idle cores
def test_swin_from_the_cli_lists_and_stores_its_real_widths(tmp_path):
    """The issue's reproduction: 96/192/384/768 channels, not the 56/28/14/7 of the map's width."""
    runner = CliRunner()
    listed = runner.invoke(main, ["layers", SWIN, "--random-init", "--json"])
    assert listed.exit_code == 0, listed.output
    stages = [s for s in json.loads(listed.stdout) if s["kind"] == "stage"]
    assert [(s["channels"], s["stride"], s["layout"], s["grid"]) for s in stages] == [
        (96, 4, "NHWC", [56, 56]), (192, 8, "NHWC", [28, 28]), (384, 16, "NHWC", [14, 14]), (768, 32, "NHWC", [7, 7])]
    make_folder(tmp_path / "images", n_per_class=1)
    (tmp_path / "one.csv").write_text("path\nimages/benign/img00.png\n")  # one unlabelled image: a single pass
    out = tmp_path / "swin.h5"
    result = runner.invoke(main, ["extract", "--csv", str(tmp_path / "one.csv"), "--model", SWIN, "--random-init", "--layers",
                                  "all", "--workers", "0", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    with open_cache(out) as cache:
        widths = {f"{l}/{p}": cache.codes(l, p).shape[1] for l, p in cache.outputs}
        layouts = cache.manifest["output_layouts"]
    assert widths == {"layers.0/avg": 96, "layers.1/avg": 192, "layers.2/avg": 384, "layers.3/avg": 768,
                      "pre_logits/none": 768}
    assert layouts["layers.3/avg"] == {"layout": "NHWC", "grid": [7, 7], "prefix_tokens": 0, "class_token": False,
                                       "pooling": "avg", "pooled_over": "H and W of the NHWC map"}


def test_a_model_that_hides_its_channels_last_format_is_refused(swin, monkeypatch):
    """Without `output_fmt` the stage would read as a 16-channel NCHW map; feature_info says 96, so it is refused."""
    monkeypatch.delattr(swin.module, "output_fmt")
    with pytest.raises(ModelError, match=r"stage 'layers.0' gives 16 channels as NCHW 16x96, but the model's "
                                         r"feature_info declares 96; its layout is ambiguous"):
        resolve_layers(swin, ["0"])


def test_swin_stages_pool_over_h_and_w(swin):
    layers = resolve_layers(swin, ["0", "1", "2", "3"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with LayerTap(swin, layers, ("avg", "max")) as tap:
        codes = tap.run(x)
    with torch.inference_mode():
        maps = swin.module.forward_intermediates(x, intermediates_only=True)  # NCHW
    for spec, fmap in zip(layers, maps, strict=True):
        torch.testing.assert_close(codes[(spec.name, "avg")], fmap.mean((2, 3)))
        torch.testing.assert_close(codes[(spec.name, "max")], fmap.amax((2, 3)))


def test_hooked_modules_get_their_layout_from_module_types(convnext):
    specs = {s.name: s for s in resolve_layers(convnext, ["stages.1.blocks.0.conv_dw", "stages.0.blocks.0.mlp.fc1",
                                                          "stages.0.blocks.0.norm", "stem"])}
    conv, fc1, norm = specs["stages.1.blocks.0.conv_dw"], specs["stages.0.blocks.0.mlp.fc1"], specs["stages.0.blocks.0.norm"]
    assert (conv.layout.format, conv.channels, conv.stride) == (NCHW, 80, 8)  # a depthwise convolution
    assert (fc1.layout.format, fc1.channels, fc1.stride) == (NHWC, 160, 4)  # a Linear on channels-last maps
    assert (norm.layout.format, norm.channels) == (NHWC, 40)  # nn.LayerNorm before the MLP
    assert specs["stem"].layout.format == NCHW  # convolution and LayerNorm2d


def test_an_ambiguous_block_is_refused_naming_it(convnext):
    # a ConvNeXt block mixes a convolution with channels-last Linear layers and permutes back in code
    with pytest.raises(ModelError, match=r"^the layout of module 'stages.0.blocks.0' \(output shape \(1, 40, 16, 16\)\) "
                                         r"is ambiguous: it is a block that mixes channels-first and channels-last"):
        resolve_layers(convnext, ["stages.0.blocks.0"])


def test_torchvision_blocks_of_a_convolutional_network_are_channels_first():
    loaded = load(panel_model("torchvision/resnet18"))
    spec, = resolve_layers(loaded, ["layer3.1"])
    assert (spec.layout.format, spec.channels, spec.stride, spec.layout.grid) == (NCHW, 256, 16, (4, 4))


def test_a_code_whose_width_differs_from_the_listed_channels_is_never_stored(tiny_model, tmp_path, monkeypatch):
    real = resolve_layers

    def wrong_width(loaded, tokens):
        return [replace(s, channels=7) if s.name == "blocks.1" else s for s in real(loaded, tokens)]

    monkeypatch.setattr(extract_stage, "resolve_layers", wrong_width)
    monkeypatch.setattr(extract_stage, "build_model", lambda *a, **k: tiny_model)
    images = from_folder(make_folder(tmp_path / "images", n_per_class=2))
    with pytest.raises(ModelError, match=r"^layer 'blocks.1' pooled with 'avg' gives codes of shape \(4, 24\), but "
                                         r"the layer has 7 channels \(NCHW 16x16\); nothing was stored"):
        extract(images, ExtractConfig(model=TINY_MODEL, random_init=True, layers=("0", "1"), workers=0),
                out=tmp_path / "c.h5", progress=False)
    assert not (tmp_path / "c.h5").exists()
