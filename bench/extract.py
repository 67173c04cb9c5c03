"""Extraction throughput on the bundled weights and Br35H images.

Prints, measured in one run on the same decoded batches:
  * the bare model forward (images/s),
  * extraction of every stage plus pre_logits, pooled and written to HDF5 (images/s),
    and its ratio to the bare forward (target: >= 0.90),
  * the same with the BatchNorm sums of `extract --bn-stats`,
  * one multi-layer pass against one pass per layer (the cost a user pays without the cache),
  * the whole `extract()` stage with JPEG decoding, for 0 and 1 decoding workers.

Usage: .venv/bin/python bench/extract.py [--images 256] [--batch-size 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.activations import ExtractConfig, LayerTap, extract, output_keys
from pipeline.activations.bnstats import BatchNormStats
from pipeline.activations.extract import _output_specs
from pipeline.cache import CacheWriter, RowTable
from pipeline.inputs import bundled, decode_rgb, stratified_subset
from pipeline.model import build_model, resolve_layers


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    args = parser.parse_args()

    images = stratified_subset(bundled("br35h"), args.images, seed=0)
    loaded = build_model(args.model)
    layers = resolve_layers(loaded, ["all"])
    model = loaded.module.to(memory_format=torch.channels_last)
    transform = loaded.preprocessing.transform()
    tensors = torch.stack([transform(decode_rgb(r.path)) for r in images.records])
    batches = [b.contiguous(memory_format=torch.channels_last) for b in tensors.split(args.batch_size)]
    n = len(tensors)
    print(f"{args.model}, {n} Br35H images at {tuple(tensors.shape[1:])}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, median of {args.rounds} rounds")

    tmp = Path(tempfile.mkdtemp())
    outputs = _output_specs(layers, output_keys(layers, ("avg",)))
    rows = RowTable([r.id for r in images.records], images.label_indices(), list(images.class_names),
                    [0] * n, ["0" * 64] * n)

    def bare():
        with torch.inference_mode():
            for b in batches:
                model(b)

    def multi_layer_written(round_no=[0]):
        round_no[0] += 1
        writer = CacheWriter(tmp / f"bench{round_no[0]}.h5", "bench", "bench", {}, rows, outputs)
        start = 0
        with LayerTap(loaded, layers, ("avg",)) as tap:
            for b in batches:
                codes = tap.run(b)
                rows_here = np.arange(start, start + len(b))
                start = writer.write(start, rows_here, {k: v.numpy() for k, v in codes.items()})
        writer.close()

    def with_bn_stats():
        bn = BatchNormStats(model, loaded.preprocessing.input_size[-1])
        try:
            with LayerTap(loaded, layers, ("avg",), full_pass=True) as tap:
                for b in batches:
                    tap.run(b)
                    bn.state()
        finally:
            bn.close()

    def one_pass_per_layer():
        for spec in layers:
            with LayerTap(loaded, [spec], ("avg",)) as tap:
                for b in batches:
                    tap.run(b)

    bare()  # warm-up
    times = {"bare": [], "extract": [], "bn": [], "per_layer": []}
    for _ in range(args.rounds):
        times["bare"].append(timed(bare))
        times["extract"].append(timed(multi_layer_written))
        times["bn"].append(timed(with_bn_stats))
        times["per_layer"].append(timed(one_pass_per_layer))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"bare forward                         {n / med['bare']:7.1f} img/s")
    print(f"all {len(layers)} layers pooled + written to HDF5 {n / med['extract']:7.1f} img/s"
          f"   ratio to bare forward {med['bare'] / med['extract']:.3f} (target >= 0.90)")
    print(f"the same plus --bn-stats sums             {n / med['bn']:7.1f} img/s"
          f"   ratio to bare forward {med['bare'] / med['bn']:.3f}")
    print(f"one pass per layer ({len(layers)} passes)        {n / med['per_layer']:7.1f} img/s"
          f"   multi-layer pass is {med['per_layer'] / med['extract']:.2f}x faster")

    for workers in (0, 1):
        config = ExtractConfig(model=args.model, batch_size=args.batch_size, workers=workers)
        result = extract(images, config, out=tmp / f"stage{workers}.h5", progress=False)
        print(f"whole extract stage, JPEG decoding, {workers} decoding worker(s): {n / result.seconds:7.1f} img/s "
              f"({result.seconds:.1f} s incl. model load and file checks)")


if __name__ == "__main__":
    main()
