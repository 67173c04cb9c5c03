"""The manifest of a cache as a typed, validated object: read, built and written through one type.

On disk the manifest stays the JSON it has always been (``attrs["manifest"]``,
see ``format.py``), so every cache written before this type existed opens.
:meth:`CacheManifest.from_dict` checks the entries the stages rely on and
gives them types: the model and its weights, the preprocessing, the input, the
stored outputs, the runtime, BatchNorm counts, derived columns and, for a shard,
its place in the sharded run. Their :class:`CodeSource` answers every "same
codes?" question. Entries no type names (layers, config, update summary, merge
record, and keys a part does not model) are kept as stored, so
:meth:`CacheManifest.as_dict` gives the JSON back. :func:`manifest_json` is the
one place a manifest becomes the text a cache stores.

Stages change a manifest with :func:`dataclasses.replace` on these frozen parts.
Probe and results files keep a copy of a cache's provenance; they read it
through :class:`ProvenanceCopy`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
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


def _plain(value: Any) -> Any:
    """``value`` as its JSON reading (tuples become lists; a copy, never shared)."""
    return json.loads(json.dumps(value))


class _Part:
    """A manifest entry with typed fields; keys it does not model stay in ``extra``, written back as found."""

    extra: dict

    @classmethod
    def _extra(cls, d: dict) -> dict:
        known = {f.name for f in fields(cls)}
        return {k: v for k, v in d.items() if k not in known}

    def as_dict(self) -> dict:
        typed = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return _plain({**{k: v.as_dict() if isinstance(v, _Part) else v for k, v in typed.items()}, **self.extra})


@dataclass(frozen=True)
class WeightsInfo(_Part):
    """Where the weights came from (``source``: a hub, a file, random-init), their digest and file."""

    source: str
    sha256: str
    path: str | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "WeightsInfo":
        return cls(source=str(d.get("source", "")), sha256=_need(d, "sha256", str, "model.weights.sha256"),
                   path=None if d.get("path") is None else str(d["path"]), extra=cls._extra(d))


@dataclass(frozen=True)
class ModelInfo(_Part):
    """The model by name, its family (timm, torchvision) and its weights."""

    name: str
    weights: WeightsInfo
    family: str | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        return cls(name=_need(d, "name", str, "model.name"),
                   weights=WeightsInfo.from_dict(_need(d, "weights", dict, "model.weights")),
                   family=_need(d, "family", str, "model.family", optional=True), extra=cls._extra(d))


@dataclass(frozen=True)
class InputInfo(_Part):
    """The input the rows came from: its name, source kind, root and what was found there."""

    name: str
    source: str
    root: str
    root_resolved: str | None = None
    n_images: int | None = None
    class_names: tuple[str, ...] = ()
    has_groups: bool | None = None
    has_split: bool | None = None
    fingerprint: str | None = None
    limit: int | None = None
    seed: int | None = None
    skipped: tuple[dict, ...] = ()
    notes: tuple[dict, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "InputInfo":
        optional = lambda key, kind: _need(d, key, kind, f"input.{key}", optional=True)  # noqa: E731
        return cls(
            name=_need(d, "name", str, "input.name"),
            source=_need(d, "source", str, "input.source"),
            root=_need(d, "root", str, "input.root"),
            root_resolved=optional("root_resolved", str),
            n_images=optional("n_images", int),
            class_names=tuple(optional("class_names", list) or ()),
            has_groups=optional("has_groups", bool),
            has_split=optional("has_split", bool),
            fingerprint=optional("fingerprint", str),
            limit=optional("limit", int),
            seed=optional("seed", int),
            skipped=tuple(optional("skipped", list) or ()),
            notes=tuple(optional("notes", list) or ()),
            extra=cls._extra(d),
        )

    def summary(self) -> dict:
        """What a probe or results file copies of the input (read back as :class:`InputSummary`)."""
        return {"name": self.name, "source": self.source, "n_images": self.n_images, "fingerprint": self.fingerprint}

    @property
    def settings_root(self) -> str:
        """The root as the settings key hashes it (resolved where recorded)."""
        return self.root_resolved or self.root


@dataclass(frozen=True)
class RuntimeInfo(_Part):
    """Where and how the codes were computed."""

    device: str
    precision: str
    batch_size: int | None = None
    workers: int | None = None
    duration_s: float | None = None
    threads: int | None = None
    host: str | None = None
    platform: str | None = None
    python: str | None = None
    packages: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "RuntimeInfo":
        optional = lambda key, kind: _need(d, key, kind, f"runtime.{key}", optional=True)  # noqa: E731
        return cls(
            device=_need(d, "device", str, "runtime.device"),
            precision=_need(d, "precision", str, "runtime.precision"),
            batch_size=optional("batch_size", int),
            workers=optional("workers", int),
            duration_s=optional("duration_s", (int, float)),
            threads=optional("threads", int),
            host=optional("host", str),
            platform=optional("platform", str),
            python=optional("python", str),
            packages=dict(optional("packages", dict) or {}),
            extra=cls._extra(d),
        )


@dataclass(frozen=True)
class ShardInfo(_Part):
    """A shard's place in a sharded run and what it saw of the whole input."""

    index: int
    count: int
    assignment: str
    input_images: int
    input_ids_sha256: str
    input_table_sha256: str
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "ShardInfo":
        shard = cls(**{name: _need(d, name, kind, f"shard.{name}") for name, kind in (
            ("index", int), ("count", int), ("assignment", str), ("input_images", int),
            ("input_ids_sha256", str), ("input_table_sha256", str))}, extra=cls._extra(d))
        if not 0 <= shard.index < shard.count:
            raise CacheError(f"its manifest's shard index {shard.index} is outside 0..{shard.count - 1}")
        return shard


