"""The manifest of an extraction: everything that produced the numbers, written into the cache."""

from __future__ import annotations

import datetime
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import __version__
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
                   precision) -> dict:
    """The manifest of one extraction as the cache stores it (checked by ``CacheManifest`` when sealed)."""
    return {
        "layerprobe": __version__,
        "key": key,
        "created": now(),
        "model": {"name": loaded.name, "family": loaded.family, "weights": loaded.weights.as_dict(),
                  # the cost side of a model comparison (probes.study), beside the measured throughput
                  "n_params": int(sum(p.numel() for p in loaded.module.parameters()))},
        "layers": [s.as_dict() for s in layers],
        "poolings": list(pools),
        "outputs": [f"{l}/{p}" for l, p in outputs],
        "output_layouts": output_layouts(layers, outputs),
        "preprocessing": loaded.preprocessing.as_dict(),
        "input": {
            "name": images.name,
            "source": images.source,
            "root": str(images.root),
            "root_resolved": str(Path(images.root).resolve()),
            "n_images": len(rows.ids),
            "class_names": list(rows.class_names),
            "has_groups": rows.groups is not None,
            "has_split": rows.split is not None,
            "fingerprint": input_fingerprint(rows),
            "limit": config.limit,
            "seed": config.seed,
            "skipped": skipped,
            "notes": [{"id": r, "note": n} for r, n in zip(rows.ids, notes) if n],
        },
        "config": asdict(config),
        "runtime": {
            "device": _device_name(device),
            "precision": precision,
            "batch_size": config.batch_size,
            "threads": torch.get_num_threads(),
            "host": platform.node(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "packages": _versions(),
        },
    }


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
