"""Where a set of codes comes from: the model, weights, preprocessing and precision that made them.

Two codes of the same image bytes are the same numbers exactly when their
:class:`CodeSource` is equal, so this one object answers every "same model,
weights, preprocessing?" question between stages (extract reusing a cache,
merge joining shards, a fitted probe meeting new codes, two caches compared,
probe results meeting their cache) through :meth:`CodeSource.differences`.

The cache's settings key is the source plus the input root, because image ids
are paths relative to that root: :meth:`CodeSource.settings_key`. Its value is
the one layerprobe has always computed, so default cache names do not change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .format import cache_key

FIELDS = ("model", "weights_sha256", "preprocessing", "precision")
LABELS = {"weights_sha256": "weights sha256", "input_root": "input root"}


def _plain(value: Any) -> Any:
    """``value`` as its JSON reading: tuples become lists, so a built and a stored source compare equal."""
    return json.loads(json.dumps(value, default=str))


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=list)


@dataclass(frozen=True)
class Difference:
    """One named field in which two sources differ, with both values (``mine`` first)."""

    name: str
    mine: Any
    theirs: Any

    @property
    def label(self) -> str:
        """The field in words: ``weights sha256`` for ``weights_sha256``."""
        return LABELS.get(self.name, self.name)

    @property
    def keys(self) -> tuple[str, ...]:
        """For two dicts (preprocessing): the keys whose values differ, sorted; else empty."""
        if not (isinstance(self.mine, dict) and isinstance(self.theirs, dict)):
            return ()
        return tuple(sorted(k for k in set(self.mine) | set(self.theirs)
                            if _text(self.mine.get(k)) != _text(self.theirs.get(k))))

    def detail(self, sep: str = ", ", fmt=str) -> str:
        """``key mine vs theirs`` for each differing key of a dict, or ``mine vs theirs``."""
        if self.keys:
            return sep.join(f"{k} {fmt(self.mine.get(k))} vs {fmt(self.theirs.get(k))}" for k in self.keys)
        return f"{fmt(self.mine)} vs {fmt(self.theirs)}"

    def brief(self) -> str:
        """``label mine vs theirs`` for a message: a digest by its first 12 hex digits, which name it."""
        if self.name == "weights_sha256":
            return f"{self.label} {self.mine[:12]} vs {self.theirs[:12]}"
        return f"{self.label} {self.detail()}"


@dataclass(frozen=True)
class CodeSource:
    """What makes one image's codes: model name, weights digest, preprocessing and numeric precision.

    ``preprocessing`` is kept as its JSON reading (lists, not tuples).
    ``precision`` is None where it is not known (a model about to run, old
    probe results); :meth:`differences` then skips it unless both know it.
    """

    model: str
    weights_sha256: str
    preprocessing: dict = field(hash=False)
    precision: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "preprocessing", _plain(dict(self.preprocessing)))

    def settings(self, input_root: str) -> dict:
        """The parts of the settings key, as they have always been hashed."""
        return {"model": self.model, "weights_sha256": self.weights_sha256, "preprocessing": self.preprocessing,
                "precision": self.precision, "input_root": str(input_root)}

    def settings_key(self, input_root: str) -> str:
        """The cache's settings key: rows of two caches with the same key can be shared."""
        return cache_key(self.settings(input_root))

    def differences(self, other: "CodeSource", among: tuple[str, ...] = FIELDS) -> tuple[Difference, ...]:
        """The fields (of ``among``, in that order) in which ``other`` differs from this source.

        Precision is compared only when both sources record it.
        """
        found = []
        for name in among:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "precision" and (mine is None or theirs is None):
                continue
            if _text(mine) != _text(theirs):
                found.append(Difference(name, mine, theirs))
        return tuple(found)


def settings_differences(a: CodeSource, a_root: str | None, b: CodeSource, b_root: str | None) -> list[str]:
    """Names of what differs in two settings keys' parts (the source fields, then ``input_root``)."""
    names = [d.name for d in a.differences(b)]
    if a_root != b_root:
        names.append("input_root")
    return names
