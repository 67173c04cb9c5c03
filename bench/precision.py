"""`extract --precision`: throughput of bf16/fp16 autocast against fp32, and what it does to the probes.

Extracts N Br35H images (every stage + pre_logits) once per precision and
round, interleaved (fp32, bf16, fp16, fp32, ...), each into a fresh cache, and
prints img/s of the whole stage and its ratio to fp32. Then, on the last cache
of each precision: per layer, the cosine of each image's code with its fp32
code (min, median) and, with the near-duplicate clusters stored as groups
(group-aware folds, as `make demo` does), the logistic-regression ROC AUC and
its difference to fp32 (ΔAUC). bf16/fp16 stay opt-in unless |ΔAUC| <= 0.005 on
every layer.

Usage: python bench/precision.py [--images 3000] [--rounds 2] [--precisions fp32,bf16,fp16] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from pipeline import open_cache
from pipeline.activations import ExtractConfig, extract
from pipeline.duplicates import scan_cache, store_clusters
from pipeline.inputs import bundled, stratified_subset
from pipeline.probes import ProbeConfig, run_probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="300 images, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 300, 1
    precisions = [p.strip() for p in args.precisions.split(",")]
    if precisions[0] != "fp32":
        precisions.insert(0, "fp32")
    images = bundled("br35h")
    if args.images < len(images):
        images = stratified_subset(images, args.images, seed=0)

    tmp = Path(tempfile.mkdtemp())
    seconds = {p: [] for p in precisions}
    last = {}
    for round_no in range(args.rounds):
        for precision in precisions:
            config = ExtractConfig(batch_size=args.batch_size, device=args.device, precision=precision)
            result = extract(images, config, out=tmp / f"{precision}-{round_no}.h5", progress=False)
            seconds[precision].append(result.seconds)
            last[precision] = result.path
    print(f"tf_efficientnet_lite0, {len(images)} Br35H images, batch {args.batch_size}, {args.device}, "
          f"{os.cpu_count()} CPUs, {args.rounds} interleaved round(s), load {os.getloadavg()[0]:.2f}")
    base = statistics.median(seconds["fp32"])
    for precision in precisions:
        med = statistics.median(seconds[precision])
        print(f"{precision:5} whole extract stage {len(images) / med:7.1f} img/s   x fp32 {base / med:.2f}   "
              f"(rounds: {', '.join(f'{s:.1f}' for s in seconds[precision])} s)")

    auc = {}
    for precision, path in last.items():
        store_clusters(scan_cache(path))
        results = run_probes(path, ProbeConfig(probes=("logreg",), groups="auto"), jobs=2, progress=False)
        auc[precision] = {r["output"]: r["metrics"]["roc_auc"]["mean"] for r in results.rows}
    with open_cache(last["fp32"]) as reference:
        outputs = [f"{l}/{p}" for l, p in reference.outputs]
        codes = {o: reference.codes(o) for o in outputs}
    print(f"\n{'layer':<18}" + "".join(f"{'AUC ' + p:>10}" for p in precisions)
          + "".join(f"{'dAUC ' + p:>11}{'cos min/med':>14}" for p in precisions[1:]))
    worst = {p: 0.0 for p in precisions[1:]}
    for output in outputs:
        line = f"{output:<18}" + "".join(f"{auc[p][output]:10.4f}" for p in precisions)
        for precision in precisions[1:]:
            with open_cache(last[precision]) as cache:
                other = cache.codes(output)
            x = codes[output]
            cos = (x * other).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(other, axis=1), 1e-12)
            delta = auc[precision][output] - auc["fp32"][output]
            worst[precision] = max(worst[precision], abs(delta))
            line += f"{delta:+11.4f}{cos.min():7.3f}/{np.median(cos):.3f}"
        print(line)
    for precision, value in worst.items():
        print(f"{precision}: max |dAUC| over layers {value:.4f} ({'within' if value <= 0.005 else 'beyond'} 0.005)")


if __name__ == "__main__":
    main()
