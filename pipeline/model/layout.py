"""The layout of a model's outputs, read from the model, never guessed from a tensor's shape.

A feature map may be channels-first (``NCHW``: CNNs, timm's convention) or
channels-last (``NHWC``: Swin, MambaOut, torchvision's Swin); a transformer block
returns tokens (``NLC``) whose first K are class, distillation or register tokens
and the rest a patch grid; ``pre_logits`` and ``logits`` are vectors (``NC``).
A ``(N, 56, 56, 96)`` tensor looks like a 56-channel map to anyone who reads only
its shape, so the layout comes from metadata: timm's ``feature_info``,
``output_fmt`` and ``num_prefix_tokens``, torchvision's model classes, the module
types of a hooked module. Where that metadata does not settle the question the
layer is refused with an error that names it. A tensor's rank only separates maps
from sequences, and its shape is checked against the metadata, so a model that
breaks its own metadata fails loudly instead of storing wrong codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ModelError

NCHW, NHWC, NLC, NC = "NCHW", "NHWC", "NLC", "NC"
FORMATS = (NCHW, NHWC, NLC, NC)

# torchvision model classes whose stage outputs are not plain channels-first maps of conv layers
TORCHVISION_FAMILIES = {"SwinTransformer": NHWC, "VisionTransformer": NLC, "ConvNeXt": NCHW, "MaxVit": NCHW}

# leaves whose output is channels-first whenever it is four-dimensional (torch's convention for these types)
_CHANNELS_FIRST = (
    torch.nn.modules.conv._ConvNd,
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.pooling._MaxPoolNd,
    torch.nn.modules.pooling._AvgPoolNd,
    torch.nn.modules.pooling._AdaptiveAvgPoolNd,
    torch.nn.modules.pooling._AdaptiveMaxPoolNd,
    torch.nn.GroupNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.Upsample,
)
# leaves that act on the last axis, so a four-dimensional output of theirs is channels-last
_LAST_AXIS = (torch.nn.Linear, torch.nn.LayerNorm)
# leaves that keep the layout of their input
_NEUTRAL = (torch.nn.Identity, torch.nn.Dropout, torch.nn.ReLU, torch.nn.ReLU6, torch.nn.SiLU, torch.nn.GELU,
            torch.nn.Hardswish, torch.nn.Hardsigmoid, torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.LeakyReLU,
            torch.nn.ELU, torch.nn.Mish, torch.nn.PReLU)


@dataclass(frozen=True)
class Layout:
    """How one output's tensor is laid out.

    ``grid`` is the spatial size (H, W) of a map, or of the patch grid of a token
    sequence, at the input size the model was traced with. ``prefix_tokens`` are
    the K tokens before the patch grid (class, distillation, register tokens);
    ``class_token`` says whether the first of them is a class token.
    """

    format: str
    grid: tuple[int, int] | None = None
    prefix_tokens: int = 0
    class_token: bool = False

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ModelError(f"unknown layout {self.format!r}; valid: {', '.join(FORMATS)}")

    @property
    def spatial(self) -> bool:
        """A map or tokens, so a pooling is needed; vectors are stored as they are."""
        return self.format != NC

    @property
    def channel_dim(self) -> int:
        return {NCHW: 1, NHWC: 3, NLC: 2, NC: 1}[self.format]

    def describe(self) -> str:
        """``NCHW 8x8``, ``NHWC 2x2``, ``NLC 1+4x4 (class token)``, ``NC``."""
        if self.grid is None:
            return self.format
        grid = f"{self.grid[0]}x{self.grid[1]}"
        if self.format != NLC:
            return f"{self.format} {grid}"
        kind = " (class token)" if self.class_token else ""
        return f"{self.format} {self.prefix_tokens}+{grid}{kind}"

    def as_dict(self) -> dict:
        return {"layout": self.format, "grid": list(self.grid) if self.grid else None,
                "prefix_tokens": self.prefix_tokens, "class_token": self.class_token}


VECTOR = Layout(NC)


def check_shape(layout: Layout, shape: tuple[int, ...], name: str) -> int:
    """The channels of ``shape`` under ``layout``; an error naming ``name`` when they disagree."""
    rank = {NCHW: 4, NHWC: 4, NLC: 3, NC: 2}[layout.format]
    if layout.format == NC and len(shape) == 4 and tuple(shape[2:]) == (1, 1):
        return int(shape[1])  # the pooled (N, C, 1, 1) input of a 1x1-convolution classifier
    if len(shape) != rank:
        raise ModelError(f"output {name!r} has shape {tuple(shape)}, but its layout {layout.describe()} needs "
                         f"{rank} dimensions; this layer's layout cannot be trusted, choose another layer")
    if layout.format == NLC:
        expected = layout.prefix_tokens + layout.grid[0] * layout.grid[1]
        if shape[1] != expected:
            raise ModelError(f"output {name!r} has {shape[1]} tokens, but the model declares {layout.prefix_tokens} "
                             f"prefix tokens and a {layout.grid[0]}x{layout.grid[1]} patch grid ({expected}); "
                             "its layout is ambiguous, choose another layer")
    elif layout.format in (NCHW, NHWC):
        grid = tuple(shape[1:3]) if layout.format == NHWC else tuple(shape[2:4])
        if layout.grid is not None and grid != tuple(layout.grid):
            raise ModelError(f"output {name!r} has a {grid[0]}x{grid[1]} map, expected {layout.grid}")
    return int(shape[layout.channel_dim])


def map_layout(fmt: str, shape: tuple[int, ...]) -> Layout:
    """A map's layout with its grid read from ``shape`` at the axes ``fmt`` names."""
    grid = tuple(shape[1:3]) if fmt == NHWC else tuple(shape[2:4])
    return Layout(fmt, tuple(int(v) for v in grid))


