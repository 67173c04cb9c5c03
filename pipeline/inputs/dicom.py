"""DICOM input: files in a folder or listed in a CSV, one record per frame, windowed to grey.

Decoding (recorded as the preprocessing's ``colour`` policy): the Modality LUT
(Rescale Slope/Intercept) first, then the VOI window: the file's own Window
Center/Width (the first value where several are stored), a named preset or an
explicit ``C,W``; a file without a window is scaled from its frame's min..max,
and the manifest's input notes say so for that row. MONOCHROME1 is inverted
after windowing. Colour images (RGB, YBR) are converted to RGB, not windowed.

Privacy: only PatientID (or, where it is empty, StudyInstanceUID) is read from
the headers, as the row's group; no other header field reaches the cache.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .decode import UndecodableImage, optional_module
from .records import ImageRecord, ImageSet, from_csv, _validated
from .windows import Window, apply_window, parse_window, scale_range

SUFFIXES = frozenset({".dcm", ".dicom"})
COMPRESSED_EXTRA = "dicom-compressed"
_GROUP_TAGS = ["PatientID", "StudyInstanceUID", "NumberOfFrames"]


def _pydicom():
    return optional_module("pydicom", "DICOM input", "dicom")


def is_dicom(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or a file without suffix that starts with the DICOM preamble (``DICM``)."""
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() in SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


@dataclass(frozen=True)
class DicomDecoder:
    """Frame ``frame`` of a DICOM file -> windowed 8-bit RGB image (see the module's docstring)."""

    window: Window = Window("file")
    kind = "dicom"

    def policy(self) -> dict:
        return {
            "decoder": "dicom",
            "version": 1,
            "modality_lut": "applied (Rescale Slope/Intercept or Modality LUT Sequence)",
            "window": self.window.as_dict(),
            "window_function": "DICOM linear (PS3.3 C.11.2.1.2.1)",
            "no_window_in_file": "min..max of the frame (noted per row)",
            "monochrome1": "inverted after windowing",
            "colour": "RGB and YBR frames converted to RGB, not windowed",
            "frames": "one row per frame",
            "greyscale": "replicated to three channels",
        }

    @classmethod
    def from_policy(cls, policy: dict) -> "DicomDecoder":
        return cls(Window.from_dict(policy.get("window") or {}))

    def decode(self, path: Path, frame: int | None = None, data: bytes | None = None):
        pydicom = _pydicom()
        try:
            ds = pydicom.dcmread(io.BytesIO(data) if data is not None else path)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise UndecodableImage(f"not a readable DICOM file ({exc})") from None
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            raise UndecodableImage("a DICOM file without pixel data (a report, plan or structure set?)")
        pixels = _pixels(ds, frame)
        if pixels.ndim == 3:  # colour: pydicom gives RGB for RGB and YBR
            bits = int(ds.get("BitsStored", 8) or 8)
            rgb = pixels if pixels.dtype == np.uint8 else scale_range(pixels, 0, 2 ** bits - 1)
            return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB"), None
        from pydicom.pixels import apply_modality_lut

        values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
        grey, note = self._window(values, ds)
        if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
            grey = 255 - grey
        return Image.fromarray(grey, mode="L").convert("RGB"), note

    def _window(self, values: np.ndarray, ds) -> tuple[np.ndarray, str | None]:
        if self.window.mode in ("preset", "explicit"):
            return apply_window(values, self.window.center, self.window.width), None
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        if center is not None and width is not None and width >= 1:
            return apply_window(values, center, width), None
        low, high = float(values.min()), float(values.max())
        note = f"no window in the file: scaled from the frame's min..max ({low:g}..{high:g})"
        return scale_range(values, low, high), note


def _first(value) -> float | None:
    """The first of a multi-valued element, as a float (None when absent or empty)."""
    if value is None or value == "":
        return None
    if not isinstance(value, (int, float, str)) and hasattr(value, "__len__"):
        if not len(value):
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _pixels(ds, frame: int | None) -> np.ndarray:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frame is not None and not 0 <= frame < frames:
        raise UndecodableImage(f"frame {frame} is out of range (0 to {frames - 1})")
    try:
        from pydicom.pixels import pixel_array

        return pixel_array(ds, index=frame if frames > 1 else None)
    except (RuntimeError, NotImplementedError, ValueError, AttributeError) as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and syntax.is_compressed:
            raise UndecodableImage(
                f"its pixel data is compressed ({syntax.name}) and no installed decoder reads it: "
                f"pip install 'layerprobe[{COMPRESSED_EXTRA}]' (pylibjpeg with its JPEG, JPEG-LS and JPEG 2000 plugins)"
            ) from None
        raise UndecodableImage(f"its pixel data cannot be decoded ({exc})") from None


# Loading: files -> records, one per frame, grouped by patient -----------------------------------
def _header(path: Path) -> dict:
    """PatientID, StudyInstanceUID and NumberOfFrames of a file (empty for an unreadable one)."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_GROUP_TAGS)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
        return {}
    return {tag: str(ds.get(tag, "") or "").strip() for tag in _GROUP_TAGS}


def _frames(record: ImageRecord) -> list[ImageRecord]:
    """One record per frame, grouped by patient (else study, else file) unless the table gave a group."""
    head = _header(record.path)
    group = record.group
    if group is None:
        patient, study = head.get("PatientID"), head.get("StudyInstanceUID")
        group = patient or (f"study:{study}" if study else f"file:{record.id}")
    try:
        count = int(head.get("NumberOfFrames") or 1)
    except ValueError:
        count = 1
    if count <= 1:
        return [replace(record, group=group)]
    return [replace(record, id=f"{record.id}#frame={k}", group=group, frame=k) for k in range(count)]


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_dicom(p) and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))


def _folder_records(root: Path) -> list[ImageRecord]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in root.iterdir() if is_dicom(p)]
    if classes and not loose:
        return [ImageRecord(p.relative_to(root).as_posix(), p, c.name) for c in classes for p in dicom_files(c)]
    return [ImageRecord(p.relative_to(root).as_posix(), p) for p in dicom_files(root)]


def from_dicom(value: str | os.PathLike | list, window: Window | str | None = None) -> ImageSet:
    """DICOM files: a folder (one sub-folder per class, or unlabelled), a CSV of their paths, or a list of files.

    ``window``: None or ``file`` (the file's own window), a preset name
    (:data:`pipeline.inputs.windows.PRESETS`) or ``C,W``.
    """
    decoder = DicomDecoder(parse_window(window) or Window("file"))
    paths = [Path(p) for p in value] if isinstance(value, (list, tuple)) else [Path(value)]
    if len(paths) == 1 and paths[0].suffix.lower() == ".csv":
        base = from_csv(paths[0])
        name, root, records, classes = base.name, base.root, list(base.records), base.class_names
    else:
        if len(paths) == 1 and paths[0].is_dir():
            root = paths[0]
            records = _folder_records(root)
        else:
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise InputError(f"DICOM input: {', '.join(missing[:5])} is not a file or folder")
            root = Path(os.path.commonpath([p.resolve().parent for p in paths]))
            records = [ImageRecord(p.resolve().relative_to(root).as_posix(), p.resolve()) for p in paths]
        if not records:
            raise InputError(f"no DICOM files found in {str(root)!r} (suffixes .dcm, .dicom, or the DICM preamble)")
        name = root.name or "dicom"
        base = _validated(name, "dicom", root, records)
        records, classes = list(base.records), base.class_names
    expanded = [frame for record in records for frame in _frames(record)]
    return ImageSet(name, "dicom", Path(root), tuple(expanded), tuple(classes), decoder)
