"""What a cache file already passed, remembered beside it so that later processes need not check it again.

Every ``layerprobe probe``, ``similarity`` or ``report`` is a new process. Without
a record each one pays the checks of ``reader.py`` again on bytes that did not
change: about 4 ms to open a 3,000-row cache (string-heap walk, metadata digest,
every array's layout, ``active``'s hash), 2 ms to hash the ids and 20-30 ms for
the first whole read of a 3,000 x 1,280 layer (fletcher32 and the per-row
content hash), against about 1.2 ms for ``np.load`` of that layer.

So a handle that passed a check notes it, and the notes are written to
``<cache folder>/.layerprobe/checked-<cache file name>.json`` (atomically, with
``pipeline/atomic.py``; never inside the HDF5 file, whose ctime a write would
change) under the identity the file had: device, inode, size, mtime and ctime
in nanoseconds. A later handle on a file with that same identity skips what the
record lists:

- the open checks (string heaps, metadata digest, layouts, ``active``'s hash),
  and with them HDF5 itself: the record's ``meta`` keeps what open reads (the
  root attributes of :data:`META_ATTRS` as stored, ``active`` as runs), so the
  reader builds the handle from it and opens HDF5 only when a call needs it
  (``reader.py``). A record without ``meta`` (written before it existed) opens
  through HDF5, skipping the checks when the stored metadata digest is the
  recorded one, and is completed;
- a row column's content hash when its recorded hash is the one noted;
- a layer's fletcher32 and content hash when its recorded hash is the one
  noted: the layer is then read straight from its chunks (``fastread.py``) at
  the addresses the record keeps (``chunks``, held against the ``layout``
  digest of them); a record without them has the chunk index walked, which
  must give the addresses the digest names.

The rule is the one ``fastread.py`` uses in a process: any write to the file
changes its ctime (a user cannot set ctime), so damage after a check sends the
next handle through the full checks. A check is noted only when the file's
identity was the same before the bytes were read and after they passed, and
its ctime was then at least ``fastread.SETTLED_NS`` old (file times have a
coarse clock: a write in the same tick as the last one keeps the ctime).

A record that is missing, unreadable, malformed, for another identity, whose
own sha256 does not match, written by another layerprobe version or reader
(``READER``), or owned by a user other than the cache's owner or the current
one means "nothing checked": full checks, never an error. A folder where the
record cannot be written (read-only) only means the next process checks again.
``layerprobe verify`` (``recheck=True``) ignores every record and checks
everything (and records what passed). What no ctime shows, bits that rot on the
disk beneath the file system, is found by ``verify``, not by a read of a
recorded layer.

So, per handle: **open** walks the string heaps, checks format, version,
completion, the metadata digest, every array's layout and ``active``'s hash,
unless recorded (then: one ``fstat`` and the record's read, no HDF5); **first
whole read of a layer** checks its chunk index, fletcher32 and content hash,
unless this process or the record verified it; **first read of a row column**
its hash, unless recorded; **later whole reads** one ``fstat``; **partial
reads** fletcher32 and the NaN fill, always.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import atomic_write
from . import fastread
from .format import FORMAT_VERSION

log = logging.getLogger(__name__)

#: The folder beside a cache that holds layerprobe's records: these checks, and warm re-runs (activations/warm.py).
FOLDER = ".layerprobe"
FORMAT = "layerprobe-checked"
VERSION = 1  # raise it when what the reader checks changes: records of the old checks are then ignored
#: Who checked: a record made by another layerprobe (or for another cache format) is ignored.
READER = [VERSION, __version__, FORMAT_VERSION]
MAX_BYTES = 1 << 22  # a record holds a few lines per array; anything larger is not one
KEPT, MAX_KEPT = 32, 1 << 18  # records kept parsed per process (see _parsed), and the largest kept
_PARSED: dict[bytes, dict] = {}
_KEYS = {"format", "reader", "file", "open", "arrays", "sha256"}  # and "meta", absent in records of before it
#: The root attributes a recorded open reads (``reader.py``), kept in the record's ``meta`` as stored.
META_ATTRS = ("manifest", "key", "settings_key", "arrays")
#: ``active`` is kept in ``meta`` as [start, stop) runs of active rows, up to this many; with more runs the
#: record has no ``meta`` and opens read the file's attributes (a few kB of record at most).
MAX_RUNS = 256


def record_path(path: str | Path) -> Path:
    return Path(_record_file(path))


def _record_file(path: str | Path) -> str:
    folder, name = os.path.split(os.fspath(path))
    return os.path.join(folder, FOLDER, f"checked-{name}.json")


def layout_digest(found: fastread.Verified) -> str:
    """A digest of where a layer's chunks lie, so that a record can be held against the chunk index."""
    return hashlib.sha256(json.dumps([found.chunk_rows, found.row_bytes, list(found.offsets)]).encode()).hexdigest()


