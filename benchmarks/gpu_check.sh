#!/usr/bin/env bash
# One GPU check of the Co-Seg++ network in at most ~8 minutes: CUDA scan == CPU scan, a bf16 training step of the
# paper preset, inference latency/throughput at 1024² eager and compiled, peak memory.
# Usage: benchmarks/gpu_check.sh OUT_DIR [--device cpu --quick]
# It installs nothing (a GPU machine may have no internet): run it in an environment set up from requirements.txt
# (+ requirements-gpu.txt for mamba-ssm's kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--device cpu --quick]}"
shift
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
exec timeout 480 "$PY" benchmarks/gpu_check.py "$out" "$@"
