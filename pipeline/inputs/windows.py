"""Intensity windows: how stored medical intensities (Hounsfield units, MR signal) become 0..255 grey.

A window is part of the decoder's policy, so it is recorded in the cache
manifest (``preprocessing.colour.window``) and enters the cache key: codes of
one window are never reused for another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError

# Named CT windows (center, width) in Hounsfield units, as commonly used in radiology.
PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "soft-tissue": (50.0, 400.0),
}
MODES = ("file", "preset", "explicit", "percentile")


@dataclass(frozen=True)
class Window:
    """Which window maps intensities to grey.

    ``file``: the image's own Window Center/Width (DICOM; the first value if
    there are several), else its min..max. ``preset``/``explicit``: center and
    width given. ``percentile``: the ``low``..``high`` percentiles of the
    volume (NIfTI).
    """

    mode: str = "file"
    center: float | None = None
    width: float | None = None
    name: str | None = None
    low: float | None = None
    high: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "Window":
        return cls(**{k: d.get(k) for k in ("mode", "center", "width", "name", "low", "high")})


def parse_window(text: str | Window | None) -> Window | None:
    """A preset name (``brain``), ``C,W`` (``40,80``) or ``file``; the error lists the choices."""
    if text is None or isinstance(text, Window):
        return text
    value = str(text).strip()
    if value == "file":
        return Window("file")
    if value in PRESETS:
        center, width = PRESETS[value]
        return Window("preset", center, width, name=value)
    parts = value.split(",")
    try:
        center, width = (float(p) for p in parts)
    except ValueError:
        center = width = None
    if center is None or not np.isfinite([center, width]).all():
        raise InputError(f"window {value!r} is neither a preset ({', '.join(PRESETS)}), 'file', nor CENTER,WIDTH "
                         "such as 40,80")
    if width < 1:
        raise InputError(f"window width must be at least 1, got {width:g} in {value!r}")
    return Window("explicit", center, width)


def parse_percentiles(text: str | tuple | None) -> Window | None:
    """``LOW,HIGH`` percentiles (``0.5,99.5``) as a percentile window."""
    if text is None:
        return None
    try:
        low, high = (float(p) for p in (text.split(",") if isinstance(text, str) else text))
    except (ValueError, TypeError):
        raise InputError(f"percentiles {text!r} are not LOW,HIGH such as 0.5,99.5") from None
    if not 0 <= low < high <= 100:
        raise InputError(f"percentiles {text!r} need 0 <= LOW < HIGH <= 100")
    return Window("percentile", low=low, high=high)


def _to_uint8(scaled: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's linear VOI function (PS3.3 C.11.2.1.2.1) onto 0..255.

    Values at or below ``c - 0.5 - (w - 1) / 2`` become 0, above
    ``c - 0.5 + (w - 1) / 2`` become 255, and between them
    ``((x - (c - 0.5)) / (w - 1) + 0.5) * 255``, rounded.
    """
    values = np.asarray(values, dtype=np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    if width <= 1:  # a threshold
        return np.where(values > low, 255, 0).astype(np.uint8)
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return _to_uint8(np.where(values <= low, 0, np.where(values > high, 255, scaled)))


def scale_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low``..``high`` linearly onto 0..255 (clipped); a flat range gives black."""
    values = np.asarray(values, dtype=np.float64)
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return _to_uint8((values - low) * (255.0 / (high - low)))
