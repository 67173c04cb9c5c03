"""A study across caches: several models' codes of the same images probed on one set of folds.

Each cache is probed exactly as ``run_probes`` probes it alone, but every cache
gets the same folds, inner folds and bootstrap resamples, so every
(model, output, probe) row of the one results file is paired with every other
and the corrected resampled t-test (:mod:`.compare`) extends across models.

Rows are matched by image id and by the digest of the image file: caches of
different image sets (or of the same names with other contents) are refused
with the differing ids named. Groups are joined over the caches (two rows in
one group of any cache share a fold), so near-duplicates found by either
model's codes stay on one side of every split.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..cache import open_cache
from ..duplicates import leaked_rows
from ..errors import ProbeError
from .backends import get_backend
from .compare import ModelComparison, compare_all, compare_models, default_repeats, holdout_ratio
from .data import ProbeData, load_probe_data
from .grid import ProbeConfig, _runtime, out_of_fold, score_pairs
from .splits import make_folds
from .study_results import StudyResults, default_study_path, write_study

log = logging.getLogger(__name__)

HEADLINE = ("roc_auc", "balanced_accuracy")  # the first the rows hold picks the chosen (model, layer, probe)


@dataclass
class Member:
    """One cache of a study, its rows already put in the study's order."""

    label: str
    data: ProbeData
    hashes: np.ndarray
    groups: np.ndarray | None  # before joining
    group_name: str
    about: dict  # cache, cost, duplicates


def run_study(
    cache_paths: list[str | Path],
    config: ProbeConfig = ProbeConfig(),
    out: str | Path | None = None,
    jobs: int = 1,
    progress: bool = True,
    backend: str = "local",
    scheduler: str | None = None,
) -> StudyResults:
    """Probe every cache in ``cache_paths`` on one shared set of folds; write one results file.

    Everything is read and checked first (same images in every cache, labels,
    groups, codes). ``out`` defaults to ``study-<digest>.study.json`` beside the
    first cache. The rows of each model equal those of ``run_probes`` on that
    cache alone with the same folds.
    """
    started = time.perf_counter()
    paths = [Path(p) for p in cache_paths]
    if not paths:
        raise ProbeError("a study needs at least one cache")
    if len({p.resolve() for p in paths}) < len(paths):
        raise ProbeError(f"a cache is listed twice among {', '.join(map(str, paths))}; list each once")
    engine = get_backend(backend)
    engine.check(scheduler)
    members = [_read(p, config, not engine.tasks_read_cache) for p in paths]
    _label(members)
    _align(members)
    group_name, groups = _joined_groups(members)
    ref = members[0].data
    if config.repeats is None:
        config = replace(config, repeats=default_repeats(len(ref.y), config.folds))
    folds = make_folds(ref.y, groups, config.folds, config.repeats, config.seed, ref.class_names, group_name)
    plain = make_folds(ref.y, None, config.folds, 1, config.seed, ref.class_names)
    rows, oof, where = [], {}, {}
    for m in members:
        data = replace(m.data, groups=groups, group_name=group_name)
        pairs = [(o, p) for o in data.outputs for p in config.probes]
        got, done, where, _ = score_pairs(data, config, folds, pairs, jobs, progress, engine, scheduler)
        rows += [{"backbone": m.label, **r} for r in got]
        oof.update({(m.label, o.name, p): (done, o.name, p) for o, p in pairs})
        m.about["leakage"] = _leakage(m.data.duplicates, folds, plain)
    study = StudyResults(
        models=[{"label": m.label, **m.about, "outputs": [o.as_dict() for o in m.data.outputs]} for m in members],
        config=config.as_dict(),
        data=_data(ref, group_name, groups),
        folds=folds, rows=rows,
        runtime={**_runtime(jobs, time.perf_counter() - started),
                 **{k: where.get(k) for k in ("backend", "scheduler", "workers")}},
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        version=__version__,
    )
    for m in study.models:
        m["comparisons"] = compare_all(study.model_results(m["label"]))
    _compare(study)
    if study.chosen:
        done, output, probe = oof[(study.chosen["backbone"], study.chosen["output"], study.chosen["probe"])]
        proba = out_of_fold(done, output, probe, folds, len(ref.y), len(ref.class_names))
        study.predictions = {"proba": np.round(proba, 6).tolist()}
    study.runtime["duration_s"] = round(time.perf_counter() - started, 3)
    out = Path(out) if out is not None else default_study_path(paths)
    write_study(study, out)
    return study


