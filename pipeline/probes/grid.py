"""The grid runner: every (layer, probe, fold) fitted in parallel on the same stored folds.

A run reads and checks everything first (labels, groups, codes, folds, inner
folds), then fits. If the results file already exists for the same cache and
split settings, its folds are reused and only missing (layer, probe) rows are
computed, so rows added later are compared on the very same splits.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import __version__
from ..cache import WriterLock, open_cache
from ..errors import CacheInProgressError, ProbeError
from ..duplicates import leaked_rows
from .backends import Backend, get_backend
from .compare import compare_all, default_repeats
from .data import LayerSource, Output, ProbeData, load_probe_data
from .metrics import N_BOOT, Resamples, summarise
from .patients import PatientLevel
from .pool import run_here_and_in_pool
from .registry import PROBES, ProbeSettings, get_probe
from .results import ProbeResults, default_results_path, load_results, write_results
from .splits import Folds, check_folds, inner_splits, make_folds
from .task import fit_fold as _fit_fold

log = logging.getLogger(__name__)

DEFAULT_PROBES = ("logreg", "svm", "lgbm")


@dataclass(frozen=True)
class ProbeConfig:
    """What a probing run is asked to do; written into the results file."""

    probes: tuple[str, ...] = DEFAULT_PROBES
    layers: tuple[str, ...] = ()  # empty: every output of the cache
    folds: int = 5
    repeats: int | None = 1  # None: enough repeats for paired statistics on small data (compare.default_repeats)
    groups: str | None = None  # None: the cache's group column if it has one, else none
    seed: int = 0
    n_boot: int = N_BOOT
    settings: ProbeSettings = field(default_factory=ProbeSettings)

    def __post_init__(self):
        if not self.probes:
            raise ProbeError(f"no probe given; choose one or more of {', '.join(PROBES)}")
        for name in self.probes:
            get_probe(name)
        if self.folds < 2:
            raise ProbeError(f"folds (--folds) must be at least 2, got {self.folds}")
        if self.repeats is not None and self.repeats < 1:
            raise ProbeError(f"repeats (--repeats) must be at least 1, got {self.repeats}")
        if self.n_boot < 0:
            raise ProbeError(f"the number of bootstrap samples cannot be negative, got {self.n_boot}")

    def as_dict(self) -> dict:
        return {**asdict(self), "settings": self.settings.as_dict()}


def _split_settings(config: dict, group_name: str) -> dict:
    """What must match for two runs to share a results file (and so their folds)."""
    keys = {"folds": config["folds"], "repeats": config["repeats"], "groups": group_name, "seed": config["seed"],
            "n_boot": config["n_boot"],
            # through ProbeSettings, so a file written before a setting existed compares with its default
            "settings": ProbeSettings.from_dict(config["settings"]).as_dict()}
    return json.loads(json.dumps(keys))  # tuples and lists compare equal once both are JSON


def _previous(out: Path, data: ProbeData, config: ProbeConfig) -> ProbeResults | None:
    if not out.exists():
        return None
    old = load_results(out)
    if old.cache.get("key") != data.cache_key:
        raise ProbeError(
            f"results file {out} was made from another cache ({old.cache.get('path')}, key "
            f"{str(old.cache.get('key'))[:12]}), not from {data.cache_path} (key {data.cache_key[:12]}); "
            "pass another out (--out), or delete it to start afresh"
        )
    want = _split_settings(config.as_dict(), data.group_name)
    have = _split_settings(old.config, old.data.get("groups", "none"))
    if want != have:
        changed = ", ".join(f"{k} {have[k]!r} -> {want[k]!r}" for k in want if want[k] != have[k] and k != "settings")
        changed = changed or "probe settings"
        raise ProbeError(
            f"results file {out} was made with other split settings ({changed}); rerun with the same options "
            "to add rows to it, or pass another out (--out)"
        )
    if old.data.get("ids_sha256") != data.ids_sha256:
        raise ProbeError(f"results file {out} covers other rows of this cache; pass another out (--out) or delete it")
    if old.data.get("groups_sha256") != data.groups_sha256:
        raise ProbeError(
            f"results file {out} was made with other groups in groups {data.group_name!r} (the column changed "
            "since); its folds no longer keep groups apart: pass another out (--out), or delete it to start afresh"
        )
    return old


def _fits(data: ProbeData, pairs: list[tuple[Output, str]], folds: Folds, inner: dict,
          settings: ProbeSettings, seed: int, jobs: int, progress: bool, here: bool = False
          ) -> Iterator[tuple[tuple, dict]]:
    """Fit every (output, probe, repeat, fold); yield ``(key, result)`` of each as soon as it is done (the pool
    keeps fitting while the caller works on a result).

    The longest fits are handed out first (:func:`_longest_first`), so that the last ones to finish are short
    and no worker waits long for another at the end. ``here``: this process fits too, beside ``jobs - 1``
    workers (:mod:`.pool`). The results do not depend on the order or on where a fit ran.
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    keys, tasks, shipped = [], [], []
    for output, probe in sorted(pairs, key=_longest_first):
        source = LayerSource(str(Path(data.cache_path).resolve()), data.cache_key, output.name, data.rows)
        # one object per layer, so a cluster ships it once
        X = data.codes[output.name] if output.name in data.codes else source
        for r, k, train, test in folds.splits():
            keys.append((output.name, probe, r, k))
            args = (probe, settings, X, data.y, train, test, inner[(r, k)], seed)
            tasks.append((_fit_fold, args))
            shipped.append((_fit_fold, (probe, settings, source, *args[3:])))  # a worker reads its layer
    if here and jobs > 1:
        done = run_here_and_in_pool(tasks, shipped, jobs)
    else:
        done = enumerate(Parallel(n_jobs=jobs, return_as="generator")(delayed(f)(*args) for f, args in tasks))
    with tqdm(total=len(tasks), unit="fit", desc="probing", disable=not progress, file=sys.stderr) as bar:
        for i, result in done:
            bar.update(1)
            yield keys[i], result


