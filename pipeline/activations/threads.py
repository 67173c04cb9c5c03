"""Leave the process's thread settings as extraction found them.

A notebook runs ``extract`` and then fits probes, SVDs and LogME in the same
process. Whatever the extraction changes about threads (torch's intra-op count,
the OpenMP and BLAS pools threadpoolctl sees, torch's own libgomp among them)
would change the speed of all that later numpy/scipy/scikit-learn work. Today
nothing in layerprobe's extraction changes them, and a measured slowdown of
numpy linear algebra after extraction in one process could not be reproduced
(BENCHMARKS.md, bench/notebook.py); :func:`kept_threads` makes it a guarantee
that survives later changes (a ``--threads`` option, a library that sets its
pool on first use): it records the settings on entry and sets back every one
that differs on exit.

What it cannot undo: torch's inter-op pool size (settable once per process),
and the environment variables OpenMP reads at start.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch
from threadpoolctl import ThreadpoolController

log = logging.getLogger(__name__)


def thread_settings() -> dict[str, int]:
    """torch's intra-op thread count and every loaded OpenMP/BLAS pool's, by library file."""
    found = {"torch": torch.get_num_threads()}
    for lib in ThreadpoolController().lib_controllers:
        found[lib.filepath] = lib.num_threads
    return found


@contextlib.contextmanager
def kept_threads():
    """Within the block, anything may change thread counts; on exit they are what they were on entry."""
    before = thread_settings()
    try:
        yield before
    finally:
        _restore(before)


def _restore(before: dict[str, int]) -> None:
    if torch.get_num_threads() != before["torch"]:
        log.debug("torch threads %d -> %d (restored)", torch.get_num_threads(), before["torch"])
        torch.set_num_threads(before["torch"])
    for lib in ThreadpoolController().lib_controllers:
        wanted = before.get(lib.filepath)  # pools loaded during the block keep their own defaults
        if wanted is not None and lib.num_threads != wanted:
            log.debug("%s threads %d -> %d (restored)", lib.filepath, lib.num_threads, wanted)
            lib.set_num_threads(wanted)


def keeps_threads(function):
    """Decorator: ``function`` runs within :func:`kept_threads`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with kept_threads():
            return function(*args, **kwargs)

    return wrapper
