"""Inputs: image sets, their tables and the decoding policy (no torch here)."""

from .decode import COLOUR_POLICY, FileCheck, UndecodableImage, check_file, check_files, decode_rgb
from .records import DATASETS, ImageRecord, ImageSet, bundled, from_csv, from_folder, stratified_subset
from .sources import SOURCES, InputSource, from_paths, get_source, load_input

__all__ = [
    "COLOUR_POLICY",
    "DATASETS",
    "FileCheck",
    "ImageRecord",
    "ImageSet",
    "InputSource",
    "SOURCES",
    "UndecodableImage",
    "bundled",
    "check_file",
    "check_files",
    "decode_rgb",
    "from_csv",
    "from_folder",
    "from_paths",
    "get_source",
    "load_input",
    "stratified_subset",
]
