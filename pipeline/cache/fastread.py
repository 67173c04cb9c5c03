"""Whole-layer reads at the speed of the disk, once a layer's content was verified.

A whole read of a layer through HDF5 checks each chunk's fletcher32 and then the
layer's recorded content hash (a sha256 per row, ``integrity.py``): for 3,000 x
1,280 float32 codes about 10 ms of chunked reading and 20 ms of hashing, against
1-3 ms for ``np.load`` of the same array. That is the price of catching damage,
and it only needs paying once for bytes that have not changed since.

So the reader records, after a whole read that passed both checks, where the
layer's chunks lie in the file (:class:`Verified`), keyed by the file's identity
(device, inode, size, mtime and ctime in nanoseconds) and the layer's recorded
hash. A later whole read of the same layer, through this handle or another one
opened on the same file in this process, reads the chunks' bytes straight into
one preallocated array (``os.preadv``, no HDF5 filter pipeline, no hash). The
reader also writes the record beside the file (``trust.py``), so that a later
process reads it the same way, at the chunk addresses the record keeps.

What is checked when:

- on open: structure, metadata digest, every array's layout and ``active``'s
  hash (``reader.py``), unless the record beside the file says this file, as it
  is, passed them (``trust.py``; the open then reads the record, not HDF5);
- first whole read of a layer: chunk index, fletcher32 of every chunk, the
  content hash, unless this process or the record beside the file says the
  layer passed them on this file as it is;
- later whole reads of it: that the file's identity is the one verified (one
  ``fstat``). Any write to the file changes its ctime (a user cannot set ctime),
  so damage after the verification sends the next read through the full checks
  again. File systems stamp times with a coarse clock (a few ms), so a write in
  the same tick as the last one would keep the ctime: a layer is remembered only
  when the file had the same identity before the read and after the checks and
  its ctime was then at least :data:`SETTLED_NS` old;
- partial reads (``rows=``, as merges read): unchanged (fletcher32 and the NaN fill);
- ``layerprobe verify``: everything, whatever was recorded.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import h5py
import numpy as np

#: A file changed less than this long before a verification is not remembered (see the module docstring).
SETTLED_NS = 1_000_000_000
#: Layers remembered per process (each record holds one address per chunk).
MAX_RECORDS = 256
_FLETCHER32 = 4  # bytes of checksum HDF5 appends to every chunk
_IOV = 512  # chunks per preadv call: two buffers each, under the usual IOV_MAX of 1024

_records: OrderedDict = OrderedDict()
_lock = threading.Lock()


@dataclass(frozen=True)
class Verified:
    """Where a verified layer's chunks lie: file offsets in row order, rows per chunk, row width in bytes."""

    offsets: tuple[int, ...]
    chunk_rows: int
    row_bytes: int


def identity(fd: int) -> tuple[int, ...]:
    """The identity of the file open as ``fd`` (see :func:`identity_of`)."""
    return identity_of(os.fstat(fd))


def identity_of(st: os.stat_result) -> tuple[int, ...]:
    """A file's identity: device, inode, size, mtime and ctime in ns (any write changes the ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_descriptor(obj: h5py.File | h5py.Dataset) -> int | None:
    """The file descriptor HDF5 reads through (sec2 driver), else None."""
    if not hasattr(os, "preadv") or obj.file.driver != "sec2":
        return None
    return int(obj.file.id.get_vfd_handle())


def open_descriptor(path) -> int | None:
    """A read-only descriptor of ``path`` of our own (a cache opened from its record, ``reader.py``); None where
    reads by descriptor are not available."""
    if not hasattr(os, "preadv"):
        return None
    return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))


def stamp(fd: int | None) -> tuple[int, ...] | None:
    """The identity of the file open as ``fd`` now, taken before a check reads it; None when the file changed
    less than :data:`SETTLED_NS` ago (or there is no descriptor): a check of it is then not remembered."""
    if fd is None:
        return None
    key = identity(fd)
    return key if time.time_ns() - key[4] >= SETTLED_NS else None


def layout(ds: h5py.Dataset) -> Verified | None:
    """The chunk addresses of a row-chunked, fletcher32-only float32 dataset; None for any other layout."""
    if ds.chunks is None or ds.ndim != 2 or ds.dtype != np.dtype("<f4") or ds.compression is not None \
            or not ds.fletcher32 or ds.scaleoffset is not None or ds.shuffle or ds.chunks[1] != ds.shape[1]:
        return None
    rows, row_bytes = ds.chunks[0], ds.shape[1] * 4
    found: dict[int, int] = {}

    def visit(info):
        if info.filter_mask or info.size != rows * row_bytes + _FLETCHER32:
            return 1
        found[info.chunk_offset[0]] = info.byte_offset
        return None

    if ds.id.chunk_iter(visit) or sorted(found) != list(range(0, ds.shape[0], rows)):
        return None
    return Verified(tuple(found[start] for start in sorted(found)), rows, row_bytes)


def remember(ds: h5py.Dataset, recorded_hash: str, before: tuple[int, ...] | None) -> Verified | None:
    """Note that ``ds`` was just read whole and matched ``recorded_hash``, the file having identity ``before``
    (:func:`stamp`) when the read began; the layer's chunk addresses, or None when it is not remembered."""
    fd = file_descriptor(ds)
    if before is None or fd is None or identity(fd) != before:
        return None
    found = layout(ds)
    if found is not None:
        adopt(ds.name, recorded_hash, before, found)
    return found