# timm ---------------------------------------------------------------------------------------------------------------
def timm_stage_layout(model: torch.nn.Module, entry: dict, shape: tuple[int, ...], input_hw: tuple[int, int]) -> Layout:
    """Layout of a timm ``feature_info`` stage: tokens for token models, else ``output_fmt`` (NCHW by default)."""
    name = entry["module"]
    if len(shape) == 3 and is_token_model(model):
        layout = timm_token_layout(model, input_hw)
    elif len(shape) == 4:
        fmt = str(getattr(entry.get("output_fmt"), "value", entry.get("output_fmt"))
                  or _fmt(getattr(model, "output_fmt", None)) or NCHW)
        layout = map_layout(fmt, shape)
    else:
        raise ModelError(f"stage {name!r} of a {type(model).__name__} returns shape {tuple(shape)}, which its "
                         "metadata does not describe; choose another layer")
    channels = check_shape(layout, shape, name)
    declared = entry.get("num_chs")
    if declared is not None and channels != int(declared):
        raise ModelError(f"stage {name!r} gives {channels} channels as {layout.describe()}, but the model's "
                         f"feature_info declares {declared}; its layout is ambiguous, so it is not extracted")
    return layout


def is_token_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "num_prefix_tokens") and hasattr(model, "patch_embed")


def timm_token_layout(model: torch.nn.Module, input_hw: tuple[int, int]) -> Layout:
    """Tokens of a timm ViT-like model: ``num_prefix_tokens`` first (class token first if any), then the grid."""
    embed = model.patch_embed
    if hasattr(embed, "dynamic_feat_size"):
        grid = tuple(embed.dynamic_feat_size(input_hw))
    else:
        grid = tuple(embed.grid_size)
    return Layout(NLC, (int(grid[0]), int(grid[1])), int(model.num_prefix_tokens),
                  getattr(model, "cls_token", None) is not None)


def _fmt(value) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


# torchvision --------------------------------------------------------------------------------------------------------
def torchvision_family(model: torch.nn.Module) -> str | None:
    return TORCHVISION_FAMILIES.get(type(model).__name__)


