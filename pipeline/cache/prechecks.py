"""Structural checks of a cache file's bytes before HDF5 parses them, where HDF5 would loop forever.

HDF5 keeps variable-length strings (the ids, groups, splits and every string
attribute, the manifest included) in "global heap collections". It walks a
collection object by object, each object header giving the size of the next
step; a zeroed object header gives a step of 0 bytes, and the library loops at
100% CPU for ever (a fuzz of zeroed 512-byte blocks found it in about 1 case in
14). So before a cache is opened, every collection is walked here first, in
Python, with the same rules, and a step of 0 or past the collection's end is an
error.

Collections are found by their signature, outside the codes' chunk data (the
writer allocates every chunk of every output in one run when the file is
created, so the strings lie before and after that run). The layout, from the
HDF5 file format specification (version 1 collections, 8-byte lengths):
``"GCOL" | version 1 | 3 reserved | collection size (8)`` then objects
``index (2) | reference count (2) | 4 reserved | size (8) | data, padded to 8``;
index 0 is the free space and its size covers its own header.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from ..errors import CacheError

_SIGNATURE = b"GCOL\x01\x00\x00\x00"
_HEADER = 16  # signature, version, reserved, collection size
_OBJECT = struct.Struct("<HH4xQ")  # index, reference count, reserved, size


def check_global_heaps(path: str | Path, raw: tuple[int, int] | None = None) -> int:
    """Walk every global heap collection of ``path`` outside the byte range ``raw`` (the chunk data);
    return how many were checked, or raise a CacheError naming the first damaged one."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        if size == 0:
            raise CacheError("the file is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            spans = [(0, size)] if raw is None else [(0, raw[0]), (raw[1], size)]
            checked = 0
            for start, end in spans:
                position = data.find(_SIGNATURE, start, end)
                while position >= 0:
                    _walk(data, position, size)
                    checked += 1
                    position = data.find(_SIGNATURE, position + 1, end)
    return checked


def _walk(data: mmap.mmap, start: int, file_size: int) -> None:
    (length,) = struct.unpack_from("<Q", data, start + 8) if start + _HEADER <= file_size else (0,)
    end = start + length
    if length < _HEADER or end > file_size:
        raise CacheError(f"the string heap at byte {start} has size {length}, which does not fit the file")
    position = start + _HEADER
    while position < end:
        if position + _OBJECT.size > end:
            return  # too small for an object header: HDF5 counts it as free space
        index, _, size = _OBJECT.unpack_from(data, position)
        step = size if index == 0 else _OBJECT.size + ((size + 7) & ~7)
        if step <= 0 or position + step > end:
            raise CacheError(f"the string heap at byte {start} has a damaged object at byte {position} "
                             f"(index {index}, size {size})")
        position += step


def chunk_span(handle) -> tuple[int, int] | None:
    """The byte range from the first to the last chunk of the codes, found without reading any
    attribute or string (which is what may loop): group and dataset lookups and the chunk index only."""
    low, high = None, None
    codes = handle.get("codes")
    if codes is None:
        return None
    datasets = []
    codes.visititems(lambda name, obj: datasets.append(obj) if hasattr(obj, "chunks") else None)
    for ds in datasets:
        if ds.chunks is not None:
            count = ds.id.get_num_chunks()
            if not count:
                continue
            first, last = ds.id.get_chunk_info(0), ds.id.get_chunk_info(count - 1)
            if first.byte_offset is None or last.byte_offset is None:
                continue
            low = first.byte_offset if low is None else min(low, first.byte_offset)
            high = last.byte_offset + last.size if high is None else max(high, last.byte_offset + last.size)
    return None if low is None else (low, high)
