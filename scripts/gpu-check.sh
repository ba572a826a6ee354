#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): the seven rewards at real size, then
# `miro train --model miro-360m` steps/s and MFU. ≤ 8 minutes on one H200-class GPU, offline.
# Usage: scripts/gpu-check.sh [--out DIR] [--dry-run] [...]   (--help for every option)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$root/benchmarks/gpu_check.py" "$@"