def _read(path: Path, config: ProbeConfig, keep_codes: bool) -> Member:
    with open_cache(path) as cache:
        data = load_probe_data(cache, config.layers, config.groups, keep_codes=keep_codes)
        hashes = cache.file_sha256[data.rows]
        extras = cache.extras()
        manifest = cache.provenance
    about = {"cache": {"path": str(path.resolve()), "key": data.cache_key, **manifest.copy(),
                       "input": manifest.input.summary(), "extract_config": manifest.get("config", {})},
             "name": manifest.model.name, "root": manifest.input.settings_root,
             "cost": model_cost(manifest), "duplicates": extras.get("dup_clusters")}
    return Member("", data, hashes, data.groups, data.group_name, about)


def model_cost(manifest) -> dict:
    """What running a model costs, from its cache's manifest: parameters and measured extraction throughput.

    The throughput is the images computed by the extraction that wrote the cache
    over its wall time (decoding included), on the device it names; None where
    the manifest does not tell (older caches, rows copied from a previous run only).
    """
    computed = (manifest.get("update") or {}).get("computed_rows")
    seconds = manifest.runtime.duration_s
    rate = computed / seconds if computed and seconds else None
    return {"n_params": manifest.model.extra.get("n_params"), "images_per_s": None if rate is None else round(rate, 3),
            "extract_seconds": seconds, "images_computed": computed, "device": manifest.runtime.device,
            "batch_size": manifest.runtime.batch_size,
            "input_size": (manifest.preprocessing or {}).get("input_size")}


def _label(members: list[Member]) -> None:
    """Each model's name; where two caches share it, the input size, then the cache key, tell them apart."""
    names = [m.about["name"].replace(" | ", " ") for m in members]
    sizes = [m.about["cost"]["input_size"] for m in members]
    labels = [n if names.count(n) == 1 else f"{n}@{s[-1]}px" if s else n for n, s in zip(names, sizes)]
    labels = [lab if labels.count(lab) == 1 else f"{lab}#{m.data.cache_key[:8]}" for lab, m in zip(labels, members)]
    for m, lab in zip(members, labels):
        m.label = lab


def _align(members: list[Member]) -> None:
    """Put every cache's rows in the first cache's order; refuse caches of other images or labels."""
    ref = members[0]
    where = {i: k for k, i in enumerate(ref.data.ids)}
    for m in members[1:]:
        mine, theirs = set(m.data.ids), set(ref.data.ids)
        if mine != theirs:
            only_ref, only_mine = sorted(theirs - mine), sorted(mine - theirs)
            raise ProbeError(
                f"{Path(m.about['cache']['path']).name} and {Path(ref.about['cache']['path']).name} hold different "
                f"labelled images: {_some(only_ref)} only in the first ({len(only_ref)}), {_some(only_mine)} only in "
                f"the second ({len(only_mine)}); extract every model from the same images"
            )
        order = np.argsort([where[i] for i in m.data.ids], kind="stable")
        m.data = _reorder(m.data, order)
        m.hashes, m.groups = m.hashes[order], None if m.groups is None else m.groups[order]
        differ = ref.data.ids[m.hashes != ref.hashes]
        if differ.size:
            raise ProbeError(
                f"{differ.size} image(s) have the same id but other file contents in "
                f"{Path(m.about['cache']['path']).name} than in {Path(ref.about['cache']['path']).name}: "
                f"{_some(differ.tolist())}; extract every model from the same files"
            )
        if m.data.class_names != ref.data.class_names or (m.data.y != ref.data.y).any():
            bad = ref.data.ids[m.data.y != ref.data.y] if m.data.class_names == ref.data.class_names else []
            raise ProbeError(
                f"{Path(m.about['cache']['path']).name} labels the images otherwise (classes "
                f"{m.data.class_names} vs {ref.data.class_names}; {_some(list(bad))} differ); extract every model "
                "from the same labelled input"
            )


def _some(ids: list[str], n: int = 5) -> str:
    return "none" if not ids else ", ".join(ids[:n]) + (", ..." if len(ids) > n else "")


