"""Where the (layer, probe, fold) grid runs: joblib's local processes, or a Dask cluster.

Both go through joblib, so a task is the same function either way and the
results are identical. On Dask each task reads its layer from the cache file
(a path every worker can open, such as a shared file system) instead of
receiving the codes through the scheduler.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator

from ..errors import ProbeError

log = logging.getLogger(__name__)

# Seconds to wait for a remote scheduler before giving up with a clear message.
CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True)
class Backend:
    """One way of running the grid.

    ``open(jobs, scheduler)`` is a context in which joblib uses it; it yields ``n_jobs`` for joblib and
    ``backend``, ``scheduler`` and ``workers`` for the results' runtime record.
    """

    name: str
    open: Callable[[int, "str | None"], ContextManager[dict]]
    tasks_read_cache: bool  # tasks read their layer from the cache file instead of receiving the codes
    takes_scheduler: bool  # runs on a cluster whose scheduler address may be given

    def check(self, scheduler: str | None) -> None:
        if scheduler is not None and not self.takes_scheduler:
            raise ProbeError(f"scheduler={scheduler!r} (--scheduler) needs backend='dask' (--backend dask); the "
                             f"{self.name} backend runs jobs (--jobs) processes")


@contextmanager
def _local(jobs: int, scheduler: str | None) -> Iterator[dict]:
    yield {"n_jobs": jobs, "backend": "local", "scheduler": None, "workers": jobs}


@contextmanager
def _dask(jobs: int, scheduler: str | None) -> Iterator[dict]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``jobs`` one-thread processes."""
    try:
        import joblib
        from distributed import Client, LocalCluster
    except ImportError:
        raise ProbeError("backend='dask' (--backend dask) needs dask and distributed: "
                         "pip install 'layerprobe[dask]'") from None
    with ExitStack() as stack:
        if scheduler is None:
            stack.enter_context(_environment_kept())  # left for last: restored after the cluster is closed
            # ":0": the dashboard on a free port, never a clash with a cluster already on 8787
            cluster = stack.enter_context(LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                                       dashboard_address=":0"))
            client = stack.enter_context(Client(cluster))
            log.info("started a local Dask cluster of %d worker(s); dashboard %s", jobs, client.dashboard_link)
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT_S))
            except (OSError, TimeoutError, ValueError) as exc:
                raise ProbeError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); pass its address "
                                 "as tcp://HOST:8786 and check that it is running") from None
        workers = len(client.scheduler_info()["workers"])
        if workers == 0:
            raise ProbeError(f"the Dask scheduler at {scheduler} has no workers; start some with "
                             f"`dask worker {scheduler}` on machines that can open the cache")
        stack.enter_context(joblib.parallel_config(backend="dask"))
        yield {"n_jobs": -1, "backend": "dask", "scheduler": client.scheduler_info()["address"], "workers": workers}


@contextmanager
def _environment_kept() -> Iterator[None]:
    """Undo what starting local workers does to this process's environment.

    distributed's Nanny sets OMP_NUM_THREADS=1 (and MKL_, OPENBLAS_, MALLOC_TRIM_THRESHOLD_) in
    ``os.environ`` for its workers and leaves them there, which would slow down, and change the
    numbers of, every process this one starts later.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)


BACKENDS: dict[str, Backend] = {
    "local": Backend("local", _local, tasks_read_cache=False, takes_scheduler=False),
    "dask": Backend("dask", _dask, tasks_read_cache=True, takes_scheduler=True),
}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ProbeError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}") from None
