"""Where one image's time goes in `layerprobe extract`, part by part, in one process (issue 16).

On N Br35H JPEGs and tf_efficientnet_lite0 (bundled weights), each part timed
on its own, interleaved over rounds, the fastest round kept (the least
disturbed by other work on the machine):

  decode        the input's decoder (PIL, full JPEG decode)
  resize        the transform's resize and centre crop (bicubic, antialiased)
  tail torch    ToTensor + Normalize as torch runs them, in the main thread
  tail lookup   the table lookup a decoding thread uses (pipeline/model/to_tensor.py)
  fingerprint   pipeline.inputs.fingerprint.fingerprint
  stack torch   default_collate of a batch of torch-made images, then the channels-last copy
  stack numpy   feed.collate of a batch of looked-up (channels-last) images
  forward @B    the model's forward pass on a channels-last batch of B (random values), per image
  tap           LayerTap.run (every stage + pre_logits, pooled) at the default batch, per image

and the import time of torch and of timm in a new process.

Usage: python bench/extract_parts.py [--images 320] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

from pipeline.activations.allocator import steady_allocator
from pipeline.activations.feed import collate
from pipeline.activations.tap import LayerTap
from pipeline.inputs import bundled, stratified_subset
from pipeline.inputs.decode import PIL_DECODER
from pipeline.inputs.fingerprint import fingerprint
from pipeline.model import build_model, resolve_layers

BATCH = 32


def _in_thread(fn):
    """``fn()`` run in another thread (the lookup is what a decoding thread does), its result."""
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def _imports() -> dict:
    found = {}
    for what in ("torch", "timm"):
        code = f"import time; t = time.perf_counter(); import {what}; print(time.perf_counter() - t)"
        found[f"import {what} (s, new process)"] = float(subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    loaded = build_model("tf_efficientnet_lite0", None, False, None)
    model = loaded.module.eval().to(memory_format=torch.channels_last)
    transform = loaded.preprocessing.transform()
    *head, tail = transform.transforms
    paths = [r.path for r in stratified_subset(bundled("br35h"), args.images, seed=0).records]
    decoded = [PIL_DECODER.decode(Path(p))[0] for p in paths]
    crops = []
    for image in decoded:
        for step in head:
            image = step(image)
        crops.append(image)
    n = len(paths)
    torch_made = [tail.normalize(tail.to_tensor(c)) for c in crops[:BATCH]]
    looked_up = [tail.lookup(c) for c in crops[:BATCH]]
    prints = [fingerprint(d) for d in decoded[:BATCH]]
    noise = torch.randn(64, 3, 224, 224).contiguous(memory_format=torch.channels_last)

    def per_image(fn, count):
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) / count * 1e3

    def decode():
        for p in paths:
            PIL_DECODER.decode(Path(p))[0].load()

    def resize():
        for image in decoded:
            for step in head:
                image = step(image)

    def forward(b):
        with torch.inference_mode():
            for start in range(0, 64 - 64 % b, b):
                model(noise[start:start + b])

    parts = {
        "decode": lambda: per_image(decode, n),
        "resize": lambda: per_image(resize, n),
        "tail torch": lambda: per_image(lambda: [tail.normalize(tail.to_tensor(c)) for c in crops], n),
        "tail lookup": lambda: _in_thread(lambda: per_image(lambda: [tail.lookup(c) for c in crops], n)),
        "fingerprint": lambda: per_image(lambda: [fingerprint(d) for d in decoded], n),
        "stack torch": lambda: per_image(lambda: default_collate(
            list(zip(range(BATCH), torch_made, prints)))[1].contiguous(memory_format=torch.channels_last), BATCH),
        "stack numpy": lambda: per_image(lambda: collate(list(zip(range(BATCH), looked_up, prints))), BATCH),
        **{f"forward @{b}": (lambda b=b: per_image(lambda: forward(b), 64 - 64 % b)) for b in (8, 16, 32, 64)},
    }
    layers = resolve_layers(loaded, ["all"])
    best = {name: float("inf") for name in [*parts, "tap"]}
    with steady_allocator(), LayerTap(loaded, layers, ("avg",)) as tap:
        forward(BATCH)
        tap.run(noise[:BATCH])
        for _ in range(args.rounds):
            for name, fn in parts.items():
                best[name] = min(best[name], fn())
            best["tap"] = min(best["tap"], per_image(lambda: tap.run(noise[:BATCH]), BATCH))
    print(f"{n} Br35H JPEGs, tf_efficientnet_lite0, {torch.get_num_threads()} torch threads, fastest of "
          f"{args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    for name, ms in best.items():
        print(f"{name:<14} {ms:8.3f} ms an image")
    for name, seconds in _imports().items():
        print(f"{name:<30} {seconds:6.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
