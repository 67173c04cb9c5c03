"""Running the grid's fits on ``jobs`` processes: this one and ``jobs - 1`` workers.

With joblib, ``jobs`` new worker processes fit while this process waits for
their results; each worker is a new interpreter that imports numpy,
scikit-learn and LightGBM before its first fit (about a CPU second on the
2-core machine of BENCHMARKS.md, a fifteenth of the CPU time of a 400-image
grid without intervals), while this process has imported them already. Here
this process fits too, and one worker fewer is started. The tasks are ordered
longest first (``grid._longest_first``): the workers take them from the front,
this process from the back, polling the workers between its own fits. A fit
is the same function on the same codes wherever it runs (the workers read
their layer from the cache file, as on a Dask cluster), so the results are
those of joblib alone.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, wait
from typing import Callable, Iterator

QUEUED_PER_WORKER = 2  # tasks handed to each worker ahead: one running, one waiting while this process fits


def run_here_and_in_pool(here: list[tuple[Callable, tuple]], there: list[tuple[Callable, tuple]],
                         jobs: int) -> Iterator[tuple[int, object]]:
    """Run task ``i`` as ``function(*args)`` of ``here[i]`` in this process or of ``there[i]`` in a worker
    (``jobs - 1`` of them, ``jobs`` >= 2); yield ``(i, result)`` for each, as it is done, in no set order.

    ``here[i]`` and ``there[i]`` must compute the same thing (``there`` pickles cheaply: it ships to a worker).
    An error in a task is raised here; tasks not yet started are then cancelled.
    """
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=jobs - 1, timeout=300)
    front, back = 0, len(here)  # tasks front..back-1 are not started
    running: dict = {}
    try:
        while front < back or running:
            while front < back and len(running) < QUEUED_PER_WORKER * (jobs - 1):
                function, args = there[front]
                running[executor.submit(function, *args)] = front
                front += 1
            # wait for a worker only when nothing is left to fit here
            finished, _ = wait(list(running), timeout=0 if front < back else None, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=running.get):
                i = running.pop(future)
                yield i, future.result()
            if front < back:
                back -= 1
                function, args = here[back]
                yield back, function(*args)
    finally:
        for future in running:
            future.cancel()
