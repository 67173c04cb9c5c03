"""Model: building pretrained networks, their weights, preprocessing and layers."""

from .bnorder import BatchNormMembers, batchnorm_members, batchnorm_modules
from .build import LoadedModel, Preprocessing, build_architecture, build_model
from .layout import Layout
from .layers import LOGITS, PRE_LOGITS, LayerSpec, available_layers, classifier_name, resolve_layers
from .weights import KNOWN_SOURCES, WeightsInfo

__all__ = [
    "BatchNormMembers",
    "KNOWN_SOURCES",
    "LOGITS",
    "PRE_LOGITS",
    "LayerSpec",
    "Layout",
    "LoadedModel",
    "Preprocessing",
    "WeightsInfo",
    "available_layers",
    "batchnorm_members",
    "batchnorm_modules",
    "build_architecture",
    "build_model",
    "classifier_name",
    "resolve_layers",
]