def adopt(name: str, recorded_hash: str, key: tuple[int, ...], found: Verified) -> None:
    """Remember ``found`` as the verified chunks of dataset ``name`` (``/``-rooted, as ``Dataset.name``) in the
    file with identity ``key``."""
    with _lock:
        _records[(key, name, recorded_hash)] = found
        while len(_records) > MAX_RECORDS:
            _records.popitem(last=False)


def read(ds: h5py.Dataset, recorded_hash: str) -> np.ndarray | None:
    """The whole dataset from its chunks' bytes if it was verified (see :func:`adopt`) and the file is unchanged."""
    fd = file_descriptor(ds)
    return None if fd is None else read_at(fd, ds.name, ds.shape, recorded_hash)


def read_at(fd: int, name: str, shape: tuple[int, ...], recorded_hash: str) -> np.ndarray | None:
    """Dataset ``name`` (shape ``shape``) of the file open as ``fd``, from its chunks' bytes, if it was verified
    in the file as it is now (see :func:`adopt`); else None."""
    with _lock:
        found = _records.get((identity(fd), name, recorded_hash))
    if found is None or len(shape) != 2 or found.row_bytes != shape[1] * 4 \
            or len(found.offsets) != -(-shape[0] // found.chunk_rows):
        return None
    n, width = shape
    out = np.empty((n, width), dtype="<f4")
    return out if _fill(fd, memoryview(out.reshape(-1).view(np.uint8)), found) else None


def _fill(fd: int, flat: memoryview, found: Verified) -> bool:
    """Read the chunks at ``found.offsets`` into ``flat`` (their checksums aside); False when the file is shorter."""
    chunk_bytes = found.chunk_rows * found.row_bytes
    checksum = bytearray(_FLETCHER32)
    tail = bytearray(chunk_bytes)  # the last chunk is stored full size; only its first rows are ours
    for first in range(0, len(found.offsets), _IOV):
        batch = found.offsets[first:first + _IOV]
        # the chunks lie one after another when the writer allocated them together; read each run in one call
        start = 0
        while start < len(batch):
            end = start + 1
            while end < len(batch) and batch[end] == batch[end - 1] + chunk_bytes + _FLETCHER32:
                end += 1
            buffers = []
            for k in range(first + start, first + end):
                lo = k * chunk_bytes
                buffers += [flat[lo:lo + chunk_bytes] if lo + chunk_bytes <= len(flat) else memoryview(tail), checksum]
            if os.preadv(fd, buffers, batch[start]) != (end - start) * (chunk_bytes + _FLETCHER32):
                return False  # shorter than the verified file: let the full checks say what is wrong
            start = end
    last = (len(found.offsets) - 1) * chunk_bytes
    if last + chunk_bytes > len(flat):
        flat[last:] = memoryview(tail)[: len(flat) - last]
    return True


def forget() -> None:
    """Drop every record (tests; a process that wants every read fully checked again)."""
    with _lock:
        _records.clear()
