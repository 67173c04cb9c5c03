"""Activations: the forward pass, pooling and the extract stage (imports torch)."""

from .distributed import Rank, launched_in_parallel, rank_config, torchrun_rank
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
    "Rank",
    "extract",
    "get_pooling",
    "launched_in_parallel",
    "output_keys",
    "rank_config",
    "register_pooling",
    "torchrun_rank",
]
