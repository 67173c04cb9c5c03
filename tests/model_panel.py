"""The architecture panel: the families layerprobe calls supported, each at a tiny input it accepts.

One place for every conformance check (tests/test_conformance.py, bench/panel.py,
and any later test that needs "every family", such as BatchNorm assignment). A
family must pass the conformance suite on this panel before README.md calls it
supported. Models are random-init: the checks are about where the numbers come
from, not what they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from pipeline.model import LoadedModel, Preprocessing, WeightsInfo
from pipeline.activations.pooling import GEM_EPS, GEM_P
from pipeline.model.layout import NCHW, NHWC, NLC

SEED = 0


@dataclass(frozen=True)
class PanelModel:
    """A model of the panel and what its stages must look like.

    ``kwargs`` are constructor arguments that make the model accept ``img_size``
    (transformers fix their input size at construction). ``head`` is the
    classifier's module name for torchvision models, whose ``pre_logits`` is that
    module's input.
    """

    name: str
    img_size: int
    layout: str  # layout of every stage: NCHW, NHWC or NLC
    channels: tuple[int, ...]  # stage widths, shallow to deep
    prefix_tokens: int = 0
    class_token: bool = False
    kwargs: tuple[tuple[str, object], ...] = ()
    head: str | None = None
    family_note: str = field(default="", compare=False)

    @property
    def torchvision(self) -> bool:
        return self.name.startswith("torchvision/")

    @property
    def id(self) -> str:
        return self.name.removeprefix("torchvision/") + ("-tv" if self.torchvision else "")


PANEL: tuple[PanelModel, ...] = (
    PanelModel("resnet10t", 64, NCHW, (64, 64, 128, 256, 512), family_note="ResNet"),
    PanelModel("densenet121", 64, NCHW, (64, 256, 512, 1024, 1024), family_note="DenseNet"),
    PanelModel("tf_efficientnet_lite0", 64, NCHW, (16, 24, 40, 112, 320), family_note="EfficientNet (the default)"),
    PanelModel("mobilenetv3_small_050", 64, NCHW, (16, 8, 16, 24, 288), family_note="MobileNetV3"),
    PanelModel("regnetx_002", 64, NCHW, (32, 24, 56, 152, 368), family_note="RegNet"),
    PanelModel("convnext_atto", 64, NCHW, (40, 80, 160, 320), family_note="ConvNeXt"),
    PanelModel("swin_tiny_patch4_window7_224", 64, NHWC, (96, 192, 384, 768),
               kwargs=(("img_size", 64), ("window_size", 4)), family_note="Swin (channels-last)"),
    PanelModel("maxvit_pico_rw_256", 64, NCHW, (32, 32, 64, 128, 256), kwargs=(("img_size", 64),),
               family_note="MaxViT (hybrid)"),
    PanelModel("vit_tiny_patch16_224", 64, NLC, (192,) * 12, 1, True, (("img_size", 64),),
               family_note="ViT (class token)"),
    PanelModel("deit_tiny_distilled_patch16_224", 64, NLC, (192,) * 12, 2, True, (("img_size", 64),),
               family_note="DeiT (class + distillation token)"),
    PanelModel("vit_small_patch14_reg4_dinov2", 56, NLC, (384,) * 12, 5, True, (("img_size", 56),),
               family_note="ViT with 4 register tokens"),
    PanelModel("vit_wee_patch16_reg1_gap_256", 64, NLC, (256,) * 14, 1, False, (("img_size", 64),),
               family_note="ViT, 1 register token, no class token"),
    PanelModel("torchvision/mobilenet_v3_small", 64, NCHW, (16, 16, 24, 48, 576), head="classifier.3",
               family_note="torchvision MobileNetV3"),
    PanelModel("torchvision/resnet18", 64, NCHW, (64, 64, 128, 256, 512), head="fc", family_note="torchvision ResNet"),
    PanelModel("torchvision/swin_t", 64, NHWC, (96, 192, 384, 768), head="head",
               family_note="torchvision Swin (channels-last)"),
    PanelModel("torchvision/vit_b_16", 64, NLC, (768,) * 12, 1, True, (("image_size", 64),), head="heads.head",
               family_note="torchvision ViT"),
)


def panel_model(name: str) -> PanelModel:
    for entry in PANEL:
        if entry.name == name:
            return entry
    raise KeyError(f"{name!r} is not in the panel; valid: {', '.join(e.name for e in PANEL)}")


def load(entry: PanelModel) -> LoadedModel:
    """The panel model, random-init with a fixed seed, as layerprobe's model stage hands it on."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        if entry.torchvision:
            import torchvision

            module = torchvision.models.get_model(entry.name.removeprefix("torchvision/"), weights=None,
                                                  **dict(entry.kwargs))
        else:
            import timm

            module = timm.create_model(entry.name, pretrained=False, **dict(entry.kwargs))
    module.eval()
    preprocessing = Preprocessing(
        input_size=(3, entry.img_size, entry.img_size),
        interpolation="bilinear",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        crop_pct=1.0,
        crop_mode="center",
    )
    # the weights' identity for the cache key: seed and constructor, which fix every random-init tensor
    digest = hashlib.sha256(repr((entry.name, entry.kwargs, SEED)).encode()).hexdigest()
    return LoadedModel(entry.name, module, WeightsInfo("random-init", digest), preprocessing)


