"""The extract stage: images -> model -> pooled codes of many layers -> one HDF5 cache."""

from __future__ import annotations

import logging
import re
import shutil
import sys
import time
from contextlib import closing, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..cache import CacheWriter, OutputSpec, RowTable, WriterLock, cache_key, open_cache, partial_path
from ..cache.manifest import ShardInfo
from ..cache.plan import Plan, make_plan
from ..cache.source import CodeSource, settings_differences
from ..cache.shards import shard_path
from ..cache.writer import input_fingerprint
from ..errors import CacheError, PipelineError
from ..inputs import ImageSet
from ..inputs.decode import PIL_DECODER
from ..inputs.fingerprint import FINGERPRINT_POLICY, WIDTH
from ..model import (LOGITS, PRE_LOGITS, LayerSpec, LoadedModel, batchnorm_members, batchnorm_modules, build_model,
                     resolve_layers)
from .allocator import steady_allocator
from .bnstats import BatchNormStats, empty_state
from .checking import CheckAhead, sort_out
from . import warm
from .config import DEFAULT_CACHE_DIR, DEFAULT_MODEL, ExtractConfig, ExtractResult, precision_of, select_images  # noqa: F401
from .warm import file_identity
from .fingerprints import complete_fingerprints
from .manifest import bn_stats_info, build_manifest, finished, pooled, update_summary
from .feed import Feeder
from .fold import Folding, folded_batchnorm
from .loader import ImageFiles, resolve_device
from .pooling import check_poolings
from .threads import keeps_threads
from .tap import LayerTap, output_keys

log = logging.getLogger(__name__)


@keeps_threads  # a notebook's later numpy/scikit-learn work runs with the threads it had
def extract(
    images: ImageSet,
    config: ExtractConfig = ExtractConfig(),
    out: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    progress: bool = True,
) -> ExtractResult:
    """Run one forward pass per batch over ``images`` and cache every requested layer.

    Incremental: an existing cache of the same settings at the target path is
    reused row by row. Only new or changed images, and only outputs it lacks,
    are computed; with nothing to do there is no forward pass at all.

    With ``config.shard = (I, N)`` only the images with ``sha256(id) mod N == I``
    are extracted, into the cache path with ``.shard<I>-of-<N>`` before its
    suffix; :func:`pipeline.cache.merge_shards` joins the N shards.
    """
    started = time.perf_counter()
    images, shard = select_images(images, config)
    identities = [file_identity(r.path) for r in images.records]  # before hashing: see warm.record
    with CheckAhead(images, progress) as ahead:  # files are checked while the model is built
        loaded = build_model(config.model, config.weights, config.random_init, config.img_size)
        requested = resolve_layers(loaded, config.layers)
        check_poolings(requested, config.pools)
        device = resolve_device(config.device)
        feeder = Feeder(config.workers, device, config.batch_size)
        precision = precision_of(config, device.type)
        source, root = _source(loaded, precision, images.decoder), str(Path(images.root).resolve())
        settings_key = source.settings_key(root)
        path = Path(out) if out is not None else Path(cache_dir) / _default_name(images.name, config.model,
                                                                                   settings_key)
        if shard is not None:
            path = shard_path(path, *config.shard)
        checks = ahead.take(_decoded_before(path, settings_key))
    images, checks, skipped = sort_out(images, checks, config.on_bad_image)
    current = _row_table(images, checks)
    remember = lambda result: _remember(result, images, config, out, cache_dir, identities, current,  # noqa: E731
                                        loaded, device, shard)

    with WriterLock(path, wait=config.wait), _previous(path, source, root, settings_key) as previous:
        layers, pools, outputs = _union(loaded, requested, config.pools, previous)
        plan = make_plan(current, outputs, *((previous.stored_rows(), previous.outputs) if previous else ()))
        plan, bn_start, bn_members = _plan_bn_stats(plan, loaded, layers, config, previous)
        key = _content_key(settings_key, plan, bn_start is not None, shard)
        if previous is not None and previous.key == key:
            log.info("%s is up to date: nothing to extract", path)
            return remember(ExtractResult(path, previous.n_rows, True, time.perf_counter() - started, 0, skipped))
        if plan.removed:
            log.warning("%d image(s) in %s are no longer in the input and are left out, e.g. %s",
                        len(plan.removed), path.name, ", ".join(plan.removed[:3]))
        specs = _output_specs(layers, outputs)
        _check_free_space(path, len(plan.rows.ids), specs)
        notes = [c.note for c in checks]
        manifest = build_manifest(images=images, config=config, loaded=loaded, layers=layers, pools=pools,
                                  outputs=outputs, rows=current, notes=notes, skipped=skipped, key=key, device=device,
                                  precision=precision)
        bn = None if bn_start is None else bn_stats_info(len(bn_start), int(plan.rows.active_mask().sum()), bn_members)
        # the preprocessing with the input's decoding policy (DICOM window, NIfTI scaling) as its colour entry
        manifest = replace(manifest, shard=shard, bn_stats=bn, preprocessing=source.preprocessing).with_entries(
            update=update_summary(plan), fingerprints=FINGERPRINT_POLICY)
        writer = CacheWriter(path, key, settings_key, manifest, plan.rows, specs, bn_start, fingerprint_width=WIDTH)
        try:
            if not writer.copied:
                writer.copy_rows(previous.stored_codes if previous else None, plan.copy_outputs,
                                 plan.copy_new, plan.copy_old)
            prints: dict[int, np.ndarray] = {}
            with steady_allocator():  # each batch's feature maps reuse the last one's pages
                passes, folding = _compute(writer, plan, images, loaded, layers, tuple(pools), device, feeder,
                                           config, progress, bn_members.order if bn_members else None, prints)
            fingerprints = complete_fingerprints(plan.rows, prints, previous, images)
            writer.finish(finished(manifest, time.perf_counter() - started, feeder.record(), folding), plan.planned,
                          fingerprints)
        finally:
            writer.close()
    return remember(ExtractResult(path, len(current.ids), False, time.perf_counter() - started, passes, skipped))


