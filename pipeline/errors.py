"""The one exception family of layerprobe.

Every error a user can cause derives from :class:`PipelineError`. Messages say
what was found, what is allowed and how to fix it; the CLI prints them as one
line and exits non-zero.

Messages are written for both callers: a fix names the Python parameter first
and the CLI option in brackets, ``pass groups='none' (--groups none)`` or
``folds (--folds) must be at least 2``; a step of another stage names its
function and its command, ``run_probes (layerprobe probe)``. So a Python caller
is told what to pass, and the CLI prints the same text unchanged.
"""


class PipelineError(Exception):
    """Base class of every error layerprobe raises on purpose."""


class InputError(PipelineError):
    """The images, folders or tables given as input are unusable."""


class BadImageError(InputError):
    """One or more image files cannot be decoded."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        shown = "; ".join(f"{path}: {why}" for path, why in self.problems[:10])
        more = f" (and {len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
        super().__init__(
            f"{len(self.problems)} image(s) cannot be decoded: {shown}{more}. "
            "Fix or remove them, or pass on_bad_image='skip' (--on-bad-image skip) to leave them out "
            "(they are listed in the cache manifest)."
        )


class ModelError(PipelineError):
    """The model name, its weights or a requested layer is unusable."""


class CacheError(PipelineError):
    """An activation cache is missing, incomplete, corrupt or of another kind."""


class CacheInProgressError(CacheError):
    """The cache is still being written by an extraction."""


class CacheWriteError(CacheError):
    """Writing the cache failed (full disk, file size limit, I/O error); committed rows are kept.

    After such a failure the HDF5 library may be left unable to close the file
    cleanly, so a command-line process should exit without further HDF5 calls.
    """


class ProbeError(PipelineError):
    """Probing, its results or a saved probe cannot go ahead as asked."""


class SimilarityError(PipelineError):
    """A similarity, transferability or advice measure cannot be computed as asked."""
