"""Which layers of a model can be extracted, and resolving a user's choice of them.

Stages come from timm's ``feature_info`` (torchvision: the encoder layers of a
ViT, else the last block at each stride of a traced pass); any other module can be
named too. Two special outputs exist for every model: ``pre_logits`` (what the
model's head calls pre-logits) and ``logits`` (the ImageNet head's output). Every
output carries its :class:`~pipeline.model.layout.Layout`, read from the model.
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass

import torch

from ..errors import ModelError
from .build import LoadedModel
from .layout import (
    NCHW,
    NHWC,
    NLC,
    VECTOR,
    Layout,
    check_shape,
    map_layout,
    module_layout,
    timm_stage_layout,
    torchvision_family,
    torchvision_token_layout,
)

FAMILY_BLOCKS = ("features", "blocks")
PRE_LOGITS = "pre_logits"
LOGITS = "logits"
SPECIAL = (PRE_LOGITS, LOGITS)


@dataclass(frozen=True)
class LayerSpec:
    """One extractable output of a model, in forward (depth) order, with the layout its tensor has."""

    name: str  # module name, or pre_logits / logits
    kind: str  # "stage", "module", "pre_logits" or "logits"
    index: int | None  # position among the stages
    channels: int
    stride: int | None  # input pixels per output pixel (or per patch); None for vectors
    depth: int  # firing order in the forward pass, 0-based over all known outputs
    layout: Layout = VECTOR

    def as_dict(self) -> dict:
        """Flat (HDF5 attributes hold no nested values): the layout's fields sit beside the others."""
        plain = {k: v for k, v in asdict(self).items() if k != "layout"}
        return {**plain, **self.layout.as_dict()}


def classifier_name(loaded: LoadedModel) -> str:
    """Name of the module whose input is ``pre_logits`` (the final linear classifier)."""
    module = loaded.module
    target = module.get_classifier() if hasattr(module, "get_classifier") else None
    if isinstance(target, (tuple, list)):  # DeiT's distilled models: (class-token head, distillation head)
        target = target[0]
    names = [n for n, m in module.named_modules() if (m is target if target is not None else isinstance(m, torch.nn.Linear))]
    if not names:
        raise ModelError(f"{loaded.name} has no linear classifier, so it has no pre_logits/logits outputs")
    return names[-1]


