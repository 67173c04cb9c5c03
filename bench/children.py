"""Running one benchmark variant in a fresh child process that prints its figures as a JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def run_json_child(script: str, args: list[str], label: str, env: dict | None = None) -> dict:
    """``python script *args`` in a new process (model hub offline); its last stdout line as a dict, plus
    ``wall``: the child's whole wall time, interpreter start and imports included."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{stderr[-2000:]}")
    return {"wall": wall, **json.loads(stdout.strip().splitlines()[-1])}
