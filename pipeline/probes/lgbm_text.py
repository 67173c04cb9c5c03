"""Checking LightGBM model text from a probe file before LightGBM parses it.

LightGBM trusts its model text: a ``split_feature`` past the data's columns
reads out of bounds (a crash), a negative one reads garbage, a malformed tree
aborts the process, and a child index that points back up the tree loops
forever. A probe file may come from anyone, so its model text is parsed here
first, every number is checked against the probe (feature count, classes) and
the tree structure, and only a canonical text of the checked fields (header,
trees, ``end of trees``) is handed to LightGBM.
"""

from __future__ import annotations

import math

from ..errors import ProbeError

MAX_TREES = 100_000
MAX_LEAVES = 131_072
_HEADER_KEYS = ("version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx", "objective",
                "average_output", "feature_names", "feature_infos", "monotone_constraints")
_TREE_KEYS = ("num_leaves", "num_cat", "split_feature", "split_gain", "threshold", "decision_type", "left_child",
              "right_child", "leaf_value", "leaf_weight", "leaf_count", "internal_value", "internal_weight",
              "internal_count", "is_linear", "shrinkage")


def _fail(why: str) -> ProbeError:
    return ProbeError(f"its LightGBM model text is refused: {why}")


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _fail(f"{what} is {text[:40]!r}, not an integer") from None


def _finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _fail(f"{what} is {text[:40]!r}, not a number") from None
    if not math.isfinite(value):
        raise _fail(f"{what} is {text!r}; every threshold and leaf value must be finite")
    return value


def _fields(lines: list[str], allowed: tuple[str, ...], where: str) -> dict[str, str]:
    fields = {}
    for line in lines:
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or key not in allowed:
            raise _fail(f"unexpected line {line[:60]!r} in {where}")
        if key in fields:
            raise _fail(f"{key} is given twice in {where}")
        if value.strip():  # LightGBM writes empty arrays (a tree of one leaf) as "key=" and skips them
            fields[key] = value.strip()
    return fields


def _array(fields: dict, key: str, count: int, parse, where: str, required: bool = True) -> list | None:
    if key not in fields:
        if required:
            raise _fail(f"{where} has no {key}")
        return None
    tokens = fields[key].split()
    if len(tokens) != count:
        raise _fail(f"{where} has {len(tokens)} {key} value(s) for {count}")
    return [parse(t, f"{key} of {where}") for t in tokens]


def _check_objective(text: str, n_classes: int) -> None:
    """``binary sigmoid:S`` (S > 0) for two classes, ``multiclass[ova] num_class:K ...`` for K classes."""
    name, *tokens = text.split() or [""]
    settings = {}
    for token in tokens:
        key, sep, value = token.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not key.isidentifier() or not math.isfinite(number):
            raise _fail(f"objective setting {token[:40]!r} is not name:number")
        settings[key] = number
    if n_classes == 2:
        if name != "binary" or not settings.get("sigmoid", 0) > 0:
            raise _fail(f"objective {text[:60]!r}; 'binary sigmoid:<positive>' expected for two classes")
    elif name not in ("multiclass", "multiclassova") or settings.get("num_class") != n_classes:
        raise _fail(f"objective {text[:60]!r}; 'multiclass num_class:{n_classes}' expected")
    elif name == "multiclassova" and not settings.get("sigmoid", 0) > 0:
        raise _fail(f"objective {text[:60]!r}; multiclassova needs sigmoid:<positive>")


def _check_tree(fields: dict, n_features: int, where: str) -> None:
    leaves = _int(fields.get("num_leaves", ""), f"num_leaves of {where}")
    if not 1 <= leaves <= MAX_LEAVES:
        raise _fail(f"{where} has {leaves} leaves (allowed 1 to {MAX_LEAVES})")
    if "num_cat" not in fields:
        raise _fail(f"{where} has no num_cat")
    for key in ("num_cat", "is_linear"):
        if _int(fields.get(key, "0"), f"{key} of {where}") != 0:
            raise _fail(f"{where} has {key} != 0 (categorical or linear trees are never made by layerprobe)")
    _finite(fields.get("shrinkage", "1"), f"shrinkage of {where}")
    _array(fields, "leaf_value", leaves, _finite, where)
    for key in ("leaf_weight", "leaf_count"):
        _array(fields, key, leaves, _finite, where, required=False)
    if leaves == 1:
        return
    nodes = leaves - 1
    features = _array(fields, "split_feature", nodes, _int, where)
    bad = [f for f in features if not 0 <= f < n_features]
    if bad:
        raise _fail(f"{where} splits on feature {bad[0]}, outside 0 to {n_features - 1} (the probe's channels)")
    _array(fields, "threshold", nodes, _finite, where)
    for kind in _array(fields, "decision_type", nodes, _int, where):
        if not 0 <= kind < 16 or kind & 1 or (kind >> 2) & 3 == 3:
            raise _fail(f"{where} has decision_type {kind} (numerical splits only: 0 to 15, even, missing type 0-2)")
    for key in ("split_gain", "internal_value", "internal_weight", "internal_count"):
        _array(fields, key, nodes, _finite, where, required=False)
    _check_structure(_array(fields, "left_child", nodes, _int, where),
                     _array(fields, "right_child", nodes, _int, where), leaves, where)


