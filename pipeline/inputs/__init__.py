"""Inputs: image sets, their tables and the decoding policy (no torch here)."""

from .decode import COLOUR_POLICY, FileCheck, UndecodableImage, check_file, check_files, decode_rgb
from .records import DATASETS, ImageRecord, ImageSet, bundled, from_csv, from_folder, stratified_subset

__all__ = [
    "COLOUR_POLICY",
    "DATASETS",
    "FileCheck",
    "ImageRecord",
    "ImageSet",
    "UndecodableImage",
    "bundled",
    "check_file",
    "check_files",
    "decode_rgb",
    "from_csv",
    "from_folder",
    "stratified_subset",
]
