"""Extraction on a CUDA GPU: the whole stage from JPEG files against the bare forward pass.

Measured on the same N Br35H images, interleaved rounds:

  bare forward   the decoded, preprocessed batches already on the GPU; fp16 autocast, channels_last
                 (BatchNorm not folded under autocast, as extraction runs the model)
  whole stage    `extract()` from the JPEG files: decoding workers feeding a DataLoader with pinned
                 memory, fp16 autocast, channels_last, every stage + pre_logits pooled and written to HDF5

Prints img/s of each and the ratio (target >= 0.95). Run through bench/gpu.sh on a machine with a GPU;
`--device cpu` runs the same code on the CPU (a dry run of the script, not a GPU figure).

Usage: python bench/gpu.py [--images 3000] [--batch-size 128] [--rounds 3] [--workers N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.activations import ExtractConfig, extract
from pipeline.activations.feed import rule_processes
from pipeline.activations.fold import folded_batchnorm
from pipeline.inputs import bundled, decode_rgb, stratified_subset
from pipeline.model import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, help="decoding processes (default: the library's choice)")
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="600 images, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 600, 1
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    workers = rule_processes(device) if args.workers is None else args.workers

    images = bundled("br35h")
    if args.images < len(images):
        images = stratified_subset(images, args.images, seed=0)
    loaded = build_model(args.model)
    model = loaded.module.to(device, memory_format=torch.channels_last).eval()
    transform = loaded.preprocessing.transform()
    started = time.perf_counter()
    batches = [torch.stack([transform(decode_rgb(r.path)) for r in images.records[i:i + args.batch_size]])
               for i in range(0, len(images), args.batch_size)]
    decode_s = time.perf_counter() - started
    batches = [b.to(device).contiguous(memory_format=torch.channels_last) for b in batches]
    n = len(images)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"{args.model} on {name}, {n} Br35H images, batch {args.batch_size}, {workers} decoding workers, "
          f"{os.cpu_count()} CPUs, fp16 autocast on CUDA, channels_last; decoding in one process: "
          f"{n / decode_s:.0f} img/s")

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def bare() -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            for b in batches:
                model(b)
        sync()
        return time.perf_counter() - start

    tmp = Path(tempfile.mkdtemp())
    times = {"bare": [], "stage": []}
    # as extraction runs it: folded in fp32 (the CPU dry run), not under the GPU's fp16 autocast
    with folded_batchnorm(model, loaded.preprocessing.input_size, [], why_not="fp16 autocast" if cuda else None) \
            as folding:
        print(f"BatchNorm folding of the bare forward: {folding.as_dict()}")
        bare()  # warm-up (cuDNN autotuning, allocator)
        for round_no in range(args.rounds):
            times["bare"].append(bare())
            config = ExtractConfig(model=args.model, batch_size=args.batch_size, device=args.device, workers=workers)
            result = extract(images, config, out=tmp / f"stage{round_no}.h5", progress=False)
            times["stage"].append(result.seconds)
    bare_s, stage_s = (statistics.median(times[k]) for k in ("bare", "stage"))
    print(f"bare forward (tensors on the device)      {n / bare_s:8.1f} img/s")
    print(f"whole extract stage from JPEG files        {n / stage_s:8.1f} img/s   ratio to bare forward "
          f"{bare_s / stage_s:.3f} (target >= 0.95; includes model build and the check pass)")
    if cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