def _check_structure(left: list[int], right: list[int], leaves: int, where: str) -> None:
    """A binary tree: every node but the root and every leaf has exactly one parent; children come later."""
    nodes = leaves - 1
    parents_of_node, parents_of_leaf = [0] * nodes, [0] * leaves
    for parent, children in enumerate(zip(left, right)):
        for child in children:
            if child >= 0:
                if not parent < child < nodes:
                    raise _fail(f"{where}: node {parent} has child node {child} (allowed {parent + 1} to {nodes - 1})")
                parents_of_node[child] += 1
            else:
                leaf = ~child
                if leaf >= leaves:
                    raise _fail(f"{where}: node {parent} has child leaf {leaf} of {leaves}")
                parents_of_leaf[leaf] += 1
    if any(n != 1 for n in parents_of_node[1:]) or parents_of_node[0] or any(n != 1 for n in parents_of_leaf):
        raise _fail(f"{where} is not a tree: a node or leaf is reached twice or never")


def checked_model_text(text: str, n_features: int, n_classes: int) -> str:
    """Validate LightGBM model text against the probe; returns the canonical text LightGBM may parse.

    Raises :class:`ProbeError` (to be prefixed with the file's name) naming the first problem.
    """
    lines = text.split("\n")
    if not lines or lines[0].strip() != "tree":
        raise _fail("it does not start with 'tree'")
    starts = [i for i, line in enumerate(lines) if line.startswith("Tree=")]
    try:
        end = lines.index("end of trees")
    except ValueError:
        raise _fail("it has no 'end of trees' line") from None
    if not starts or starts[-1] > end:
        raise _fail("it holds no trees")
    if len(starts) > MAX_TREES:
        raise _fail(f"it holds {len(starts)} trees (at most {MAX_TREES})")
    header_lines = [line for line in lines[1:starts[0]] if not line.startswith("tree_sizes=")]
    header = _fields(header_lines, _HEADER_KEYS, "the header")
    width = _int(header.get("max_feature_idx", ""), "max_feature_idx") + 1
    if width != n_features:
        raise _fail(f"max_feature_idx says {width} features, the probe takes {n_features} channels")
    for key in ("feature_names", "feature_infos"):
        if key in header and len(header[key].split()) != n_features:
            raise _fail(f"{key} lists {len(header[key].split())} features for {n_features}")
    per_iteration = 1 if n_classes == 2 else n_classes
    for key in ("num_class", "num_tree_per_iteration"):
        found = _int(header.get(key, ""), key)
        if found != per_iteration:
            raise _fail(f"{key} is {found}, but the probe has {n_classes} classes ({per_iteration} expected)")
    _check_objective(header.get("objective", ""), n_classes)
    missing = [key for key in ("version", "label_index", "feature_names", "feature_infos") if key not in header]
    if missing:
        raise _fail(f"the header has no {missing[0]}")
    if len(starts) % per_iteration:
        raise _fail(f"{len(starts)} trees do not split into iterations of {per_iteration}")
    blocks = []
    for number, (start, stop) in enumerate(zip(starts, starts[1:] + [end])):
        if lines[start] != f"Tree={number}":
            raise _fail(f"tree {number} is labelled {lines[start][:30]!r}")
        _check_tree(_fields(lines[start + 1:stop], _TREE_KEYS, f"tree {number}"), n_features, f"tree {number}")
        blocks.append("\n".join(lines[start:stop]).rstrip("\n"))
    return "\n".join(["tree", *header_lines]).rstrip("\n") + "\n\n" + "\n\n".join(blocks) + "\n\nend of trees\n"
