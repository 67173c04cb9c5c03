"""Content hashes of every stored array, and the layout every dataset must have.

HDF5's fletcher32 protects the chunks it finds; it says nothing when a damaged
chunk index loses a chunk (the rows read back as the fill value) or when a
damaged datatype message makes the library convert the right bytes into the
wrong numbers. So the writer records, for every array it stores, its dtype,
shape, chunking and a hash of the values it wrote, in the root attribute
``arrays`` (covered by the metadata digest); the reader compares the layout on
open and the hash whenever it reads an array whole.

Two hashes:

- ``rows:<hex>`` for the codes, which arrive in batches in any row order (copied
  rows, new rows, resumed runs, merges): the sum modulo 2**256 of
  sha256(row index, row bytes) over all rows. Adding one row's term at a time
  gives the same total in any order, so it is computed while writing.
- ``sha256:<hex>`` for arrays written whole (row columns, BatchNorm sums): a
  sha256 over the little-endian bytes (strings: each one length-prefixed utf-8).

These catch accidental damage; whoever can rewrite the file can rewrite the
hashes too, so they are no signature.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct

import h5py
import numpy as np

from ..errors import CacheError

ATTR = "arrays"  # root attribute: JSON {"version": 1, "arrays": {path: entry}, "attrs": {path: {...}}}
VERSION = 1
STR = "str"  # dtype name of variable-length utf-8 strings
_MOD = 1 << 256
_INDEX = struct.Struct("<Q")


# Hashes ---------------------------------------------------------------------------------------------
def rows_sum(block: np.ndarray, rows) -> int:
    """The sum of sha256(index, row bytes) over ``block``'s rows, stored at row indices ``rows``."""
    block = np.ascontiguousarray(block, dtype=block.dtype.newbyteorder("<"))
    if block.size == 0:
        return 0
    width = block.nbytes // len(block)
    data = memoryview(block.reshape(-1).view(np.uint8))
    total = 0
    for k, row in enumerate(np.asarray(rows).tolist()):
        digest = hashlib.sha256(_INDEX.pack(row))
        digest.update(data[k * width : (k + 1) * width])
        total += int.from_bytes(digest.digest(), "little")
    return total % _MOD


def rows_hash(total: int) -> str:
    return f"rows:{total % _MOD:064x}"


def whole_hash(values: np.ndarray) -> str:
    """sha256 over an array written whole (strings length-prefixed, numbers little-endian)."""
    values = np.asarray(values)
    digest = hashlib.sha256()
    if values.dtype.kind in "OUT":
        for item in values.reshape(-1).tolist():
            raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
            digest.update(_INDEX.pack(len(raw)))
            digest.update(raw)
    else:
        digest.update(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes())
    return f"sha256:{digest.hexdigest()}"


def array_hash(values: np.ndarray, kind: str) -> str:
    """The hash of a whole array read back, in the scheme its entry names (``rows`` or ``sha256``)."""
    if kind == "rows":
        return rows_hash(rows_sum(values, range(len(values))))
    return whole_hash(values)


# Manifest entries ------------------------------------------------------------------------------------
def entry(dtype: str, shape, chunks=None, hash_: str = "", fill: str | None = None) -> dict:
    """One array's expected layout and content hash."""
    found = {"dtype": dtype, "shape": [int(s) for s in shape], "chunks": None if chunks is None else
             [int(c) for c in chunks], "hash": hash_}
    if fill is not None:
        found["fill"] = fill
    return found


def dtype_name(values: np.ndarray) -> str:
    """How an entry names the dtype h5py stores ``values`` as."""
    kind = np.asarray(values).dtype
    return STR if kind.kind in "OU" else kind.newbyteorder("<").str if kind.kind in "iuf" else kind.str


def load(attrs) -> dict | None:
    """The ``arrays`` manifest of an open file, or None for a cache written before it existed."""
    if ATTR not in attrs:
        return None
    found = json.loads(str(attrs[ATTR]))
    if found.get("version") != VERSION or not isinstance(found.get("arrays"), dict):
        raise CacheError(f"array manifest version {found.get('version')!r} is not {VERSION}")
    return found


