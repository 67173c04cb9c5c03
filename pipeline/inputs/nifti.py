"""NIfTI input: volumes listed in a CSV (one label per volume), cut into 2-D slices along one axis.

Each volume is turned to its closest canonical (RAS+) orientation first, so
axis 0 runs left->right, 1 posterior->anterior and 2 inferior->superior
whatever the file's own orientation (axis 2 gives axial slices). Slices are
rotated 90 degrees so the slice's second axis points up. Intensities (after
the file's scl_slope/scl_inter) are windowed with a preset or ``C,W``, or
scaled from the volume's percentiles (default 0.5..99.5). Every slice of a
volume has the volume as its group (unless the table gives groups), so one
volume never spans two folds. Ids are ``<volume path>#slice=<k>``.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .decode import UndecodableImage, optional_module
from .records import ImageRecord, ImageSet, from_csv, _validated
from .windows import Window, apply_window, parse_percentiles, parse_window, scale_range

SUFFIXES = (".nii", ".nii.gz")
DEFAULT_SCALING = Window("percentile", low=0.5, high=99.5)
_LOADING = threading.Lock()


def _nibabel():
    return optional_module("nibabel", "NIfTI input", "nifti")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES) and not path.name.startswith(".")


@functools.lru_cache(maxsize=2)
def _volume(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """The canonical float32 volume (cached: consecutive slices come from the same file)."""
    nib = _nibabel()
    try:
        image = nib.as_closest_canonical(nib.load(path))
        volume = np.asarray(image.get_fdata(dtype=np.float32))
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as exc:
        raise UndecodableImage(f"not a readable NIfTI volume ({exc})") from None
    volume = _three_d(volume, path)
    volume.setflags(write=False)
    return volume


def _three_d(volume: np.ndarray, path: str) -> np.ndarray:
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim == 2:
        volume = volume[..., None]
    if volume.ndim != 3:
        raise UndecodableImage(f"a {volume.ndim}-D image (shape {volume.shape}); layerprobe slices 3-D volumes: "
                               "split it into 3-D volumes first (nibabel.funcs.four_to_three)")
    return volume


@functools.lru_cache(maxsize=8)
def _percentiles(key: tuple, low: float, high: float) -> tuple[float, float]:
    volume = _volume(*key)
    finite = volume[np.isfinite(volume)]
    if not finite.size:
        raise UndecodableImage("the volume holds no finite value")
    lo, hi = np.percentile(finite, [low, high])
    return float(lo), float(hi)


def _key(path: Path) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class NiftiDecoder:
    """Slice ``frame`` along ``axis`` of a canonical volume -> 8-bit RGB image (see the module's docstring)."""

    axis: int = 2
    window: Window = DEFAULT_SCALING
    kind = "nifti"

    def policy(self) -> dict:
        return {
            "decoder": "nifti",
            "version": 1,
            "orientation": "closest canonical (RAS+) before slicing",
            "axis": self.axis,
            "window": self.window.as_dict(),
            "scaling": "preset/explicit: DICOM linear window; percentile: the volume's LOW..HIGH percentiles to 0..255",
            "slice": "rotated 90 degrees (second axis up)",
            "greyscale": "replicated to three channels",
        }

    @classmethod
    def from_policy(cls, policy: dict) -> "NiftiDecoder":
        return cls(int(policy.get("axis", 2)), Window.from_dict(policy.get("window") or {}))

    def decode(self, path: Path, frame: int | None = None, data: bytes | None = None):
        try:
            key = _key(path)
        except OSError as exc:
            raise UndecodableImage(f"cannot read file ({exc.strerror or exc})") from None
        with _LOADING:  # threads checking slices of one volume load it once, not once each
            volume = _volume(*key)
            percentile = self.window.mode == "percentile"
            low_high = _percentiles(key, self.window.low, self.window.high) if percentile else None
        index = 0 if frame is None else frame
        if not 0 <= index < volume.shape[self.axis]:
            raise UndecodableImage(f"slice {index} is out of range (0 to {volume.shape[self.axis] - 1}) on axis "
                                   f"{self.axis}")
        values = np.rot90(volume[(slice(None),) * self.axis + (index,)])  # a view (np.take copies slowly)
        if low_high is not None:
            grey = scale_range(values, *low_high)
        else:
            grey = apply_window(values, self.window.center, self.window.width)
        return Image.fromarray(np.ascontiguousarray(grey), mode="L").convert("RGB"), None


def _scaling(window, percentiles) -> Window:
    if window is not None and percentiles is not None:
        raise InputError("give a window or percentiles for NIfTI intensities, not both")
    chosen = parse_window(window) if window is not None else parse_percentiles(percentiles)
    if chosen is not None and chosen.mode == "file":
        raise InputError("window 'file' is for DICOM; for NIfTI give a preset, CENTER,WIDTH or percentiles")
    return chosen or DEFAULT_SCALING


def parse_slice_range(text: str | tuple | None) -> tuple[int, int | None] | None:
    """``START:STOP`` (STOP excluded, either may be empty) as ``(start, stop)``."""
    if text is None or isinstance(text, tuple):
        return text
    start, colon, stop = str(text).partition(":")
    try:
        parsed = (int(start) if start.strip() else 0, int(stop) if stop.strip() else None)
    except ValueError:
        parsed = None
    if not colon or parsed is None or parsed[0] < 0 or (parsed[1] is not None and parsed[1] <= parsed[0]):
        raise InputError(f"slice range {text!r} is not START:STOP with 0 <= START < STOP, e.g. 10:40 or 10:")
    return parsed


def _slice_count(path: Path, axis: int) -> int:
    nib = _nibabel()
    try:
        image = nib.load(path)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path} is not a readable NIfTI volume ({exc})") from None
    shape = tuple(image.shape) + (1,) * max(0, 3 - len(image.shape))
    ornt = nib.orientations.io_orientation(image.affine)
    data_axis = int(np.flatnonzero(ornt[:, 0] == axis)[0]) if len(ornt) > axis else axis
    return int(shape[data_axis])


