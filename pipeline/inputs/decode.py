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


def optional_module(name: str, what: str, extra: str):
    """Import the reader ``name`` that ``what`` needs, or refuse naming the extra that installs it."""
    import importlib

    from ..errors import InputError

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise InputError(f"{what} needs {name}: pip install 'layerprobe[{extra}]'") from None


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


class PilDecoder:
    """The decoder of ordinary image files: PIL, following :data:`COLOUR_POLICY`.

    Every decoder has ``kind``, ``policy()`` (recorded as the preprocessing's
    ``colour`` entry, so it enters the cache key) and ``decode(path, frame, data)``
    returning the 8-bit RGB image and a note worth recording (or None).
    """

    kind = "image"

    def policy(self) -> dict:
        return COLOUR_POLICY

    def decode(self, path: Path, frame: int | None = None, data: bytes | None = None):
        return decode_rgb(data if data is not None else path), (None if data is None else _note(data))

    def check(self, path: Path, frame: int | None, data: bytes) -> str | None:
        """The test decode before extraction: a JPEG at 1/8 scale (see :func:`decode_rgb`); its note."""
        decode_rgb(data, draft=True)  # the extraction decodes it fully: decode once, check cheaply
        return _note(data)

    def trusted_note(self, data: bytes) -> str | None:
        """The note of a file decoded before (its test decode is skipped)."""
        return _note(data)

    def __eq__(self, other) -> bool:
        return type(other) is PilDecoder

    def __hash__(self) -> int:
        return hash(PilDecoder)


PIL_DECODER = PilDecoder()


@dataclass(frozen=True)
class FileCheck:
    """Content fingerprint of one image file and, if it failed, why."""

    size: int
    sha256: str
    error: str | None = None
    note: str | None = None  # how the colour policy changed it, when worth stating


def check_file(path: Path, trusted: set[str] | frozenset = frozenset(), decoder=PIL_DECODER,
               frame: int | None = None) -> FileCheck:
    """Hash a file's bytes and make sure it (its ``frame``) decodes with ``decoder``; never raises for a bad image.

    Files whose sha256 is in ``trusted`` (decoded successfully before) are not
    decoded again where the decoder can say its note without decoding.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return FileCheck(0, "", f"cannot read file ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return FileCheck(0, digest, "empty file (0 bytes)")
    trusted_note = getattr(decoder, "trusted_note", None)
    if digest in trusted and trusted_note is not None:
        return FileCheck(len(data), digest, note=trusted_note(data))
    try:
        check = getattr(decoder, "check", None)  # a cheaper test decode, where the decoder has one
        note = check(Path(path), frame, data) if check is not None else decoder.decode(Path(path), frame, data)[1]
    except UndecodableImage as exc:
        return FileCheck(len(data), digest, str(exc))
    return FileCheck(len(data), digest, note=note)


def _note(data: bytes) -> str | None:
    with Image.open(io.BytesIO(data)) as img:
        frames = getattr(img, "n_frames", 1)
    return f"first of {frames} frames used" if frames > 1 else None


def _file_hash(path: Path) -> FileCheck:
    """Size and sha256 of a file, or why it cannot be read (no decoding)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return FileCheck(0, "", f"cannot read file ({exc.strerror or exc})")
    return FileCheck(len(data), hashlib.sha256(data).hexdigest(), None if data else "empty file (0 bytes)")


def _check_frame(file: FileCheck, path: Path, frame: int, decoder) -> FileCheck:
    if file.error:
        return file
    try:
        _, note = decoder.decode(Path(path), frame)
    except UndecodableImage as exc:
        return FileCheck(file.size, file.sha256, str(exc))
    return FileCheck(file.size, file.sha256, note=note)


def check_files(paths: list[Path], workers: int = 4, progress=None,
                trusted: set[str] | frozenset = frozenset(), decoder=PIL_DECODER,
                frames: list[int | None] | None = None) -> list[FileCheck]:
    """:func:`check_file` over many files (``frames[i]`` of file ``i``); PIL releases the GIL while decoding.

    A file holding several frames (a multi-frame DICOM, a NIfTI volume) is hashed once, not once per frame.
    """
    frames = frames if frames is not None else [None] * len(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        framed = sorted({str(p) for p, f in zip(paths, frames) if f is not None})
        hashed = dict(zip(framed, pool.map(_file_hash, framed)))

        def one(pf):
            path, frame = pf
            if frame is None:
                return check_file(path, trusted, decoder)
            return _check_frame(hashed[str(path)], path, frame, decoder)

        results = []
        for result in pool.map(one, zip(paths, frames), chunksize=16):
            results.append(result)
            if progress is not None:
                progress(1)
    return results
