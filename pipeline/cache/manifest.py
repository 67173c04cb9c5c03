"""The manifest of a cache as a typed, validated object.

On disk the manifest stays the JSON it has always been (``attrs["manifest"]``,
see ``format.py``), so every cache written before this type existed opens.
:meth:`CacheManifest.from_dict` checks the entries the stages rely on and
gives them types: the :class:`CodeSource` that made the codes, the input, the
stored outputs, the runtime and, for a shard, its place in the sharded run.
Everything else (layers, config, update summary, BatchNorm counts, derived
columns, merge record) is kept as stored; :meth:`CacheManifest.as_dict` gives
the exact JSON back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import CacheError
from .source import CodeSource


def _need(where: dict, key: str, kind, path: str, optional: bool = False):
    """``where[key]`` if it has type ``kind``; a missing optional entry is None."""
    if key not in where or (optional and where[key] is None):
        if optional:
            return None
        raise CacheError(f"its manifest has no {path}")
    value = where[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CacheError(f"its manifest's {path} is {type(value).__name__} {value!r:.60}, not {names}")
    return value


@dataclass(frozen=True)
class InputInfo:
    """The input the rows came from: its name, source kind, root and what was found there."""

    name: str
    source: str
    root: str
    root_resolved: str | None = None
    n_images: int | None = None
    class_names: tuple[str, ...] = ()
    fingerprint: str | None = None
    skipped: tuple[dict, ...] = ()
    notes: tuple[dict, ...] = ()

    @classmethod
    def from_dict(cls, d: dict) -> "InputInfo":
        return cls(
            name=_need(d, "name", str, "input.name"),
            source=_need(d, "source", str, "input.source"),
            root=_need(d, "root", str, "input.root"),
            root_resolved=_need(d, "root_resolved", str, "input.root_resolved", optional=True),
            n_images=_need(d, "n_images", int, "input.n_images", optional=True),
            class_names=tuple(_need(d, "class_names", list, "input.class_names", optional=True) or ()),
            fingerprint=_need(d, "fingerprint", str, "input.fingerprint", optional=True),
            skipped=tuple(_need(d, "skipped", list, "input.skipped", optional=True) or ()),
            notes=tuple(_need(d, "notes", list, "input.notes", optional=True) or ()),
        )

    @property
    def settings_root(self) -> str:
        """The root as the settings key hashes it (resolved where recorded)."""
        return self.root_resolved or self.root


@dataclass(frozen=True)
class RuntimeInfo:
    """Where and how the codes were computed."""

    device: str
    precision: str
    batch_size: int | None = None
    workers: int | None = None
    duration_s: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "RuntimeInfo":
        return cls(
            device=_need(d, "device", str, "runtime.device"),
            precision=_need(d, "precision", str, "runtime.precision"),
            batch_size=_need(d, "batch_size", int, "runtime.batch_size", optional=True),
            workers=_need(d, "workers", int, "runtime.workers", optional=True),
            duration_s=_need(d, "duration_s", (int, float), "runtime.duration_s", optional=True),
        )


@dataclass(frozen=True)
class ShardInfo:
    """A shard's place in a sharded run and what it saw of the whole input."""

    index: int
    count: int
    assignment: str
    input_images: int
    input_ids_sha256: str
    input_table_sha256: str

    @classmethod
    def from_dict(cls, d: dict) -> "ShardInfo":
        shard = cls(**{name: _need(d, name, kind, f"shard.{name}") for name, kind in (
            ("index", int), ("count", int), ("assignment", str), ("input_images", int),
            ("input_ids_sha256", str), ("input_table_sha256", str))})
        if not 0 <= shard.index < shard.count:
            raise CacheError(f"its manifest's shard index {shard.index} is outside 0..{shard.count - 1}")
        return shard


@dataclass(frozen=True)
class CacheManifest:
    """A cache's manifest: typed views of the entries the stages use, and the JSON it came from."""

    source: CodeSource
    input: InputInfo
    outputs: tuple[str, ...]
    runtime: RuntimeInfo
    shard: ShardInfo | None = None
    stored: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict) -> "CacheManifest":
        """Check and type a manifest as stored; raises :class:`CacheError` naming the bad entry."""
        if not isinstance(d, dict):
            raise CacheError(f"its manifest is {type(d).__name__}, not an object")
        stored = json.loads(json.dumps(d))
        model = _need(stored, "model", dict, "model")
        _need(model, "name", str, "model.name")
        _need(_need(model, "weights", dict, "model.weights"), "sha256", str, "model.weights.sha256")
        _need(stored, "preprocessing", dict, "preprocessing")
        runtime = RuntimeInfo.from_dict(_need(stored, "runtime", dict, "runtime"))
        outputs = _need(stored, "outputs", list, "outputs")
        bad = [o for o in outputs if not isinstance(o, str) or "/" not in o]
        if bad:
            raise CacheError(f"its manifest's outputs hold {bad[0]!r}, not a layer/pooling name")
        shard = _need(stored, "shard", dict, "shard", optional=True)
        return cls(
            source=CodeSource.from_manifest(stored),
            input=InputInfo.from_dict(_need(stored, "input", dict, "input")),
            outputs=tuple(outputs),
            runtime=runtime,
            shard=ShardInfo.from_dict(shard) if shard else None,
            stored=stored,
        )

    def as_dict(self) -> dict:
        """The manifest as JSON-able dict, exactly as stored."""
        return json.loads(json.dumps(self.stored))

    @property
    def settings_key(self) -> str:
        """The settings key these entries give (equal to the cache's ``settings_key`` attribute)."""
        return self.source.settings_key(self.input.settings_root)

    def get(self, name: str, default: Any = None) -> Any:
        """Any other top-level entry as stored (``layers``, ``config``, ``bn_stats``, ...)."""
        return self.stored.get(name, default)
