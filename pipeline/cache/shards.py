"""Which shard an image belongs to, and where a shard cache lives (no torch here).

An id goes to shard ``sha256(id) mod N``: the assignment depends on the id
alone, so it is the same on every machine, balanced for any realistic set of
ids, and an image added later never moves the others to another shard (only its
own shard has new work). A shard of the cache ``<name>.h5`` is written to
``<name>.shard<I>-of-<N>.h5``; `merge_shards` writes ``<name>.h5`` back.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import PipelineError

ASSIGNMENT = "sha256(id) mod count"
_SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard(?P<index>\d+)-of-(?P<count>\d+)(?P<suffix>\.[^.]+)?$")


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """``(index, count)`` as ints, or an error naming the allowed range."""
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise PipelineError(f"a shard is (index, count), such as (0, 4) for --shard 0/4; got {shard!r}") from None
    if count < 1:
        raise PipelineError(f"the shard count must be at least 1, got {count}")
    if not 0 <= index < count:
        raise PipelineError(f"shard index {index} is out of range (0 to {count - 1}) for {count} shards; "
                            "indices count from 0")
    return index, count


def shard_of(row_id: str, count: int) -> int:
    """The shard (0 to count - 1) that image ``row_id`` belongs to."""
    return int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big") % count


def shard_indices(ids: Iterable[str], count: int) -> np.ndarray:
    """The shard of every id, as an int array."""
    return np.fromiter((shard_of(i, count) for i in ids), dtype=np.int64)


def shard_path(path: str | Path, index: int, count: int) -> Path:
    """``dir/name.h5`` -> ``dir/name.shard<I>-of-<N>.h5``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard{index}-of-{count}{path.suffix}")


def merged_path(path: str | Path) -> Path | None:
    """The inverse of :func:`shard_path`; None when ``path`` is not named like a shard."""
    path = Path(path)
    found = _SHARD_NAME.match(path.name)
    if found is None:
        return None
    return path.with_name(found["stem"] + (found["suffix"] or ""))


def input_digest(records: Iterable[tuple]) -> str:
    """A digest of the whole input table a shard was cut from: (id, label, group, split) of every image."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(repr(tuple(record)).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def ids_digest(ids: Iterable[str]) -> str:
    """A digest of a sorted list of ids, to check that the shards together cover the input."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()
