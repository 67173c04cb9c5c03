"""The check before extraction: every file hashed and test-decoded, every bad one named before anything
is written, started while the model is being built.

Importing timm and building the model take about 2 s in which the second core is
mostly idle (one thread imports Python modules); the check of 1,200 JPEGs takes
about 0.55 s on both cores (hashing, then a cheap test decode; PIL and hashlib
release the GIL). So :class:`CheckAhead` starts checking in a background thread,
file by file in the input's order, before the model is built, and hands over
what it has done when extraction asks for the result.

Which files need no test decode (those an existing cache of the same settings
already decoded) is known only once the model names the settings; the files
checked ahead were test-decoded anyway (a superset of the work, the same
verdicts), and the rest are checked then, as before, with that knowledge. So an
incremental run over a large input never test-decodes more than what the
background thread reached while the model was built.
"""

from __future__ import annotations

import logging
import sys
import threading

from ..errors import BadImageError
from ..inputs import ImageSet, check_files
from ..inputs.decode import FileCheck

log = logging.getLogger(__name__)

#: Files the background thread checks between two looks at whether it should stop.
CHUNK = 64


class CheckAhead:
    """Check ``images``' files in a background thread from now on; :meth:`take` the result.

    Use as a context manager (or call :meth:`close`): leaving it stops the
    thread after its current chunk, also when the model build fails.
    """

    def __init__(self, images: ImageSet, progress: bool = True, ahead: bool = True):
        self.paths = [r.path for r in images.records]
        self.frames = [r.frame for r in images.records]
        self.decoder = images.decoder
        self.progress = progress
        self.done: list[FileCheck] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="layerprobe-check-ahead", daemon=True)
        if ahead:
            self._thread.start()

    def _run(self) -> None:
        try:
            for start, stop in chunks(self.paths, CHUNK):
                if self._stop.is_set():
                    return
                self.done.extend(self._check(start, stop, frozenset()))
        except BaseException as exc:  # noqa: BLE001 - raised again by take()
            self.error = exc

    def _check(self, start: int, stop: int, trusted, progress=None) -> list[FileCheck]:
        return check_files(self.paths[start:stop], progress=progress, trusted=trusted, decoder=self.decoder,
                           frames=self.frames[start:stop])

    def take(self, trusted: set[str] | frozenset = frozenset()) -> list[FileCheck]:
        """Every file's check, in input order: those done ahead, then the rest checked now, where files whose
        sha256 is in ``trusted`` (decoded before) are not test-decoded again."""
        from tqdm import tqdm

        self.close()
        if self.error is not None:
            raise self.error
        # The bar shows from here (after the model build, whose errors come first): what was done ahead, then the rest.
        with tqdm(total=len(self.paths), initial=len(self.done), unit="img", desc="checking", file=sys.stderr,
                  disable=not self.progress) as bar:
            rest = self._check(len(self.done), len(self.paths), trusted, bar.update) if len(self.done) < len(
                self.paths) else []
        return self.done + rest

    def close(self) -> None:
        """Stop the background thread after its current chunk and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> "CheckAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chunks(paths: list, size: int):
    """``(start, stop)`` spans of about ``size`` files that never split the frames of one file."""
    start = 0
    while start < len(paths):
        stop = min(len(paths), start + size)
        while stop < len(paths) and paths[stop] == paths[stop - 1]:
            stop += 1
        yield start, stop
        start = stop


def sort_out(images: ImageSet, checks: list[FileCheck], on_bad_image: str):
    """``images`` without the bad files, their checks, and what was skipped and why; with
    ``on_bad_image == "error"`` every bad file is named in one :class:`BadImageError` instead."""
    bad = [(r, c.error) for r, c in zip(images.records, checks) if c.error]
    if bad and on_bad_image == "error":
        raise BadImageError([(str(r.path), why) for r, why in bad])
    skipped = [{"id": r.id, "path": str(r.path), "reason": why} for r, why in bad]
    for item in skipped:
        log.warning("skipping %s: %s", item["path"], item["reason"])
    if bad:
        keep = [(r, c) for r, c in zip(images.records, checks) if not c.error]
        if not keep:
            raise BadImageError([(str(r.path), why) for r, why in bad])
        images = images.subset([r for r, _ in keep])
        checks = [c for _, c in keep]
    return images, checks, skipped


def check_images(images: ImageSet, on_bad_image: str = "error", progress: bool = True,
                 trusted: set[str] | frozenset = frozenset()):
    """Hash every file and test-decode those not in ``trusted``, all before returning (no overlap):
    :func:`sort_out`'s ``(images, checks, skipped)``."""
    with CheckAhead(images, progress, ahead=False) as check:
        checks = check.take(trusted)
    return sort_out(images, checks, on_bad_image)