@dataclass(frozen=True)
class BnStatsInfo(_Part):
    """How many BatchNorm modules and images the stored sums cover, and which output owns each module.

    ``members`` is None for caches made before it was recorded.
    """

    modules: int
    images: int
    members: dict | None = None
    after_last: tuple[str, ...] = ()
    never_ran: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "BnStatsInfo":
        optional = lambda key, kind: _need(d, key, kind, f"bn_stats.{key}", optional=True)  # noqa: E731
        return cls(modules=_need(d, "modules", int, "bn_stats.modules"),
                   images=_need(d, "images", int, "bn_stats.images"), members=optional("members", dict), after_last=tuple(optional("after_last", list) or ()),
                   never_ran=tuple(optional("never_ran", list) or ()), extra=cls._extra(d))

    def as_dict(self) -> dict:
        out = super().as_dict()
        if self.members is None:  # as before members were recorded: the key is absent
            out.pop("members")
        return out


# The top-level entries the typed fields write, in the order a manifest has always had them.
_TYPED = ("layerprobe", "key", "created", "model", "preprocessing", "outputs", "input", "runtime", "shard", "bn_stats",
          "columns")


@dataclass(frozen=True)
class CacheManifest:
    """A cache's manifest: typed entries the stages read and write, the others (``get``) as stored."""

    model: ModelInfo
    preprocessing: dict = field(hash=False)
    input: InputInfo
    outputs: tuple[str, ...]
    runtime: RuntimeInfo
    shard: ShardInfo | None = None
    bn_stats: BnStatsInfo | None = None
    columns: dict = field(default_factory=dict, hash=False)  # derived row column -> how it was made
    key: str | None = None
    created: str | None = None
    version: str | None = None  # the layerprobe that wrote it
    others: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "CacheManifest":
        """Check and type a manifest as stored; raises :class:`CacheError` naming the bad entry."""
        if not isinstance(d, dict):
            raise CacheError(f"its manifest is {type(d).__name__}, not an object")
        stored = _plain(d)
        outputs = _need(stored, "outputs", list, "outputs")
        bad = [o for o in outputs if not isinstance(o, str) or "/" not in o]
        if bad:
            raise CacheError(f"its manifest's outputs hold {bad[0]!r}, not a layer/pooling name")
        shard, bn = _need(stored, "shard", dict, "shard", optional=True), stored.get("bn_stats")
        return cls(
            model=ModelInfo.from_dict(_need(stored, "model", dict, "model")),
            preprocessing=_need(stored, "preprocessing", dict, "preprocessing"),
            input=InputInfo.from_dict(_need(stored, "input", dict, "input")),
            outputs=tuple(outputs),
            runtime=RuntimeInfo.from_dict(_need(stored, "runtime", dict, "runtime")),
            shard=ShardInfo.from_dict(shard) if shard else None,
            bn_stats=BnStatsInfo.from_dict(_need(stored, "bn_stats", dict, "bn_stats")) if bn else None,
            columns=dict(_need(stored, "columns", dict, "columns", optional=True) or {}),
            key=_need(stored, "key", str, "key", optional=True),
            created=_need(stored, "created", str, "created", optional=True),
            version=_need(stored, "layerprobe", str, "layerprobe", optional=True),
            others={k: v for k, v in stored.items() if k not in _TYPED},
        )

    def as_dict(self) -> dict:
        """The manifest as a JSON-able dict; absent optional entries (shard, BatchNorm, columns) stay absent."""
        typed = {"layerprobe": self.version, "key": self.key, "created": self.created, "model": self.model.as_dict(),
                 "preprocessing": self.preprocessing, "outputs": list(self.outputs), "input": self.input.as_dict(),
                 "runtime": self.runtime.as_dict(), "shard": self.shard and self.shard.as_dict(),
                 "bn_stats": self.bn_stats and self.bn_stats.as_dict(), "columns": self.columns or None}
        return _plain({**{k: v for k, v in typed.items() if v is not None}, **self.others})

    @property
    def source(self) -> CodeSource:
        """The model, weights digest, preprocessing and precision that made these codes."""
        return CodeSource(self.model.name, self.model.weights.sha256, self.preprocessing, self.runtime.precision)

    @property
    def settings_key(self) -> str:
        """The settings key these entries give (equal to the cache's ``settings_key`` attribute)."""
        return self.source.settings_key(self.input.settings_root)

    def get(self, name: str, default: Any = None) -> Any:
        """Any top-level entry as it is written (``layers``, ``config``, ``update``, ...)."""
        return self.as_dict().get(name, default)

    def with_entries(self, **entries) -> "CacheManifest":
        """This manifest with untyped top-level entries set (``update=...``, ``merge=...``)."""
        clash = sorted(set(entries) & set(_TYPED))
        if clash:
            raise ValueError(f"{', '.join(clash)} are typed entries: change them with dataclasses.replace")
        return replace(self, others={**self.others, **_plain(entries)})

    def copy(self) -> dict:
        """The provenance a probe or results file keeps of this cache (read back by :class:`ProvenanceCopy`)."""
        return {"model": self.model.as_dict(), "preprocessing": _plain(self.preprocessing)}


