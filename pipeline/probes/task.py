"""The fitting task that the grid and the learning curve hand to their worker processes.

In a module of its own, importing only the probe registry: a worker imports
this module (through the package's lazy ``__init__``) to unpickle the task, and
so not the cache, h5py or the rest of the probe stage.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .registry import ProbeSettings, build_probe, chosen_params


def fit_fold(probe: str, settings: ProbeSettings, X, y: np.ndarray, train: np.ndarray, test: np.ndarray,
             inner: list, seed: int) -> dict:
    """Fit one probe on one training part; return its test-part probabilities.

    ``X`` is the codes, or a :class:`~pipeline.probes.data.LayerSource` that reads them from the cache.
    """
    from threadpoolctl import threadpool_limits

    if not isinstance(X, np.ndarray):
        X = X.load()
    started, cpu = time.perf_counter(), time.process_time()
    # One BLAS thread per task: --jobs decides the parallelism, and results do not depend on it.
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_probe(probe, settings, (len(train), X.shape[1]), inner, seed)
        model.fit(X[train], y[train])
        proba = np.asarray(model.predict_proba(X[test]), dtype=np.float64)
    notes = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught})
    return {"proba": proba, "chosen": chosen_params(model), "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu, "warnings": notes}
