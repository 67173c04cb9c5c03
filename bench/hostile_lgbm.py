"""Random damage to LightGBM model text: is every outcome a refusal or a model LightGBM runs safely?

Fits a small LightGBM model (binary and 3-class), then applies N seeded random
mutations to its text (a number replaced by a hostile value, a token dropped
or added, a line dropped or repeated, tree_sizes kept consistent so LightGBM
itself would read the damage). Each text goes through
:func:`pipeline.probes.lgbm_text.checked_model_text`; every text it accepts is
loaded and run by LightGBM in a child process, so a crash (a signal) or a hang
is counted instead of ending the run. Prints the counts.

Usage: PYTHONPATH=. .venv/bin/python bench/hostile_lgbm.py [N]   (default 300)
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time

import numpy as np

from pipeline.errors import ProbeError
from pipeline.probes.lgbm_text import checked_model_text

HOSTILE = ["-1", "0", "1", "7", "-7", "99999", "2147483648", "nan", "inf", "-inf", "1e308", "x", ""]
FEATURES = 7

RUN = """
import sys, numpy as np, lightgbm
booster = lightgbm.Booster(model_str=sys.stdin.read())
out = booster.predict(np.random.default_rng(0).normal(size=(64, {features})))
sys.exit(0 if np.isfinite(out).all() else 3)
"""


def _model(k: int) -> str:
    from lightgbm import LGBMClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, FEATURES))
    y = np.digitize(X[:, 0] + X[:, 1], [-0.5, 0.5][: k - 1])
    return LGBMClassifier(n_estimators=5, num_leaves=7, min_child_samples=5, verbose=-1).fit(X, y) \
        .booster_.model_to_string()


def _fix_sizes(text: str) -> str:
    """Recompute tree_sizes so LightGBM reads each (damaged) tree where it now is."""
    head, sep, rest = text.partition("\nTree=")
    if not sep or "tree_sizes=" not in head:
        return text
    body, _, tail = ("Tree=" + rest).partition("end of trees")
    blocks = re.split(r"(?=^Tree=)", body, flags=re.M)
    sizes = " ".join(str(len(b)) for b in blocks if b)
    return re.sub(r"tree_sizes=[^\n]*", f"tree_sizes={sizes}", head) + "\n" + body + "end of trees" + tail


def _mutate(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    end = lines.index("end of trees")
    i = rng.randrange(1, end)
    kind = rng.choice(["value", "value", "value", "drop-token", "add-token", "drop-line", "repeat-line"])
    if kind == "drop-line":
        del lines[i]
    elif kind == "repeat-line":
        lines.insert(i, lines[i])
    elif "=" in lines[i]:
        key, _, value = lines[i].partition("=")
        tokens = value.split(" ")
        j = rng.randrange(len(tokens))
        if kind == "value":
            tokens[j] = rng.choice(HOSTILE + [str(rng.randint(-50, 50))])
        elif kind == "drop-token":
            del tokens[j]
        else:
            tokens.insert(j, rng.choice(HOSTILE))
        lines[i] = key + "=" + " ".join(tokens)
    return _fix_sizes("\n".join(lines))


def main(n: int) -> None:
    rng = random.Random(12)
    counts = {"refused": 0, "accepted, ran": 0, "accepted, LightGBM error": 0, "accepted, crashed": 0,
              "accepted, hung": 0, "accepted, non-finite": 0}
    started = time.perf_counter()
    for k in (2, 3):
        original = _model(k)
        for _ in range(n // 2):
            text = _mutate(original, rng)
            try:
                checked = checked_model_text(text, FEATURES, k)
            except ProbeError:
                counts["refused"] += 1
                continue
            try:
                child = subprocess.run([sys.executable, "-c", RUN.format(features=FEATURES)], input=checked,
                                       capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                counts["accepted, hung"] += 1
                continue
            outcome = {0: "accepted, ran", 1: "accepted, LightGBM error", 3: "accepted, non-finite"}.get(
                child.returncode, "accepted, crashed")  # 1: a Python exception, which load_probe turns into one line
            counts[outcome] += 1
    print(f"{n} mutated model texts (binary and 3-class, seed 12) in {time.perf_counter() - started:.0f} s:")
    for name, count in counts.items():
        print(f"  {name:<26} {count}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
