"""Shared fixtures: tiny generated images in many modes and a tiny random-init model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_MODEL = "test_efficientnet"
TINY_SIZE = 64


@pytest.fixture(params=[0, 1, 2])
def seed(request):
    """Tests taking this fixture must pass for any seed."""
    return request.param


def _pattern(rng: np.random.Generator, label: int, size=(40, 48)) -> np.ndarray:
    """A textured image whose mean brightness depends on its class."""
    h, w = size
    base = 60 + 120 * label
    noise = rng.integers(0, 60, size=(h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = ((xx + yy * label) % 8 < 4)[..., None] * 40
    return np.clip(base + noise + stripes, 0, 255).astype(np.uint8)


def make_folder(root: Path, n_per_class: int = 8, classes=("benign", "malignant"), seed: int = 0) -> Path:
    """``root/<class>/<i>.<ext>`` with images saved in a mix of formats and modes."""
    rng = np.random.default_rng(seed)
    formats = [("png", "RGB"), ("jpg", "RGB"), ("png", "L"), ("png", "RGBA"), ("bmp", "RGB"), ("png", "P")]
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            ext, mode = formats[i % len(formats)]
            img = Image.fromarray(_pattern(rng, label)).convert(mode)
            img.save(folder / f"img{i:02d}.{ext}")
    return root


def forge_manifest(path, change):
    """Edit a cache's manifest in place with ``change(manifest)`` and re-sign it: what no extract writes."""
    import json

    import h5py

    from pipeline.cache.format import metadata_digest

    with h5py.File(path, "r+") as handle:
        manifest = json.loads(handle.attrs["manifest"])
        change(manifest)
        handle.attrs["manifest"] = json.dumps(manifest)
        handle.attrs["digest"] = metadata_digest(handle)
    return path


def read_codes(path) -> tuple[list[str], dict[str, np.ndarray]]:
    """A cache's ids and every output's codes, keyed ``layer/pooling``."""
    from pipeline import open_cache

    with open_cache(path) as cache:
        return list(cache.ids), {f"{l}/{p}": cache.codes(l, p) for l, p in cache.outputs}


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_folder(tmp_path / "images")


@pytest.fixture
def image_csv(image_folder, tmp_path) -> Path:
    """A CSV over the image folder with a patient group and a split column."""
    path = tmp_path / "table.csv"
    files = sorted(p for p in image_folder.rglob("*") if p.is_file())
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "split"])
        for i, f in enumerate(files):
            writer.writerow([f.relative_to(tmp_path).as_posix(), f.parent.name, f"patient{i // 2}", "test" if i % 4 == 0 else "train"])
    return path


@pytest.fixture
def tiny_config():
    """An ExtractConfig for the tiny random-init model at 64 px, decoding in-process."""
    from pipeline.activations import ExtractConfig

    def make(**overrides):
        options = dict(model=TINY_MODEL, random_init=True, img_size=TINY_SIZE, batch_size=8, workers=0)
        options.update(overrides)
        return ExtractConfig(**options)

    return make


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """The tiny model's seeded weights as a file: a model the advice treats as trained (random-init is not)."""
    import torch

    from pipeline.model import build_model

    module = build_model(TINY_MODEL, random_init=True, img_size=TINY_SIZE).module
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({k: v.clone(memory_format=torch.contiguous_format) for k, v in module.state_dict().items()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_model():
    from pipeline.model import build_model

    return build_model(TINY_MODEL, random_init=True, img_size=TINY_SIZE)
