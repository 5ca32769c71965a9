#!/usr/bin/env bash
# Paper scale on a GPU in one command: build the training dataset from the 7,800 face crops in
# ../shared, train the 128-px model for 8 minutes, render a grid, print images/s, MFU,
# detectability, diversity and attribute agreement; everything lands in OUT (default data/paper).
#
#   bash scripts/gpu_paper.sh [OUT] [options of python -m tasks.tools.paper_run]
#   bash scripts/gpu_paper.sh data/paper --compile --minutes 6
#   bash scripts/gpu_paper.sh data/smoke --cpu-smoke          # the same path on a CPU, ~1 minute
#
# Needs torch (CUDA build on a GPU), the project's Python packages and the lbpcascade file
# (`python -m tasks.fetch`: a verified mirror such as ../shared, or its public URL). A GPU box without ../shared:
# build the dataset where the faces are (`bash scripts/gpu_paper.sh OUT --prepare-only`, ~43 MB
# in OUT/faces.parquet) and bring OUT along; the run trains on it when no face image is found.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=data/paper
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then OUT=$1; shift; fi
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" -m tasks.fetch || echo "gpu_paper: python -m tasks.fetch found no cascade; detect.cascade in the params must name one" >&2
exec "$PY" -m tasks.tools.paper_run --out "$OUT" "$@"