def _remember(result: ExtractResult, images, config, out, cache_dir, identities, rows, loaded, device, shard):
    """Leave the record that lets a warm re-run answer without torch (:mod:`.warm`); return ``result``."""
    weights = loaded.weights.path if loaded.weights.source != "random-init" else None
    warm.record(images, config, out, cache_dir, identities, rows, result, weights, device.type, shard)
    return result


def _decoded_before(path: Path, settings_key: str) -> set[str]:
    """Content hashes of the images an existing cache of these settings already decoded.

    Only an optimisation (their test decode is skipped), so any problem reading
    the cache just means every file is decoded; the plan itself is made later,
    under the writer lock.
    """
    if not path.exists():
        return set()
    try:
        with open_cache(path) as cache:
            return set(cache.stored_rows().sha256) if cache.settings_key == settings_key else set()
    except CacheError:
        return set()


def _row_table(images: ImageSet, checks) -> RowTable:
    return warm.rows_of(images, [c.size for c in checks], [c.sha256 for c in checks])


def code_preprocessing(loaded: LoadedModel, decoder) -> dict:
    """The model's preprocessing with the input decoder's policy as its ``colour`` entry.

    Image files keep the colour policy they always had (so their cache keys do
    not change); a DICOM or NIfTI window is part of what makes the numbers.
    """
    return {**loaded.preprocessing.as_dict(), "colour": decoder.policy()}


def _source(loaded: LoadedModel, precision: str, decoder=PIL_DECODER) -> CodeSource:
    """What makes one row's numbers: the same source gives the same codes for the same bytes."""
    return CodeSource(loaded.name, loaded.weights.sha256, code_preprocessing(loaded, decoder), precision)


def _content_key(settings_key: str, plan: Plan, bn_stats: bool, shard: ShardInfo | None = None) -> str:
    parts = {"settings": settings_key, "rows": input_fingerprint(plan.rows), "outputs": plan.outputs,
             "bn_stats": bn_stats}
    if shard is not None:
        # A shard is a shard of one input: when any image is added elsewhere, this shard is sealed again
        # (its rows copied, no forward pass) so that `merge` can check that all shards saw the same input.
        # Unsharded keys stay as they were, and a merge of the shards gets the unsharded key.
        parts["shard"] = [shard.index, shard.count, shard.input_table_sha256]
    return cache_key(parts)


