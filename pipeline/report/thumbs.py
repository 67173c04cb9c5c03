"""Small embedded thumbnails: a few images per class and the largest near-duplicate clusters.

Codes are not images, so the thumbnails are read from the image files the
cache records (its input root and each row's id); where the files are not at
hand the section says so and shows none.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

SIDE = 72  # pixels of a thumbnail's longer side
PER_CLASS = 6
CLUSTERS = 3
PER_CLUSTER = 6


def image_file(root: str | None, image_id: str) -> Path | None:
    """Where the image of ``image_id`` lies, if it is still there."""
    for candidate in ((Path(root) / image_id) if root else None, Path(image_id)):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def thumbnail(path: Path, side: int = SIDE) -> str | None:
    """A JPEG data URI of the image scaled to ``side`` pixels, or None where it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((side, side))
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=80)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _strip(root: str | None, ids: list[str], captions: list[str]) -> str:
    cells = []
    for image_id, caption in zip(ids, captions):
        path = image_file(root, image_id)
        uri = thumbnail(path) if path else None
        if uri:
            cells.append(f'<figure><img class=thumb src="{uri}" alt="{html.escape(image_id)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return f"<div class=thumbs>{''.join(cells)}</div>" if cells else ""


def class_samples(root: str | None, ids: list[str], y: list[int], class_names: list[str], seed: int = 0) -> str:
    """A seeded handful of images per class, or "" where none can be read."""
    rng = np.random.default_rng(seed)
    ids_a, y_a, parts = np.asarray(ids), np.asarray(y), []
    for c, name in enumerate(class_names):
        mine = ids_a[y_a == c]
        picked = sorted(rng.choice(mine, size=min(PER_CLASS, len(mine)), replace=False).tolist()) if len(mine) else []
        strip = _strip(root, picked, [Path(i).name for i in picked])
        if strip:
            parts.append(f"<h4>{html.escape(name)} ({len(mine)})</h4>{strip}")
    return "".join(parts)


def largest_clusters(root: str | None, ids: list[str], clusters: np.ndarray | None) -> str:
    """The largest near-duplicate clusters, a strip each, or "" where there are none or no files."""
    if clusters is None:
        return ""
    clusters = np.asarray(clusters)
    values, counts = np.unique(clusters[clusters >= 0], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    parts = []
    for v, n in zip(values[order][:CLUSTERS], counts[order][:CLUSTERS]):
        if n < 2:
            break
        members = [ids[i] for i in np.flatnonzero(clusters == v)[:PER_CLUSTER]]
        strip = _strip(root, members, [Path(i).name for i in members])
        if strip:
            parts.append(f"<h4>cluster of {n} images</h4>{strip}")
    return "".join(parts)