def _chunks(found: fastread.Verified) -> list:
    """A layer's chunk addresses as a record keeps them: rows per chunk, row bytes, the offsets as base64 of
    little-endian uint64 (one short string to parse on open, however many chunks a layer has)."""
    offsets = np.asarray(found.offsets, dtype="<u8").tobytes()
    return [found.chunk_rows, found.row_bytes, base64.b64encode(offsets).decode("ascii")]


def _verified(entry: dict) -> fastread.Verified | None:
    """The chunk addresses an entry holds (``chunks``) if they are the ones its ``layout`` digest names."""
    chunks = entry.get("chunks")
    if not (isinstance(chunks, list) and len(chunks) == 3 and type(chunks[0]) is int and chunks[0] > 0
            and type(chunks[1]) is int and chunks[1] > 0 and isinstance(chunks[2], str)):
        return None
    try:
        raw = base64.b64decode(chunks[2], validate=True)
    except ValueError:
        return None
    if len(raw) % 8:
        return None
    found = fastread.Verified(tuple(np.frombuffer(raw, dtype="<u8").tolist()), chunks[0], chunks[1])
    return found if layout_digest(found) == entry["layout"] else None


def metadata(attrs: dict, active: np.ndarray) -> dict | None:
    """What a recorded open needs (``reader.py``): the root attributes ``attrs`` as stored and the active rows;
    None when ``active`` has more than :data:`MAX_RUNS` runs."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], np.asarray(active, bool), [False]]).astype(np.int8)))
    if len(edges) > 2 * MAX_RUNS:
        return None
    return {"attrs": {k: str(attrs[k]) for k in META_ATTRS if k in attrs}, "rows": len(active),
            "active": edges.tolist()}


def active_count(meta: dict) -> int:
    runs = meta["active"]
    return sum(stop - start for start, stop in zip(runs[::2], runs[1::2]))


def active_rows(meta: dict) -> np.ndarray:
    """The ``active`` column that :func:`metadata` recorded."""
    active = np.zeros(meta["rows"], dtype=bool)
    runs = meta["active"]
    for start, stop in zip(runs[::2], runs[1::2]):
        active[start:stop] = True
    return active


def _meta_ok(meta) -> bool:
    if meta is None:
        return True
    if not isinstance(meta, dict) or set(meta) != {"attrs", "rows", "active"} or type(meta["rows"]) is not int:
        return False
    attrs, runs = meta["attrs"], meta["active"]
    return isinstance(attrs, dict) and set(META_ATTRS[:3]) <= set(attrs) <= set(META_ATTRS) \
        and all(isinstance(v, str) for v in attrs.values()) and isinstance(runs, list) and len(runs) % 2 == 0 \
        and all(type(v) is int for v in runs) and runs == sorted(runs) and all(0 <= v <= meta["rows"] for v in runs)


def _sealed(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _entry_ok(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("hash"), str) \
        and not set(entry) - {"hash", "layout", "chunks"} and isinstance(entry.get("layout", ""), str) \
        and ("chunks" not in entry or "layout" in entry)


def _well_formed(data) -> dict | None:
    """The record's entries if it is well formed and sealed by this reader (for whichever file); else None."""
    if not isinstance(data, dict) or set(data) - {"meta"} != _KEYS:
        return None
    body = {k: v for k, v in data.items() if k != "sha256"}
    if data["sha256"] != _sealed(body) or data["format"] != FORMAT or data["reader"] != READER \
            or not isinstance(data["file"], list):
        return None
    opened, arrays, meta = data["open"], data["arrays"], data.get("meta")
    if not (opened is None or isinstance(opened, str)) or not isinstance(arrays, dict) or not _meta_ok(meta) \
            or not all(_entry_ok(entry) for entry in arrays.values()):
        return None
    return {"file": data["file"], "open": opened, "arrays": arrays, "meta": meta if opened else None}