def head_outputs(loaded: LoadedModel, x: torch.Tensor, logits: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the model on ``x``; return ``(pre_logits, logits)`` as the model's own head defines them.

    timm: ``pre_logits`` is ``forward_head(features, pre_logits=True)`` (for DeiT's
    distilled models the mean of the class and distillation tokens, not the input
    of either classifier) and ``logits`` the classifier applied to it, or
    ``forward_head(features)`` where a distillation head joins two classifiers.
    Other models: the classifier's input and the model's output. Every module runs
    once, so hooks on them (BatchNorm statistics) count each image once.
    """
    module = loaded.module
    if loaded.family == "timm" and hasattr(module, "forward_features") and hasattr(module, "forward_head"):
        features = module.forward_features(x)
        pre = module.forward_head(features, pre_logits=True)
        if not logits:
            return pre, None
        classifier = module.get_classifier() if hasattr(module, "get_classifier") else None
        if hasattr(module, "head_dist") or not isinstance(classifier, torch.nn.Linear):
            # two classifiers joined, or a 1x1 convolution on the unflattened pool (DLA, DPN): the model's own head
            return pre, module.forward_head(features)
        return pre, classifier(pre)
    seen = []
    handle = dict(module.named_modules())[classifier_name(loaded)].register_forward_pre_hook(
        lambda m, inputs: seen.append(inputs[0]))
    try:
        out = module(x)
    finally:
        handle.remove()
    return seen[0], out


@torch.inference_mode()
def trace(loaded: LoadedModel, names: list[str]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Run one dummy image through the model; return {name: (firing order, output shape)}."""
    module = loaded.module
    modules = dict(module.named_modules())
    classifier_name(loaded)  # a model without a classifier has no pre_logits/logits: say so first
    seen: dict[str, tuple[int, tuple[int, ...]]] = {}
    handles = []

    def record(name, value):
        if name not in seen:
            value = value[0] if isinstance(value, (tuple, list)) else value
            seen[name] = (len(seen), tuple(value.shape))

    for name in names:
        if name in SPECIAL:
            continue
        handles.append(modules[name].register_forward_hook(lambda m, i, o, n=name: record(n, o)))
    size = tuple(loaded.preprocessing.input_size)
    try:
        pre, out = head_outputs(loaded, torch.zeros((1, *size)))
    except (RuntimeError, AssertionError, ValueError) as exc:  # e.g. a transformer built for another input size
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelError(f"{loaded.name} cannot run on a {size[1]}x{size[2]} input ({type(exc).__name__}: "
                         f"{first}); choose an image size it accepts with img_size (--img-size), or leave it at the "
                         "model's default") from None
    finally:
        for h in handles:
            h.remove()
    record(PRE_LOGITS, pre)
    record(LOGITS, out)
    return seen


def _stage_entries(loaded: LoadedModel) -> list[dict]:
    """The stages as feature_info-like dicts (``module`` and, for timm, ``num_chs``), shallow to deep."""
    module = loaded.module
    info = getattr(module, "feature_info", None)
    if loaded.family == "timm" and isinstance(info, list) and info and isinstance(info[0], dict):
        modules = dict(module.named_modules())
        missing = [f["module"] for f in info if f["module"] not in modules]
        if missing:  # HRNet: its feature_info describes the features_only model timm builds, not this one
            raise ModelError(
                f"{loaded.name}'s feature_info names stages that are not modules of the model ({', '.join(missing)}): "
                "timm describes the stages of its features_only variant, so layerprobe cannot find this model's "
                "stages; ask for pre_logits or logits (--layers pre_logits,logits) or for module names")
        return [dict(f) for f in info]
    if loaded.family == "torchvision" and torchvision_family(module) == NLC:
        return [{"module": f"encoder.layers.{n}"} for n, _ in module.encoder.layers.named_children()]
    return [{"module": name} for name in _stages_from_trace(loaded)]


# stages found by tracing, per model and input size: each resolve would otherwise trace the model again
_TRACED_STAGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stages_from_trace(loaded: LoadedModel) -> list[str]:
    """For models without feature_info (torchvision): the last module at each stride whose layout is known."""
    known = _TRACED_STAGES.setdefault(loaded.module, {})
    size = tuple(loaded.preprocessing.input_size)
    if size not in known:
        known[size] = _find_stages(loaded)
    return list(known[size])


def _find_stages(loaded: LoadedModel) -> list[str]:
    names = [n for n, _ in loaded.module.named_modules() if n and n.count(".") <= 1]
    # a `features` sequence (torchvision's CNNs, ConvNeXt, Swin) holds the stages; what follows it is the head
    candidates = [n for n in names if n.startswith("features.")] or names
    traced = trace(loaded, candidates)
    stages: dict[int, tuple[int, str]] = {}
    for name, (order, shape) in traced.items():
        if name in SPECIAL or len(shape) != 4:
            continue
        try:
            layout = _torchvision_layout(loaded, name, shape)
        except ModelError:
            continue  # a block whose layout is unknown is no stage
        if layout.grid[0] > 1:  # 1x1: already pooled
            stride = _stride(loaded, layout)
            if stride not in stages or order > stages[stride][0]:
                stages[stride] = (order, name)
    return [name for _, (_, name) in sorted(stages.items())]


def _input_hw(loaded: LoadedModel) -> tuple[int, int]:
    return tuple(int(v) for v in loaded.preprocessing.input_size[1:])


def _stride(loaded: LoadedModel, layout: Layout) -> int | None:
    if layout.grid is None:
        return None
    return max(1, round(_input_hw(loaded)[0] / layout.grid[0]))


def _torchvision_layout(loaded: LoadedModel, name: str, shape) -> Layout:
    model = loaded.module
    family = torchvision_family(model)
    if family == NLC and len(shape) == 3:
        return torchvision_token_layout(model, _input_hw(loaded))
    if family in (NCHW, NHWC) and len(shape) == 4 and name.count(".") == 1 and name.split(".")[0] in FAMILY_BLOCKS:
        return map_layout(family, shape)  # the blocks of such a family's `features` / `blocks` share its layout
    modules = dict(model.named_modules())
    return module_layout(model, loaded.family, name, modules[name], shape, _input_hw(loaded), classifier_name(loaded))


def layout_of(loaded: LoadedModel, name: str, kind: str, shape, entries: dict[str, dict]) -> Layout:
    """The layout of output ``name`` from the model's metadata; an error naming the layer when it is ambiguous."""
    if kind in SPECIAL:
        return VECTOR
    model = loaded.module
    if loaded.family == "timm":
        if kind == "stage":
            return timm_stage_layout(model, entries[name], shape, _input_hw(loaded))
        modules = dict(model.named_modules())
        return module_layout(model, "timm", name, modules[name], shape, _input_hw(loaded), classifier_name(loaded))
    return _torchvision_layout(loaded, name, shape)


def available_layers(loaded: LoadedModel) -> list[LayerSpec]:
    """The stages of ``loaded`` and its two special outputs, in depth order."""
    return resolve_layers(loaded, ["all", LOGITS])


def resolve_layers(loaded: LoadedModel, requested: list[str] | tuple[str, ...]) -> list[LayerSpec]:
    """Turn user tokens (``all``, stage indices, module names, pre_logits, logits) into specs.

    ``all`` means every stage plus ``pre_logits``. The result is in forward order,
    without repeats.
    """
    try:
        entries, unknown_stages = {e["module"]: e for e in _stage_entries(loaded)}, None
    except ModelError as exc:  # pre_logits, logits and module names need no stages
        entries, unknown_stages = {}, exc
    stages = list(entries)
    modules = dict(loaded.module.named_modules())
    chosen: list[str] = []
    for token in requested:
        token = str(token).strip()
        if unknown_stages is not None and (token == "all" or _is_int(token)):
            raise unknown_stages
        if token == "all":
            names = stages + [PRE_LOGITS]
        elif token in SPECIAL or token in stages:
            names = [token]
        elif _is_int(token):
            index = int(token)
            if not -len(stages) <= index < len(stages):
                raise ModelError(
                    f"layer index {index} is out of range ({-len(stages)} to {len(stages) - 1}) "
                    f"for {loaded.name}, which has {len(stages)} stages"
                )
            names = [stages[index]]
        elif token in modules and token:
            names = [token]
        else:
            raise ModelError(
                f"{token!r} is not a layer of {loaded.name}; valid: 'all', stage indices "
                f"{-len(stages)}..{len(stages) - 1}, stage names {', '.join(stages)}, any module name, "
                f"{PRE_LOGITS}, {LOGITS} (`layerprobe layers {loaded.name}` lists them)"
            )
        chosen += [n for n in names if n not in chosen]
    if not chosen:
        raise ModelError("no layers requested; pass layers=('all',) (--layers all), or indices, names, pre_logits, "
                         "logits")
    traced = trace(loaded, chosen)
    specs = []
    for name in chosen:
        if name not in traced:
            raise ModelError(f"module {name!r} of {loaded.name} never runs in a forward pass; choose another layer")
        order, shape = traced[name]
        kind = name if name in SPECIAL else ("stage" if name in stages else "module")
        index = stages.index(name) if name in stages else None
        layout = layout_of(loaded, name, kind, shape, entries)
        channels = check_shape(layout, shape, name)
        specs.append(LayerSpec(name, kind, index, channels, _stride(loaded, layout), order, layout))
    return sorted(specs, key=lambda s: s.depth)


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True
