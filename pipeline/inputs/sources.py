"""Input sources: every kind of input layerprobe reads, in one registry.

Each source turns what names it (a folder, a table, a bundled data set's name,
a list of image files) into an :class:`ImageSet` of records that the shared
decoder reads: each set carries its own decoder (PIL for image files, the
DICOM and NIfTI decoders for medical files), whose policy is recorded as the
preprocessing's ``colour`` entry. ``extract`` picks a source by name (one CLI
option per source) with the decoding options that source takes; ``predict``
finds the source that claims the paths it was given (:func:`source_for_paths`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError
from .decode import PIL_DECODER
from .dicom import DicomDecoder, from_dicom, is_dicom
from .nifti import NiftiDecoder, from_nifti, is_nifti
from .records import IMAGE_SUFFIXES, ImageRecord, ImageSet, bundled, from_csv, from_folder, image_files


@dataclass(frozen=True)
class InputSource:
    """One kind of input: what it reads, how it loads, and which given paths it claims."""

    name: str
    about: str
    load: Callable[..., ImageSet]
    claims: Callable[[list[Path]], bool] | None = None  # None: never chosen from paths (named only)
    options: tuple[str, ...] = ()  # decoding options ``load`` takes as keywords


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _is_table(paths: list[Path]) -> bool:
    return len(paths) == 1 and paths[0].is_file() and paths[0].suffix.lower() == ".csv"


def _is_class_folder(paths: list[Path]) -> bool:
    if len(paths) != 1 or not paths[0].is_dir():
        return False
    entries = list(paths[0].iterdir())
    return any(p.is_dir() for p in entries) and not any(_is_image(p) for p in entries)


def _is_loose_folder(paths: list[Path]) -> bool:
    return len(paths) == 1 and paths[0].is_dir()


def _unlabelled(name: str, root: Path, files: list[Path]) -> ImageSet:
    if not files:
        raise InputError(f"no images found in {str(root)!r} (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    records = tuple(ImageRecord(p.relative_to(root).as_posix(), p) for p in files)
    return ImageSet(name, "images", root, records)


def from_loose_folder(folder: str | os.PathLike) -> ImageSet:
    """Every image under ``folder`` (sub-folders included), without labels."""
    root, problems = Path(folder), []
    files = image_files(root, problems)
    if problems:
        raise InputError(f"{len(problems)} problem(s) in {str(root)!r}: {'; '.join(problems[:10])}")
    return _unlabelled(root.name, root, files)


def from_files(paths: list[str | os.PathLike]) -> ImageSet:
    """The given image files, without labels; ids are paths relative to their common folder."""
    paths = [Path(p) for p in paths]
    bad = [str(p) for p in paths if not _is_image(p)]
    if bad:
        raise InputError(f"not image files: {', '.join(bad[:5])}; pass image files, one folder or one CSV table")
    files = sorted({p.resolve() for p in paths})
    root = Path(os.path.commonpath([p.parent for p in files]))
    return _unlabelled(root.name or "images", root, files)


def _first_listed(table: Path) -> Path | None:
    """The first path a CSV table lists (None if there is none)."""
    import csv

    try:
        with table.open(newline="", encoding="utf-8-sig") as handle:
            row = next(csv.DictReader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    raw = ((row or {}).get("path") or "").strip()
    return Path(raw) if raw else None


def _claims(test: Callable[[Path], bool], in_folder: Callable[[Path], bool] | None = None):
    """Claims files that all pass ``test``, a CSV whose first path does, or a folder ``in_folder`` accepts."""
    def claims(paths: list[Path]) -> bool:
        if len(paths) == 1 and paths[0].is_dir():
            return in_folder is not None and in_folder(paths[0])
        if _is_table(paths):
            first = _first_listed(paths[0])
            return first is not None and (test(first) or test(paths[0].parent / first))
        return all(test(p) for p in paths)

    return claims


def _holds_dicom(folder: Path) -> bool:
    return any(p.suffix.lower() not in IMAGE_SUFFIXES and is_dicom(p) for p in folder.rglob("*"))


def _named_dicom(path: Path) -> bool:
    return path.name.lower().endswith((".dcm", ".dicom")) or path.is_file() and is_dicom(path)


SOURCES: dict[str, InputSource] = {
    "dicom": InputSource("dicom", "DICOM files: a folder (one sub-folder per class, or none), a CSV of their "
                         "paths, or files", from_dicom, _claims(_named_dicom, _holds_dicom), ("window",)),
    "nifti": InputSource("nifti", "NIfTI volumes in a CSV (path,label[,group][,split]) or files, cut into slices",
                         from_nifti, _claims(is_nifti),
                         ("axis", "step", "slice_range", "window", "percentiles")),
    "csv": InputSource("csv", "a table with columns path[,label][,group][,split]", from_csv,
                       lambda paths: _is_table(paths)),
    "folder": InputSource("folder", "a folder with one sub-folder of images per class", from_folder,
                          _is_class_folder),
    "loose_folder": InputSource("loose_folder", "a folder of unlabelled images", from_loose_folder,
                                _is_loose_folder),
    "files": InputSource("files", "image files, unlabelled", from_files, lambda paths: True),
    "dataset": InputSource("dataset", "a bundled data set by name (br35h)", bundled),
}


def get_source(name: str) -> InputSource:
    """The registered source ``name``; the error lists the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise InputError(f"unknown input source {name!r}; available: {', '.join(SOURCES)}") from None


def load_input(source: str, value, **options) -> ImageSet:
    """The image set source ``source`` reads from ``value`` (a path, a list of paths, or a data set's name).

    ``options`` are decoding options (``window``, ``axis``, ...); None means
    the source's default, and an option the source does not take is refused.
    """
    chosen = get_source(source)
    given = {k: v for k, v in options.items() if v is not None}
    for name in given:
        if name not in chosen.options:
            takers = [s.name for s in SOURCES.values() if name in s.options]
            raise InputError(f"option {name!r} does not apply to {source} input; it applies to "
                             f"{' and '.join(takers) or 'no source'} input")
    return chosen.load(value, **given)


DECODERS: dict[str, Callable[[dict], object]] = {
    "image": lambda policy: PIL_DECODER,
    "dicom": DicomDecoder.from_policy,
    "nifti": NiftiDecoder.from_policy,
}


def decoder_for_policy(policy: dict):
    """The decoder that a recorded ``colour`` policy describes (image files' policy names no decoder)."""
    kind = policy.get("decoder", "image") if isinstance(policy, dict) else "image"
    if kind not in DECODERS:
        raise InputError(f"unknown decoder {kind!r} in a recorded policy; known: {', '.join(DECODERS)}")
    return DECODERS[kind](policy)


def source_for_paths(paths: list[str | os.PathLike]) -> tuple[InputSource, object]:
    """The first source (in registry order) that claims ``paths``, and the value to load it with."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no images given; pass image files, a folder or a CSV table")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"{len(missing)} input path(s) do not exist: {', '.join(missing[:5])}")
    for source in SOURCES.values():
        if source.claims is not None and source.claims(paths):
            return source, (paths if source.name == "files" or len(paths) > 1 else paths[0])
    raise InputError("no input source reads these paths")  # unreachable: "files" claims every list


def from_paths(paths: list[str | os.PathLike]) -> ImageSet:
    """An image set from a CSV table, a folder (class sub-folders or loose images) or image files."""
    source, value = source_for_paths(paths)
    return source.load(value)
