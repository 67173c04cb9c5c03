"""Controlled shifts and Br35H: how far from ImageNet, layer by layer, and does the probe curve agree?

Crops of scikit-image's natural photos, and versions of the same crops blurred,
noised, colour-inverted, or replaced by greyscale textures, go through the
bundled EfficientNet-Lite0 with BatchNorm statistics (``--bn-stats``). Prints:

  * per set, the distance to ImageNet's BatchNorm statistics (mean over every
    BatchNorm layer of W2, symmetric KL and mean shift, and W2 per output):
    natural photos should be closest, and each shift should move further;
  * per set, the cache-against-cache measures against a second set of natural
    crops (mean over the outputs): each should grow with the shift;
  * on Br35H MRI scans: W2 to ImageNet, LogME and H-score per output, next to a
    cross-validated logistic-regression probe's ROC AUC, LEEP, and the advice.

Usage: .venv/bin/python bench/similarity.py [--per-image 12] [--br35h 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.shift_data

from tests.shift_data import shift_sets  # noqa: E402

GAUSSIAN = ("w2", "sym_kl", "mean_shift")


def table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def extract_all(root: Path, per_image: int, size: int, br35h: int, device: str) -> dict[str, Path]:
    from pipeline.activations import ExtractConfig, extract
    from pipeline.inputs import bundled, from_folder

    config = ExtractConfig(bn_stats=True, layers=("all", "logits"), batch_size=32, device=device)
    sets = shift_sets(root / "images", per_image=per_image, size=size, blurs=(1.0, 2.0, 4.0), noises=(0.1, 0.2, 0.4))
    paths = {name: extract(from_folder(folder), config, out=root / f"{name}.h5", progress=False).path
             for name, folder in sets.items()}
    if br35h:
        paths["br35h"] = extract(bundled("br35h"), ExtractConfig(**{**config.__dict__, "limit": br35h, "seed": 0}),
                                 out=root / "br35h.h5", progress=False).path
    return paths


def imagenet_table(paths: dict[str, Path]) -> str:
    from pipeline.similarity import similarity_table

    rows, outputs = [], None
    for name, path in paths.items():
        t = similarity_table(path, "imagenet", transfer=False)
        outputs = outputs or [r.name.split("/")[0] for r in t.rows]
        means = [f"{np.mean([r.values[m] for r in t.bn_rows]):.3f}" for m in GAUSSIAN]
        rows.append((name, str(t.n_images), *means, *(f"{r.values['w2']:.3f}" for r in t.rows)))
    head = ("set", "images", *(f"{m} (all BN)" for m in GAUSSIAN), *(f"w2 {o}" for o in outputs))
    return table([head, *rows])


def reference_table(paths: dict[str, Path]) -> str:
    from pipeline.similarity import similarity_table

    rows, measures = [], None
    for name, path in paths.items():
        if name in ("reference", "br35h"):
            continue
        t = similarity_table(path, paths["reference"], transfer=False)
        measures = t.distances
        rows.append((name, *(f"{np.mean([r.values[m] for r in t.rows]):.4g}" for m in measures)))
    return table([("set", *measures), *rows])


def br35h_table(path: Path) -> tuple[str, str]:
    from pipeline.probes import ProbeConfig, run_probes, summary_rows
    from pipeline.similarity import advise_cache, similarity_table

    t = similarity_table(path, "imagenet")
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "br35h.probes.json"
        probes = run_probes(path, ProbeConfig(probes=("logreg",), folds=5, repeats=None, n_boot=200), out=results, progress=False)
        auc = {r["output"]: r for r in summary_rows(probes, "roc_auc")}
        advice = advise_cache(path, results)
    rows = [("output", "w2 to ImageNet", "logme", "hscore", "logreg ROC AUC")]
    for r in t.rows:
        a = auc.get(r.name)
        rows.append((r.name, f"{r.values['w2']:.3f}", f"{r.values['logme']:.3f}", f"{r.values['hscore']:.3f}",
                     f"{a['mean']:.3f} ± {a['sd']:.3f}" if a else "–"))
    leep = f"LEEP {t.leep:.4f}" if t.leep is not None else "no LEEP"
    return table(rows) + f"\n{leep}; {t.n_images} images, {t.n_classes} classes", advice.text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-image", type=int, default=12, help="Crops per photo (5 photos) in each set.")
    parser.add_argument("--size", type=int, default=96, help="Crop side in pixels (before the model's resize).")
    parser.add_argument("--br35h", type=int, default=200, help="Br35H images (0: skip).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--keep", type=Path, help="Keep images and caches in this folder.")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        paths = extract_all(root, args.per_image, args.size, args.br35h, args.device)
        extracted = time.perf_counter() - started
        # torch's OpenMP threads and a multi-threaded BLAS slow each other down on small CPUs
        with threadpool_limits(1, user_api="blas"):
            print("Distance to ImageNet from BatchNorm statistics (EfficientNet-Lite0; higher = further)")
            print(imagenet_table(paths))
            print("\nAgainst a second set of natural crops, cache vs cache (mean over outputs; higher = further)")
            print(reference_table(paths))
            if args.br35h:
                print("\nBr35H: distance to ImageNet, transferability and the probe, per output")
                rows, advice = br35h_table(paths["br35h"])
                print(rows)
                print("\nlayerprobe advise:\n" + advice)
    print(f"\nextraction {extracted:.0f} s, measures {time.perf_counter() - started - extracted:.0f} s")


if __name__ == "__main__":
    main()