def torchvision_token_layout(model: torch.nn.Module, input_hw: tuple[int, int]) -> Layout:
    """torchvision's VisionTransformer: one class token, then the patch grid."""
    patch = int(model.patch_size)
    return Layout(NLC, (input_hw[0] // patch, input_hw[1] // patch), 1, True)


# any module ---------------------------------------------------------------------------------------------------------
def module_layout(model: torch.nn.Module, family: str, name: str, module: torch.nn.Module,
                  shape: tuple[int, ...], input_hw: tuple[int, int], head: str = "") -> Layout:
    """Layout of an arbitrary hooked module, from the best metadata there is; refuses when it is ambiguous."""
    if len(shape) == 2:
        return VECTOR
    if len(shape) == 3:
        token = _token_layout(model, family, input_hw)
        if token is not None and token.prefix_tokens + token.grid[0] * token.grid[1] == shape[1]:
            return token
        raise _ambiguous(name, shape, "a sequence that is not the model's patch tokens")
    if len(shape) != 4:
        raise _ambiguous(name, shape, "neither a map, tokens nor a vector")
    declared = _fmt(getattr(module, "output_fmt", None))
    if declared in (NCHW, NHWC):
        return map_layout(declared, shape)
    leaf_fmt = _leaf_format(module)
    if leaf_fmt is not None:
        return map_layout(leaf_fmt, shape)
    if _convolutional(module) or _convolutional(model, head):
        return map_layout(NCHW, shape)  # all of it, or the whole network before its head, is channels-first
    raise _ambiguous(name, shape, "a block that mixes channels-first and channels-last layers")


def _token_layout(model, family, input_hw) -> Layout | None:
    if family == "torchvision":
        return torchvision_token_layout(model, input_hw) if torchvision_family(model) == NLC else None
    return timm_token_layout(model, input_hw) if is_token_model(model) else None


def _leaf_format(module: torch.nn.Module) -> str | None:
    if list(module.children()):
        return None
    if _is_norm2d(module):
        return NCHW
    if isinstance(module, _CHANNELS_FIRST) and not isinstance(module, _LAST_AXIS):
        return NCHW
    if isinstance(module, _LAST_AXIS):
        return NHWC
    return None


def _is_norm2d(module: torch.nn.Module) -> bool:
    """timm's LayerNorm2d and friends subclass nn.LayerNorm but normalise channels-first maps."""
    return type(module).__name__.endswith("2d")


def _convolutional(module: torch.nn.Module, head: str | None = None) -> bool:
    """Every leaf is a channels-first layer or keeps its input's layout, and at least one is a convolution.

    Such a block consumes and returns channels-first maps (ResNet blocks,
    torchvision's ``features.N``, DenseNet blocks, MobileNet blocks). With
    ``head`` (the classifier's module name) the whole network is asked, leaving
    out the classifier and the head container it sits in.
    """
    skip = () if head is None else tuple(p for p in (head, head.rpartition(".")[0]) if p)
    leaves = [m for n, m in module.named_modules() if not list(m.children())
              and not any(n == p or n.startswith(p + ".") for p in skip)]
    has_conv = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in leaves)
    return has_conv and all(
        (isinstance(m, _CHANNELS_FIRST) and not isinstance(m, _LAST_AXIS)) or isinstance(m, _NEUTRAL)
        or _is_norm2d(m) or type(m).__name__ in _TIMM_CHANNELS_FIRST
        for m in leaves
    )


# timm activation / norm-act leaves that act element-wise or per channel on NCHW maps
_TIMM_CHANNELS_FIRST = {"Swish", "HardSwish", "HardSigmoid", "GELU", "Sigmoid", "Tanh", "HardMish", "Mish",
                        "SiLU", "BatchNormAct2d", "GroupNormAct", "FrozenBatchNorm2d", "BlurPool2d",
                        "SelectAdaptivePool2d", "DropPath", "Flatten", "Identity"}


def _ambiguous(name: str, shape: tuple[int, ...], what: str) -> ModelError:
    return ModelError(
        f"the layout of module {name!r} (output shape {tuple(shape)}) is ambiguous: it is {what}, and the model's "
        "metadata does not say which axis holds the channels; choose a stage (`layerprobe layers MODEL` lists "
        "them), or a convolution or normalisation module inside it"
    )