# The independent reference ------------------------------------------------------------------------------------
def _reduce(positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pool (N, P, C) positions by hand: the reference for each pooling."""
    positions = positions.float()
    gem = positions.clamp(min=GEM_EPS).pow(GEM_P).mean(1).pow(1 / GEM_P)
    avg, mx = positions.mean(1), positions.amax(1)
    return {"avg": avg, "max": mx, "avgmax": 0.5 * (avg + mx), "gem": gem}


def _positions(value: torch.Tensor, layout: str, prefix: int) -> torch.Tensor:
    """(N, P, C) from a map or token tensor whose layout the panel declares."""
    if layout == NCHW:
        return value.flatten(2).transpose(1, 2)
    if layout == NHWC:
        return value.flatten(1, 2)
    return value[:, prefix:]  # NLC


@torch.inference_mode()
def _timm_reference(entry: PanelModel, model, x) -> dict[str, torch.Tensor]:
    stages = [f["module"] for f in model.feature_info]
    tokens = entry.layout == NLC
    final, inter = model.forward_intermediates(x, **({"return_prefix_tokens": True} if tokens else {}))
    ref = {}
    for name, value in zip(stages, inter, strict=True):
        fmap, prefix = value if tokens else (value, None)
        ref.update({f"{name}/{p}": v for p, v in _reduce(_positions(fmap, NCHW, 0)).items()})  # timm returns NCHW
        if entry.class_token:
            ref[f"{name}/token"] = prefix[:, 0]
    ref["pre_logits/none"] = model.forward_head(final, pre_logits=True)
    ref["logits/none"] = model(x)
    return ref


@torch.inference_mode()
def _torchvision_reference(entry: PanelModel, model, x, stages: list[str]) -> dict[str, torch.Tensor]:
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    nodes = get_graph_node_names(model)[1]
    pre_node = nodes[nodes.index(entry.head) - 1]  # the node that feeds the classifier
    out = create_feature_extractor(model, return_nodes=[*stages, pre_node])(x)
    ref = {}
    for name in stages:
        ref.update({f"{name}/{p}": v for p, v in _reduce(_positions(out[name], entry.layout, entry.prefix_tokens)).items()})
        if entry.class_token:
            ref[f"{name}/token"] = out[name][:, 0]
    ref["pre_logits/none"] = out[pre_node]
    ref["logits/none"] = model(x)
    return ref


def reference_codes(entry: PanelModel, model, x: torch.Tensor, stages: list[str]) -> dict[str, torch.Tensor]:
    """Every ``layer/pooling`` code of ``x`` from the model's own API, pooled here over the declared axes."""
    if entry.torchvision:
        return _torchvision_reference(entry, model, x, stages)
    assert stages == [f["module"] for f in model.feature_info]
    return _timm_reference(entry, model, x)
