#!/usr/bin/env bash
# One-time set-up: a virtual environment in .venv with this project and its test tools.
# On a machine without CUDA, torch's CPU wheel is installed first; a bare `torch`
# requirement would otherwise pull the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install -q torch
  else
    python -m pip install -q "torch==2.13.0" || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
python -m pip install -q -e ".[dev]"
echo "memorize is installed in .venv ($(python -c 'import memorize; print(memorize.__version__)'))"