def plain_attrs(attrs) -> dict:
    """HDF5 attributes as plain JSON values, so that written and read-back attributes compare equal."""
    def plain(value):
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, (np.ndarray, list, tuple)):
            return [plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
        return value.item() if isinstance(value, np.generic) else value

    return {str(k): plain(v) for k, v in sorted(attrs.items())}


def dumps(arrays: dict, attrs: dict) -> str:
    return json.dumps({"version": VERSION, "arrays": dict(sorted(arrays.items())),
                       "attrs": dict(sorted(attrs.items()))}, sort_keys=True)


# Checks --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _h5_type(dtype: str):
    if dtype == STR:
        return h5py.h5t.py_create(h5py.string_dtype("utf-8"), logical=True)
    return h5py.h5t.py_create(np.dtype(dtype), logical=True)


def check_layout(handle: h5py.File, name: str, expected: dict) -> None:
    """An error unless dataset ``name`` has exactly the expected datatype, shape, chunks and fill value.

    Low-level calls only (a cache has a few hundred datasets with --bn-stats, checked on every open).
    """
    try:
        dsid = h5py.h5d.open(handle.id, name.encode())
    except (KeyError, ValueError, TypeError):
        raise CacheError(f"dataset {name} is missing") from None
    if not dsid.get_type().equal(_h5_type(expected["dtype"])):
        raise CacheError(f"{name} does not have datatype {expected['dtype']} (its datatype message is damaged)")
    if list(dsid.shape) != expected["shape"]:
        raise CacheError(f"{name} has shape {tuple(dsid.shape)}; expected {tuple(expected['shape'])}")
    dcpl = dsid.get_create_plist()
    chunks = list(dcpl.get_chunk()) if dcpl.get_layout() == h5py.h5d.CHUNKED else None
    if chunks != expected["chunks"]:
        raise CacheError(f"{name} is chunked {chunks}; expected {expected['chunks']}")
    if expected.get("fill") == "nan":
        fill = np.zeros(1, dtype=np.float32)
        dcpl.get_fill_value(fill)
        if not np.isnan(fill[0]):
            raise CacheError(f"{name} has fill value {fill[0]}; expected NaN")


def check_codes_type(ds: h5py.Dataset) -> None:
    """Codes are IEEE float32, little-endian; anything else is a damaged datatype message."""
    if not ds.id.get_type().equal(h5py.h5t.IEEE_F32LE):
        raise CacheError(f"{ds.name} is not stored as IEEE float32 (its datatype message is damaged)")


def check_hash(name: str, values: np.ndarray, expected: dict) -> None:
    """An error unless the whole array ``values`` has the content hash recorded for it."""
    kind = expected["hash"].split(":", 1)[0]
    if array_hash(values, kind) != expected["hash"]:
        raise CacheError(f"the content of {name} does not match its recorded hash")


def check_chunks(ds: h5py.Dataset) -> None:
    """Every chunk of a row-chunked dataset is in the chunk index, once, on the grid, inside the file.

    Every chunk is allocated when a cache is created, so a chunk missing from the
    index was lost to damage. (A damaged key can also hide a chunk from reads
    while the index still lists it; the content hash and :func:`check_no_fill`
    catch those.)
    """
    rows, n = ds.chunks[0], ds.shape[0]
    expected = -(-n // rows) if n else 0
    end = ds.file.id.get_filesize()
    seen: set[int] = set()

    def visit(info):
        start = info.chunk_offset[0]
        if any(info.chunk_offset[1:]) or start % rows or start in seen or not 0 <= start < n \
                or info.byte_offset + info.size > end or len(seen) >= expected:
            return 1  # stop: the index is damaged
        seen.add(start)
        return None

    if ds.id.chunk_iter(visit) or len(seen) != expected:
        raise CacheError(f"the chunk index of {ds.name} is damaged ({len(seen)} of {expected} chunks found)")


def check_no_fill(name: str, values: np.ndarray, first_row: int = 0) -> None:
    """Codes are written with NaN as fill value, so a row that reads back all NaN was never found."""
    lost = np.flatnonzero(np.isnan(values).all(axis=1)) if values.ndim == 2 and values.shape[1] else []
    if len(lost):
        raise CacheError(f"{name} reads back {len(lost)} row(s) as the NaN fill value (from row "
                         f"{first_row + int(lost[0])}): a chunk of the file is lost")
