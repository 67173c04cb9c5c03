"""What fingerprinting adds to extraction: per-image time of decode, fingerprint and the preprocessing
transform on 300 Br35H files (the forward pass, about 75-140 ms per image on 2 CPU cores, is not repeated).

Usage: .venv/bin/python bench/fingerprint_cost.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from planted import br35h_paths  # noqa: E402

from pipeline.inputs import decode_rgb  # noqa: E402
from pipeline.inputs.fingerprint import fingerprint  # noqa: E402


def main() -> None:
    paths = [Path(str(p)) for p in br35h_paths()[::10]]
    images = []
    started = time.perf_counter()
    for path in paths:
        images.append(decode_rgb(path))
    decode = (time.perf_counter() - started) / len(paths)
    started = time.perf_counter()
    for image in images:
        fingerprint(image)
    prints = (time.perf_counter() - started) / len(paths)
    try:
        from pipeline.model import build_model

        transform = build_model("tf_efficientnet_lite0", random_init=True).preprocessing.transform()
        started = time.perf_counter()
        for image in images:
            transform(image)
        resize = (time.perf_counter() - started) / len(paths)
    except Exception as exc:  # noqa: BLE001 - the figure is optional
        resize = float("nan")
        print(f"(no transform timing: {exc})")
    print(f"{len(paths)} Br35H images, per image: decode {decode * 1e3:.2f} ms, fingerprint {prints * 1e3:.2f} ms, "
          f"preprocessing transform {resize * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
