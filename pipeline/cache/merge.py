"""Merging the shards of one sharded extraction into the cache a single process would write.

`extract --shard I/N` writes N shard caches, and every image is in exactly one
of them (``sha256(id) mod N``). A merge first checks that the files belong
together: the same settings key (model, weights, preprocessing, precision,
input root), outputs, BatchNorm statistics, shard count and input table; every
shard index exactly once; every row in its own shard; every image of the input
in a shard, or among the bad images a shard skipped. Anything else is refused:
a value is never filled in.

It then writes one cache with the rows sorted by id, as a single run sorts them,
streaming the codes block by block through the ordinary :class:`CacheWriter`
(commit marker, metadata digest, fsync, atomic rename), so an interrupted merge
resumes. Its key is the key a single run over the same input computes, so a
later plain `extract` into the merged file finds it up to date.
"""

from __future__ import annotations

import datetime
import logging
import platform
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import CacheError
from . import integrity
from .format import cache_key
from .lock import WriterLock
from .reader import ActivationCache, open_cache
from .manifest import CacheManifest, InputInfo, ShardInfo
from .shards import ids_digest, merged_path, shard_indices, shard_of
from .source import settings_differences
from .writer import CacheWriter, OutputSpec, RowTable, input_fingerprint

log = logging.getLogger(__name__)

BLOCK_BYTES = 64 << 20  # codes gathered per committed block: bounded memory, large sequential reads
@dataclass
class MergeResult:
    """What a merge wrote."""

    path: Path
    rows: int
    shards: int
    seconds: float
    reused: bool
    code_bytes: int = 0  # bytes of codes copied


@dataclass
class _Shard:
    path: Path
    cache: ActivationCache
    read: dict = field(default_factory=dict)  # output -> row hash of the rows read so far

    @property
    def info(self) -> ShardInfo:
        return self.cache.provenance.shard

    @property
    def index(self) -> int:
        return self.info.index

    @property
    def count(self) -> int:
        return self.info.count


def merge_shards(paths: Iterable[str | Path], out: str | Path | None = None, progress: bool = False) -> MergeResult:
    """Check the shard caches of one `extract --shard I/N` run and write them as one cache.

    ``out`` defaults to the shards' common name without ``.shard<I>-of-<N>``.
    An existing cache there with the same key is left as it is; one with the
    same settings (an earlier merge) is replaced atomically; anything else is
    refused.
    """
    started = time.perf_counter()
    with ExitStack() as stack:
        shards = _open_all(paths, stack)
        _check_agree(shards)
        shards = _check_indices(shards)
        rows, source, local = _merged_rows(shards)
        _check_cover(shards, rows)
        target = _target(out, shards)
        ref = shards[0].cache
        key = cache_key({"settings": ref.settings_key, "rows": input_fingerprint(rows), "outputs": ref.outputs,
                         "bn_stats": ref.provenance.bn_stats is not None})
        n_active = int(rows.active_mask().sum())
        with WriterLock(target):
            if _up_to_date(target, ref, key):
                return MergeResult(target, n_active, len(shards), time.perf_counter() - started, True)
            written = _write(target, key, shards, rows, source, local, progress, started)
    return MergeResult(target, n_active, len(shards), time.perf_counter() - started, False, written)


SHARDED = "one sharded extraction (ExtractConfig shard=(I, N), extract --shard I/N)"


# Checks -------------------------------------------------------------------------------------------
def _open_all(paths: Iterable[str | Path], stack: ExitStack) -> list[_Shard]:
    paths = [Path(p) for p in paths]
    if not paths:
        raise CacheError(f"merge needs the shard files of {SHARDED}; none were given")
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in seen:
            raise CacheError(f"cannot merge: {path} is given twice; pass each shard once")
        seen[path.resolve()] = path
    shards = []
    for path in paths:
        try:
            cache = open_cache(path)
        except CacheError as exc:
            raise CacheError(f"cannot merge shard {path}: {exc}") from None
        stack.callback(cache.close)
        if cache.provenance.shard is None:
            raise CacheError(f"cannot merge: {path} is not a shard (it was extracted without shard, --shard); "
                             f"merge takes the N files of {SHARDED} or of a torchrun launch")
        shards.append(_Shard(path, cache))
    return shards


