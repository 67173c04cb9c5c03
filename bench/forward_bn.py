"""What BatchNorm costs in the forward pass, and what folding it into the convolutions (as extraction does) gains.

Times the bundled tf_efficientnet_lite0 (channels last, one batch of 32 bundled Br35H images preprocessed
as extraction does, inference mode, glibc's allocator set as extraction sets it) three ways, interleaved:
as it is (``--no-fold-batchnorm``); folded as extraction folds it (``pipeline.activations.fold``, every
stage observed as with ``--layers all``), printing the largest difference of its outputs from the unfolded
model's; and with every timm ``BatchNormAct2d`` replaced by its activation alone (the convolution's output
goes straight to ReLU6). The last computes wrong numbers; it only shows the time a forward pass would take
if BatchNorm cost nothing, the bound on what folding can gain.

Usage: python bench/forward_bn.py [--batches 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def _timed(model, x, batches: int) -> float:
    """Milliseconds an image over ``batches`` forward passes, after two untimed ones."""
    import torch

    with torch.inference_mode():
        model(x)
        model(x)
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
    return (time.perf_counter() - start) / batches / len(x) * 1e3


def _without_batchnorm(model):
    """``model`` with each BatchNormAct2d replaced by its dropout and activation alone (in place)."""
    from timm.layers import BatchNormAct2d

    from pipeline.activations.fold import ActOnly

    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, BatchNormAct2d):
                setattr(module, name, ActOnly(child))
                replaced += 1
    return model, replaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from pipeline.activations.allocator import steady_allocator
    from pipeline.activations.fold import folded_batchnorm
    from pipeline.inputs import bundled, stratified_subset
    from pipeline.inputs.decode import PIL_DECODER
    from pipeline.model import build_model

    build = lambda: build_model("tf_efficientnet_lite0", None, False, None)  # noqa: E731
    load = lambda: build().module.eval().to(memory_format=torch.channels_last)  # noqa: E731
    transform = build().preprocessing.transform()
    images = stratified_subset(bundled("br35h"), 32, seed=0).records
    x = torch.stack([transform(PIL_DECODER.decode(r.path)[0]) for r in images]).contiguous(
        memory_format=torch.channels_last)
    with_bn, folded, (without, replaced) = load(), load(), _without_batchnorm(load())
    stages = [f["module"] for f in folded.feature_info]
    times = {"with BatchNorm": [], "folded": [], "without BatchNorm": []}
    with steady_allocator(), folded_batchnorm(folded, tuple(x.shape[1:]), stages) as folding:
        with torch.inference_mode():
            difference = float((folded(x) - with_bn(x)).abs().max() / with_bn(x).abs().max())
        for _ in range(args.rounds):  # interleaved, so load from other work hits all alike
            times["with BatchNorm"].append(_timed(with_bn, x, args.batches))
            times["folded"].append(_timed(folded, x, args.batches))
            times["without BatchNorm"].append(_timed(without, x, args.batches))
    print(f"tf_efficientnet_lite0 (bundled weights), batch 32, channels last, {torch.get_num_threads()} torch threads, "
          f"{args.rounds} rounds of {args.batches} batches, load {os.getloadavg()[0]:.2f}; {replaced} BatchNormAct2d")
    for name, found in times.items():
        print(f"{name:<18} {statistics.median(found):6.2f} ms an image (rounds: "
              + ", ".join(f"{t:.2f}" for t in found) + ")")
    base, fold_time, bound = (statistics.median(times[k]) for k in times)
    print(f"folding: {folding.as_dict()}; largest logit difference on this batch {difference:.2g} of the largest logit")
    print(f"BatchNorm's share of the forward pass: {1 - bound / base:.0%}; folded runs {base / fold_time:.2f}x "
          f"as fast as unfolded (the bound: {base / bound:.2f}x)")


if __name__ == "__main__":
    main()
