"""BatchNorm folding across architectures it was not written against: what is folded, what it changes, what it gains.

For each model (random init, every BatchNorm given random running statistics and affine terms so that
folding is not the identity it is at init), built as extraction builds it, channels last, with every
stage observed as with ``--layers all``: how many of its BatchNorm layers ``pipeline.activations.fold``
folds, whether the check accepted it, the largest difference folding makes to any stage's output or the
logits on a batch of random images (relative to that output's largest magnitude), that the model is put
back bit for bit, and the forward pass's speed folded against unfolded (glibc's allocator set as
extraction sets it; interleaved rounds, median).

Usage: python bench/fold_panel.py [--models a,b,...] [--size 160] [--batch 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

MODELS = (
    "resnet50", "efficientnet_b0", "mobilenetv2_100", "regnety_002", "densenet121", "dla34", "ghostnet_100",
    "rexnet_100", "cspresnet50", "dpn68", "res2net50_14w_8s", "inception_v3", "xception41", "mixnet_s",
    "repvgg_a2", "hrnet_w18_small", "vgg11_bn", "lcnet_100", "tf_efficientnet_lite0",
    "torchvision/resnet50", "torchvision/mobilenet_v2", "torchvision/efficientnet_b0", "torchvision/googlenet",
    "torchvision/regnet_y_400mf", "torchvision/shufflenet_v2_x1_0", "torchvision/mnasnet1_0",
    "torchvision/densenet121", "torchvision/convnext_tiny",
)


def _randomised(model, seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
            if m.affine:
                m.weight.data.copy_(1 + 0.3 * torch.randn(n, generator=generator))
                m.bias.data.copy_(0.3 * torch.randn(n, generator=generator))
    return model.eval()


def _outputs(model, x, names):
    import torch

    found = {}

    def keep(name, output):
        output = output[0] if isinstance(output, (tuple, list)) else output
        found.setdefault(name, output.float().clone())

    handles = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: keep(n, o)) for n in names]
    try:
        with torch.inference_mode():
            out = model(x)
        found[""] = (out[0] if isinstance(out, (tuple, list)) else out).float()
    finally:
        for h in handles:
            h.remove()
    return found


def _timed(model, x, reps: int = 3) -> float:
    import torch

    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(reps):
            model(x)
    return (time.perf_counter() - start) / reps


def one(name: str, size: int, batch: int, rounds: int) -> dict:
    import torch

    from pipeline.activations.allocator import steady_allocator
    from pipeline.activations.fold import folded_batchnorm
    from pipeline.model import available_layers, build_model

    loaded = build_model(name, None, True, size)
    model = _randomised(loaded.module).to(memory_format=torch.channels_last)
    shape = tuple(loaded.preprocessing.input_size)
    stages = [s.name for s in available_layers(loaded) if s.kind == "stage"]
    x = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = _outputs(model, x, stages)
    unfolded, folded = [], []
    with steady_allocator():
        for _ in range(rounds):
            unfolded.append(_timed(model, x))
            with folded_batchnorm(model, shape, stages) as folding:
                folded.append(_timed(model, x))
                after = _outputs(model, x, stages)
    worst = max(float((after[k] - v).abs().max() / (v.abs().max() or 1)) for k, v in before.items())
    restored = all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    return {"model": name, "input": shape[-1], "folding": folding.as_dict(), "worst": worst, "restored": restored,
            "speedup": statistics.median(unfolded) / statistics.median(folded)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=160, help="input side (models with a fixed size keep theirs)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch

    print(f"{torch.get_num_threads()} torch threads, batch {args.batch}, {args.rounds} rounds, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'model':<30} {'px':>4} {'folded':>10} {'check':>9} {'stages+logits':>13} {'put back':>8} {'speed':>6}  why not")
    for name in args.models.split(","):
        try:
            r = one(name, args.size, args.batch, args.rounds)
        except Exception as exc:  # noqa: BLE001 - one model's failure is a row, not the end of the panel
            print(f"{name:<30} failed: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        f = r["folding"]
        check = f.get("max_relative_difference")
        print(f"{name:<30} {r['input']:>4} {f['folded']:>4} of {f['batchnorms']:<3} "
              f"{'-' if check is None else f'{check:.1e}':>9} {r['worst']:>13.1e} {str(r['restored']):>8} "
              f"{r['speedup']:>5.2f}x  {f.get('why_not', '')}")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
