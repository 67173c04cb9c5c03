"""Adding a derived row column (such as duplicate clusters) to a finished cache.

The codes are never touched, but the file is: so the change is made on a copy,
sealed with a new metadata digest, and renamed over the original under the
writer lock. A crash leaves either the old file or the new one. The copy has its
own name (``<cache>.rewrite``), never extraction's ``<cache>.partial``, so a
rewrite cannot destroy the committed rows of an interrupted extraction.

A column computed from a cache's codes belongs to those codes: the caller passes
the content key it read them under, and the column is refused when the cache
has been replaced since.
"""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from ..atomic import publish
from ..errors import CacheError
from . import integrity
from .format import metadata_digest
from .lock import WriterLock
from .manifest import CacheManifest, manifest_json
from .reader import open_cache, require_cache
from .writer import FINGERPRINTS, column_entry, write_fingerprints

DERIVED_COLUMNS = ("dup_cluster", FINGERPRINTS)
REWRITE_SUFFIX = ".rewrite"


def rewrite_path(cache: Path) -> Path:
    """The working copy of a column rewrite (only the writer-lock holder touches it)."""
    return cache.with_name(cache.name + REWRITE_SUFFIX)


def add_row_column(path: str | Path, name: str, values: np.ndarray, about: dict, expected_key: str | None = None,
                   locked: bool = False) -> None:
    """Store ``values`` (one per active row) as column ``name``; hidden rows get -1 (fingerprints: NaN).

    ``about`` (JSON-able) goes into the manifest under ``columns[name]``. With
    ``expected_key`` (the cache's content key when ``values`` were computed) a
    cache replaced since then is refused. ``locked=True``: the caller already
    holds the cache's :class:`WriterLock` (for a scan and its store together).
    """
    if name not in DERIVED_COLUMNS:
        raise CacheError(f"unknown derived column {name!r}; known: {', '.join(DERIVED_COLUMNS)}")
    path = Path(path)
    require_cache(path)
    with nullcontext() if locked else WriterLock(path):
        with open_cache(path) as cache:
            if expected_key is not None and cache.key != expected_key:
                raise CacheError(
                    f"{path} changed since its {name} was computed (content key {expected_key[:12]}, now "
                    f"{cache.key[:12]}: another extraction replaced it); nothing was stored, run the command again"
                )
            if len(values) != cache.n_rows:
                raise CacheError(f"{name}: got {len(values)} values for {cache.n_rows} rows")
            active = np.asarray(cache.stored_rows().active, bool)
            made = cache.provenance
        if name == FINGERPRINTS:
            full = np.full((len(active), np.shape(values)[1]), np.nan, dtype=np.float16)
        else:
            full = np.full(len(active), -1, dtype=np.int64)
        full[active] = values
        _rewrite(path, name, full, replace(made, columns={**made.columns, name: about}))


def _rewrite(path: Path, name: str, full: np.ndarray, manifest: CacheManifest) -> None:
    work = rewrite_path(path)
    try:
        shutil.copyfile(path, work)
        with h5py.File(work, "r+") as handle:
            arrays = integrity.load(handle.attrs)
            if name == FINGERPRINTS:
                listed = integrity.dumps(arrays["arrays"], arrays["attrs"]) if arrays is not None else None
                if listed is None:
                    raise CacheError(f"{path} was written before per-array hashes; extract it again to store "
                                     "fingerprints in it")
                handle.attrs[integrity.ATTR] = write_fingerprints(handle, full, listed)
            else:
                if name in handle:
                    del handle[name]
                handle.create_dataset(name, data=full)
                if arrays is not None:  # a cache with per-array hashes gets the new column's
                    arrays["arrays"][name] = column_entry(full)
                    handle.attrs[integrity.ATTR] = integrity.dumps(arrays["arrays"], arrays["attrs"])
            handle.attrs["manifest"] = manifest_json(manifest)
            handle.attrs["digest"] = metadata_digest(handle)
        publish(work, path)
    except (OSError, RuntimeError) as exc:
        work.unlink(missing_ok=True)
        raise CacheError(f"storing {name} in {path} failed ({exc}); the cache is unchanged") from None
    except BaseException:
        work.unlink(missing_ok=True)
        raise
