"""One forward pass yields every requested layer, equal to computing each alone."""

import torch

from pipeline.activations import LayerTap
from pipeline.activations.pooling import avg_pool, gem_pool
from pipeline.model import resolve_layers
from pipeline.model.layout import NCHW, Layout

CHW = Layout(NCHW)


def _batch(seed=0):
    return torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_multi_layer_pass_equals_single_layer_passes(tiny_model):
    layers = resolve_layers(tiny_model, ["all", "logits"])
    x = _batch()
    with LayerTap(tiny_model, layers, ("avg", "gem")) as tap:
        together = tap.run(x)
    for spec in layers:
        with LayerTap(tiny_model, [spec], ("avg", "gem")) as tap:
            alone = tap.run(x)
        for key, value in alone.items():
            torch.testing.assert_close(together[key], value, rtol=1e-5, atol=1e-6)


def test_codes_equal_pooling_of_timm_intermediates(tiny_model):
    x = _batch(1)
    model = tiny_model.module
    with torch.inference_mode():
        final, maps = model.forward_intermediates(x)
        pre_logits = model.forward_head(final, pre_logits=True)
        logits = model.forward_head(final)
    layers = resolve_layers(tiny_model, ["all", "logits"])
    with LayerTap(tiny_model, layers, ("avg", "gem")) as tap:
        codes = tap.run(x)
    for i, fmap in enumerate(maps):
        name = layers[i].name
        torch.testing.assert_close(codes[(name, "avg")], avg_pool(fmap, CHW))
        torch.testing.assert_close(codes[(name, "gem")], gem_pool(fmap, CHW))
    torch.testing.assert_close(codes[("pre_logits", "none")], pre_logits)
    torch.testing.assert_close(codes[("logits", "none")], logits)


def test_pass_stops_after_the_deepest_requested_layer(tiny_model):
    layers = resolve_layers(tiny_model, ["1"])
    ran = []
    handle = tiny_model.module.blocks[3].register_forward_hook(lambda *a: ran.append(True))
    try:
        with LayerTap(tiny_model, layers, ("avg",)) as tap:
            codes = tap.run(_batch())
    finally:
        handle.remove()
    assert list(codes) == [("blocks.1", "avg")] and codes[("blocks.1", "avg")].shape == (5, 24)
    assert not ran and tap.forward_passes == 1


def test_hooks_are_removed_on_close(tiny_model):
    layers = resolve_layers(tiny_model, ["all"])
    before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in tiny_model.module.modules())
    with LayerTap(tiny_model, layers, ("avg",)):
        pass
    after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in tiny_model.module.modules())
    assert before == after
