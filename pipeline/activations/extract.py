"""The extract stage: images -> model -> pooled codes of many layers -> one HDF5 cache."""

from __future__ import annotations

import datetime
import hashlib
import logging
import platform
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..cache import CacheWriter, OutputSpec, RowTable, WriterLock, cache_key, open_cache
from ..errors import BadImageError, CacheError, PipelineError
from ..inputs import ImageSet, check_files, stratified_subset
from ..model import LayerSpec, LoadedModel, build_model, resolve_layers
from .loader import ImageFiles, default_workers, make_loader, resolve_device
from .pooling import get_pooling
from .tap import LayerTap, output_keys

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("error", "skip")
DEFAULT_MODEL = "tf_efficientnet_lite0"
DEFAULT_CACHE_DIR = Path("cache")


@dataclass(frozen=True)
class ExtractConfig:
    """Everything the extract stage is asked to do; written into the manifest."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    random_init: bool = False
    layers: tuple[str, ...] = ("all",)
    pools: tuple[str, ...] = ("avg",)
    img_size: int | None = None
    batch_size: int = 32
    device: str = "auto"
    workers: int | None = None
    limit: int | None = None
    seed: int = 0
    on_bad_image: str = "error"
    wait: bool = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise PipelineError(f"batch size must be at least 1, got {self.batch_size}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise PipelineError(f"--on-bad-image must be one of {BAD_IMAGE_POLICIES}, got {self.on_bad_image!r}")
        if not self.pools:
            raise PipelineError("no pooling given; choose one or more of avg, max, avgmax, gem")
        for name in self.pools:
            get_pooling(name)


@dataclass
class ExtractResult:
    """What an extraction produced, for the CLI's summary and for tests."""

    path: Path
    rows: int
    reused: bool
    seconds: float
    forward_passes: int = 0
    skipped: list[dict] = field(default_factory=list)


def extract(
    images: ImageSet,
    config: ExtractConfig = ExtractConfig(),
    out: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    progress: bool = True,
) -> ExtractResult:
    """Run one forward pass per batch over ``images`` and cache every requested layer.

    Returns at once, with zero forward passes, when ``out`` (or the default,
    content-addressed path) already holds a finished cache of the same key.
    """
    started = time.perf_counter()
    if config.limit is not None:
        images = stratified_subset(images, config.limit, config.seed)
    loaded = build_model(config.model, config.weights, config.random_init, config.img_size)
    layers = resolve_layers(loaded, config.layers)
    device = resolve_device(config.device)
    workers = default_workers(device) if config.workers is None else config.workers
    images, checks, skipped = _check_images(images, config, progress)
    rows = _row_table(images, checks)
    precision = "float16-autocast" if device.type == "cuda" else "float32"
    key = cache_key(_key_parts(loaded, layers, config.pools, rows, precision))
    path = Path(out) if out is not None else Path(cache_dir) / _default_name(images.name, config.model, key)

    with WriterLock(path, wait=config.wait):
        if path.exists():
            return _reuse(path, key, started)
        outputs = _output_specs(layers, config.pools)
        manifest = _manifest(images, config, loaded, layers, rows, skipped, key, device, precision)
        manifest["runtime"]["workers"] = workers
        writer = CacheWriter(path, key, manifest, rows, outputs)
        try:
            passes = _run(writer, images, loaded, layers, config, device, workers, progress)
            manifest["runtime"]["duration_s"] = round(time.perf_counter() - started, 3)
            manifest["created"] = _now()
            writer.finish(manifest)
        finally:
            writer.close()
    return ExtractResult(path, len(rows.ids), False, time.perf_counter() - started, passes, skipped)


def _check_images(images: ImageSet, config: ExtractConfig, progress: bool):
    """Hash and test-decode every file before anything is written."""
    from tqdm import tqdm

    paths = [r.path for r in images.records]
    with tqdm(total=len(paths), unit="img", desc="checking", disable=not progress, file=sys.stderr) as bar:
        checks = check_files(paths, progress=bar.update)
    bad = [(r, c.error) for r, c in zip(images.records, checks) if c.error]
    if bad and config.on_bad_image == "error":
        raise BadImageError([(str(r.path), why) for r, why in bad])
    skipped = [{"id": r.id, "path": str(r.path), "reason": why} for r, why in bad]
    for item in skipped:
        log.warning("skipping %s: %s", item["path"], item["reason"])
    if bad:
        keep = [(r, c) for r, c in zip(images.records, checks) if not c.error]
        if not keep:
            raise BadImageError([(str(r.path), why) for r, why in bad])
        images = images.subset([r for r, _ in keep])
        checks = [c for _, c in keep]
    return images, checks, skipped


