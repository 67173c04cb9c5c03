"""layerprobe: a staged, cached transfer-learning workbench for small image sets.

The stages, importable one by one (torch is imported only by the extract stage)::

    from pipeline import bundled, extract, ExtractConfig, open_cache
    result = extract(bundled("br35h"), ExtractConfig(limit=60))
    with open_cache(result.path) as cache:
        codes = cache.codes("pre_logits")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .lazy import lazy_names
from .errors import BadImageError, CacheError, CacheInProgressError, InputError, ModelError, PipelineError

# Imported on first use: the torch-based stages, and the inputs (PIL) and cache (h5py) stages too, so that a
# process that needs one part of the package (a probe worker unpickling its fit task) imports no more.
_LAZY = {
    "ImageSet": "inputs",
    "bundled": "inputs",
    "from_csv": "inputs",
    "from_folder": "inputs",
    "ActivationCache": "cache",
    "open_cache": "cache",
    "extract": "activations",
    "ExtractConfig": "activations",
    "ExtractResult": "activations",
    "register_pooling": "activations",
    "build_model": "model",
    "available_layers": "model",
    "resolve_layers": "model",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "ActivationCache",
    "BadImageError",
    "CacheError",
    "CacheInProgressError",
    "ImageSet",
    "InputError",
    "ModelError",
    "PipelineError",
    "bundled",
    "from_csv",
    "from_folder",
    "open_cache",
    *_LAZY,
]
