"""BatchNorm layers belong to outputs by the order they run in, for timm and torchvision models alike."""

import re

import pytest
import torch

from pipeline.model import (
    LOGITS,
    PRE_LOGITS,
    LoadedModel,
    Preprocessing,
    WeightsInfo,
    available_layers,
    batchnorm_members,
    batchnorm_modules,
    build_model,
)
from pipeline.model.bnorder import assign_by_firing

from .conftest import TINY_MODEL
from .model_panel import PANEL, load


def _members(name: str, size: int = 64):
    loaded = build_model(name, random_init=True, img_size=size)
    layers = [s.name for s in available_layers(loaded) if s.name != LOGITS]
    return loaded, layers, batchnorm_members(loaded, layers)


def _assert_partition(loaded, found):
    """Every BatchNorm layer of the model is in exactly one output, or explicitly in none."""
    everything = [name for name, _ in batchnorm_modules(loaded.module)]
    placed = [m for names in found.members.values() for m in names] + list(found.after_last) + list(found.never_ran)
    assert sorted(placed) == sorted(everything)
    assert len(placed) == len(set(placed))
    assert sorted(found.order) == sorted(everything)


def _first_at_or_after(index: int, stage_indices: list[int]) -> int:
    return min(j for j in stage_indices if j >= index)


@pytest.mark.parametrize("name", ["torchvision/mobilenet_v2", "torchvision/efficientnet_b0"])
def test_torchvision_sequential_features_go_to_the_first_stage_at_or_after_them(name):
    loaded, layers, found = _members(name)
    _assert_partition(loaded, found)
    stages = [layer for layer in layers if layer.startswith("features.")]
    indices = [int(layer.split(".")[1]) for layer in stages]
    for layer, names in found.members.items():
        for bn in names:
            k = int(bn.split(".")[1])
            if layer == "features":  # the whole trunk, last: everything after the last numbered stage
                assert k > max(indices), bn
            else:
                assert layer == f"features.{_first_at_or_after(k, indices)}", bn
    assert found.members[layers[0]][0] == "features.0.1"  # the stem's BatchNorm, in the first stage
    assert found.members[PRE_LOGITS] == [] and found.after_last == () and found.never_ran == ()


def test_mobilenet_v2_counts():
    loaded, layers, found = _members("torchvision/mobilenet_v2")
    assert layers == ["features.1", "features.3", "features.6", "features.13", "features.18", PRE_LOGITS]
    # features.0: 1 BatchNorm, features.1: 2, features.2-17: 3 each, features.18: 1
    assert [len(found.members[layer]) for layer in layers] == [3, 6, 9, 21, 13, 0]
    assert found.members["features.18"][-1] == "features.18.1"


def test_timm_efficientnet_stem_to_the_first_stage_and_head_to_pre_logits():
    loaded, layers, found = _members(TINY_MODEL)
    _assert_partition(loaded, found)
    stages = [int(layer.split(".")[1]) for layer in layers if layer.startswith("blocks.")]
    assert found.members[layers[0]][0] == "bn1"
    assert found.members[PRE_LOGITS] == ["bn2"]
    for layer, names in found.members.items():
        for bn in names:
            if bn.startswith("blocks."):
                assert layer == f"blocks.{_first_at_or_after(int(bn.split('.')[1]), stages)}", bn
    expected = {layer: sum(1 for n, _ in batchnorm_modules(loaded.module) if re.match(rf"{re.escape(layer)}\.", n))
                for layer in layers if layer.startswith("blocks.")}
    expected[layers[0]] += 1  # the stem's bn1
    assert {layer: len(found.members[layer]) for layer in expected} == expected


@pytest.mark.parametrize("name, stem", [("resnet18", "act1"), ("torchvision/resnet18", "relu")])
def test_resnets(name, stem):
    loaded, layers, found = _members(name)
    _assert_partition(loaded, found)
    assert layers == [stem, "layer1", "layer2", "layer3", "layer4", PRE_LOGITS]
    assert found.members[stem] == ["bn1"]
    for i in range(1, 5):
        # two BasicBlocks, two BatchNorm layers each, plus a downsample BatchNorm from layer2 on
        assert len(found.members[f"layer{i}"]) == (4 if i == 1 else 5)
        assert all(bn.startswith(f"layer{i}.") for bn in found.members[f"layer{i}"])
    assert found.members[PRE_LOGITS] == []
    assert len(found.order) == 20


def test_only_some_stages_chosen_gather_what_runs_before_them():
    loaded = build_model("resnet18", random_init=True, img_size=64)
    found = batchnorm_members(loaded, ["layer2", "layer3"])
    assert found.members["layer2"][:2] == ["bn1", "layer1.0.bn1"] and len(found.members["layer2"]) == 1 + 4 + 5
    assert len(found.members["layer3"]) == 5
    assert found.after_last == tuple(f"layer4.{b}" for b in ("0.bn1", "0.bn2", "0.downsample.1", "1.bn1", "1.bn2"))
    _assert_partition(loaded, found)


class _Backwards(torch.nn.Module):
    """Modules defined in another order than they run, a BatchNorm that never runs, and one after the head."""

    def __init__(self):
        super().__init__()
        self.late = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4))
        self.early = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.BatchNorm2d(4))
        self.unused = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 2)
        self.after = torch.nn.BatchNorm1d(2)

    def forward(self, x):
        x = self.late(self.early(x))
        return self.after(self.fc(x.mean((2, 3))))


