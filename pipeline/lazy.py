"""Package names imported from their modules on first use (PEP 562), one mechanism for every package.

``pipeline`` keeps torch (activations, model), PIL (inputs) and h5py (cache)
out of a process until it uses one of their names; ``pipeline.probes`` lets a
fitting worker unpickle its task without importing the cache and the rest of
the stage; ``pipeline.activations`` answers a warm re-run without torch.
"""

from __future__ import annotations

import importlib
import sys


def lazy_names(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the submodule defining it.

    The first use imports the submodule and keeps the value in the package, so later uses are plain lookups.
    """

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        vars(sys.modules[package])[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
