"""Activations: the forward pass, pooling and the extract stage (imports torch)."""

from .extract import DEFAULT_MODEL, ExtractConfig, ExtractResult, extract
from .pooling import NO_POOLING, POOLINGS, get_pooling, register_pooling
from .tap import LayerTap, output_keys

__all__ = [
    "DEFAULT_MODEL",
    "NO_POOLING",
    "POOLINGS",
    "ExtractConfig",
    "ExtractResult",
    "LayerTap",
    "extract",
    "get_pooling",
    "output_keys",
    "register_pooling",
]
