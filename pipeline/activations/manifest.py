"""The manifest of an extraction: everything that produced the numbers, written into the cache."""

from __future__ import annotations

import datetime
import platform
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..cache.manifest import BnStatsInfo, CacheManifest, InputInfo, ModelInfo, RuntimeInfo, WeightsInfo
from ..cache.plan import Plan
from ..cache.writer import input_fingerprint
from .pooling import NO_POOLING, get_pooling


def update_summary(plan: Plan) -> dict:
    return {
        "computed_rows": int(len(plan.compute_all)),
        "rows_with_new_outputs": int(len(plan.compute_missing)),
        "new_outputs": [f"{l}/{p}" for l, p in plan.missing_outputs] if len(plan.compute_missing) else [],
        "reused_rows": int(len(plan.copy_new)),
        "added": len(plan.added),
        "changed": plan.changed[:100],
        "removed": plan.removed[:100],
        "n_removed": len(plan.removed),
        "hidden_rows": int((~plan.rows.active_mask()).sum()),
    }


def build_manifest(*, images, config, loaded, layers, pools, outputs, rows, notes, skipped, key, device,
                   precision) -> CacheManifest:
    """The manifest of one extraction (the cache writer checks it again before sealing)."""
    return CacheManifest(
        model=_model_info(loaded),
        preprocessing=loaded.preprocessing.as_dict(),
        input=_input_info(images, config, rows, notes, skipped),
        outputs=tuple(f"{l}/{p}" for l, p in outputs),
        runtime=_runtime_info(device, precision, config),
        key=key,
        created=now(),
        version=__version__,
        others={
            "layers": [s.as_dict() for s in layers],
            "poolings": list(pools),
            "output_layouts": output_layouts(layers, outputs),
            "config": asdict(config),
        },
    )


def _model_info(loaded) -> ModelInfo:
    w = loaded.weights
    # n_params: the cost side of a model comparison (probes.study), beside the measured throughput
    return ModelInfo(loaded.name, WeightsInfo(w.source, w.sha256, None if w.path is None else str(w.path)),
                     loaded.family, extra={"n_params": int(sum(p.numel() for p in loaded.module.parameters()))})


def _input_info(images, config, rows, notes, skipped) -> InputInfo:
    """What the rows came from: the input's name, kind and root, and what was found and left out there."""
    return InputInfo(
        name=images.name,
        source=images.source,
        root=str(images.root),
        root_resolved=str(Path(images.root).resolve()),
        n_images=len(rows.ids),
        class_names=tuple(rows.class_names),
        has_groups=rows.groups is not None,
        has_split=rows.split is not None,
        fingerprint=input_fingerprint(rows),
        limit=config.limit,
        seed=config.seed,
        skipped=tuple(skipped),
        notes=tuple({"id": r, "note": n} for r, n in zip(rows.ids, notes) if n),
    )


def _runtime_info(device, precision: str, config) -> RuntimeInfo:
    return RuntimeInfo(
        device=_device_name(device),
        precision=precision,
        batch_size=config.batch_size,
        threads=torch.get_num_threads(),
        host=platform.node(),
        platform=platform.platform(),
        python=platform.python_version(),
        packages=_versions(),
    )


def finished(manifest: CacheManifest, duration_s: float, decoding: dict | None = None, folding=None) -> CacheManifest:
    """The manifest stamped when the codes are written: how long it took, when, (``decoding``, from
    :meth:`.feed.Feeder.record`) how the images were fed: ``runtime.workers`` is the decoding processes used,
    and (``folding``, a :class:`.fold.Folding`) which BatchNorm layers were folded into their convolution."""
    runtime = replace(manifest.runtime, duration_s=round(duration_s, 3))
    if decoding is not None:
        runtime = replace(runtime, workers=decoding["processes"], extra={**runtime.extra, "decoding": decoding})
    if folding is not None:
        runtime = replace(runtime, extra={**runtime.extra, "batchnorm_folding": folding.as_dict()})
    return replace(manifest, created=now(), runtime=runtime)


def bn_stats_info(modules: int, images: int, members) -> BnStatsInfo:
    """What the stored BatchNorm sums cover, and which output owns each BatchNorm layer."""
    owned = members.as_dict()
    return BnStatsInfo(modules, images, owned["members"], tuple(owned["after_last"]), tuple(owned["never_ran"]))


def pooled(spec, pooling: str) -> dict:
    """How one (layer, pooling) code was made from its layer's output: the pooling and what it pooled over."""
    over = get_pooling(pooling).pooled_over(spec.layout) if pooling != NO_POOLING else "nothing (a vector)"
    return {"pooling": pooling, "pooled_over": over}


def output_layouts(layers, outputs) -> dict:
    """Per stored output: the layer's layout (format, grid, prefix tokens, class token) and its pooling."""
    by_name = {s.name: s for s in layers}
    return {f"{l}/{p}": {**by_name[l].layout.as_dict(), **pooled(by_name[l], p)} for l, p in outputs}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def _versions() -> dict:
    import h5py
    import PIL
    import timm

    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