def manifest_json(manifest: CacheManifest) -> str:
    """The text a cache stores as its ``manifest`` attribute: the one place a manifest is serialised."""
    return json.dumps(manifest.as_dict())


@dataclass(frozen=True)
class InputSummary:
    """The input as a probe or results file copies it (:meth:`InputInfo.summary`); empty where not copied."""

    name: str = ""
    source: str = ""
    n_images: int | None = None
    fingerprint: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "InputSummary":
        optional = lambda key, kind: _need(d, key, kind, f"input.{key}", optional=True)  # noqa: E731
        return cls(optional("name", str) or "", optional("source", str) or "", optional("n_images", int),
                   optional("fingerprint", str))


@dataclass(frozen=True)
class ProvenanceCopy:
    """A cache's provenance as a probe or results file keeps it: model, preprocessing, precision, input.

    ``precision`` is None where the copy does not record it (results files);
    ``input`` is empty where it is not copied (a fitted probe keeps it under ``training``).
    """

    model: ModelInfo
    preprocessing: dict = field(hash=False)
    precision: str | None = None
    input: InputSummary = InputSummary()

    @classmethod
    def from_dict(cls, d: dict, where: str = "the file") -> "ProvenanceCopy":
        """Read the copy in ``d``; a malformed one is a :class:`CacheError` naming ``where``."""
        try:
            return cls(ModelInfo.from_dict(_need(d, "model", dict, "model")),
                       _plain(_need(d, "preprocessing", dict, "preprocessing")),
                       _need(d, "precision", str, "precision", optional=True),
                       InputSummary.from_dict(_need(d, "input", dict, "input", optional=True) or {}))
        except CacheError as exc:
            raise CacheError(f"{where}: {exc}") from None

    @property
    def source(self) -> CodeSource:
        return CodeSource(self.model.name, self.model.weights.sha256, self.preprocessing, self.precision)
