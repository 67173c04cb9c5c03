"""Reading a probe archive (``.npz``) without trusting it.

Every member's ``.npy`` header is read from the zip before any array is: its
dtype must be plain numbers or strings, its declared size must agree with the
zip entry and stay under :data:`LIMITS`, and all arrays together may not inflate
far past the file's own size (a few MB of compressed zeros must not become GBs
of memory). The manifest's numbers that decide what a prediction allocates
(image size, batch, channels, classes) are bounded too.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from ..cache.manifest import ProvenanceCopy
from ..errors import CacheError, ProbeError

# Bounds on what a probe file may ask for; a file past them is refused before any work.
LIMITS = {"channels": 1 << 16, "classes": 10_000, "img_size": 4096, "batch_size": 4096,
          "member_bytes": 4 << 30, "inflated_bytes": 256 << 20, "manifest_bytes": 16 << 20}
_DTYPE_KINDS = "biufSU"  # booleans, numbers and fixed-width strings; never Python objects


def declared_members(path: Path, archive: zipfile.ZipFile) -> dict[str, tuple[tuple, np.dtype]]:
    """Each member's (shape, dtype) from its .npy header, checked against the zip entry and the size caps."""
    members, total = {}, 0
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise ProbeError(f"{path} is not a layerprobe probe file (member {info.filename!r} is not an array)")
        name = info.filename[: -len(".npy")]
        with archive.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                raise ProbeError(f"{path}: member {name!r} has .npy format version {version}; 1.0 or 2.0 expected")
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(handle)
            offset = handle.tell()
        if dtype.hasobject:
            raise ProbeError(f"{path} is not a readable probe file (member {name!r} holds pickled Python objects; "
                             "probe files are read with allow_pickle=False)")
        if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None:
            raise ProbeError(f"{path}: member {name!r} has dtype {dtype}; only numbers and strings are allowed")
        size = math.prod(shape) * dtype.itemsize
        if size > LIMITS["member_bytes"]:
            raise ProbeError(f"{path}: member {name!r} declares shape {shape} of {dtype} ({size / 1e9:.1f} GB); "
                             f"at most {LIMITS['member_bytes'] / 1e9:.1f} GB per array")
        if info.file_size != offset + size:
            raise ProbeError(f"{path}: member {name!r} declares shape {shape} of {dtype} ({size} bytes), but the "
                             f"archive holds {info.file_size - offset} bytes for it")
        members[name], total = (shape, dtype), total + size
    allowed = path.stat().st_size + LIMITS["inflated_bytes"]
    if total > allowed:
        raise ProbeError(f"{path}: its arrays would take {total / 1e9:.1f} GB in memory from a "
                         f"{path.stat().st_size / 1e6:.1f} MB file; refused (at most "
                         f"{LIMITS['inflated_bytes'] >> 20} MB more than the file's size)")
    return members


def read_member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One member as an array (after :func:`declared_members` has checked it)."""
    with archive.open(name + ".npy") as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


def bounded(path: Path, what: str, value, low: int, high: int) -> int:
    """``value`` if it is an integer from ``low`` to ``high``, else a one-line refusal naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProbeError(f"{path}: its manifest gives {what} {value!r}; allowed {low} to {high}")
    return value


def check_numbers(path: Path, manifest: dict) -> None:
    """Bound what the manifest makes layerprobe allocate: image size, batch, channels, classes."""
    bounded(path, "channels", manifest.get("channels"), 1, LIMITS["channels"])
    names = manifest.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ProbeError(f"{path}: its manifest has no list of class names")
    bounded(path, "the number of classes", len(names), 2, LIMITS["classes"])
    saved = manifest.get("extract_config") or {}
    if not isinstance(saved, dict):
        raise ProbeError(f"{path}: its manifest's extract_config is not a table")
    for key in ("img_size", "batch_size"):
        if saved.get(key) is not None:
            bounded(path, f"{key}", saved[key], 1, LIMITS[key])
    size = _provenance(path, manifest).preprocessing.get("input_size")
    if size is not None:
        if not isinstance(size, list) or len(size) != 3:
            raise ProbeError(f"{path}: its manifest gives input_size {size!r}; [channels, height, width] expected")
        bounded(path, "input channels", size[0], 1, 4)
        for side in size[1:]:
            bounded(path, "an input side", side, 1, LIMITS["img_size"])


def _provenance(path: Path, manifest: dict) -> ProvenanceCopy:
    """The probe's copy of its cache's provenance, refused with the file's name when malformed."""
    try:
        return ProvenanceCopy.from_dict(manifest, str(path))
    except CacheError as exc:
        raise ProbeError(str(exc)) from None


def check_shapes(path: Path, step: str, found: dict, expected: dict) -> None:
    """``found`` {array: (shape, dtype)} of one step against ``expected`` {array: [allowed shapes]}."""
    def fits(shape, want):
        return len(shape) == len(want) and all(w is None or s == w for s, w in zip(shape, want))

    for member, allowed in expected.items():
        if member not in found:
            raise ProbeError(f"{path}: step {step!r} has no array {member!r}")
        shape = found[member][0]
        if not any(fits(shape, want) for want in allowed):
            shown = " or ".join(str(tuple("any" if w is None else w for w in want)) for want in allowed)
            raise ProbeError(f"{path}: array {step}/{member} has shape {shape}; the manifest requires {shown}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ProbeError(f"{path}: step {step!r} holds an unexpected array {extra[0]!r}")
