"""The architecture panel: every supported family's stages, layouts and conformance, in one table.

For each model of ``tests/model_panel.py`` (random-init, its tiny panel input):
the stage widths and layout ``layerprobe layers`` reports, the poolings its stages
accept, and whether the codes LayerTap computes (every stage with every accepted
pooling, ``pre_logits``, ``logits``) equal the independent reference of the
conformance suite (timm ``forward_intermediates`` / ``forward_head``, torchvision
``create_feature_extractor``), with the largest relative difference. The cache
path itself is checked by ``tests/test_conformance.py``.

Usage: .venv/bin/python bench/panel.py [--images 4] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.model_panel

from pipeline.activations import LayerTap  # noqa: E402
from pipeline.activations.pooling import accepted_poolings  # noqa: E402
from pipeline.model import available_layers  # noqa: E402
from tests.model_panel import PANEL, load, reference_codes  # noqa: E402

RTOL = 1e-4


def table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _widths(channels: list[int]) -> str:
    """``96,192,384,768``; a run of equal widths (transformer blocks) as ``12x192``."""
    if len(set(channels)) == 1 and len(channels) > 2:
        return f"{len(channels)}x{channels[0]}"
    return ",".join(map(str, channels))


def check(entry, n_images: int) -> tuple:
    started = time.perf_counter()
    loaded = load(entry)
    specs = available_layers(loaded)
    stages = [s for s in specs if s.kind == "stage"]
    layout = stages[0].layout
    pools = tuple(accepted_poolings(layout))
    x = torch.randn(n_images, *loaded.preprocessing.input_size, generator=torch.Generator().manual_seed(0))
    wanted = [s for s in specs if s.kind != "logits"] + [s for s in specs if s.kind == "logits"]
    with LayerTap(loaded, wanted, pools) as tap:
        codes = {f"{l}/{p}": v for (l, p), v in tap.run(x).items()}
    ref = reference_codes(entry, loaded.module, x, [s.name for s in stages])
    verdicts = {}
    worst = 0.0
    for group, keys in (("stages", [k for k in ref if k.split("/")[0] in {s.name for s in stages}]),
                        ("pre_logits", ["pre_logits/none"]), ("logits", ["logits/none"])):
        ok = True
        for key in keys:
            got, want = codes[key].numpy(), ref[key].float().numpy()
            scale = max(1.0, float(np.abs(want).max()))
            diff = float(np.abs(got - want).max()) / scale
            worst = max(worst, diff)
            ok &= got.shape == want.shape and diff <= RTOL
        verdicts[group] = "pass" if ok else "FAIL"
    declared = (tuple(s.channels for s in stages) == entry.channels
                and all(s.layout.format == entry.layout for s in stages))
    fmt = layout.format + (f" {layout.prefix_tokens}+grid" if layout.format == "NLC" else "")
    return (entry.name, entry.family_note, entry.img_size, _widths([s.channels for s in stages]), fmt,
            ",".join(pools), "pass" if declared else "FAIL", verdicts["stages"], verdicts["pre_logits"],
            verdicts["logits"], f"{worst:.1e}", f"{time.perf_counter() - started:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="random images per model")
    parser.add_argument("--only", nargs="*", help="panel model names to check (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [("model", "family", "px", "stage widths", "layout", "poolings", "as declared", "stages", "pre_logits",
             "logits", "max rel diff", "s")]
    for entry in PANEL:
        if args.only and entry.name not in args.only:
            continue
        try:
            rows.append(check(entry, args.images))
        except Exception as exc:  # a failing family is a row of the table, not the end of the run
            rows.append((entry.name, entry.family_note, entry.img_size, "", "", "", f"ERROR {exc}"[:60], "", "", "",
                         "", ""))
        print(f"checked {entry.name}", file=sys.stderr, flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} random images per model; "
          f"pass = equal to the reference within {RTOL:g} of its largest value")
    print(table(rows))


if __name__ == "__main__":
    main()
