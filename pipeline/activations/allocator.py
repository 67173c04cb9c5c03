"""Keep the C allocator from handing each batch's feature maps back to the OS (glibc only).

A forward pass of batch 32 at 224 px allocates feature maps of 25 to 50 MB and
frees them again. glibc's malloc serves blocks above its mmap threshold (which
its own rule raises to at most 32 MB) with a fresh ``mmap`` and returns them
with ``munmap`` on free, and it trims the top of the heap back to the OS
whenever more than its trim threshold is free there. Every batch then touches
new pages: on the 2-core machine a batch-32 ``extract`` of 1,200 Br35H images
took 11-12 million minor page faults and 20-24 s of system time
(BENCHMARKS.md, bench/extract_stage.py).

:func:`steady_allocator` raises the mmap threshold, the trim threshold and the
top pad for the duration of an extraction, so freed maps stay in the heap and
the next batch reuses the same, already mapped pages. It is applied with
``mallopt`` to the running process only (no environment variables, nothing for
the user to set, child processes untouched). Afterwards the heap's free memory
is returned with ``malloc_trim(0)`` and the thresholds are set to the values
glibc's own rule reaches after the first large block is freed (mmap 32 MB,
trim 64 MB), so a notebook that goes on to other work keeps an ordinary
allocator. The cost is a higher peak RSS while extracting (the maps of one
batch stay mapped; measured 1.5 -> 1.9 GB at batch 32), still flat in the number
of images.

Chosen over the alternatives because it needs no change to how torch
allocates: reused output buffers would cover only the tensors layerprobe
creates (pooling), not the model's own activations; a smaller default batch
size helps less (measured 1.16-1.3x at batch 16 against 1.6x here); a caching
allocator (jemalloc, tcmalloc) would have to be preloaded before Python starts.
Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

#: While extracting: no block below 1 GiB is mmapped, nothing below 2 GiB free is trimmed, grow the heap 1 GiB at a time.
EXTRACTING = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: (1 << 31) - 1, M_TOP_PAD: 1 << 30}
#: Afterwards: what glibc's dynamic rule reaches after freeing one large block (its maximum mmap
#: threshold, trim twice that) and its default top pad.
AFTERWARDS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20, M_TOP_PAD: 128 << 10}


def _glibc():
    """The C library if it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc only; musl has no such symbol
        return libc
    except (OSError, AttributeError):
        return None


def set_malloc(settings: dict[int, int]) -> bool:
    """Apply ``{parameter: value}`` with ``mallopt``; True if every one was accepted."""
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in settings.items())


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (``malloc_trim(0)``); nothing outside glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(ctypes.c_size_t(0))


@contextlib.contextmanager
def steady_allocator():
    """Within the block, freed feature maps stay mapped for the next batch (see the module docstring)."""
    applied = set_malloc(EXTRACTING)
    if not applied:
        log.debug("not glibc (or mallopt refused): allocator settings left as they are")
    try:
        yield applied
    finally:
        if applied:
            set_malloc(AFTERWARDS)
            release_free_memory()