def _check_agree(shards: list[_Shard]) -> None:
    """Every shard against the first: settings, shard count, outputs, input table, BatchNorm sums."""
    first = shards[0]
    a = first.cache.provenance
    for shard in shards[1:]:
        b = shard.cache.provenance
        where = f"cannot merge: {shard.path.name} and {first.path.name}"
        if shard.cache.settings_key != first.cache.settings_key:
            changed = settings_differences(a.source, a.input.root_resolved, b.source, b.input.root_resolved)
            changed = changed or ["format"]
            raise CacheError(f"{where} were made with other settings (different {', '.join(changed)}); every shard "
                             "must come from the same model, weights, preprocessing, precision and input root")
        if shard.count != first.count:
            raise CacheError(f"{where} are shards of different counts ({shard.index} of {shard.count} and "
                             f"{first.index} of {first.count}); pass the files of {SHARDED}")
        if shard.cache.outputs != first.cache.outputs:
            raise CacheError(f"{where} hold other outputs ({', '.join(b.outputs)} against "
                             f"{', '.join(a.outputs)}); extract every shard with the same "
                             "layers and pools (--layers, --pool)")
        if (shard.info.input_table_sha256, shard.info.input_images) != (
                first.info.input_table_sha256, first.info.input_images):
            raise CacheError(
                f"{where} were cut from different inputs ({shard.info.input_images} and "
                f"{first.info.input_images} images, or other labels, groups or splits): the input changed "
                "between the shard runs; extract every shard again (only new images are computed)"
            )
        if (b.bn_stats is None) != (a.bn_stats is None):
            raise CacheError(f"{where}: only one of them has BatchNorm statistics; extract every shard with "
                             "bn_stats=True (--bn-stats), or none")


def _check_indices(shards: list[_Shard]) -> list[_Shard]:
    """Every shard index exactly once; returns the shards in index order."""
    count = shards[0].count
    by_index: dict[int, _Shard] = {}
    for shard in shards:
        if shard.index in by_index:
            raise CacheError(f"cannot merge: {by_index[shard.index].path.name} and {shard.path.name} are both "
                             f"shard {shard.index} of {count}; pass each shard once")
        by_index[shard.index] = shard
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        got = ", ".join(str(i) for i in sorted(by_index))
        raise CacheError(f"cannot merge: shard {', '.join(map(str, missing))} of {count} is missing (got {got}); "
                         f"extract it with shard=({missing[0]}, {count}) (--shard {missing[0]}/{count}) and pass all "
                         f"{count} files")
    return [by_index[i] for i in range(count)]


def _merged_rows(shards: list[_Shard]) -> tuple[RowTable, np.ndarray, np.ndarray]:
    """The merged row table in id order, and for each merged row its shard and its row there."""
    tables = [s.cache.stored_rows() for s in shards]
    for shard, table in zip(shards, tables):
        wrong = np.flatnonzero(shard_indices(table.ids, shard.count) != shard.index)
        if wrong.size:
            first = table.ids[wrong[0]]
            raise CacheError(
                f"cannot merge: {shard.path.name} holds {wrong.size} row(s) of other shards (first: {first!r}, "
                f"which belongs to shard {shard_of(first, shard.count)}); it was not written by "
                f"extract with shard=({shard.index}, {shard.count}) (--shard {shard.index}/{shard.count})"
            )
    ids = np.array([i for t in tables for i in t.ids], dtype=object)
    source = np.repeat(np.arange(len(tables)), [len(t.ids) for t in tables])
    local = np.concatenate([np.arange(len(t.ids)) for t in tables])
    order = np.argsort(ids, kind="stable")
    ids, source, local = ids[order], source[order], local[order]
    twice = np.flatnonzero(ids[1:] == ids[:-1])
    if twice.size:
        k = twice[0]
        raise CacheError(f"cannot merge: id {ids[k]!r} is in both {shards[source[k]].path.name} and "
                         f"{shards[source[k + 1]].path.name}")

    def column(name: str, blank=None):
        present = [getattr(t, name) for t in tables]
        if blank is not None:
            if all(p is None for p in present):
                return None
            # A shard without the column had no value in it, which a single run stores as "".
            present = [p if p is not None else [blank] * len(t.ids) for p, t in zip(present, tables)]
        flat = np.empty(len(ids), dtype=object)
        flat[:] = [v for p in present for v in p]
        return flat[order].tolist()

    rows = RowTable(ids=ids.tolist(), labels=column("labels"), class_names=list(tables[0].class_names),
                    sizes=column("sizes"), sha256=column("sha256"), groups=column("groups", ""),
                    split=column("split", ""), active=[bool(v) for v in column("active")])
    return rows, source, local


