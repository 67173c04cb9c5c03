"""Input sources: every kind of input layerprobe reads, in one registry.

Each source turns what names it (a folder, a table, a bundled data set's name,
a list of image files) into an :class:`ImageSet` of records that the shared
decoder (:mod:`pipeline.inputs.decode`) reads. ``extract`` picks a source by
name (one CLI option per source); ``predict`` finds the source that claims the
paths it was given (:func:`source_for_paths`). New kinds of input (DICOM,
NIfTI) become new entries here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError
from .records import IMAGE_SUFFIXES, ImageRecord, ImageSet, bundled, from_csv, from_folder, image_files


@dataclass(frozen=True)
class InputSource:
    """One kind of input: what it reads, how it loads, and which given paths it claims."""

    name: str
    about: str
    load: Callable[..., ImageSet]
    claims: Callable[[list[Path]], bool] | None = None  # None: never chosen from paths (named only)


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


SOURCES: dict[str, InputSource] = {
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


def load_input(source: str, value) -> ImageSet:
    """The image set source ``source`` reads from ``value`` (a path, a list of paths, or a data set's name)."""
    return get_source(source).load(value)


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
            return source, (paths[0] if source.name != "files" else paths)
    raise InputError("no input source reads these paths")  # unreachable: "files" claims every list


def from_paths(paths: list[str | os.PathLike]) -> ImageSet:
    """An image set from a CSV table, a folder (class sub-folders or loose images) or image files."""
    source, value = source_for_paths(paths)
    return source.load(value)
