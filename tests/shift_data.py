"""Controlled shifts: crops of scikit-image's photos, and versions of them further from natural images.

Natural photos (astronaut, coffee, chelsea, rocket, motorcycle) are cut into
random square crops, one class per photo. Shifted versions apply one transform
to the same crops: Gaussian blur or Gaussian noise at increasing strength, or
colour inversion; the texture set crops scikit-image's greyscale textures
(brick, grass, gravel) instead. Used by the similarity tests and by
``bench/similarity.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")
TEXTURES = ("brick", "grass", "gravel")


def _load(name: str) -> np.ndarray:
    from skimage import data

    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def crops(names, per_image: int, size: int, seed: int, scale: float = 0.5) -> dict[str, list[np.ndarray]]:
    """``per_image`` random ``size`` x ``size`` crops of each named image, shrunk by ``scale`` first."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        image = Image.fromarray(_load(name))
        image = np.asarray(image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                                        Image.BILINEAR))
        h, w = image.shape[:2]
        tops, lefts = rng.integers(0, h - size + 1, per_image), rng.integers(0, w - size + 1, per_image)
        out[name] = [image[t:t + size, l:l + size].copy() for t, l in zip(tops, lefts)]
    return out


def blur(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    from scipy.ndimage import gaussian_filter

    return lambda x: np.clip(gaussian_filter(x.astype(np.float64), sigma=(sigma, sigma, 0)), 0, 255).astype(np.uint8)


def noise(sd: float, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Additive Gaussian noise of ``sd`` on the 0..1 scale."""
    rng = np.random.default_rng(seed)
    return lambda x: np.clip(x + rng.normal(0, sd * 255, size=x.shape), 0, 255).astype(np.uint8)


def invert(x: np.ndarray) -> np.ndarray:
    return 255 - x


def write_set(root: Path, images: dict[str, list[np.ndarray]], transform=None) -> Path:
    """``root/<class>/<i>.png`` for every crop, ``transform`` applied first."""
    for label, arrays in images.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, x in enumerate(arrays):
            Image.fromarray(transform(x) if transform else x).save(folder / f"{i:03d}.png")
    return root


def shift_sets(root: Path, per_image: int, size: int, blurs=(1.0, 2.0, 4.0),
               noises=(0.1, 0.2, 0.4)) -> dict[str, Path]:
    """Image folders: a natural reference, a second natural set (no shift), then the shifted versions of it.

    Keys: ``reference``, ``natural``, ``blur<sigma>``..., ``noise<sd>``..., ``inverted``, ``texture``.
    """
    reference = crops(PHOTOS, per_image, size, seed=0)
    natural = crops(PHOTOS, per_image, size, seed=1)
    sets = {"reference": write_set(root / "reference", reference), "natural": write_set(root / "natural", natural)}
    for sigma in blurs:
        sets[f"blur{sigma:g}"] = write_set(root / f"blur{sigma:g}", natural, blur(sigma))
    for sd in noises:
        sets[f"noise{sd:g}"] = write_set(root / f"noise{sd:g}", natural, noise(sd))
    sets["inverted"] = write_set(root / "inverted", natural, invert)
    per_texture = max(1, round(per_image * len(PHOTOS) / len(TEXTURES)))
    sets["texture"] = write_set(root / "texture", crops(TEXTURES, per_texture, size, seed=2))
    return sets