def _longest_first(pair: tuple[Output, str]) -> tuple:
    """The widest outputs first, and on each LightGBM first: its time grows with the width, while the linear
    probes reduce wide outputs with PCA (at 400 images a pre_logits fold of LightGBM takes 0.6 s, of the
    others under 0.2 s; a 16-channel output's fold 0.03-0.1 s). Equal keys keep the order of ``pairs``."""
    output, probe = pair
    return -output.channels, probe != "lgbm"


def _row(data: ProbeData, output: Output, probe: str, folds: Folds, done: dict, weights: Resamples,
         patients: PatientLevel | None = None) -> dict:
    """One results row: every metric of one (output, probe) over all folds."""
    oof = out_of_fold(done, output.name, probe, folds, len(data.y), len(data.class_names))
    fold_rows: list[list[np.ndarray]] = [[] for _ in range(folds.repeats)]
    chosen, seconds, cpu, notes = [], 0.0, 0.0, set()
    for r, k, _, test in folds.splits():
        result = done[(output.name, probe, r, k)]
        fold_rows[r].append(test)
        chosen.append({"repeat": r, "fold": k, **result["chosen"]})
        seconds += result["seconds"]
        cpu += result["cpu_seconds"]
        notes.update(result["warnings"])
    row = {**output.as_dict(), "probe": probe, "metrics": summarise(data.y, oof, fold_rows, weights),
           "chosen": chosen, "fit_seconds": round(seconds, 3), "fit_cpu_seconds": round(cpu, 3),
           "warnings": sorted(notes)}
    if patients is not None:
        row["patient_metrics"] = patients.metrics(oof)
    return row


def _order(row: dict) -> tuple:
    names = list(PROBES)
    return (row["depth"], names.index(row["probe"]) if row["probe"] in names else len(names), row["probe"])


