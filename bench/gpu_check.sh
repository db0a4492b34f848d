#!/usr/bin/env bash
# The GPU check from anywhere: repository root as working directory, growlm on PYTHONPATH.
# Usage: bash bench/gpu_check.sh [--out FILE] [--budget-s SECONDS] [...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python3 bench/gpu_check.py "$@"
