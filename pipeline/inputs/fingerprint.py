"""Image fingerprints: two small, contrast-normalised thumbnails of every decoded image.

The codes of a CNN move when a slice is re-exported with another contrast
window, padding, scale or sharpening; a fingerprint should not. Each image is
reduced to grey (box-averaged first when larger than ``WORK_SIDE``), then
shrunk to ``SIDE x SIDE`` with area averaging and a light blur, and scaled to
0..1, twice:

- the **trimmed** thumbnail: flat borders (padding, the black around a scan)
  cut first, so a padded or re-framed copy still lines up;
- the **whole** thumbnail: the image as it is. Trimming depends on where the
  background ends, which a new contrast window moves; two exports of one slice
  with the same framing but another window can trim differently, while their
  whole thumbnails stay almost equal (correlation >= 0.99).

The cache stores both, one after the other (``WIDTH`` float16 values, 4 KiB an
image). The comparison (:mod:`pipeline.duplicates.prints`) derives what it
needs from them: the detail of the trimmed one, as values and as :func:`ranks`
(unchanged by any increasing brightness/contrast/gamma mapping), the whole one
as it is, and the mirror images. Caches written before the whole thumbnail
existed (version 1, ``AREA`` values a row) are fingerprinted again from their
files by the next ``duplicates`` run, or compared by their trimmed thumbnail
alone when the files are gone.

Computed from the decoded image the loader already holds (a PIL image or an
array), in about 2.5 ms: extraction speed does not move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

SIDE = 32
AREA = SIDE * SIDE  # values in one thumbnail
WIDTH = 2 * AREA  # a fingerprint: the trimmed thumbnail, then the whole one
DTYPE = np.float16
TIE_STEP = 1 / 32  # values closer than this fraction of the image's range rank as equal
FLAT_TOLERANCE = 0.06  # border lines within this fraction of the range of the border value are padding
WORK_SIDE = 256  # larger images are box-reduced to about this size before anything else
BLUR = 0.6  # Gaussian sigma in thumbnail pixels
MAX_TRIM = 0.4  # never trim more than this fraction from one side
FINGERPRINT_POLICY = {
    "version": 2,
    "thumbnail": f"grey, flat borders trimmed, {SIDE}x{SIDE} area average, Gaussian blur {BLUR} px; then the "
                 "same without trimming",
    "values": "scaled to 0..1 (the thumbnail's own min..max)",
    "dtype": np.dtype(DTYPE).name,
}


def fingerprint(image: Image.Image | np.ndarray) -> np.ndarray:
    """The ``(WIDTH,)`` fingerprint of a decoded image (PIL image, or an H x W [x C] array): its trimmed
    thumbnail, then its whole one."""
    grey = _grey(image)
    return np.concatenate([_thumbnail(_trim(grey)), _thumbnail(grey)])


def _thumbnail(grey: np.ndarray) -> np.ndarray:
    small = Image.fromarray(grey, mode="F").resize((SIDE, SIDE), Image.BOX)
    small = gaussian_filter(np.asarray(small, dtype=np.float32), BLUR, mode="nearest").ravel()
    low, high = float(small.min()), float(small.max())
    return ((small - low) / (high - low) if high > low else np.zeros_like(small)).astype(DTYPE)


def fingerprint_files(paths, workers: int = 4, progress=None, decoder=None, frames=None) -> np.ndarray:
    """Fingerprints of image files (a cheap pass: decode and shrink, no model); NaN rows for files that no
    longer decode. ``decoder`` and ``frames``: the input's own decoder (DICOM, NIfTI) and each row's frame."""
    from concurrent.futures import ThreadPoolExecutor

    from .decode import PIL_DECODER, UndecodableImage

    decoder = decoder or PIL_DECODER
    paths = list(paths)
    frames = list(frames) if frames is not None else [None] * len(paths)

    def one(item):
        path, frame = item
        try:
            return fingerprint(decoder.decode(Path(path), frame)[0])
        except (UndecodableImage, OSError):
            return np.full(WIDTH, np.nan, DTYPE)

    found = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for result in pool.map(one, zip(paths, frames), chunksize=16):
            found.append(result)
            if progress is not None:
                progress(1)
    return np.stack(found) if found else np.zeros((0, WIDTH), DTYPE)


def _grey(image: Image.Image | np.ndarray) -> np.ndarray:
    """Grey values scaled to 0..1, box-averaged first to about WORK_SIDE pixels on the short side."""
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "F", "I", "I;16"):
            image = image.convert("L")
        factor = min(image.size) // WORK_SIDE
        if factor >= 2 and image.mode in ("L", "F", "I"):
            image = image.reduce(factor)  # the thumbnail is 32 px: the time goes into the full-size image
        finite = image.mode != "F"  # integer pixels: nothing to clean (0.2 ms an image saved)
        values = np.asarray(image, dtype=np.float32)
    else:
        finite = False
        values = np.asarray(image, dtype=np.float32)
        if values.ndim == 3:  # channels last; luminance weights of ITU-R 601, like PIL's convert("L")
            values = values[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)[: values.shape[-1]]
    if not finite:
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _trim(grey: np.ndarray) -> np.ndarray:
    """Cut flat border lines (padding, background) from every side, at most MAX_TRIM of each side.

    Repeated while it cuts, so a coloured pad around a black background goes first and the black next.
    """
    for _ in range(3):
        trimmed = _trim_once(grey)
        if trimmed.shape == grey.shape:
            break
        grey = trimmed
    return grey


def _trim_once(grey: np.ndarray) -> np.ndarray:
    h, w = grey.shape
    top, bottom, left, right = 0, h, 0, w
    value = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    off = np.abs(grey - value)
    flat_rows = off.max(axis=1) <= FLAT_TOLERANCE
    flat_cols = off.max(axis=0) <= FLAT_TOLERANCE
    while top < int(h * MAX_TRIM) and flat_rows[top]:
        top += 1
    while h - bottom < int(h * MAX_TRIM) and flat_rows[bottom - 1]:
        bottom -= 1
    while left < int(w * MAX_TRIM) and flat_cols[left]:
        left += 1
    while w - right < int(w * MAX_TRIM) and flat_cols[right - 1]:
        right -= 1
    return np.ascontiguousarray(grey[top:bottom, left:right])


def ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks of values binned to TIE_STEP of their range (the rank view of a thumbnail)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    binned = np.floor((values - low) / ((high - low) * TIE_STEP)).astype(np.int64)
    counts = np.bincount(binned)
    below = np.cumsum(counts) - counts
    return (below + (counts - 1) / 2.0)[binned].astype(np.float32)