def _check_cover(shards: list[_Shard], rows: RowTable) -> None:
    """Together the shards hold every image of their input once (or list it as skipped)."""
    active = [i for i, keep in zip(rows.ids, rows.active_mask()) if keep]
    skipped = [item["id"] for s in shards for item in s.cache.provenance.input.skipped]
    covered = sorted(active + skipped)
    info = shards[0].info
    if len(covered) != info.input_images or ids_digest(covered) != info.input_ids_sha256:
        raise CacheError(
            f"cannot merge: the shards hold {len(active)} image(s) and skipped {len(skipped)}, but do not cover "
            f"the {info.input_images} images of their input exactly once; extract the shards again"
        )


def _target(out: str | Path | None, shards: list[_Shard]) -> Path:
    if out is None:
        out = merged_path(shards[0].path)
        if out is None:
            raise CacheError(f"{shards[0].path.name} is not named like a shard (<name>.shard<I>-of-<N>.h5), so "
                             "the merged cache has no default name; pass out (--out)")
    out = Path(out)
    if any(out.resolve() == s.path.resolve() for s in shards):
        raise CacheError(f"out (--out) {out} is one of the shards; choose another path")
    return out


def _up_to_date(target: Path, ref: ActivationCache, key: str) -> bool:
    """True when ``target`` already is this merge; refuses a file that is not an earlier one."""
    if not target.exists():
        return False
    try:
        with open_cache(target) as cache:
            same_key, same_settings = cache.key == key, cache.settings_key == ref.settings_key
            a, b = cache.provenance, ref.provenance
            changed = settings_differences(a.source, a.input.root_resolved, b.source, b.input.root_resolved)
    except CacheError as exc:
        raise CacheError(f"{target} exists but is not a finished layerprobe cache ({exc}); choose another out (--out) "
                         "or delete it") from None
    if same_key:
        log.info("%s is up to date: it already holds these shards", target)
        return True
    if not same_settings:
        raise CacheError(f"{target} already holds a cache made with other settings (different "
                         f"{', '.join(changed) or 'format'}); choose another out (--out), or delete it")
    log.warning("replacing %s, an earlier cache of the same settings, with the merge", target)
    return False


# Writing ------------------------------------------------------------------------------------------
def _write(target: Path, key: str, shards: list[_Shard], rows: RowTable, source: np.ndarray, local: np.ndarray,
           progress: bool, started: float) -> int:
    ref = shards[0].cache
    specs = _output_specs(ref)
    _check_free_space(target, shards)
    manifest = _manifest(shards, rows, key)
    writer = CacheWriter(target, key, ref.settings_key, manifest, rows, specs, _bn_sums(shards))
    try:
        if not writer.copied:
            writer.copy_rows(None, [], np.zeros(0, int), np.zeros(0, int))  # no rows to reuse: mark it so
        written = _copy_codes(writer, shards, specs, source, local, progress)
        merge = {**manifest.get("merge"), "duration_s": round(time.perf_counter() - started, 3)}
        writer.finish(manifest.with_entries(merge=merge), len(rows.ids))
    finally:
        writer.close()
    return written


def _output_specs(cache: ActivationCache) -> list[OutputSpec]:
    specs = []
    for layer, pooling in cache.outputs:
        info = cache.output_info(layer, pooling)
        attrs = {k: v for k, v in info.items() if k != "shape"}
        specs.append(OutputSpec(layer, pooling, int(info["shape"][1]), attrs))
    return specs


def _check_free_space(target: Path, shards: list[_Shard]) -> None:
    needed = 2 * int(sum(s.path.stat().st_size for s in shards) * 1.05)  # twice: it is sealed on a copy
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if needed > free:
        raise CacheError(f"the merged cache needs about {needed / 1e6:.1f} MB but only {free / 1e6:.1f} MB are "
                         f"free on {target.parent} (it is sealed on a copy, so it needs its size twice); free space "
                         "or choose another out (--out)")