def _plan_bn_stats(plan: Plan, loaded: LoadedModel, layers: list[LayerSpec], config: ExtractConfig, previous):
    """Where BatchNorm sums start, which rows must be forwarded for them, and which output owns each layer.

    Once a cache has BatchNorm statistics every later run keeps them exact. When
    only images were added, the earlier sums carry on; otherwise every image is
    forwarded again (outputs that are already cached are not rewritten). Each
    BatchNorm layer belongs to the first of the cache's outputs that runs at or
    after it (:func:`pipeline.model.batchnorm_members`).
    """
    earlier = previous.bn_state() if previous is not None else {}
    if not (config.bn_stats or earlier):
        return plan, None, None
    if not batchnorm_modules(loaded.module):
        raise PipelineError(
            f"{loaded.name} has no BatchNorm layers with running statistics, so bn_stats (--bn-stats) has nothing to "
            "compare with ImageNet; choose a model with BatchNorm (an EfficientNet, ResNet, ...)"
        )
    members = batchnorm_members(loaded, [s.name for s in layers])
    if earlier and not plan.removed and not plan.changed:
        rank = {name: i for i, name in enumerate(members.order)}  # caches made before depth was firing order
        return plan, {name: {**e, "depth": rank.get(name, e["depth"])} for name, e in earlier.items()}, members
    active = plan.rows.active_mask()
    reused = np.array([k for k in plan.copy_new if active[k]], dtype=int)
    return replace(plan, compute_missing=reused), empty_state(loaded.module, members.order), members


@contextmanager
def _previous(path: Path, source: CodeSource, root: str, settings_key: str):
    """The finished cache at ``path`` if it has the same settings; refuse anything else there."""
    if not path.exists():
        yield None
        return
    try:
        cache = open_cache(path)
    except CacheError as exc:
        raise CacheError(f"{path} exists but is not a finished layerprobe cache ({exc}); "
                         "choose another out (--out) or delete it") from None
    try:
        if cache.settings_key != settings_key:
            before = cache.provenance
            changed = settings_differences(before.source, before.input.root_resolved, source, root)
            raise CacheError(
                f"{path} already holds a cache made with other settings (different {', '.join(changed) or 'format'}); "
                "choose another out (--out), or delete it to extract again"
            )
        yield cache
    finally:
        cache.close()


def _union(loaded: LoadedModel, requested: list[LayerSpec], pools, previous):
    """Layers, poolings and outputs of the new cache: what was stored plus what is asked for."""
    asked = output_keys(requested, tuple(pools))
    if previous is None:
        return requested, list(pools), asked
    layers = resolve_layers(loaded, [s["name"] for s in previous.provenance.get("layers", [])] + [s.name for s in requested])
    all_pools = list(dict.fromkeys(list(previous.provenance.get("poolings", [])) + list(pools)))
    wanted = set(previous.outputs) | set(asked)
    outputs = [k for k in output_keys(layers, tuple(all_pools)) if k in wanted]
    used = {layer for layer, _ in outputs}
    return [s for s in layers if s.name in used], all_pools, outputs


def _output_specs(layers: list[LayerSpec], outputs) -> list[OutputSpec]:
    by_name = {s.name: s for s in layers}
    return [OutputSpec(layer, pooling, by_name[layer].channels, {**by_name[layer].as_dict(), **pooled(by_name[layer], pooling)})
            for layer, pooling in outputs]


def _check_free_space(path: Path, rows: int, specs: list[OutputSpec]) -> None:
    """Refuse to start a run that cannot fit on the disk: the cache twice, as it is sealed on a copy."""
    size = int(rows * sum(s.channels for s in specs) * 4 * 1.05) + rows * 200 + (1 << 20)
    needed = 2 * size
    partial = partial_path(path)
    if partial.exists():
        needed -= partial.stat().st_size
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise CacheError(
            f"the cache needs about {needed / 1e6:.1f} MB but only {free / 1e6:.1f} MB are free on "
            f"{path.parent} (it is sealed on a copy, so it needs its size twice); free space or choose another out "
            "(--out)"
        )


def _default_name(dataset: str, model: str, key: str) -> str:
    slug = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "images"  # noqa: E731
    return f"{slug(dataset)}-{slug(model)}-{key[:12]}.h5"


