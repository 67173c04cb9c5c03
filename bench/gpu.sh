#!/usr/bin/env bash
# Extraction on a CUDA GPU in one step: environment facts, then bench/gpu.py (issue 16).
# Usage: bench/gpu.sh [--quick] [any option of bench/gpu.py]
# Uses .venv/bin/python if present (make setup with a CUDA torch build), else $PYTHON or python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device available: {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible to torch: install a CUDA build (make setup TORCH_INDEX=...)")
PY
exec "$PY" bench/gpu.py "$@"
