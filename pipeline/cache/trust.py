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

- the open checks (string heaps, metadata digest, layouts, ``active``'s hash)
  when the file's stored metadata digest is the recorded one;
- a row column's content hash when its recorded hash is the one noted;
- a layer's fletcher32 and content hash when its recorded hash is the one
  noted and its chunk index (walked again, cheap) gives the same chunk
  addresses as when it was checked (a digest of them is in the record): the
  layer is then read straight from its chunks (``fastread.py``).

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
unless recorded; **first whole read of a layer** checks its chunk index,
fletcher32 and content hash, unless this process or the record verified it
(then: its chunk index against the recorded addresses); **first read of a row
column** its hash, unless recorded; **later whole reads** one ``fstat``;
**partial reads** fletcher32 and the NaN fill, always.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import h5py

from .. import __version__
from ..atomic import atomic_write
from . import fastread
from .format import FORMAT_VERSION

log = logging.getLogger(__name__)

#: The folder beside a cache that holds layerprobe's records (the warm-run records live there too).
FOLDER = ".layerprobe"  # records beside a cache: these checks, and warm re-runs (activations/warm.py)
FORMAT = "layerprobe-checked"
VERSION = 1  # raise it when what the reader checks changes: records of the old checks are then ignored
#: Who checked: a record made by another layerprobe (or for another cache format) is ignored.
READER = [VERSION, __version__, FORMAT_VERSION]
MAX_BYTES = 1 << 22  # a record holds a few lines per array; anything larger is not one
_KEYS = {"format", "reader", "file", "open", "arrays", "sha256"}


def record_path(path: str | Path) -> Path:
    path = Path(path)
    return path.parent / FOLDER / f"checked-{path.name}.json"


def layout_digest(found: fastread.Verified) -> str:
    """A digest of where a layer's chunks lie, so that a record can be held against the chunk index."""
    return hashlib.sha256(json.dumps([found.chunk_rows, found.row_bytes, list(found.offsets)]).encode()).hexdigest()


def _sealed(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _entries(data, identity: tuple[int, ...]) -> dict | None:
    """The record's entries if it is well formed, sealed and for ``identity``; None otherwise."""
    if not isinstance(data, dict) or set(data) != _KEYS:
        return None
    body = {k: v for k, v in data.items() if k != "sha256"}
    if data["sha256"] != _sealed(body) or data["format"] != FORMAT or data["reader"] != READER \
            or data["file"] != list(identity):
        return None
    opened, arrays = data["open"], data["arrays"]
    if not (opened is None or isinstance(opened, str)) or not isinstance(arrays, dict):
        return None
    for name, entry in arrays.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str) \
                or set(entry) - {"hash", "layout"} or not isinstance(entry.get("layout", ""), str):
            return None
    return {"open": opened, "arrays": arrays}


def _load(path: Path, identity: tuple[int, ...], owner: int) -> dict | None:
    try:
        with open(record_path(path), "rb") as handle:
            st = os.fstat(handle.fileno())
            if st.st_uid not in (owner, os.geteuid()) or st.st_size > MAX_BYTES:
                return None
            data = json.loads(handle.read())
    except (OSError, ValueError):  # missing, unreadable, not utf-8 or not JSON
        return None
    return _entries(data, identity)


class Ledger:
    """One handle's view of the record: what it may skip, and what it passed (to be written)."""

    def __init__(self, path: Path, handle: h5py.File, recheck: bool):
        self.path = path
        self._handle = handle
        fd = fastread.file_descriptor(handle)
        st = None if fd is None else os.fstat(fd)
        self._opened = None if st is None else fastread.identity(fd)
        self._owner = None if st is None else st.st_uid
        found = None if recheck or st is None else _load(path, self._opened, self._owner)
        self._trusted = found or {"open": None, "arrays": {}}
        self._passed: dict = {"open": None, "arrays": {}}
        self._identity: tuple[int, ...] | None = None  # of the passed entries
        self._dirty = False

    # What the record allows to skip ------------------------------------------------------------------
    def _current(self) -> bool:
        """Whether the file still has the identity it had when opened (the record is for that one)."""
        fd = fastread.file_descriptor(self._handle)
        return fd is not None and fastread.identity(fd) == self._opened

    @property
    def open_digest(self) -> str | None:
        """The metadata digest the open checks passed with, if the record has them for this file as it is."""
        return self._trusted["open"]

    def has_hash(self, name: str, recorded: str) -> bool:
        entry = self._trusted["arrays"].get(name)
        return entry is not None and entry["hash"] == recorded and self._current()

    def layer(self, ds: h5py.Dataset, recorded: str) -> bool:
        """Whether layer ``ds`` passed its full checks with hash ``recorded`` on this file as it is; if so it
        is handed to :mod:`fastread`, after its chunk index gave the recorded chunk addresses."""
        entry = self._trusted["arrays"].get(ds.name.lstrip("/"))
        if entry is None or entry["hash"] != recorded or "layout" not in entry or not self._current():
            return False
        try:
            found = fastread.layout(ds)
        except (OSError, RuntimeError, ValueError):  # a damaged index: the full checks say what is wrong
            return False
        if found is None or layout_digest(found) != entry["layout"]:
            return False
        fastread.adopt(ds, recorded, self._opened, found)
        return True

    # What this handle passed ------------------------------------------------------------------------
    def stamp(self) -> tuple[int, ...] | None:
        """The file's identity before a check reads it, if settled (see :func:`fastread.stamp`)."""
        return fastread.stamp(self._handle)

    def note(self, stamp: tuple[int, ...] | None, name: str | None, recorded: str,
             found: fastread.Verified | None = None) -> None:
        """Note that array ``name`` (None: the open checks, ``recorded`` the digest) passed, read from the
        file while it had identity ``stamp``."""
        fd = fastread.file_descriptor(self._handle)
        if stamp is None or fd is None or fastread.identity(fd) != stamp:
            return
        if stamp != self._identity:  # the file changed since the last note: those were for another file
            self._passed, self._identity = {"open": None, "arrays": {}}, stamp
        if name is None:
            self._dirty |= self._passed["open"] != recorded
            self._passed["open"] = recorded
        else:
            entry = {"hash": recorded} if found is None else {"hash": recorded, "layout": layout_digest(found)}
            self._dirty |= self._passed["arrays"].get(name) != entry
            self._passed["arrays"][name] = entry

    def save(self) -> None:
        """Write what this handle passed into the record beside the file (merged with what is there for the
        same identity); a folder that cannot be written is left as it is."""
        if not self._dirty:
            return
        self._dirty = False
        there = _load(self.path, self._identity, self._owner) or {"open": None, "arrays": {}}
        if self._passed["open"] in (None, there["open"]) and \
                all(there["arrays"].get(name) == entry for name, entry in self._passed["arrays"].items()):
            return  # nothing new (a handle that checked again what was recorded, as verify does)
        if self._identity == self._opened:
            there["arrays"] = {**self._trusted["arrays"], **there["arrays"]}
            there["open"] = there["open"] or self._trusted["open"]
        body = {"format": FORMAT, "reader": READER, "file": list(self._identity),
                "open": self._passed["open"] or there["open"],
                "arrays": dict(sorted({**there["arrays"], **self._passed["arrays"]}.items()))}
        try:
            atomic_write(record_path(self.path), json.dumps({**body, "sha256": _sealed(body)}, sort_keys=True,
                                                            indent=1).encode())
        except OSError as exc:
            log.debug("could not record the checks %s passed (%s); later processes check it again", self.path, exc)
