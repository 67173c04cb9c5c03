"""Cache: the HDF5 activation store, its key, its writer lock, shards and their merge (no torch here)."""

from .columns import add_row_column
from .format import FORMAT, FORMAT_VERSION, cache_key, codes_path
from .lock import WriterLock, is_locked
from .manifest import (BnStatsInfo, CacheManifest, InputInfo, InputSummary, ModelInfo, ProvenanceCopy, RuntimeInfo,
                       ShardInfo, WeightsInfo, manifest_json)
from .merge import MergeResult, merge_shards
from .reader import ActivationCache, open_cache, require_cache
from .shards import merged_path, shard_of, shard_path
from .source import CodeSource, Difference
from .verify import VerifyReport, verify_cache
from .writer import CacheWriter, OutputSpec, RowTable, partial_path

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ActivationCache",
    "BnStatsInfo",
    "CacheManifest",
    "CacheWriter",
    "CodeSource",
    "Difference",
    "InputInfo",
    "InputSummary",
    "MergeResult",
    "ModelInfo",
    "OutputSpec",
    "ProvenanceCopy",
    "RowTable",
    "RuntimeInfo",
    "ShardInfo",
    "VerifyReport",
    "WeightsInfo",
    "WriterLock",
    "add_row_column",
    "cache_key",
    "codes_path",
    "is_locked",
    "manifest_json",
    "merge_shards",
    "merged_path",
    "open_cache",
    "require_cache",
    "partial_path",
    "shard_of",
    "shard_path",
    "verify_cache",
]
