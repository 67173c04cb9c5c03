"""Whole-file publication: readers see the old file or the whole new one, never a part.

Every stage that writes a finished artifact (a cache, a results file, a saved
probe, a report, a pairs CSV) goes through here: write under another name in
the same folder, fsync it, rename it over the target, fsync the folder.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def publish(work: str | Path, path: str | Path) -> Path:
    """fsync ``work``, rename it to ``path`` and fsync the folder, so the rename survives a crash."""
    work, path = Path(work), Path(path)
    with open(work, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(work, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a unique temporary name and :func:`publish`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # 0o666 and O_EXCL: the umask decides the permissions, as for any other file the user writes.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
