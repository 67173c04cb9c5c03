"""What the extract stage is asked to do, and which images it takes (no torch here).

Kept apart from :mod:`.extract` so that a warm re-run (:mod:`.warm`) can read
the request, select the images and answer "up to date" without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cache.manifest import ShardInfo
from ..cache.shards import ASSIGNMENT, check_shard, ids_digest, input_digest, shard_of
from ..errors import PipelineError
from ..inputs import ImageSet, stratified_subset

BAD_IMAGE_POLICIES = ("error", "skip")
DEFAULT_MODEL = "tf_efficientnet_lite0"
DEFAULT_CACHE_DIR = Path("cache")
#: ``--precision``: what the model computes in, as the manifest and the cache key name it. ``auto`` is fp16
#: autocast on a GPU and fp32 on a CPU (bf16 on a CPU measured 1.8x faster on one machine, 0.83x on another,
#: and it changes the codes: opt-in; BENCHMARKS.md).
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16-autocast", "fp16": "float16-autocast"}
#: ``--workers`` besides a number of decoding processes: measure which feed is fastest, or one decode-ahead thread.
WORKER_MODES = ("auto", "thread")
#: The poolings :mod:`.pooling` defines; others (``register_pooling``) are checked there, with torch.
BUILTIN_POOLINGS = ("avg", "max", "avgmax", "gem", "token")


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
    workers: int | str = "auto"  # "auto" (measure), "thread", 0 (decode in line) or N decoding processes
    limit: int | None = None
    seed: int = 0
    on_bad_image: str = "error"
    wait: bool = False
    bn_stats: bool = False
    shard: tuple[int, int] | None = None  # (index, count): only the ids with sha256(id) mod count == index
    precision: str = "auto"  # auto, fp32, bf16 or fp16 (autocast); part of the cache key
    fold_batchnorm: bool = True  # fold BatchNorm into the convolution before it (:mod:`.fold`); not in the key

    def __post_init__(self):
        if self.weights is not None:  # a Path from Python callers: the manifest stores it as text
            object.__setattr__(self, "weights", str(self.weights))
        if self.shard is not None:
            object.__setattr__(self, "shard", check_shard(self.shard))
        object.__setattr__(self, "workers", check_workers(self.workers))
        if self.batch_size < 1:
            raise PipelineError(f"batch size must be at least 1, got {self.batch_size}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise PipelineError(f"on_bad_image (--on-bad-image) must be one of {BAD_IMAGE_POLICIES}, "
                                f"got {self.on_bad_image!r}")
        if self.precision not in ("auto", *PRECISIONS):
            raise PipelineError(f"precision (--precision) must be one of auto, {', '.join(PRECISIONS)}, "
                                f"got {self.precision!r}")
        if not self.pools:
            raise PipelineError("no pooling given; choose one or more of avg, max, avgmax, gem, token")
        for name in self.pools:
            if name not in BUILTIN_POOLINGS:
                from .pooling import get_pooling  # a registered pooling, or an error listing them all

                get_pooling(name)


def check_workers(workers) -> int | str:
    """``workers`` as the feed (:mod:`.feed`) takes it: ``"auto"`` (also for None), ``"thread"`` or a count >= 0."""
    if workers is None:
        return "auto"
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    if workers in WORKER_MODES or isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0:
        return workers
    raise PipelineError(f"workers (--workers) must be auto, thread or a number of decoding processes >= 0, "
                        f"got {workers!r}")


@dataclass
class ExtractResult:
    """What an extraction produced, for the CLI's summary and for tests."""

    path: Path
    rows: int
    reused: bool
    seconds: float
    forward_passes: int = 0
    skipped: list[dict] = field(default_factory=list)


def precision_of(config: ExtractConfig, device_type: str) -> str:
    """The precision a run on ``device_type`` (``cpu``, ``cuda``) computes in, as recorded in the manifest."""
    asked = config.precision
    if asked == "auto":
        asked = "fp16" if device_type == "cuda" else "fp32"
    return PRECISIONS[asked]


def precision_option(recorded: str | None) -> str:
    """The ``--precision`` that computes in ``recorded`` (a manifest's precision); ``auto`` if none does."""
    return next((option for option, name in PRECISIONS.items() if name == recorded), "auto")


def select_images(images: ImageSet, config: ExtractConfig) -> tuple[ImageSet, ShardInfo | None]:
    """The images this run extracts (``--limit``, then ``--shard``) and, for a shard, what it records of the whole."""
    if config.limit is not None:
        images = stratified_subset(images, config.limit, config.seed)
    if config.shard is None:
        return images, None
    return _shard_subset(images, config.shard), _shard_info(images, config.shard)


def _shard_info(images: ImageSet, shard: tuple[int, int]) -> ShardInfo:
    """What a shard records of the whole input, so that `merge` can check the shards belong together."""
    records = images.records
    return ShardInfo(
        index=shard[0],
        count=shard[1],
        assignment=ASSIGNMENT,
        input_images=len(records),
        input_ids_sha256=ids_digest(r.id for r in records),
        input_table_sha256=input_digest((r.id, r.label, r.group, r.split) for r in records),
    )


def _shard_subset(images: ImageSet, shard: tuple[int, int]) -> ImageSet:
    index, count = shard
    mine = [r for r in images.records if shard_of(r.id, count) == index]
    if not mine:
        raise PipelineError(
            f"shard {index}/{count} holds none of the {len(images)} images (each goes to shard sha256(id) mod "
            f"{count}); use fewer shards than that"
        )
    return images.subset(mine)
