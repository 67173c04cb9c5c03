"""Activations: the forward pass, pooling and the extract stage (imports torch, when first used).

The request (:class:`ExtractConfig`) and the warm re-run check (:mod:`.warm`)
are torch-free, so a re-run with nothing new answers without importing torch;
every other name is imported on first use.
"""

import sys
import types

from ..lazy import lazy_names
from .config import DEFAULT_MODEL, ExtractConfig, ExtractResult
from .warm import extract

_LAZY = {
    "NO_POOLING": "pooling",
    "POOLINGS": "pooling",
    "get_pooling": "pooling",
    "register_pooling": "pooling",
    "LayerTap": "tap",
    "output_keys": "tap",
    "Rank": "distributed",
    "launched_in_parallel": "distributed",
    "rank_config": "distributed",
    "torchrun_rank": "distributed",
}

__all__ = ["DEFAULT_MODEL", "ExtractConfig", "ExtractResult", "extract", *_LAZY]


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


class _Package(types.ModuleType):
    """Keeps ``extract`` the function when the submodule of that name is first imported.

    Importing a submodule sets it as an attribute of its package; with the
    submodule imported lazily that would replace the function. (The submodule
    stays reachable as ``sys.modules["pipeline.activations.extract"]``, and
    ``from pipeline.activations.extract import ...`` works as ever.)
    """

    def __setattr__(self, name, value):
        if name == "extract" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