def _backwards() -> LoadedModel:
    pre = Preprocessing((3, 16, 16), "bilinear", (0.5,) * 3, (0.5,) * 3, 1.0, "center")
    return LoadedModel("backwards", _Backwards().eval(), WeightsInfo("random-init", "0"), pre)


def test_firing_order_not_names_or_definition_order():
    loaded = _backwards()
    found = batchnorm_members(loaded, ["early", "late", PRE_LOGITS])
    assert found.order == ("early.1", "late.1", "after", "unused")
    assert found.members == {"early": ["early.1"], "late": ["late.1"], PRE_LOGITS: []}
    assert found.after_last == ("after",) and found.never_ran == ("unused",)
    # a BatchNorm layer chosen as an output belongs to itself; logits takes what runs after pre_logits
    found = batchnorm_members(loaded, ["early.1", LOGITS])
    assert found.members == {"early.1": ["early.1"], LOGITS: ["late.1", "after"]}
    _assert_partition(loaded, found)


def test_assign_by_firing_counts_first_firings_only():
    events = [("bn", "a"), ("output", "s0"), ("bn", "b"), ("bn", "a"), ("output", "s0"), ("bn", "c"),
              ("output", "s1"), ("bn", "d"), ("output", "other")]
    assert assign_by_firing(events, ["s0", "s1"]) == {"s0": ["a"], "s1": ["b", "c"], None: ["d"]}


def test_similarity_of_a_torchvision_cache_uses_the_recorded_members(image_folder, tmp_path):
    """The case of the issue: mobilenet_v2's BatchNorm layers spread over its stages, not all in `features`."""
    from pipeline.activations import ExtractConfig, extract
    from pipeline.inputs import from_folder
    from pipeline.similarity import similarity_table

    config = ExtractConfig(model="torchvision/mobilenet_v2", random_init=True, img_size=64, batch_size=16, workers=0,
                           bn_stats=True)
    path = extract(from_folder(image_folder), config, out=tmp_path / "c.h5", progress=False).path
    table = similarity_table(path)
    assert [(r.name, len(r.members)) for r in table.rows] == [
        ("features.1/avg", 3), ("features.3/avg", 6), ("features.6/avg", 9), ("features.13/avg", 21),
        ("features.18/avg", 13), ("pre_logits/none", 0)]
    assert table.rows[0].members[0] == "features.0.1" and table.bn_outside == []
    assert [r.name for r in table.bn_rows] == [m for r in table.rows for m in r.members]  # firing order throughout
    assert table.rows[-1].values["w2"] is None and table.rows[0].values["w2"] is not None


def test_a_cache_without_recorded_members_says_so(image_folder, tiny_config, tmp_path):
    import json

    import h5py

    from pipeline.activations import extract
    from pipeline.cache.format import metadata_digest
    from pipeline.inputs import from_folder
    from pipeline.similarity import similarity_table

    path = extract(from_folder(image_folder), tiny_config(bn_stats=True, layers=("1", "pre_logits")),
                   out=tmp_path / "c.h5", progress=False).path
    with h5py.File(path, "r+") as handle:  # as an older layerprobe wrote it
        manifest = json.loads(handle.attrs["manifest"])
        manifest["bn_stats"] = {k: manifest["bn_stats"][k] for k in ("modules", "images")}
        handle.attrs["manifest"] = json.dumps(manifest)
        handle.attrs["digest"] = metadata_digest(handle)
    table = similarity_table(path)
    assert len(table.bn_rows) == 13 and all(r.members == [] and r.values["w2"] is None for r in table.rows)
    assert any("does not record which output each BatchNorm layer belongs to" in n for n in table.notes)


def test_adding_a_layer_to_a_cache_reassigns_the_members(image_folder, tiny_config, tmp_path):
    from pipeline import open_cache
    from pipeline.activations import extract
    from pipeline.inputs import from_folder

    out = tmp_path / "c.h5"
    extract(from_folder(image_folder), tiny_config(bn_stats=True, layers=("1",)), out=out, progress=False)
    with open_cache(out) as cache:
        assert {k: len(v) for k, v in cache.bn_members().items()} == {"blocks.1": 4}
    extract(from_folder(image_folder), tiny_config(bn_stats=True, layers=("1", "3")), out=out, progress=False)
    with open_cache(out) as cache:
        members = cache.bn_members()
        assert members["blocks.3"] == ["blocks.2.0.bn1", "blocks.2.0.bn2", "blocks.3.0.bn1", "blocks.3.0.bn2",
                                       "blocks.3.0.bn3"]
        assert cache.manifest["bn_stats"]["after_last"] == ["blocks.4.0.bn1", "blocks.4.0.bn2", "blocks.4.0.bn3",
                                                            "bn2"]


@pytest.mark.parametrize("entry", PANEL, ids=lambda e: e.id)
def test_members_partition_the_batchnorm_layers_of_every_panel_model(entry):
    """The conformance panel: every BatchNorm layer in exactly one output, the first to fire in the first stage."""
    loaded = load(entry)
    layers = [s.name for s in available_layers(loaded) if s.name != LOGITS]
    found = batchnorm_members(loaded, layers)
    _assert_partition(loaded, found)
    assert found.after_last == () and found.never_ran == ()
    if found.order:
        assert found.order[0] in found.members[layers[0]]