def _copy_codes(writer: CacheWriter, shards: list[_Shard], specs: list[OutputSpec], source: np.ndarray,
                local: np.ndarray, progress: bool) -> int:
    """Fill the merged rows in blocks: contiguous reads from each shard, one contiguous committed write."""
    from tqdm import tqdm

    n = len(source)
    row_bytes = 4 * sum(s.channels for s in specs)
    block = max(1, BLOCK_BYTES // max(1, row_bytes))
    position = writer.rows_committed
    whole = position == 0  # every row of every shard passes through here: check their content hashes after
    with tqdm(total=n, initial=position, unit="row", desc="merging", disable=not progress, file=sys.stderr) as bar:
        while position < n:
            stop = min(n, position + block)
            here, there = source[position:stop], local[position:stop]
            codes = {(s.layer, s.pooling): _gather(shards, s, here, there) for s in specs}
            bar.update(stop - position)
            position = writer.write(position, np.arange(position, stop), codes)
    if whole:
        _check_read(shards, specs)
    else:
        log.info("resumed merge: the shards' content hashes were checked only in the run that read them")
    return n * row_bytes


def _check_read(shards: list[_Shard], specs: list[OutputSpec]) -> None:
    """The codes read from each shard, block by block, against the shard's recorded content hashes."""
    for shard in shards:
        for spec in specs:
            recorded = shard.cache.recorded_hash(spec.layer, spec.pooling)
            read = shard.read.get((spec.layer, spec.pooling), 0)
            if recorded is not None and integrity.rows_hash(read) != recorded:
                raise CacheError(f"cannot merge: the codes of {spec.layer}/{spec.pooling} read from {shard.path} do not "
                                 "match their recorded hash; the shard is damaged: extract it again")


def _gather(shards: list[_Shard], spec: OutputSpec, source: np.ndarray, local: np.ndarray) -> np.ndarray:
    block = np.empty((len(source), spec.channels), dtype=np.float32)
    for index, shard in enumerate(shards):
        mine = source == index
        if mine.any():
            # A shard's rows are sorted by id like the merge, so its rows in any merged block are contiguous.
            rows = local[mine]
            span = slice(int(rows[0]), int(rows[-1]) + 1)
            block[mine] = values = shard.cache.stored_codes(spec.layer, spec.pooling, rows=span)
            key = (spec.layer, spec.pooling)
            shard.read[key] = shard.read.get(key, 0) + integrity.rows_sum(values, range(span.start, span.stop))
    return block


def _bn_sums(shards: list[_Shard]) -> dict | None:
    """BatchNorm sums of the whole set: sums, sums of squares and counts added over the shards."""
    states = [s.cache.bn_state() for s in shards]
    if not states[0]:
        return None
    for shard, state in zip(shards, states):
        if set(state) != set(states[0]):
            raise CacheError(f"cannot merge: {shard.path.name} has BatchNorm statistics of other modules than "
                             f"{shards[0].path.name}")
    total = {}
    for name, first in states[0].items():
        total[name] = {**first,
                       "sum": np.sum([s[name]["sum"] for s in states], axis=0),
                       "sumsq": np.sum([s[name]["sumsq"] for s in states], axis=0),
                       "count": sum(int(s[name]["count"]) for s in states)}
    return total


def _manifest(shards: list[_Shard], rows: RowTable, key: str) -> CacheManifest:
    """The first shard's manifest, made the whole set's: rows, input, update, BatchNorm counts, provenance."""
    made = [s.cache.provenance for s in shards]
    first, bn = made[0], made[0].bn_stats
    return replace(
        first, key=key, created=_now(), shard=None,
        columns={},  # derived columns (duplicates) are per shard; run them on the merged cache
        input=_merged_input(first.input, made, rows),
        bn_stats=bn and replace(bn, images=sum(m.bn_stats.images for m in made)),
        # The shards ran side by side: the slowest one is the extraction's wall time.
        runtime=replace(first.runtime, duration_s=max(float(m.runtime.duration_s or 0) for m in made)),
    ).with_entries(
        config={**(first.get("config") or {}), "shard": None},
        update=_added_updates([m.get("update", {}) for m in made]),
        shards=[{"index": s.index, "path": str(s.path), "key": s.cache.key, "rows": s.cache.n_rows,
                 "created": m.created, "host": m.runtime.host, "device": m.runtime.device,
                 "duration_s": m.runtime.duration_s} for s, m in zip(shards, made)],
        merge={"count": len(shards), "assignment": shards[0].info.assignment, "host": platform.node(),
               "created": _now()},
    )


def _merged_input(first: InputInfo, made: list[CacheManifest], rows: RowTable) -> InputInfo:
    by_id = lambda x: x["id"]  # noqa: E731
    return replace(
        first, n_images=int(rows.active_mask().sum()), has_groups=rows.groups is not None,
        has_split=rows.split is not None, fingerprint=input_fingerprint(rows),
        skipped=tuple(sorted((x for m in made for x in m.input.skipped), key=by_id)),
        notes=tuple(sorted((x for m in made for x in m.input.notes), key=by_id)),
    )


def _added_updates(updates: list[dict]) -> dict:
    total: dict = {}
    for update in updates:
        for name, value in update.items():
            if isinstance(value, list):
                total[name] = list(dict.fromkeys(total.get(name, []) + value))[:100]
            elif isinstance(value, int):
                total[name] = total.get(name, 0) + value
    return total


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
