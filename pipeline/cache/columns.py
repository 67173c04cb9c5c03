"""Adding a derived row column (such as duplicate clusters) to a finished cache.

The codes are never touched, but the file is: so the change is made on a copy,
sealed with a new metadata digest, and renamed over the original under the
writer lock. A crash leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np

from ..atomic import publish
from ..errors import CacheError
from . import integrity
from .format import metadata_digest
from .lock import WriterLock
from .reader import open_cache
from .writer import column_entry, partial_path

DERIVED_COLUMNS = ("dup_cluster",)


def add_row_column(path: str | Path, name: str, values: np.ndarray, about: dict) -> None:
    """Store ``values`` (one per active row, int) as column ``name``; hidden rows get -1.

    ``about`` (JSON-able) goes into the manifest under ``columns[name]``.
    """
    if name not in DERIVED_COLUMNS:
        raise CacheError(f"unknown derived column {name!r}; known: {', '.join(DERIVED_COLUMNS)}")
    path = Path(path)
    with WriterLock(path):
        with open_cache(path) as cache:
            if len(values) != cache.n_rows:
                raise CacheError(f"{name}: got {len(values)} values for {cache.n_rows} rows")
            active = np.asarray(cache.stored_rows().active, bool)
        full = np.full(len(active), -1, dtype=np.int64)
        full[active] = values
        work = partial_path(path)
        shutil.copyfile(path, work)
        with h5py.File(work, "r+") as handle:
            if name in handle:
                del handle[name]
            handle.create_dataset(name, data=full)
            manifest = json.loads(handle.attrs["manifest"])
            manifest.setdefault("columns", {})[name] = about
            handle.attrs["manifest"] = json.dumps(manifest)
            arrays = integrity.load(handle.attrs)
            if arrays is not None:  # a cache with per-array hashes gets the new column's
                arrays["arrays"][name] = column_entry(full)
                handle.attrs[integrity.ATTR] = integrity.dumps(arrays["arrays"], arrays["attrs"])
            handle.attrs["digest"] = metadata_digest(handle)
        publish(work, path)
