#!/usr/bin/env bash
# Set up talksplat in ./.venv from a fresh clone: Python 3.11 and pip are all it needs.
#
# torch is installed first and pinned, so the rest of the install never pulls a multi-GB CUDA
# build on a CPU machine.  TALKSPLAT_TORCH overrides the requirement (e.g. a CUDA build on a GPU
# machine: install it into .venv yourself and set TALKSPLAT_TORCH=skip).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TALKSPLAT_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$TORCH_SPEC" != "skip" ]; then
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
fi
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -c "import torch, talksplat; print(f'talksplat {talksplat.__version__} ready: torch {torch.__version__}, CUDA {torch.cuda.is_available()}')"