def _compute(writer, plan: Plan, images: ImageSet, loaded, layers, pools, device, feeder: Feeder, config, progress,
             bn_order=None, prints: dict | None = None) -> tuple[int, Folding | None]:
    """Forward passes for the planned rows: new images (every output), then reused ones (new outputs).

    The fingerprint of every image decoded goes into ``prints`` (row -> fingerprint). Returns the forward
    passes and what BatchNorm folding did (None when nothing was computed)."""
    from tqdm import tqdm

    missing_layers = {layer for layer, _ in plan.missing_outputs}
    position, offset, passes, folding = writer.rows_committed, 0, 0, None
    segments = []  # (rows still to compute, their layers, their outputs)
    for rows, seg_layers, seg_outputs in [
        (plan.compute_all, layers, plan.outputs),
        (plan.compute_missing, [s for s in layers if s.name in missing_layers], plan.missing_outputs),
    ]:
        segments.append((rows[max(0, position - offset):], seg_layers, seg_outputs))
        offset += len(rows)
    if not any(len(todo) for todo, _, _ in segments):
        return passes, folding
    model = loaded.module.to(device, memory_format=torch.channels_last)
    precision = precision_of(config, device.type)
    autocast = _autocast(precision, device)
    bn_state = writer.bn_state()
    bn = BatchNormStats(model, loaded.preprocessing.input_size[-1], bn_order) if bn_state else None
    if bn is not None:
        bn.load(bn_state)
    records = {r.id: r for r in images.records}
    bar = tqdm(total=plan.planned, initial=position, unit="img", desc="extracting", disable=not progress,
               file=sys.stderr)
    observed = [s.name for s in layers if s.name not in (PRE_LOGITS, LOGITS)]
    why_not = _why_not_fold(config, bn is not None, precision)
    try:
        with bar, folded_batchnorm(model, loaded.preprocessing.input_size, observed, why_not) as folding:
            for todo, seg_layers, seg_outputs in segments:
                if not len(todo):
                    continue
                chosen = [records[plan.rows.ids[k]] for k in todo]
                dataset = ImageFiles([r.path for r in chosen], loaded.preprocessing.transform(),
                                     decoder=images.decoder, frames=[r.frame for r in chosen])
                with LayerTap(loaded, seg_layers, pools, full_pass=bn is not None) as tap, \
                        closing(feeder.batches(dataset)) as batches:  # closing stops a decoding thread
                    for local, batch, batch_prints in batches:
                        if prints is not None:
                            prints.update(zip(todo[local.numpy()].tolist(), batch_prints.numpy()))
                        batch = batch.to(device, non_blocking=device.type == "cuda").contiguous(
                            memory_format=torch.channels_last)
                        with autocast:
                            codes = tap.run(batch)
                        block = {k: codes[k].cpu().numpy().astype(np.float32, copy=False) for k in seg_outputs}
                        position = writer.write(position, todo[local.numpy()], block,
                                                bn.state() if bn is not None else None)
                        bar.update(len(local))
                    passes += tap.forward_passes
    finally:
        if bn is not None:
            bn.close()
    return passes, folding


#: The precisions (values of :data:`.config.PRECISIONS`) computed under autocast, and their 16-bit type.
AUTOCAST_DTYPES = {"bfloat16-autocast": torch.bfloat16, "float16-autocast": torch.float16}


def _why_not_fold(config: ExtractConfig, bn_stats: bool, precision: str) -> str | None:
    """Why BatchNorm is not folded in this run, or None when it is."""
    if not config.fold_batchnorm:
        return "fold_batchnorm=False (--no-fold-batchnorm)"
    if bn_stats:
        return "bn_stats (--bn-stats) sums each BatchNorm's input"
    if precision in AUTOCAST_DTYPES:
        # autocast rounds the folded weights to 16 bits; unfolded, BatchNorm's scale stays in float32 (on
        # Br35H bf16 moved the probes' AUC by up to 0.015 folded, 0.007 unfolded: BENCHMARKS.md)
        return f"computing in {precision}, which would round the folded weights"
    return None


def _autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` (a value of :data:`.config.PRECISIONS`) on ``device``."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