def _row_table(images: ImageSet, checks) -> RowTable:
    records = images.records
    return RowTable(
        ids=[r.id for r in records],
        labels=images.label_indices(),
        class_names=list(images.class_names),
        sizes=[c.size for c in checks],
        sha256=[c.sha256 for c in checks],
        groups=[r.group or "" for r in records] if images.has_groups else None,
        split=[r.split or "" for r in records] if images.has_split else None,
    )


def input_fingerprint(rows: RowTable) -> str:
    """A digest of the ids, file contents, labels, groups and splits of the rows."""
    digest = hashlib.sha256()
    columns = (rows.ids, rows.sha256, rows.labels, rows.groups or [], rows.split or [], rows.class_names)
    for column in columns:
        digest.update(repr(list(column)).encode())
    return digest.hexdigest()


def _key_parts(loaded: LoadedModel, layers: list[LayerSpec], pools, rows: RowTable, precision: str) -> dict:
    return {
        "model": loaded.name,
        "weights_sha256": loaded.weights.sha256,
        "layers": [s.name for s in layers],
        "poolings": list(pools),
        "preprocessing": loaded.preprocessing.as_dict(),
        "precision": precision,
        "input": input_fingerprint(rows),
    }


def _output_specs(layers: list[LayerSpec], pools) -> list[OutputSpec]:
    by_name = {s.name: s for s in layers}
    return [
        OutputSpec(layer, pooling, by_name[layer].channels, by_name[layer].as_dict())
        for layer, pooling in output_keys(layers, tuple(pools))
    ]


def _default_name(dataset: str, model: str, key: str) -> str:
    slug = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "images"  # noqa: E731
    return f"{slug(dataset)}-{slug(model)}-{key[:12]}.h5"


def _reuse(path: Path, key: str, started: float) -> ExtractResult:
    try:
        with open_cache(path) as cache:
            same, rows = cache.key == key, cache.n_rows
    except CacheError as exc:
        raise CacheError(f"{path} exists but is not a finished cache of these settings ({exc}); "
                         "choose another --out or delete it") from None
    if not same:
        raise CacheError(
            f"{path} already holds a cache made from other images or settings; "
            "choose another --out, or delete it to extract again"
        )
    log.info("%s is up to date: nothing to extract", path)
    return ExtractResult(path, rows, True, time.perf_counter() - started, 0)


def _run(writer, images, loaded, layers, config, device, workers, progress) -> int:
    from tqdm import tqdm

    start = writer.rows_committed
    paths = [r.path for r in images.records][start:]
    cuda = device.type == "cuda"
    loader = make_loader(ImageFiles(paths, loaded.preprocessing.transform(), start), config.batch_size, workers, cuda)
    model = loaded.module.to(device, memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.float16) if cuda else nullcontext()
    bar = tqdm(total=len(images), initial=start, unit="img", desc="extracting", disable=not progress, file=sys.stderr)
    with LayerTap(loaded, layers, tuple(config.pools)) as tap, bar:
        for rows, batch in loader:
            batch = batch.to(device, non_blocking=cuda).contiguous(memory_format=torch.channels_last)
            with autocast:
                codes = tap.run(batch)
            first = int(rows[0])
            if first != writer.rows_committed:
                raise CacheError(f"batch starts at row {first}, expected {writer.rows_committed}")
            writer.write(first, {k: v.cpu().numpy().astype(np.float32, copy=False) for k, v in codes.items()})
            bar.update(len(rows))
    return tap.forward_passes


def _manifest(images, config, loaded, layers, rows, skipped, key, device, precision) -> dict:
    return {
        "layerprobe": __version__,
        "key": key,
        "created": _now(),
        "model": {"name": loaded.name, "family": loaded.family, "weights": loaded.weights.as_dict()},
        "layers": [s.as_dict() for s in layers],
        "poolings": list(config.pools),
        "outputs": [f"{l}/{p}" for l, p in output_keys(layers, tuple(config.pools))],
        "preprocessing": loaded.preprocessing.as_dict(),
        "input": {
            "name": images.name,
            "source": images.source,
            "root": str(images.root),
            "n_images": len(rows.ids),
            "class_names": list(rows.class_names),
            "has_groups": rows.groups is not None,
            "has_split": rows.split is not None,
            "fingerprint": input_fingerprint(rows),
            "limit": config.limit,
            "seed": config.seed,
            "skipped": skipped,
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


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
