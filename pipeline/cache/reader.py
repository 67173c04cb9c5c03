"""Reading an activation cache: only finished, undamaged files, only active rows."""

from __future__ import annotations

import json
import os
import weakref
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError, CacheInProgressError
from . import fastread, integrity, trust
from .bnstats import GROUP as BN_GROUP
from .bnstats import BNStat, read_state, to_stats
from .format import FORMAT, FORMAT_VERSION, ROW_COLUMNS, codes_path, metadata_digest
from .lock import is_locked
from .manifest import CacheManifest
from .prechecks import check_global_heaps, chunk_span
from .writer import FINGERPRINTS, RowTable, partial_path

_DAMAGED = "is damaged ({}); extract it again (`layerprobe verify` checks a whole cache)"


class ActivationCache:
    """A finished cache opened read-only.

    Row accessors (``ids``, ``labels``, ``groups``, ``split``, ``codes``) return
    the rows of the latest input only, sorted by id; rows kept from earlier runs
    for reuse stay hidden. Codes are read on demand, per layer.

    Checks a file passed are remembered beside it for later processes while the
    file is unchanged (``trust.py`` says what is checked when); ``recheck=True``
    ignores that record and checks everything (``verify``). A cache opened from
    that record holds the file by a descriptor of its own and opens HDF5 when a
    call first needs it, on the file it opened: by its path while that is the
    recorded file, through the descriptor when another file was renamed over the
    path (reads then checked in full); a file written in place is an error.
    """

    def __init__(self, path: str | Path, recheck: bool = False):
        self.path = Path(path)
        self._recheck = recheck
        self._h5: h5py.File | None = None
        self._fd: int | None = None  # the descriptor records and fast reads use (HDF5's, or ours when lazy)
        self._own_fd: weakref.finalize | None = None
        self._closed = False
        self._held = None  # the file as a Python file object, when HDF5 reads it so (see _attach)
        if recheck or not self._open_recorded():
            require_cache(self.path)
            self._open_file()

    def _open_recorded(self) -> bool:
        """Open without HDF5 from what the record beside the file kept of it as it is (``trust.py``), the
        file held open by a descriptor of our own; HDF5 opens it when something needs it (:attr:`_file`).
        False, nothing kept open, when there is no such record."""
        try:
            fd = fastread.open_descriptor(self.path)
        except OSError:
            return False  # the full open says what is wrong
        if fd is None:
            return False
        ledger = trust.Ledger(self.path, fd, False)
        try:
            meta = ledger.metadata
            if meta is None:
                raise KeyError("meta")
            self._trust = ledger
            self._set_metadata(meta["attrs"], recorded=True)
            self._set_runs(meta)
        except (CacheError, KeyError, ValueError, TypeError):  # no record of it, or one of another shape
            os.close(fd)
            return False
        self._fd, self._own_fd = fd, weakref.finalize(self, os.close, fd)
        return True

    def _open_file(self) -> None:
        """Open through HDF5: the checks the record beside the file does not list (all of them with ``recheck``)."""
        self._h5 = self._hdf5(self.path)
        try:
            self._fd = fastread.file_descriptor(self._h5)
            self._trust = trust.Ledger(self.path, self._fd, self._recheck)
            before = self._trust.stamp()
            if not (self._trust.open_digest and self._open_trusted()):
                check_global_heaps(self.path, chunk_span(self._file))  # before any string is read: HDF5 may loop
                self._open_checks()
                self._trust.note(before, None, str(self._file.attrs["digest"]))
            self._trust.note_metadata(before, trust.metadata(self._file.attrs, self._active))
        except CacheError as exc:
            self._h5.close()
            if str(exc).startswith(str(self.path)):
                raise
            raise CacheError(f"{self.path} " + _DAMAGED.format(exc)) from None
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            self._h5.close()
            raise CacheError(f"{self.path} " + _DAMAGED.format(exc)) from None

    @property
    def _file(self) -> h5py.File:
        """The HDF5 file; opened now if the cache was opened from its record, and the same file as then."""
        if self._h5 is None:
            if self._closed:
                raise CacheError(f"{self.path} was closed; open it again to read it")
            self._h5 = self._attach()
        return self._h5

    def _attach(self) -> h5py.File:
        """HDF5 on the file this handle opened. By its path while that is still the recorded file. When another
        file was renamed over the path since (an extraction, a merge or a stored column publishes that way),
        the opened file lives on, unlinked and unchanged but for its ctime: HDF5 opens it through the
        descriptor this handle holds and every later read is checked in full (the record was for the file as
        linked), so the handle reads on the file it opened, as one that had opened HDF5 at once does. A file
        written in place, or moved, is refused."""
        if self._trust.unchanged():
            handle = self._hdf5(self.path)
            fd = fastread.file_descriptor(handle)
            if fd is not None and fastread.identity(fd) == self._trust.opened:
                return handle
            handle.close()
        elif self._replaced_intact():
            self._held = os.fdopen(os.dup(self._fd), "rb")  # HDF5 reads it as a Python file (no path left)
            return self._hdf5(self._held)
        raise CacheError(f"{self.path} changed since it was opened; open it again")

    def _replaced_intact(self) -> bool:
        """Whether the file this handle holds was unlinked (renamed over) with its bytes as recorded."""
        st = os.fstat(self._fd)  # all but the ctime, which the unlink changed
        return st.st_nlink == 0 and fastread.identity_of(st)[:4] == tuple(self._trust.opened[:4])

    def _hdf5(self, where) -> h5py.File:
        try:
            return h5py.File(where, "r")
        except (OSError, RuntimeError) as exc:
            raise CacheError(f"{self.path} is not a readable HDF5 file ({exc}): it is truncated, damaged or not a "
                             "layerprobe cache") from None

    def _open_trusted(self) -> bool:
        """Open as the record beside the file allows: what later reads need, no check the file already passed.
        False (nothing read but the digest) when the stored digest is not the recorded one."""
        if self._file.attrs.get("digest") != self._trust.open_digest:
            return False
        self._load_metadata()  # format, version and completion were checked with the digest (same reader)
        return True

    def _open_checks(self) -> None:
        self._check_format()
        stored = self._file.attrs.get("digest")
        if metadata_digest(self._file) != stored and metadata_digest(self._file, legacy=True) != stored:
            raise CacheError(f"{self.path} " + _DAMAGED.format("its metadata digest does not match"))
        self._load_metadata()
        self._check_arrays()

    def _check_format(self) -> None:
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT:
            raise CacheError(f"{self.path} is an HDF5 file but not a layerprobe activation cache")
        if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise CacheError(
                f"{self.path} has cache format version {attrs.get('format_version')}; this layerprobe reads "
                f"version {FORMAT_VERSION}: extract again"
            )
        if not bool(attrs.get("complete", False)):
            raise CacheError(f"{self.path} was never finished; run the extract command again to complete it")

    def _load_metadata(self) -> None:
        self._set_metadata(self._file.attrs, recorded=False)
        self._set_rows(self._whole("active"))

    def _set_metadata(self, attrs, recorded: bool) -> None:
        """What open reads from the root attributes (``trust.META_ATTRS``). The manifest is typed (and so
        checked) now when read from the file, on first use when ``recorded`` (it passed when recorded)."""
        self.manifest: dict = json.loads(attrs["manifest"])
        self._provenance = None if recorded else CacheManifest.from_dict(self.manifest)
        self._outputs = tuple(self.manifest["outputs"])
        self.key: str = str(attrs["key"])
        self.settings_key: str = str(attrs["settings_key"])
        self._arrays: dict | None = integrity.load(attrs)
        self._indexed: set[str] = set()  # datasets whose chunk index was checked
        self._hashed: set[str] = set()  # row columns whose content hash was checked

    @property
    def provenance(self) -> CacheManifest:
        """The manifest, typed."""
        if self._provenance is None:
            self._provenance = CacheManifest.from_dict(self.manifest)
        return self._provenance

    def _set_rows(self, active: np.ndarray) -> None:
        self._active = active
        self._rows = None if active.all() else np.flatnonzero(active)
        self.n_rows: int = int(active.sum())
        self.n_stored: int = len(active)

    def _set_runs(self, meta: dict) -> None:
        """The active rows as the record keeps them (``trust.metadata``); numpy only when some are inactive."""
        self.n_stored = meta["rows"]
        self.n_rows = trust.active_count(meta)
        self._rows = None if self.n_rows == self.n_stored else np.flatnonzero(trust.active_rows(meta))

    @property
    def has_hashes(self) -> bool:
        """Whether the cache records per-array content hashes (caches written since they exist do)."""
        return self._arrays is not None

    def _check_arrays(self) -> None:
        """Every dataset's datatype, shape and chunks as recorded; row columns against their hashes."""
        outputs = [codes_path(l, p) for l, p in self.outputs]
        if self._arrays is None:  # written before per-array hashes: check what the format fixes
            for path in outputs:
                ds = self._file[path]
                integrity.check_codes_type(ds)
                if ds.ndim != 2 or ds.shape[0] != self.n_stored or ds.chunks is None:
                    raise CacheError(f"{path} has shape {ds.shape} for {self.n_stored} rows")
            return
        arrays, attrs = self._arrays["arrays"], self._arrays["attrs"]
        expected = outputs + [c for c in ROW_COLUMNS + (FINGERPRINTS,) if c in self._file]
        if self.provenance.bn_stats is not None:
            expected += [f"{BN_GROUP}/{m}/{k}" for m in self._file[BN_GROUP]
                         for k in ("sum", "sumsq", "running_mean", "running_var")]
        unlisted = [name for name in expected if name not in arrays]
        if unlisted:
            raise CacheError(f"{unlisted[0]} has no recorded layout and hash")
        for name, entry in arrays.items():
            integrity.check_layout(self._file, name, entry)
            if name.startswith("codes/"):
                if integrity.plain_attrs(self._file[name].attrs) != attrs.get(name):
                    raise CacheError(f"the attributes of {name} differ from the recorded ones")

    def _whole(self, name: str) -> np.ndarray:
        """Row column ``name`` read whole, checked against its recorded content hash the first time.

        Open checks only the layout of every array (and ``active``'s hash); each other row column's
        hash is checked when it is first read, so opening never reads every row (:meth:`check_columns`
        reads them all).
        """
        check = self._arrays is not None and name not in self._hashed
        before = self._trust.stamp() if check else None
        values = self._file[name][()]
        if check:
            recorded = self._arrays["arrays"][name]["hash"]
            if not self._trust.has_hash(name, recorded):
                integrity.check_hash(name, values, self._arrays["arrays"][name])
                self._trust.note(before, name, recorded)
            self._hashed.add(name)
        return values

    def _strings(self, name: str) -> np.ndarray:
        values = self._whole(name)
        found = np.empty(len(values), dtype=object)  # as h5py's asstr() gives them: str objects
        found[:] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values.tolist()]
        return found

    def check_columns(self) -> list[str]:
        """Read every row column whole and check its content hash (what `verify` does); their names."""
        names = [n for n in self._arrays["arrays"] if not n.startswith(("codes/", BN_GROUP + "/"))] \
            if self._arrays is not None else []
        for name in names:
            self._read(name, lambda: self._whole(name))
        return names

    def _select(self, values: np.ndarray) -> np.ndarray:
        return values if self._rows is None else values[self._rows]

    # Row metadata -------------------------------------------------------------
    def _read(self, what: str, read):
        """``read()``, with whatever HDF5 raises about a damaged file turned into one CacheError line."""
        try:
            return read()
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CacheError(f"{self.path}: reading {what} failed, the file " + _DAMAGED.format(exc)) from None

    @property
    def ids(self) -> np.ndarray:
        return self._select(self._read("ids", lambda: self._strings("ids")))

    @property
    def labels(self) -> np.ndarray:
        return self._select(self._read("labels", lambda: self._whole("labels")))

    @property
    def class_names(self) -> list[str]:
        return self._read("class names", lambda: json.loads(self._file["labels"].attrs["class_names"]))

    @property
    def file_sha256(self) -> np.ndarray:
        """The content digest (hex) of each row's image file: what makes two caches' rows the same image."""
        return self._select(self._read("file hashes", lambda: self._strings("files/sha256")))

    @property
    def groups(self) -> np.ndarray | None:
        return self._column("groups")

    @property
    def split(self) -> np.ndarray | None:
        return self._column("split")

    @property
    def dup_cluster(self) -> np.ndarray | None:
        """Near-duplicate cluster of each row, once `layerprobe duplicates` stored them."""
        return self._read("dup_cluster", lambda: self._select(self._whole("dup_cluster"))
                          if "dup_cluster" in self._file else None)

    @property
    def fingerprints(self) -> np.ndarray | None:
        """Image fingerprints (rows x WIDTH float16: a trimmed and a whole thumbnail; AREA wide in caches of version 1, see pipeline.inputs.fingerprint), None in caches made
        before they existed; a row whose image could not be fingerprinted is NaN."""
        return self._read(FINGERPRINTS, lambda: self._select(self._whole(FINGERPRINTS))
                          if FINGERPRINTS in self._file else None)

    def stored_fingerprints(self) -> np.ndarray | None:
        """The fingerprints of every stored row, active or not (what a later extraction may reuse)."""
        return self._read(FINGERPRINTS, lambda: self._whole(FINGERPRINTS) if FINGERPRINTS in self._file else None)

    def _column(self, name: str) -> np.ndarray | None:
        return self._read(name, lambda: self._select(self._strings(name)) if name in self._file else None)

    def stored_rows(self) -> RowTable:
        """Every stored row, active or not: what a later extraction may reuse."""
        return self._read("the row columns", self._stored_rows)

    def _stored_rows(self) -> RowTable:
        f = self._file
        column = lambda n: self._strings(n).tolist() if n in f else None  # noqa: E731
        return RowTable(
            ids=self._strings("ids").tolist(),
            labels=self._whole("labels").tolist(),
            class_names=self.class_names,
            sizes=self._whole("files/size").tolist(),
            sha256=[s.decode() for s in self._whole("files/sha256")],
            groups=column("groups"),
            split=column("split"),
            active=self._whole("active").tolist(),
        )

    def bn_stats(self) -> list[BNStat] | None:
        """The data's statistics at every BatchNorm input, next to ImageNet's (``extract --bn-stats``)."""
        if self.provenance.bn_stats is None:
            return None
        state = self.bn_state()
        try:
            return to_stats(state)
        except (KeyError, ValueError, TypeError) as exc:
            raise CacheError(f"{self.path}: reading bn_stats failed, the file " + _DAMAGED.format(exc)) from None

    def extras(self) -> dict[str, dict | None]:
        """What the cache holds besides codes and labels (None where absent): the input's groups and
        split, the near-duplicate clusters of `layerprobe duplicates`, and BatchNorm statistics."""
        groups, split, dup = self.groups, self.split, self.dup_cluster
        bn = self.provenance.bn_stats
        sizes = np.unique(dup, return_counts=True)[1] if dup is not None else np.array([], int)
        return {
            "groups": None if groups is None else {"distinct": len(set(groups.tolist()) - {""}),
                                                   "rows_without": int((groups == "").sum())},
            "split": None if split is None else {str(v): int(n) for v, n in zip(*np.unique(split, return_counts=True))},
            "dup_clusters": None if dup is None else {
                "clusters": int((sizes >= 2).sum()), "rows_in_clusters": int(sizes[sizes >= 2].sum()),
                **{k: v for k, v in self.provenance.columns.get("dup_cluster", {}).items()
                   if k in ("threshold", "output")}},
            "bn_stats": None if bn is None else {"layers": bn.modules, "images": bn.images,
                                                 "members_recorded": bn.members is not None},
        }

    def bn_members(self) -> dict[str, list[str]] | None:
        """Which BatchNorm layers belong to which layer (by firing order); None for caches made before it was
        recorded."""
        members = None if self.provenance.bn_stats is None else self.provenance.bn_stats.members
        return None if members is None else {k: list(v) for k, v in members.items()}

    def bn_state(self) -> dict:
        """The raw BatchNorm sums, for an incremental extraction to continue from (checked against their hashes)."""
        if self.provenance.bn_stats is None:
            return {}
        state = self._read("bn_stats", lambda: read_state(self._file))
        if self._arrays is not None:
            try:
                self._check_bn(state)
            except CacheError as exc:
                raise CacheError(f"{self.path}: reading bn_stats failed, the file " + _DAMAGED.format(exc)) from None
        return state

    def _check_bn(self, state: dict) -> None:
        recorded = sorted(name for name in self._arrays["attrs"] if name.startswith(BN_GROUP + "/"))
        if sorted(f"{BN_GROUP}/{m}" for m in state) != recorded:
            raise CacheError("the BatchNorm modules differ from the recorded ones")
        for name, entry in state.items():
            where = f"{BN_GROUP}/{name}"
            for key in ("sum", "sumsq", "running_mean", "running_var"):
                integrity.check_hash(f"{where}/{key}", entry[key], self._arrays["arrays"][f"{where}/{key}"])
            stored = {k: entry[k] for k in ("count", "depth", "stride")}
            if stored != self._arrays["attrs"][where]:
                raise CacheError(f"the attributes of {where} ({stored}) differ from the recorded ones "
                                 f"({self._arrays['attrs'][where]})")

    # Codes --------------------------------------------------------------------
    @property
    def outputs(self) -> list[tuple[str, str]]:
        """Every stored (layer, pooling), in depth order, poolings in the order asked for."""
        return [tuple(name.rsplit("/", 1)) for name in self._outputs]

    def output_info(self, layer: str, pooling: str | None = None) -> dict:
        ds = self._dataset(layer, pooling)
        attrs = self._read(f"the attributes of {ds.name}", lambda: {k: _plain(v) for k, v in ds.attrs.items()})
        return {**attrs, "shape": (self.n_rows, ds.shape[1])}

    def codes(self, layer: str, pooling: str | None = None) -> np.ndarray:
        """The (rows, channels) float32 codes of one layer; ``layer`` may be ``name/pooling``."""
        return self._select(self.stored_codes(layer, pooling))

    def recorded_hash(self, layer: str, pooling: str) -> str | None:
        """The content hash the writer recorded for one output's stored rows (None in older caches)."""
        return None if self._arrays is None else self._arrays["arrays"][codes_path(layer, pooling)]["hash"]

    def stored_codes(self, layer: str, pooling: str | None = None, rows: slice | None = None) -> np.ndarray:
        """Codes of every stored row, active or not; ``rows`` reads one contiguous slice of them."""
        name = self._output_path(layer, pooling)
        recorded = None if self._arrays is None else self._arrays["arrays"][name]["hash"]
        if rows is None and recorded is not None and not self._recheck:  # verified before: fastread.py
            values = self._read_verified(name, recorded)
            if values is not None:
                return values
        ds = self._output(name)
        self._index(name, ds)
        try:
            before = self._trust.stamp()
            values = ds[()] if rows is None else ds[rows]
            if rows is None and self._arrays is not None:
                integrity.check_hash(name, values, self._arrays["arrays"][name])
                found = fastread.remember(ds, recorded, before)
                if found is not None:
                    self._trust.note(before, name, recorded, found)
                    self._trust.save()
            elif self._arrays is not None:  # a part cannot be hashed: the NaN fill value shows a lost chunk
                integrity.check_no_fill(name, values, rows.start or 0)
            return values
        except (OSError, RuntimeError, ValueError, CacheError) as exc:
            raise CacheError(f"{self.path}: reading {ds.name} failed, the file " + _DAMAGED.format(exc)) from None

    def _read_verified(self, name: str, recorded: str) -> np.ndarray | None:
        """Layer ``name`` from its chunks' bytes if this process or the record verified it (else None)."""
        if self._fd is None:
            return None
        shape = tuple(self._arrays["arrays"][name]["shape"])  # the dataset's: its layout was checked on open
        try:
            values = fastread.read_at(self._fd, "/" + name, shape, recorded)
            if values is None and self._trust.layer(name, recorded, lambda: self._output(name)):
                values = fastread.read_at(self._fd, "/" + name, shape, recorded)
        except OSError as exc:
            raise CacheError(f"{self.path}: reading /{name} failed, the file " + _DAMAGED.format(exc)) from None
        return values

    def _output_path(self, layer: str, pooling: str | None) -> str:
        """The dataset path of one stored output, or an error naming what is stored."""
        if pooling is None and "/" in layer:
            layer, pooling = layer.rsplit("/", 1)
        stored = [f"{l}/{p}" for l, p in self.outputs]
        poolings = [p for l, p in self.outputs if l == layer]
        if not poolings:
            raise CacheError(f"layer {layer!r} is not in {self.path.name}; it holds {', '.join(stored)}")
        if pooling is None:
            if len(poolings) != 1:
                raise CacheError(f"layer {layer!r} is stored with poolings {poolings}; name one as {layer}/<pooling>")
            pooling = poolings[0]
        if pooling not in poolings:
            raise CacheError(f"layer {layer!r} has no pooling {pooling!r} in {self.path.name}; it has {poolings}")
        return codes_path(layer, pooling)

    def _dataset(self, layer: str, pooling: str | None, index: bool = True) -> h5py.Dataset:
        """One output's dataset; with ``index`` its chunk index checked (once per handle)."""
        path = self._output_path(layer, pooling)
        ds = self._output(path)
        if index:
            self._index(path, ds)
        return ds

    def _output(self, path: str) -> h5py.Dataset:
        try:
            return self._file[path]
        except KeyError:
            raise CacheError(f"{self.path} " + _DAMAGED.format(f"{path.split('/', 1)[1]} is missing")) from None
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise CacheError(f"{self.path} " + _DAMAGED.format(exc)) from None

    def _index(self, path: str, ds: h5py.Dataset) -> None:
        if path in self._indexed:
            return
        try:
            integrity.check_chunks(ds)
        except (OSError, RuntimeError, ValueError, TypeError, CacheError) as exc:
            raise CacheError(f"{self.path} " + _DAMAGED.format(exc)) from None
        self._indexed.add(path)

    def close(self) -> None:
        """Close the file, after writing what this handle checked into the record beside it (``trust.py``)."""
        if self._closed:
            return
        self._closed = True
        if self._h5 is None or self._h5.id.valid:
            self._trust.save()
        self._trust.detach()
        self._fd = None
        if self._h5 is not None:
            self._h5.close()
        if self._held is not None:
            self._held.close()
        if self._own_fd is not None:
            self._own_fd()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _plain(value):
    """HDF5 attributes as plain Python values (a layer's grid is stored as a small array)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def require_cache(path: Path) -> None:
    """Raise the error a user should see for a cache path that holds no finished cache (before a command
    that changes a cache takes its lock, which would otherwise create the folder and a lock file)."""
    if path.exists():
        return
    if partial_path(path).exists():
        if is_locked(path):
            raise CacheInProgressError(f"extraction into {path} is in progress; wait for it to finish")
        raise CacheInProgressError(
            f"extraction into {path} was interrupted; run the same extract command again to resume it"
        )
    raise CacheError(f"cache {str(path)!r} does not exist; create it with `layerprobe extract`")


def open_cache(path: str | Path, recheck: bool = False) -> ActivationCache:
    """Open a finished activation cache for reading; ``recheck=True`` checks everything again, whatever was
    recorded beside the file (what ``layerprobe verify`` does)."""
    return ActivationCache(path, recheck)
