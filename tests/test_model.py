"""Building models, loading weights with every shape checked, resolving layers."""

import pytest
import torch

from pipeline.errors import ModelError
from pipeline.model import available_layers, build_model, resolve_layers
from pipeline.model.weights import load_by_position, state_dict_sha256

from .conftest import TINY_MODEL, TINY_SIZE


def test_random_init_is_deterministic_and_recorded(tiny_model):
    again = build_model(TINY_MODEL, random_init=True, img_size=TINY_SIZE)
    assert tiny_model.weights.source == "random-init"
    assert tiny_model.weights.sha256 == again.weights.sha256 == state_dict_sha256(again.module.state_dict())
    assert tiny_model.preprocessing.input_size == (3, TINY_SIZE, TINY_SIZE)
    assert not tiny_model.module.training


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_round_trip(tmp_path, tiny_model, suffix):
    path = tmp_path / f"w{suffix}"
    # a standard layout: an earlier extraction may have turned the shared model channels-last
    state = {k: v.clone(memory_format=torch.contiguous_format) for k, v in tiny_model.module.state_dict().items()}
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    loaded = build_model(TINY_MODEL, weights=path, img_size=TINY_SIZE)
    assert loaded.weights.source == "file" and len(loaded.weights.sha256) == 64
    for name, tensor in loaded.module.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_weights_with_a_wrong_shape_name_the_tensor(tmp_path, tiny_model):
    state = dict(tiny_model.module.state_dict())
    state["conv_stem.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match=r"'conv_stem.weight' is \(3, 3, 3, 3\), model needs \(24, 3, 3, 3\)"):
        build_model(TINY_MODEL, weights=tmp_path / "bad.pth")


def test_weights_missing_tensors_are_listed(tmp_path, tiny_model):
    state = dict(tiny_model.module.state_dict())
    del state["classifier.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ModelError, match=r"missing 1 tensor\(s\) such as \['classifier.bias'\].*1 unexpected"):
        build_model(TINY_MODEL, weights=tmp_path / "partial.pth")


def test_positional_remap_checks_every_shape(tiny_model):
    renamed = {f"_t{i}": v for i, v in enumerate(tiny_model.module.state_dict().values())}
    load_by_position(tiny_model.module, renamed, "test weights")  # same shapes: loads
    first = next(iter(renamed))
    renamed[first] = torch.zeros(1, 2)
    with pytest.raises(ModelError, match=r"tensor #0 '_t0' has shape \(1, 2\), but the model's 'conv_stem.weight' needs"):
        load_by_position(tiny_model.module, renamed, "test weights")
    with pytest.raises(ModelError, match="holds 1 tensors but"):
        load_by_position(tiny_model.module, {"x": torch.zeros(1)}, "test weights")


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError, match=r"unknown model 'tf_efficientnet_lite9'; did you mean .*tf_efficientnet_lite"):
        build_model("tf_efficientnet_lite9", random_init=True)


def test_random_init_and_weights_exclude_each_other(tmp_path):
    with pytest.raises(ModelError, match=r"random_init and weights \(--random-init, --weights\) exclude each other"):
        build_model(TINY_MODEL, weights=tmp_path / "w.pth", random_init=True)


def test_unreadable_weights_file(tmp_path):
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        build_model(TINY_MODEL, weights=tmp_path / "junk.pth")


def test_available_layers_lists_stages_and_special_outputs(tiny_model):
    specs = available_layers(tiny_model)
    assert [s.name for s in specs] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "pre_logits", "logits"]
    assert [s.channels for s in specs[:5]] == [16, 24, 32, 48, 64]
    assert [s.stride for s in specs[:5]] == [2, 4, 8, 16, 32]
    assert specs[5].stride is None and specs[6].channels == 1000


def test_resolve_indices_names_and_order(tiny_model):
    specs = resolve_layers(tiny_model, ["logits", "-1", "1", "conv_head", "blocks.1"])
    assert [s.name for s in specs] == ["blocks.1", "blocks.4", "conv_head", "logits"]
    assert [s.kind for s in specs] == ["stage", "stage", "module", "logits"]
    assert specs[2].channels == tiny_model.module.num_features


def test_layer_index_out_of_range_says_the_range(tiny_model):
    with pytest.raises(ModelError, match=r"layer index 7 is out of range \(-5 to 4\)"):
        resolve_layers(tiny_model, ["7"])


def test_unknown_layer_lists_valid_ones(tiny_model):
    with pytest.raises(ModelError, match=r"'fc9' is not a layer of test_efficientnet; valid: 'all'.*blocks.0.*pre_logits, logits"):
        resolve_layers(tiny_model, ["fc9"])


def test_torchvision_models_get_stages_from_a_trace():
    loaded = build_model("torchvision/resnet18", random_init=True, img_size=64)
    names = [s.name for s in available_layers(loaded)]
    assert names == ["relu", "layer1", "layer2", "layer3", "layer4", "pre_logits", "logits"]


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "torchvision/vit_b_16", "resnet10t"])
def test_models_that_fix_their_input_size_are_built_for_the_size_asked(name):
    """ViT-like models take --img-size at construction; CNNs, which refuse the keyword, are built as they are."""
    from pipeline.model import available_layers

    loaded = build_model(name, random_init=True, img_size=48)
    assert loaded.preprocessing.input_size == (3, 48, 48)
    assert [s.name for s in available_layers(loaded)][-2:] == ["pre_logits", "logits"]


def test_a_convolution_classifier_gives_logits_through_the_models_own_head():
    from pipeline.model.layers import head_outputs

    loaded = build_model("dla46_c", random_init=True, img_size=64)  # DLA: a 1x1 convolution is the classifier
    specs = {s.name: s for s in available_layers(loaded)}
    assert specs["pre_logits"].channels == 256 and specs["logits"].channels == 1000
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pre, logits = head_outputs(loaded, x)
        torch.testing.assert_close(logits, loaded.module(x))
    assert pre.shape == (2, 256)


def test_stages_timm_describes_for_another_variant_are_refused_but_the_head_is_not():
    loaded = build_model("hrnet_w18_small", random_init=True, img_size=64)  # feature_info of features_only
    with pytest.raises(ModelError, match=r"names stages that are not modules of the model \(stem, stage1\).*"
                                         r"--layers pre_logits,logits"):
        available_layers(loaded)
    with pytest.raises(ModelError, match="features_only"):
        resolve_layers(loaded, ["1"])
    specs = resolve_layers(loaded, ["pre_logits", "logits", "final_layer"])
    assert [(s.name, s.channels) for s in specs] == [("final_layer", 2048), ("pre_logits", 2048), ("logits", 1000)]