def run_probes(
    cache_path: str | Path | list[str | Path],
    config: ProbeConfig = ProbeConfig(),
    out: str | Path | None = None,
    jobs: int = 1,
    progress: bool = True,
    backend: str = "local",
    scheduler: str | None = None,
):
    """Cross-validate every requested probe on every requested layer of a cache.

    Given a list of caches (the same images through several models), runs a
    study on one shared set of folds instead and returns its ``StudyResults``
    (:func:`pipeline.probes.study.run_study`; ``.table()`` is the tidy table).

    Writes the results file ``out`` (default: ``<cache>.probes.json`` beside the
    cache) atomically and returns its contents. Everything is checked before the
    first fit; an existing results file of the same cache and split settings is
    extended, reusing its folds. ``backend`` "dask" fits on the Dask cluster at
    ``scheduler`` (default: a local cluster of ``jobs`` processes); the results
    are the same as with "local".
    """
    if isinstance(cache_path, (list, tuple)):
        from .study import run_study

        return run_study(cache_path, config, out, jobs, progress, backend, scheduler)
    started = time.perf_counter()
    engine = get_backend(backend)
    engine.check(scheduler)
    out = Path(out) if out is not None else default_results_path(cache_path)
    with open_cache(cache_path) as cache:
        data = load_probe_data(cache, config.layers, config.groups, keep_codes=not engine.tasks_read_cache)
    if config.repeats is None:
        config = replace(config, repeats=default_repeats(len(data.y), config.folds))
        log.debug("%d labelled rows: repeats %d, for %d paired estimates", len(data.y), config.repeats,
                 config.repeats * config.folds)
    try:
        lock = WriterLock(out).acquire()
    except CacheInProgressError:
        raise ProbeError(f"{out} is being written by another probe run; wait for it to finish") from None
    try:
        return _run_locked(data, config, out, jobs, progress, started, engine, scheduler)
    finally:
        lock.release()


def _run_locked(data: ProbeData, config: ProbeConfig, out: Path, jobs: int, progress: bool,
                started: float, engine: Backend, scheduler: str | None) -> ProbeResults:
    previous = _previous(out, data, config)
    if previous is not None:
        folds = previous.folds
        check_folds(folds, data.y, data.groups, data.class_names)
    else:
        folds = make_folds(data.y, data.groups, config.folds, config.repeats, config.seed, data.class_names,
                           data.group_name)
    leakage = _leakage(data, folds)
    pairs = [(o, p) for o in data.outputs for p in config.probes
             if previous is None or previous.row(o.name, p) is None]
    if not pairs:
        log.info("%s already holds every requested row: nothing to fit", out)
        return previous
    rows, _, where, patients = score_pairs(data, config, folds, pairs, jobs, progress, engine, scheduler)
    results = _results(data, config, folds, previous, rows, jobs, time.perf_counter() - started)
    if patients is not None:
        results.data["patients"] = {"column": "groups", "n": int(len(patients.names)),
                                    "aggregations": list(rows[0]["patient_metrics"])}
    results.runtime.update({k: where[k] for k in ("backend", "scheduler", "workers")})
    results.comparisons = compare_all(results)
    if leakage is not None:
        results.data["leakage"] = leakage
    write_results(results, out)
    return results


def score_pairs(data: ProbeData, config: ProbeConfig, folds: Folds, pairs: list[tuple[Output, str]], jobs: int,
                progress: bool, engine: Backend, scheduler: str | None) -> tuple[list[dict], dict, dict, object]:
    """Fit and score every (output, probe) of ``pairs`` on ``folds``.

    Returns the results rows, the fitted folds' test-part probabilities by
    ``(output, probe, repeat, fold)`` (see :func:`out_of_fold`), where they ran and
    the patient-level scorer (None without a patient column).
    """
    inner = {(r, k): inner_splits(data.y[train], None if data.groups is None else data.groups[train],
                                  config.settings.inner_folds, config.seed, data.class_names)
             for r, k, train, _ in folds.splits()}
    log.info("fitting %d (layer, probe) pair(s) x %d fold(s) with jobs=%d", len(pairs), len(folds.splits()), jobs)
    weights = Resamples(len(data.y), data.groups, config.n_boot, config.seed)
    patients = PatientLevel.prepare(data.y, data.patients, folds, config.n_boot, config.seed)
    by_name = {(o.name, p): o for o, p in pairs}
    n_folds = len(folds.splits())
    done, rows, finished = {}, {}, {}
    with engine.open(jobs, scheduler) as where:
        # Each row is scored as soon as its last fold is in, while later fits run, not all after the last fit.
        for key, result in _fits(data, pairs, folds, inner, config.settings, config.seed, where["n_jobs"], progress,
                                 here=where["backend"] == "local"):
            done[key] = result
            pair = key[:2]
            finished[pair] = finished.get(pair, 0) + 1
            if finished[pair] == n_folds:
                rows[pair] = _row(data, by_name[pair], pair[1], folds, done, weights, patients)
    return [rows[(o.name, p)] for o, p in pairs], done, where, patients


