"""Every way of decoding gives the same codes, on models other than the bundled one.

For each model (random-init, so no weights are needed), the images of a folder are extracted three times:
in line one image after another in the main thread (torch's own ToTensor + Normalize), in line spread over
one thread per core (the table lookup of pipeline/model/to_tensor.py) and with the decode-ahead thread.
Prints, per model, whether every output is bit-identical across the three.

Usage: python bench/decode_modes.py [--images FOLDER] [--models resnet18,torchvision/mobilenet_v2,convnext_atto]
(without --images, 40 generated images in two classes, as the tests make them)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODES = ("one by one", "in line", "thread")


def codes_of(images, model: str, mode: str, out: Path) -> dict[str, np.ndarray]:
    from pipeline import open_cache
    from pipeline.activations import ExtractConfig, extract

    feed = importlib.import_module("pipeline.activations.feed")
    threads = feed.decode_threads
    if mode == "one by one":
        feed.decode_threads = lambda: 1
    try:
        config = ExtractConfig(model=model, random_init=True, batch_size=8, workers="thread" if mode == "thread" else 0)
        result = extract(images, config, out=out, progress=False)
    finally:
        feed.decode_threads = threads
    with open_cache(result.path) as cache:
        return {f"{layer}/{pooling}": np.asarray(cache.codes(layer, pooling)) for layer, pooling in cache.outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", help="a folder with one sub-folder of images per class")
    parser.add_argument("--models", default="resnet18,torchvision/mobilenet_v2,convnext_atto")
    args = parser.parse_args()

    from pipeline.inputs import from_folder

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.images) if args.images else None
        if folder is None:
            sys.path.insert(0, str(ROOT))
            from tests.conftest import make_folder

            folder = make_folder(Path(tmp) / "images", n_per_class=20)
        images = from_folder(folder)
        for model in args.models.split(","):
            found = {mode: codes_of(images, model, mode, Path(tmp) / f"{model.replace('/', '_')}-{k}.h5")
                     for k, mode in enumerate(MODES)}
            reference = found[MODES[0]]
            same = all(np.array_equal(found[mode][key], reference[key]) for mode in MODES[1:] for key in reference)
            print(f"{model}: {len(images)} images, {len(reference)} outputs, bit-identical across "
                  f"{', '.join(MODES)}: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
