"""Planted near-duplicates, and Br35H against its pixel truth: layerprobe's fingerprint view side by side
with CleanVision's near-duplicate check and imagededup (PHash, CNN).

The other tools are not project dependencies. Install them apart and put them on the path:

    pip install --target /tmp/dedup_pkgs --no-deps cleanvision imagededup imagehash PyWavelets tabulate pandas
    PYTHONPATH=$PWD:/tmp/dedup_pkgs .venv/bin/python bench/fingerprints.py [--seed 0] [--planted-only] [--save DIR]

Each tool gets the same image files. Pairs are scored against the planted truth (bench/planted.py; a base
and its transformed copy) and, on all 3000 Br35H images, against the pixel truth of OFFLINE.md (64x64 grey,
correlation > 0.99; a lower bound on true duplicates, since re-exports with another contrast, crop or
mirror image fall below it). Times are wall-clock on this machine, files already written.
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.cell_data
from planted import TRANSFORMS, br35h_paths, pixel_truth, planted_set, transform  # noqa: E402

from pipeline.duplicates.prints import print_pairs  # noqa: E402
from pipeline.inputs import decode_rgb  # noqa: E402
from pipeline.inputs.fingerprint import fingerprint, fingerprint_files  # noqa: E402
from tests.cell_data import solar_cells  # noqa: E402


SCORES: dict = {}  # the last run of ours(): every pair down to a detail similarity of LOOSE, with both scores
LOOSE = 0.85


def ours(paths: list[Path], mirror: bool = True) -> tuple[set, float]:
    started = time.perf_counter()
    prints = fingerprint_files(paths)
    found = print_pairs(prints, mirror=mirror)
    seconds = time.perf_counter() - started
    SCORES.clear()
    SCORES.update(sweep_scores(prints, found, mirror))
    return set(zip(found.i.tolist(), found.j.tolist())), seconds


def sweep_scores(prints: np.ndarray, found, mirror: bool) -> dict:
    """What a precision-recall sweep of the detail threshold needs (the whole view's threshold kept)."""
    from pipeline.duplicates.prints import whole_similarity

    loose = print_pairs(prints, mirror=mirror, threshold=LOOSE)
    both = whole_similarity(prints, loose.i, loose.j, mirror)
    return {"detail_threshold": found.threshold, "whole_threshold": found.whole_threshold,
            "pairs": [[int(a), int(b), round(float(d), 5), round(float(h), 5)]
                      for a, b, d, h in zip(loose.i, loose.j, loose.similarity, both)]}


def cleanvision(paths: list[Path]) -> tuple[set, float]:
    from cleanvision import Imagelab

    started = time.perf_counter()
    lab = Imagelab(filepaths=[str(p) for p in paths])
    lab.find_issues({"near_duplicates": {}, "exact_duplicates": {}}, verbose=False)
    index = {str(p): k for k, p in enumerate(paths)}
    found = set()
    for key in ("near_duplicates", "exact_duplicates"):
        for members in lab.info[key]["sets"]:
            rows = sorted(index[m] for m in members)
            found |= {(a, b) for n, a in enumerate(rows) for b in rows[n + 1:]}
    return found, time.perf_counter() - started


def imagededup(paths: list[Path], method: str) -> tuple[set, float]:
    from imagededup import methods

    started = time.perf_counter()
    tool = getattr(methods, method)()
    folder = paths[0].parent
    duplicates = tool.find_duplicates(image_dir=folder)
    index = {p.name: k for k, p in enumerate(paths)}
    found = {tuple(sorted((index[a], index[b]))) for a, dups in duplicates.items() for b in dups
             if a in index and b in index}
    return found, time.perf_counter() - started


def score(found: set, truth: set) -> tuple[float, float]:
    hit = len(found & truth)
    return hit / max(1, len(found)), hit / max(1, len(truth))


def write_images(images, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, image in enumerate(images):
        path = folder / f"{k:05d}.png"
        image.save(path)
        paths.append(path)
    return paths


def tools(paths: list[Path]) -> dict:
    found = {"layerprobe fingerprints": ours(paths)}
    for name, run in [("CleanVision near+exact", lambda: cleanvision(paths)),
                      ("imagededup PHash", lambda: imagededup(paths, "PHash")),
                      ("imagededup CNN", lambda: imagededup(paths, "CNN"))]:
        try:
            found[name] = run()
        except Exception as exc:  # a tool not installed, or one that cannot run offline
            found[name] = (None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}")
    return found


SAVE: Path | None = None  # --save DIR: every tool's pairs as JSON, for the audit by eye (bench/audit.py)


def save(name: str, record: dict) -> None:
    if SAVE is not None:
        SAVE.mkdir(parents=True, exist_ok=True)
        (SAVE / f"{name}.json").write_text(json.dumps(record))


def planted_table(work: Path, seed: int = 0) -> None:
    data = planted_set(seed=seed)
    paths = write_images(data.images, work / "planted")
    truth = {tuple(sorted(p)) for p in data.truth}
    distinct = {k for k, kind in enumerate(data.kind) if kind == "base"}
    print(f"planted: {len(paths)} images ({len(distinct)} distinct bases: "
          f"{dict(collections.Counter(data.source[k] for k in distinct))}; {len(truth)} planted copies, "
          f"{len(truth) // len(TRANSFORMS)}+ of each of {', '.join(TRANSFORMS)})")
    print("| tool | pairs | precision | recall | false pairs (photo/texture) | false pairs (Br35H) | seconds |")
    print("|---|---|---|---|---|---|---|")
    per_kind = {}
    results = tools(paths)
    save(f"planted{seed}", {"seed": seed, "names": data.names, "source": data.source, "kind": data.kind,
                            "truth": sorted(truth), "pairs": {n: sorted(f) for n, (f, _) in results.items() if f},
                            "scores": dict(SCORES)})
    for name, (found, seconds) in results.items():
        if found is None:
            print(f"| {name} | – | – | – | – | – | failed: {seconds} |")
            continue
        p, r = score(found, truth)
        false = found - truth
        on_br35h = sum(data.source[a] == "br35h" and data.source[b] == "br35h" for a, b in false)
        print(f"| {name} | {len(found)} | {p:.3f} | {r:.3f} | {len(false) - on_br35h} | {on_br35h} | {seconds:.1f} |")
        per_kind[name] = {t: np.mean([tuple(sorted(p)) in found for p in data.truth if data.kind[p[1]] == t])
                          for t in TRANSFORMS}
    print("\nrecall by transformation")
    print("| tool | " + " | ".join(TRANSFORMS) + " |")
    print("|---|" + "---|" * len(TRANSFORMS))
    for name, recall in per_kind.items():
        print(f"| {name} | " + " | ".join(f"{recall[t]:.2f}" for t in TRANSFORMS) + " |")


def br35h_table(work: Path) -> None:
    sources = br35h_paths()
    images = [decode_rgb(Path(str(p))) for p in sources]
    started = time.perf_counter()
    truth = pixel_truth(images)
    print(f"\nBr35H: {len(images)} images, pixel truth {len(truth)} pairs ({time.perf_counter() - started:.1f} s)")
    paths = write_images(images, work / "br35h")
    print("| tool | pairs | precision vs pixel truth (lower bound) | recall vs pixel truth | seconds |")
    print("|---|---|---|---|---|")
    results = tools(paths)
    save("br35h", {"names": [f"{p.parent.name}/{p.name}" for p in sources], "truth": sorted(truth),
                   "pairs": {n: sorted(f) for n, (f, _) in results.items() if f}})
    for name, (found, seconds) in results.items():
        if found is None:
            print(f"| {name} | – | – | – | failed: {seconds} |")
            continue
        p, r = score(found, truth)
        print(f"| {name} | {len(found)} | {p:.3f} | {r:.3f} | {seconds:.1f} |")


def homogeneous_table() -> None:
    """Sets of distinct look-alikes (no duplicates at all): how many pairs and how large the clusters,
    with the relative threshold and with a fixed one."""
    import skimage.data as data
    from PIL import Image

    from pipeline.duplicates import clusters

    sets = {"LFW faces (skimage lfw_subset, first 100)": [Image.fromarray((255 * f).astype(np.uint8))
                                                         for f in data.lfw_subset()[:100]]}
    crops = []
    for name in ("brick", "grass", "gravel"):
        image = Image.fromarray(getattr(data, name)())
        crops += [image.crop((x, y, x + 64, y + 64)) for x in range(0, 512, 64) for y in range(0, 512, 64)]
    sets["texture crops (brick, grass, gravel: 3 x 64 of 64x64)"] = crops
    sets["synthetic solar cells (tests/cell_data.py: one layout, grain, noise, cracks)"] = solar_cells(400)
    print("\nhomogeneous sets without duplicates (every pair found is false)")
    print("| set | images | typical 10th-neighbour similarity | threshold | pairs | largest cluster | pairs at a fixed 0.90 | largest cluster at 0.90 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, images in sets.items():
        prints = np.stack([fingerprint(im) for im in images])
        relative = print_pairs(prints)
        fixed = print_pairs(prints, threshold=0.90)
        largest = lambda p: int(np.bincount(clusters(len(images), p.i, p.j)).max())  # noqa: E731
        print(f"| {name} | {len(images)} | {relative.typical:.3f} | {relative.threshold:.3f} | {len(relative.i)} | "
              f"{largest(relative)} | {len(fixed.i)} | {largest(fixed)} |")
    cells = sets["synthetic solar cells (tests/cell_data.py: one layout, grain, noise, cracks)"]
    rng = np.random.default_rng(1)
    copies = [(k, transform(cells[k], TRANSFORMS[(k // 10) % len(TRANSFORMS)], rng)) for k in range(0, 400, 10)]
    prints = np.stack([fingerprint(im) for im in cells + [c for _, c in copies]])
    found = print_pairs(prints)
    found = set(zip(found.i.tolist(), found.j.tolist()))
    truth = {(k, 400 + n) for n, (k, _) in enumerate(copies)}
    print(f"one transformed copy of 40 of the 400 cells (each transformation 4 times): recall "
          f"{len(found & truth) / len(truth):.3f}, false pairs {len(found - truth)}")


def main() -> None:
    global SAVE
    if "--save" in sys.argv:
        SAVE = Path(sys.argv[sys.argv.index("--save") + 1])
    if "--homogeneous-only" in sys.argv:
        return homogeneous_table()
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
    with tempfile.TemporaryDirectory() as work:
        homogeneous_table()
        planted_table(Path(work), seed)
        if "--planted-only" not in sys.argv:
            br35h_table(Path(work))


if __name__ == "__main__":
    main()
