"""Synthetic solar-panel cells: a homogeneous set of distinct look-alikes (for duplicate tests and benches).

Every cell has the same layout (a dark frame, three busbars, a finger every 12
pixels) and differs only in its wafer grain, noise, overall brightness and, in
about a third of them, a crack: what electroluminescence images of one panel
look like to a duplicate finder. No two cells are the same image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter


def solar_cell(rng: np.random.Generator, side: int = 300) -> Image.Image:
    image = np.full((side, side), 0.45) + rng.normal(0, 0.02)
    image += gaussian_filter(rng.normal(0, 1, (side, side)), side / 50) * 0.6  # grain of the wafer
    for x in (side // 4, side // 2, 3 * side // 4):  # three busbars
        image[:, x - side // 100:x + side // 100] = 0.85
    for y in range(side // 30, side, max(3, side // 25)):  # fingers
        image[y, :] += 0.12
    edge = max(2, side // 40)
    image[:edge] = image[-edge:] = 0.05
    image[:, :edge] = image[:, -edge:] = 0.05
    if rng.random() < 0.3:  # a crack
        x0, y0 = rng.integers(side // 15, side - side // 15, 2)
        angle = rng.uniform(0, np.pi)
        for t in range(-side // 5, side // 5):
            x, y = int(x0 + t * np.cos(angle)), int(y0 + t * np.sin(angle))
            if 0 <= x < side and 0 <= y < side:
                image[max(0, y - 1):y + 1, max(0, x - 1):x + 1] = 0.1
    image += rng.normal(0, 0.03, image.shape)
    return Image.fromarray((255 * np.clip(image, 0, 1)).astype(np.uint8)).convert("RGB")


def solar_cells(n: int, seed: int = 0, side: int = 300) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [solar_cell(rng, side) for _ in range(n)]
