"""Decoding image files to RGB, the same way for every stage.

The colour policy is part of the preprocessing: it is recorded in every cache
manifest and enters the cache key, so changing it can never reuse old codes.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

BACKGROUND = (0, 0, 0)

COLOUR_POLICY = {
    "version": 2,
    "orientation": "EXIF orientation applied (image rotated upright)",
    "frames": "first frame of multi-frame files (GIF, TIFF)",
    "alpha": f"composited onto background {BACKGROUND}",
    "high_bit_depth": "16-bit and 32-bit greyscale scaled linearly from the image's own min..max to 0..255",
    "non_finite": "float images with NaN or infinite pixels are refused as undecodable, never scaled to black",
    "greyscale": "replicated to three channels",
    "cmyk": "converted with PIL's CMYK->RGB",
    "max_pixels": Image.MAX_IMAGE_PIXELS,
}


class UndecodableImage(Exception):
    """Raised by :func:`decode_rgb` for a file that is not a usable image."""


def decode_rgb(data: bytes | str | Path, draft: bool = False) -> Image.Image:
    """Decode a file (or its bytes) to an 8-bit RGB image following :data:`COLOUR_POLICY`.

    ``draft=True`` is the check before extraction: a JPEG is then decoded at 1/8
    scale (libjpeg's DCT scaling). Every byte of its entropy-coded data is still
    read, so a truncated or broken file fails exactly as in a full decode; only
    the inverse DCT and colour conversion shrink. Other formats are decoded fully
    (their pixel values matter to the policy: 16-bit scaling, NaN refusal).
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; we refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                img.seek(0)
                if draft and img.format == "JPEG":
                    img.draft(img.mode, (1, 1))  # the smallest scale libjpeg offers: 1/8
                img = ImageOps.exif_transpose(img)
                img.load()
                return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UndecodableImage(f"decompression bomb refused ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UndecodableImage(_reason(exc)) from None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "cannot identify image file" in text:
        return "not an image file PIL can read"
    if "truncated" in text.lower():
        return f"truncated or broken image data ({text})"
    return text


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale_to_8bit(np.asarray(img, dtype=np.float64))
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_8bit(values: np.ndarray) -> Image.Image:
    if values.ndim == 3:
        values = values[..., 0]
    finite = np.isfinite(values)
    if not finite.all():
        # min..max scaling would turn a single NaN or inf into an all-black image, silently
        nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        raise UndecodableImage(
            f"{nan} NaN and {inf} infinite pixel(s) of {values.size} in a float image; replace them with "
            "finite values (e.g. numpy.nan_to_num) and save the image again"
        )
    low, high = float(np.min(values)), float(np.max(values))
    scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
    grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    return grey.convert("RGB")


@dataclass(frozen=True)
class FileCheck:
    """Content fingerprint of one image file and, if it failed, why."""

    size: int
    sha256: str
    error: str | None = None
    note: str | None = None  # how the colour policy changed it, when worth stating


def check_file(path: Path, trusted: set[str] | frozenset = frozenset()) -> FileCheck:
    """Hash a file's bytes and make sure it decodes; never raises for a bad image.

    Files whose sha256 is in ``trusted`` (decoded successfully before) are not decoded again.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return FileCheck(0, "", f"cannot read file ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return FileCheck(0, digest, "empty file (0 bytes)")
    if digest in trusted:
        return FileCheck(len(data), digest, note=_note(data))
    try:
        decode_rgb(data, draft=True)  # the extraction decodes it fully: decode once, check cheaply
    except UndecodableImage as exc:
        return FileCheck(len(data), digest, str(exc))
    return FileCheck(len(data), digest, note=_note(data))


def _note(data: bytes) -> str | None:
    with Image.open(io.BytesIO(data)) as img:
        frames = getattr(img, "n_frames", 1)
    return f"first of {frames} frames used" if frames > 1 else None


def check_files(paths: list[Path], workers: int = 4, progress=None,
                trusted: set[str] | frozenset = frozenset()) -> list[FileCheck]:
    """:func:`check_file` over many files; PIL releases the GIL while decoding."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = []
        for result in pool.map(lambda path: check_file(path, trusted), paths, chunksize=16):
            results.append(result)
            if progress is not None:
                progress(1)
    return results
