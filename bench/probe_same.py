"""Do two versions of the code write the same probe results? Every number, timings and dates left out.

  write CACHE DIR     run the probe grid on CACHE three ways, as `layerprobe probe`
                      does, with the code on PYTHONPATH: --bootstrap 0 --jobs 2,
                      --bootstrap 0 --jobs 1, and the default bootstrap --jobs 2;
                      one results file each in DIR
  compare DIR DIR     parse the files of both folders as JSON and compare them
                      whole (metrics per fold, pooled, intervals, chosen
                      parameters, warnings, comparisons, folds, config, cache);
                      only the run's timings and date are left out: `created`,
                      `runtime` and each row's `fit_seconds` and `fit_cpu_seconds`.
                      Prints the first differences and exits 1 if any.

Usage:
  PYTHONPATH=/tmp/before python bench/probe_same.py write CACHE /tmp/same-before
  PYTHONPATH=. python bench/probe_same.py write CACHE /tmp/same-after
  python bench/probe_same.py compare /tmp/same-before /tmp/same-after
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = {"noboot-jobs2.json": (0, 2), "noboot-jobs1.json": (0, 1), "boot-jobs2.json": (None, 2)}
TIMINGS = ("created", "runtime")
ROW_TIMINGS = ("fit_seconds", "fit_cpu_seconds")


def write(cache: Path, folder: Path) -> None:
    import pipeline
    from pipeline.probes import ProbeConfig, run_probes

    folder.mkdir(parents=True, exist_ok=True)
    for name, (n_boot, jobs) in RUNS.items():
        out = folder / name
        out.unlink(missing_ok=True)
        config = ProbeConfig() if n_boot is None else ProbeConfig(n_boot=n_boot)
        run_probes(cache, config, out=out, jobs=jobs, progress=False)
        print(f"{out}: written by the code in {Path(pipeline.__file__).parent}")


def _comparable(path: Path) -> dict:
    doc = json.loads(path.read_text())
    for key in TIMINGS:
        doc.pop(key, None)
    for row in doc["rows"]:
        for key in ROW_TIMINGS:
            row.pop(key, None)
    return doc


def _differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in one file" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    # exact: floats compare bit for bit (JSON's repr round-trips every double)
    return [] if type(a) is type(b) and a == b else [f"{where}: {a!r} vs {b!r}"]


def compare(first: Path, second: Path) -> int:
    bad = 0
    for name in RUNS:
        a, b = _comparable(first / name), _comparable(second / name)
        diffs = _differences(a, b)
        n_numbers = _count_numbers(a)
        print(f"{name}: {len(a['rows'])} rows, {n_numbers} numbers compared: "
              f"{'identical' if not diffs else f'{len(diffs)} difference(s)'}")
        for d in diffs[:10]:
            print(f"  {d}")
        bad += bool(diffs)
    return 1 if bad else 0


def _count_numbers(value) -> int:
    if isinstance(value, dict):
        return sum(_count_numbers(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "write":
        write(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