def _slices(record: ImageRecord, axis: int, step: int, span: tuple[int, int | None] | None) -> list[ImageRecord]:
    count = _slice_count(record.path, axis)
    start, stop = span or (0, None)
    chosen = range(start, count if stop is None else min(stop, count), step)
    group = record.group or f"volume:{record.id}"
    return [replace(record, id=f"{record.id}#slice={k}", group=group, frame=k) for k in chosen]


def from_nifti(value: str | os.PathLike | list, axis: int = 2, step: int = 1, slice_range=None, window=None,
               percentiles=None) -> ImageSet:
    """Slices of NIfTI volumes listed in a CSV (path,label[,group][,split]) or given as files (unlabelled).

    ``axis`` 0, 1 or 2 of the canonical volume; every ``step``-th slice of
    ``slice_range`` (``START:STOP``, default all); intensities by ``window``
    (preset or ``C,W``) or ``percentiles`` (``LOW,HIGH``, default 0.5,99.5).
    """
    if axis not in (0, 1, 2):
        raise InputError(f"slice axis {axis} is out of range (0 to 2)")
    if step < 1:
        raise InputError(f"slice step must be at least 1, got {step}")
    span = parse_slice_range(slice_range)
    decoder = NiftiDecoder(axis, _scaling(window, percentiles))
    paths = [Path(p) for p in value] if isinstance(value, (list, tuple)) else [Path(value)]
    if len(paths) == 1 and paths[0].suffix.lower() == ".csv":
        base = from_csv(paths[0])
    else:
        bad = [str(p) for p in paths if not (p.is_file() and is_nifti(p))]
        if bad:
            raise InputError(f"not NIfTI files (.nii, .nii.gz): {', '.join(bad[:5])}; pass volumes or a CSV of them")
        files = sorted(p.resolve() for p in paths)
        root = Path(os.path.commonpath([p.parent for p in files]))
        base = _validated(root.name or "nifti", "nifti", root, [ImageRecord(p.relative_to(root).as_posix(), p)
                                                                 for p in files])
    records = [s for record in base.records for s in _slices(record, axis, step, span)]
    if not records:
        raise InputError(f"slice range {slice_range!r} selects no slice of the volumes in {base.name!r}")
    return ImageSet(base.name, "nifti", base.root, tuple(records), base.class_names, decoder)