def out_of_fold(done: dict, output: str, probe: str, folds: Folds, n_rows: int, n_classes: int) -> np.ndarray:
    """(repeats, rows, classes) out-of-fold probabilities of one (output, probe) from :func:`score_pairs`."""
    oof = np.full((folds.repeats, n_rows, n_classes), np.nan)
    for r, k, _, test in folds.splits():
        oof[r, test] = done[(output, probe, r, k)]["proba"]
    return oof


def _leakage(data: ProbeData, folds: Folds) -> dict | None:
    """How many test rows have a near-duplicate in training under these folds (stored clusters only).

    A cache never scanned for duplicates gets a warning instead, before any fit on folds that may leak."""
    if data.duplicates is None:
        if data.group_name not in ("auto", "dup_cluster"):
            log.warning(
                "%s was never scanned for near-duplicates, so the folds use %s; near-duplicates may sit on both "
                "sides of a split and inflate every score. Run `layerprobe duplicates %s` once (it stores the "
                "clusters and makes --groups auto the default), or pass --groups auto now",
                data.cache_path.name, "the group column" if data.group_name == "groups" else "no groups",
                data.cache_path)
        return None
    leaked = max(int(leaked_rows(data.duplicates, test_fold).sum()) for test_fold in folds.test_fold)
    n = len(data.y)
    if leaked:
        log.warning(
            "groups %r leaks: %d of %d test rows (%.1f%%) have a near-duplicate in the training folds, which "
            "inflates every metric; use groups='auto' (--groups auto)", data.group_name, leaked, n, 100.0 * leaked / n,
        )
    return {"rows_with_duplicate_in_training": leaked, "rows": n, "fraction": round(leaked / n, 4)}


def _results(data: ProbeData, config: ProbeConfig, folds: Folds, previous: ProbeResults | None, rows: list[dict],
             jobs: int, seconds: float) -> ProbeResults:
    m = data.manifest
    outputs = {o["output"]: o for o in (previous.outputs if previous else [])}
    outputs.update({o.name: o.as_dict() for o in data.outputs})
    return ProbeResults(
        cache={"path": str(Path(data.cache_path).resolve()), "key": data.cache_key, **m.copy(),
               "input": m.input.summary(), "extract_config": m.get("config", {})},
        config=config.as_dict(),
        data={"n_rows": int(len(data.y)), "class_names": data.class_names, "class_counts": data.class_counts(),
              "ids_sha256": data.ids_sha256, "groups": data.group_name, "groups_sha256": data.groups_sha256,
              "n_groups": None if data.groups is None else int(len(np.unique(data.groups)))},
        folds=folds,
        outputs=sorted(outputs.values(), key=lambda o: o["depth"]),
        rows=sorted((previous.rows if previous else []) + rows, key=_order),
        runtime=_runtime(jobs, seconds),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        version=__version__,
    )


def _runtime(jobs: int, seconds: float) -> dict:
    import joblib
    import lightgbm
    import sklearn

    return {"jobs": jobs, "duration_s": round(seconds, 3), "cpus": os.cpu_count(), "host": platform.node(),
            "platform": platform.platform(), "python": platform.python_version(),
            "packages": {"scikit-learn": sklearn.__version__, "lightgbm": lightgbm.__version__,
                         "numpy": np.__version__, "joblib": joblib.__version__}}