def _parsed(raw: bytes) -> dict | None:
    """:func:`_well_formed` of the record in ``raw``; kept per process by its bytes (the same bytes are the same
    record), so that opening a cache again parses and unseals nothing. Callers do not change what it gives."""
    found = _PARSED.get(raw)
    if found is None:
        try:
            found = _well_formed(json.loads(raw))
        except ValueError:  # not utf-8 or not JSON
            return None
        if found is not None and len(raw) <= MAX_KEPT:
            _PARSED[raw] = found
            for stale in list(_PARSED)[:-KEPT]:  # the oldest first
                _PARSED.pop(stale, None)
    return found


def _empty() -> dict:
    return {"open": None, "arrays": {}, "meta": None}


def _names(path: Path, identity: tuple[int, ...]) -> bool:
    """Whether ``path`` still names the file whose identity (``fastread.identity``) this is."""
    try:
        return fastread.identity_of(os.stat(path)) == tuple(identity)
    except OSError:
        return False


def _load(path: Path, identity: tuple[int, ...], owner: int) -> dict | None:
    """The entries of the record beside ``path`` if it is one, for the file with ``identity``."""
    try:
        fd = os.open(_record_file(path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # missing or unreadable
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid not in (owner, os.geteuid()) or st.st_size > MAX_BYTES or not stat.S_ISREG(st.st_mode):
            return None
        found = _parsed(_read_all(fd, st.st_size))
    except (OSError, ValueError):  # unreadable, or being written
        return None
    finally:
        os.close(fd)
    if found is None or found["file"] != list(identity):
        return None
    return {"open": found["open"], "arrays": found["arrays"], "meta": found["meta"]}


def _read_all(fd: int, size: int) -> bytes:
    """The file's bytes (``size`` as ``fstat`` gave it; a file grown since is not a record)."""
    parts = []
    while part := os.read(fd, size + 1):
        parts.append(part)
        if sum(map(len, parts)) > size:
            raise ValueError("not a record: it is being written")
    return b"".join(parts)


class Ledger:
    """One handle's view of the record: what it may skip, and what it passed (to be written)."""

    def __init__(self, path: Path, fd: int | None, recheck: bool):
        """``fd``: a descriptor of the cache file, open while the handle is (None: nothing is recorded)."""
        self.path = path
        self._fd = fd
        st = None if fd is None else os.fstat(fd)
        #: The file's identity when the handle opened it (the record read is for that one).
        self.opened = None if st is None else fastread.identity(fd)
        self._owner = None if st is None else st.st_uid
        found = None if recheck or st is None else _load(path, self.opened, self._owner)
        self._trusted = found or _empty()
        self._passed: dict = _empty()
        self._identity: tuple[int, ...] | None = None  # of the passed entries
        self._dirty = False

    def detach(self) -> None:
        """The handle closed its descriptor: check and note nothing more (what was noted can still be saved)."""
        self._fd = None

    # What the record allows to skip ------------------------------------------------------------------
    def unchanged(self) -> bool:
        """Whether the file still has the identity it had when opened (the record is for that one)."""
        return self._fd is not None and fastread.identity(self._fd) == self.opened

    @property
    def open_digest(self) -> str | None:
        """The metadata digest the open checks passed with, if the record has them for this file as it is."""
        return self._trusted["open"]

    @property
    def metadata(self) -> dict | None:
        """What :func:`metadata` kept of the file as it is when its open checks passed (None if not recorded)."""
        return self._trusted["meta"] if self.unchanged() else None

    def has_hash(self, name: str, recorded: str) -> bool:
        entry = self._trusted["arrays"].get(name)
        return entry is not None and entry["hash"] == recorded and self.unchanged()

    def layer(self, name: str, recorded: str, dataset) -> bool:
        """Whether layer ``name`` passed its full checks with hash ``recorded`` on this file as it is; if so it is
        handed to :mod:`fastread` with the chunk addresses the record holds, or else (records of before they
        were kept) those the chunk index of ``dataset()`` gives if the record's digest names them."""
        entry = self._trusted["arrays"].get(name)
        if entry is None or entry["hash"] != recorded or "layout" not in entry or not self.unchanged():
            return False
        found = _verified(entry) if "chunks" in entry else self._walk(dataset(), entry)
        if found is None:
            return False
        if "chunks" not in entry:
            self.note(self.opened, name, recorded, found)  # kept, so that later handles need no chunk index
        fastread.adopt("/" + name, recorded, self.opened, found)
        return True

    @staticmethod
    def _walk(ds: h5py.Dataset, entry: dict) -> fastread.Verified | None:
        try:
            found = fastread.layout(ds)
        except (OSError, RuntimeError, ValueError):  # a damaged index: the full checks say what is wrong
            return None
        return found if found is not None and layout_digest(found) == entry["layout"] else None

    # What this handle passed ------------------------------------------------------------------------
    def stamp(self) -> tuple[int, ...] | None:
        """The file's identity before a check reads it, if settled (see :func:`fastread.stamp`)."""
        return fastread.stamp(self._fd)

    def note(self, stamp: tuple[int, ...] | None, name: str | None, recorded: str,
             found: fastread.Verified | None = None) -> None:
        """Note that array ``name`` (None: the open checks, ``recorded`` the digest) passed, read from the
        file while it had identity ``stamp``."""
        if name is None:
            self._pass(stamp, recorded, "open")
        else:
            entry = {"hash": recorded} if found is None else \
                {"hash": recorded, "layout": layout_digest(found), "chunks": _chunks(found)}
            self._pass(stamp, entry, "arrays", name)

    def note_metadata(self, stamp: tuple[int, ...] | None, meta: dict | None) -> None:
        """Note what a recorded open needs (:func:`metadata`), read while the file had identity ``stamp``,
        after the open checks passed (or were recorded)."""
        if meta is not None:
            self._pass(stamp, meta, "meta")

    def _pass(self, stamp: tuple[int, ...] | None, entry, slot: str, name: str | None = None) -> None:
        """Note ``entry`` in ``slot`` ("open", "meta", or "arrays" under ``name``) if ``stamp`` is current."""
        if stamp is None or self._fd is None or fastread.identity(self._fd) != stamp:
            return
        if stamp != self._identity:  # the file changed since the last note: those were for another file
            self._passed, self._identity = _empty(), stamp
        where, key = (self._passed["arrays"], name) if slot == "arrays" else (self._passed, slot)
        self._dirty |= where.get(key) != entry
        where[key] = entry

    def save(self) -> None:
        """Write what this handle passed into the record beside the file (merged with what is there for the
        same identity); a folder that cannot be written is left as it is."""
        if not self._dirty:
            return
        self._dirty = False
        if not _names(self.path, self._identity):
            return  # another file was renamed over the path since: the record there is that file's
        there = _load(self.path, self._identity, self._owner) or _empty()
        if self._passed["open"] in (None, there["open"]) and self._passed["meta"] in (None, there["meta"]) and \
                all(there["arrays"].get(name) == entry for name, entry in self._passed["arrays"].items()):
            return  # nothing new (a handle that checked again what was recorded, as verify does)
        if self._identity == self.opened:
            there["arrays"] = {**self._trusted["arrays"], **there["arrays"]}
            there["open"] = there["open"] or self._trusted["open"]
            there["meta"] = there["meta"] or self._trusted["meta"]
        body = {"format": FORMAT, "reader": READER, "file": list(self._identity),
                "open": self._passed["open"] or there["open"], "meta": self._passed["meta"] or there["meta"],
                "arrays": dict(sorted({**there["arrays"], **self._passed["arrays"]}.items()))}
        try:
            atomic_write(record_path(self.path), json.dumps({**body, "sha256": _sealed(body)}, sort_keys=True,
                                                            indent=1).encode())
        except OSError as exc:
            log.debug("could not record the checks %s passed (%s); later processes check it again", self.path, exc)
