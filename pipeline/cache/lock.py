"""One writer per cache: an ``fcntl`` lock on a file beside it.

Independent of HDF5's own file locking (which users and clusters often switch
off), and released by the kernel when its holder dies.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import CacheInProgressError
from .format import LOCK_SUFFIX


def lock_path(cache: Path) -> Path:
    return cache.with_name(cache.name + LOCK_SUFFIX)


class WriterLock:
    """Exclusive lock on ``<cache>.lock``; fails fast naming the holder, or waits."""

    def __init__(self, cache: Path, wait: bool = False, poll: float = 0.5):
        self.path = lock_path(Path(cache))
        self.wait = wait
        self.poll = poll
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                    os.close(fd)
                    raise CacheInProgressError(
                        f"{self.path.with_suffix('')} is being written by process {holder}; "
                        "wait for it to finish (or pass wait=True (--wait))"
                    ) from None
                time.sleep(self.poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def is_locked(cache: Path) -> bool:
    """True while a writer holds the cache's lock."""
    path = lock_path(Path(cache))
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
