"""Which layers of a model can be extracted, and resolving a user's choice of them.

Stages come from timm's ``feature_info``; any other module can be named too. Two
special outputs exist for every model: ``pre_logits`` (the pooled features that
enter the classifier) and ``logits`` (the ImageNet head's output).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import ModelError
from .build import LoadedModel

PRE_LOGITS = "pre_logits"
LOGITS = "logits"
SPECIAL = (PRE_LOGITS, LOGITS)


@dataclass(frozen=True)
class LayerSpec:
    """One extractable output of a model, in forward (depth) order."""

    name: str  # module name, or pre_logits / logits
    kind: str  # "stage", "module", "pre_logits" or "logits"
    index: int | None  # position among the stages
    channels: int
    stride: int | None  # input pixels per output pixel; None for vectors
    depth: int  # firing order in the forward pass, 0-based over all known outputs

    def as_dict(self) -> dict:
        return asdict(self)


def classifier_name(loaded: LoadedModel) -> str:
    """Name of the module whose input is ``pre_logits`` (the final linear classifier)."""
    module = loaded.module
    target = module.get_classifier() if hasattr(module, "get_classifier") else None
    names = [n for n, m in module.named_modules() if (m is target if target is not None else isinstance(m, torch.nn.Linear))]
    if not names:
        raise ModelError(f"{loaded.name} has no linear classifier, so it has no pre_logits/logits outputs")
    return names[-1]


@torch.inference_mode()
def trace(loaded: LoadedModel, names: list[str]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Run one dummy image through the model; return {name: (firing order, output shape)}."""
    module = loaded.module
    modules = dict(module.named_modules())
    head = classifier_name(loaded)
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
    handles.append(modules[head].register_forward_pre_hook(lambda m, i: record(PRE_LOGITS, i[0])))
    try:
        out = module(torch.zeros((1, *loaded.preprocessing.input_size)))
    finally:
        for h in handles:
            h.remove()
    record(LOGITS, out)
    return seen


def _spec(name, kind, index, shape, order, input_px) -> LayerSpec:
    channels, stride = _channels_stride(shape, input_px)
    return LayerSpec(name, kind, index, channels, stride, order)


def _channels_stride(shape: tuple[int, ...], input_px: int) -> tuple[int, int | None]:
    if len(shape) == 4:  # NCHW map
        return shape[1], max(1, round(input_px / shape[2]))
    if len(shape) == 3:  # NLC tokens (vision transformers): stride of the patch grid
        tokens = shape[1]
        side = int(tokens**0.5)
        return shape[2], (max(1, round(input_px / side)) if side else None)
    if len(shape) == 2:
        return shape[1], None
    raise ModelError(f"cannot extract an output of shape {shape}: expected a map, tokens or a vector")


def _stage_modules(loaded: LoadedModel) -> list[str]:
    info = getattr(loaded.module, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[0], dict):
        return [f["module"] for f in info]
    return _stages_from_trace(loaded)


def _stages_from_trace(loaded: LoadedModel) -> list[str]:
    """For models without feature_info (torchvision): the last module at each stride."""
    candidates = [n for n, _ in loaded.module.named_modules() if n and n.count(".") <= 1]
    traced = trace(loaded, candidates)
    px = loaded.preprocessing.input_size[-1]
    stages: dict[int, tuple[int, str]] = {}
    for name, (order, shape) in traced.items():
        if name not in SPECIAL and len(shape) == 4 and shape[2] > 1:  # 1x1: already pooled
            stride = _channels_stride(shape, px)[1]
            if stride not in stages or order > stages[stride][0]:
                stages[stride] = (order, name)
    return [name for _, (_, name) in sorted(stages.items())]


def available_layers(loaded: LoadedModel) -> list[LayerSpec]:
    """The stages of ``loaded`` and its two special outputs, in depth order."""
    return resolve_layers(loaded, ["all", LOGITS])


def resolve_layers(loaded: LoadedModel, requested: list[str] | tuple[str, ...]) -> list[LayerSpec]:
    """Turn user tokens (``all``, stage indices, module names, pre_logits, logits) into specs.

    ``all`` means every stage plus ``pre_logits``. The result is in forward order,
    without repeats.
    """
    stages = _stage_modules(loaded)
    modules = dict(loaded.module.named_modules())
    chosen: list[str] = []
    for token in requested:
        token = str(token).strip()
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
        raise ModelError("no layers requested; pass --layers all, or indices, names, pre_logits, logits")
    traced = trace(loaded, chosen)
    px = loaded.preprocessing.input_size[-1]
    specs = []
    for name in chosen:
        if name not in traced:
            raise ModelError(f"module {name!r} of {loaded.name} never runs in a forward pass; choose another layer")
        order, shape = traced[name]
        kind = name if name in SPECIAL else ("stage" if name in stages else "module")
        index = stages.index(name) if name in stages else None
        specs.append(_spec(name, kind, index, shape, order, px))
    return sorted(specs, key=lambda s: s.depth)


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True