def _reorder(data: ProbeData, order: np.ndarray) -> ProbeData:
    return replace(data, rows=data.rows[order], ids=data.ids[order], y=data.y[order],
                   groups=None if data.groups is None else data.groups[order],
                   patients=None if data.patients is None else data.patients[order],
                   codes={k: v[order] for k, v in data.codes.items()},
                   duplicates=None if data.duplicates is None else data.duplicates[order])


def _joined_groups(members: list[Member]) -> tuple[str, np.ndarray | None]:
    """One group per row that keeps every cache's groups whole: rows grouped in any cache share a group."""
    present = [m for m in members if m.groups is not None]
    names = list(dict.fromkeys(m.group_name for m in members))
    name = names[0] if len(names) == 1 else "+".join(names)
    if not present:
        return name, None
    if all(np.array_equal(m.groups, present[0].groups) for m in present):
        return name, present[0].groups  # the very groups a single-cache run uses
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n, offset, src, dst = len(present[0].groups), 0, [], []
    for m in present:
        _, inverse = np.unique(m.groups, return_inverse=True)
        src.append(np.arange(n))
        dst.append(n + offset + inverse)
        offset += int(inverse.max()) + 1
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n + offset, n + offset))
    _, component = connected_components(graph, directed=False)
    log.info("groups joined over %d caches: %d groups", len(present), len(np.unique(component[:n])))
    return f"{name} (joined over {len(present)} caches)", np.char.add("g", component[:n].astype(str))


def _leakage(duplicates: np.ndarray | None, folds, plain) -> dict | None:
    """Test rows with a near-duplicate (by this model's stored clusters) in training: study folds and a plain split."""
    if duplicates is None:
        return None
    n = len(duplicates)
    study = max(int(leaked_rows(duplicates, t).sum()) for t in folds.test_fold)
    random = int(leaked_rows(duplicates, plain.test_fold[0]).sum())
    return {"rows": n, "study_folds": study, "plain_folds": random, "plain_fraction": round(random / n, 4)}


def _data(ref: ProbeData, group_name: str, groups: np.ndarray | None) -> dict:
    import hashlib

    return {"n_rows": int(len(ref.y)), "class_names": ref.class_names, "class_counts": ref.class_counts(),
            "ids_sha256": ref.ids_sha256, "groups": group_name,
            "groups_sha256": None if groups is None else hashlib.sha256("\n".join(groups).encode()).hexdigest(),
            "n_groups": None if groups is None else int(len(np.unique(groups))),
            "ids": ref.ids.tolist(), "y": ref.y.tolist()}


def _compare(study: StudyResults) -> None:
    """Every probe's (model, output) candidates against the best; the chosen one is the cheapest tied."""
    ratio = holdout_ratio(study.folds.test_fold)
    n_classes = len(study.data["class_names"])
    for metric in HEADLINE:
        probes = dict.fromkeys(r["probe"] for r in study.rows if metric in r["metrics"])
        for probe in probes:
            try:
                c = compare_models(study.rows, metric, ratio, n_classes, probe)
            except ProbeError:
                continue
            study.comparisons.setdefault(metric, {})[probe] = {**c.as_dict(), "cheapest": cheapest(c, study)}
    for metric in HEADLINE:
        if metric in study.comparisons:
            headline = compare_models(study.rows, metric, ratio, n_classes)
            model, output = cheapest(headline, study)
            study.chosen = {"metric": metric, "probe": headline.probe, "backbone": model, "output": output,
                            "best": list(headline.best), "tied": len(headline.tied)}
            return


def cheapest(comparison: ModelComparison, study: StudyResults) -> list[str]:
    """The (model, output) of the tied set whose model costs least to run (highest measured throughput where
    every tied model has one, then fewest parameters), at that model's best tied output (then the narrower code).

    The output is the best, not the narrowest, of the cheapest model: with few folds the tied set can be wide,
    and a shallow layer tied only through a wide interval would be a poor pick."""
    cost = {m["label"]: m["cost"] for m in study.models}
    width = {(m["label"], o["output"]): o["channels"] for m in study.models for o in m["outputs"]}
    tied = [c for c in comparison.candidates if (c.model, c.output) in comparison.tied]
    timed = all(cost[c.model]["images_per_s"] for c in tied)

    def key(c):
        rate = cost[c.model]["images_per_s"] if timed else None
        params = cost[c.model]["n_params"]
        return (-(rate or 0.0), params if params is not None else float("inf"), -c.score.mean,
                width[(c.model, c.output)])

    best = min(tied, key=key)
    return [best.model, best.output]

