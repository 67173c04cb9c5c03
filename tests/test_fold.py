"""BatchNorm folding: found from the model's own computation, checked, and always undone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import open_cache
from pipeline.activations import extract
from pipeline.activations import fold
from pipeline.activations.fold import folded_batchnorm
from pipeline.inputs import from_folder

SHAPE = (3, 16, 16)


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with BatchNorm statistics and affine terms far from the identity."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator))
            m.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.1)
            if m.affine:
                m.weight.data.copy_(torch.randn(n, generator=generator))
                m.bias.data.copy_(torch.randn(n, generator=generator))
    return model.eval()


class Residual(nn.Module):
    """conv -> bn, plus the convolution's raw output added back: that convolution must not be folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class InPlaceBefore(nn.Module):
    """conv -> in-place ReLU -> bn: the BatchNorm reads the activation, not the convolution."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(torch.relu_(self.conv(x)))


class Standardised(nn.Conv2d):
    """A convolution that standardises its weights in forward: scaling them would be undone."""

    def forward(self, x):
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / (self.weight.std((1, 2, 3), keepdim=True) + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


def _panel() -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # the same weights in every test and every order of tests
        torch.manual_seed(0)
        return _randomised(_layers())


def _layers() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),  # 0, 1: folded
        nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1),  # 3 reads a ReLU: kept
        Residual(),  # 5.bn: kept
        InPlaceBefore(),  # 6.bn: kept
        Standardised(8, 8, 1), nn.BatchNorm2d(8),  # 7 is not a plain convolution: 8 kept
        nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.BatchNorm2d(8, affine=False),  # 9, 10: folded
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )


def _outputs(model, x, names):
    found = {}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: found.setdefault(n, o.clone()))
               for n in names]
    with torch.inference_mode():
        found[""] = model(x)
    for h in handles:
        h.remove()
    return found


def test_folds_only_a_convolution_whose_output_only_its_batchnorm_reads():
    model = _panel()
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    before = _outputs(model, x, ["2", "6", "10"])
    with folded_batchnorm(model, SHAPE, observed=["2", "6", "10"]) as folding:
        assert folding.pairs == (("0", "1"), ("9", "10"))
        assert folding.batchnorms == 6 and folding.difference < fold.TOLERANCE
        assert folding.as_dict()["why_not"] == "4 BatchNorm layer(s) do not read a convolution's output alone"
        assert isinstance(model[1], nn.Identity) and isinstance(model[10], nn.Identity)
        assert model[0].bias is not None
        during = _outputs(model, x, ["2", "6", "10"])
    for name, value in before.items():
        torch.testing.assert_close(during[name], value, rtol=1e-5, atol=1e-5 * float(value.abs().max()))


def test_the_model_is_put_back_exactly_even_after_an_error():
    model = _panel()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = list(model.modules())
    with pytest.raises(KeyboardInterrupt):
        with folded_batchnorm(model, SHAPE, observed=[]):
            raise KeyboardInterrupt
    assert list(model.modules()) == modules and model[0].bias is None
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)


def test_a_requested_convolution_keeps_its_own_output():
    model = _panel()
    with folded_batchnorm(model, SHAPE, observed=["0"]) as folding:
        assert ("0", "1") not in folding.pairs and ("9", "10") in folding.pairs


def test_an_observed_output_changed_in_place_later_is_compared_as_it_was():
    class ReluAfter(nn.Module):  # as torchvision's DenseNet: F.relu(features, inplace=True) after the stage
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))

        def forward(self, x):
            return torch.relu_(self.features(x)).mean((2, 3))

    model = _randomised(ReluAfter())
    with folded_batchnorm(model, SHAPE, observed=["features"]) as folding:
        assert folding.pairs == (("features.0", "features.1"),) and folding.difference < fold.TOLERANCE


def test_codes_that_differ_after_folding_are_computed_unfolded(monkeypatch, caplog):
    monkeypatch.setattr(fold, "_relative", lambda value, reference: 0.5)  # as if folding had changed the codes
    model = _panel()
    with folded_batchnorm(model, SHAPE, observed=[]) as folding:
        assert folding.pairs == () and folding.why_not.startswith("folded codes differed by")
        assert isinstance(model[1], nn.BatchNorm2d) and model[0].bias is None  # computing unfolded
    assert "computing unfolded" in caplog.text


def test_a_forward_pass_autograd_refuses_leaves_the_model_unfolded():
    class Refuses(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            x.mul_(1.0)  # in place on the input, which autograd refuses for a leaf that requires grad
            return self.bn(self.conv(x))

    model = _randomised(Refuses())
    with folded_batchnorm(model, SHAPE, observed=[]) as folding:
        assert folding.pairs == () and "autograd" in folding.why_not
        assert isinstance(model.bn, nn.BatchNorm2d)


def test_under_inference_mode_nothing_is_folded_and_the_record_says_why():
    model = _panel()
    with torch.inference_mode(), folded_batchnorm(model, SHAPE, observed=[]) as folding:
        assert folding.pairs == () and folding.why_not == "called under torch.inference_mode()"
        assert isinstance(model[1], nn.BatchNorm2d)


def test_models_without_batchnorm_and_disabled_folding_are_not_touched():
    plain = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()).eval()
    with folded_batchnorm(plain, SHAPE, observed=[]) as folding:
        assert folding.as_dict() == {"folded": 0, "batchnorms": 0}
    model = _panel()
    with folded_batchnorm(model, SHAPE, observed=[], why_not="--no-fold-batchnorm") as folding:
        assert folding.as_dict() == {"folded": 0, "batchnorms": 6, "why_not": "--no-fold-batchnorm"}
        assert isinstance(model[1], nn.BatchNorm2d)


def test_a_timm_model_folds_every_batchnorm_and_keeps_its_activations():
    import timm
    from timm.layers import BatchNormAct2d

    model = _randomised(timm.create_model("test_efficientnet", pretrained=False))
    acts = [type(m.act) for m in model.modules() if isinstance(m, BatchNormAct2d)]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    before = _outputs(model, x, ["blocks.1"])
    with folded_batchnorm(model, (3, 64, 64), observed=["blocks.1"]) as folding:
        assert len(folding.pairs) == folding.batchnorms == len(acts) > 0 and folding.why_not is None
        assert [type(m.act) for m in model.modules() if isinstance(m, fold.ActOnly)] == acts
        during = _outputs(model, x, ["blocks.1"])
    for name, value in before.items():
        torch.testing.assert_close(during[name], value, rtol=1e-4, atol=1e-5 * float(value.abs().max()))


def test_extraction_records_the_folding_and_its_codes_match_unfolded(image_folder, tiny_config, tmp_path):
    images = from_folder(image_folder)
    folded = extract(images, tiny_config(), out=tmp_path / "folded.h5", progress=False)
    plain = extract(images, tiny_config(fold_batchnorm=False), out=tmp_path / "plain.h5", progress=False)
    with open_cache(folded.path) as a, open_cache(plain.path) as b:
        assert a.key == b.key  # not part of the cache key: the codes differ only in their last bits
        record = a.provenance.runtime.extra["batchnorm_folding"]
        assert record["folded"] == record["batchnorms"] > 0 and "why_not" not in record
        unfolded = b.provenance.runtime.extra["batchnorm_folding"]
        assert unfolded["why_not"] == "fold_batchnorm=False (--no-fold-batchnorm)"
        for layer, pooling in a.outputs:
            got, expected = a.codes(layer, pooling), b.codes(layer, pooling)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max(), err_msg=layer)


def test_bn_stats_are_summed_unfolded(image_folder, tiny_config, tmp_path):
    result = extract(from_folder(image_folder), tiny_config(bn_stats=True), out=tmp_path / "bn.h5", progress=False)
    with open_cache(result.path) as cache:
        record = cache.provenance.runtime.extra["batchnorm_folding"]
    assert record["folded"] == 0 and record["why_not"] == "bn_stats (--bn-stats) sums each BatchNorm's input"


def _panel_with_batchnorm():
    from .model_panel import PANEL

    return [e for e in PANEL if e.name.split("/")[-1].startswith(
        ("resnet", "densenet", "tf_efficientnet", "mobilenet", "regnet", "maxvit"))]


@pytest.mark.parametrize("entry", _panel_with_batchnorm(), ids=lambda e: e.id)
def test_every_panel_family_with_batchnorm_folds_to_the_same_stage_outputs(entry):
    from pipeline.model import available_layers

    from .model_panel import load

    loaded = load(entry)
    model = _randomised(loaded.module, seed=3).to(memory_format=torch.channels_last)
    stages = [s.name for s in available_layers(loaded) if s.kind == "stage"]
    x = torch.randn(2, 3, entry.img_size, entry.img_size, generator=torch.Generator().manual_seed(4)).contiguous(
        memory_format=torch.channels_last)
    before = _outputs(model, x, stages)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with folded_batchnorm(model, (3, entry.img_size, entry.img_size), stages) as folding:
        assert folding.pairs and folding.difference < fold.TOLERANCE, folding
        during = _outputs(model, x, stages)
    for name, value in before.items():
        value = value[0] if isinstance(value, (tuple, list)) else value
        got = during[name][0] if isinstance(during[name], (tuple, list)) else during[name]
        torch.testing.assert_close(got, value, rtol=1e-4, atol=1e-4 * float(value.abs().max()), msg=name)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # put back


def test_reduced_precision_runs_are_not_folded(image_folder, tiny_config, tmp_path):
    result = extract(from_folder(image_folder), tiny_config(precision="bf16"), out=tmp_path / "bf16.h5",
                     progress=False)
    with open_cache(result.path) as cache:
        record = cache.provenance.runtime.extra["batchnorm_folding"]
    assert record["folded"] == 0
    assert record["why_not"] == "computing in bfloat16-autocast, which would round the folded weights"
