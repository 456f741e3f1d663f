#!/usr/bin/env bash
# GPU check of label propagation, for a machine with a CUDA device (under 5 minutes): the CUDA test subset,
# then one table (DAVIS scale: dense reference vs torch block kernel vs fused Triton kernel, a batch of 4
# videos, peak GPU memory, propagate_labels frames/s at 480p). Without CUDA it says so and exits cleanly.
#
#   bash benchmarks/gpu_check.sh [--json results.json]        # PYTHON=... to pick the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_INTERPRET=0  # compiled kernels, not the interpreter

if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "gpu_check: $PYTHON cannot import torch; install the package (pip install -e \".[dev]\") or set PYTHON=..." >&2
    exit 1
fi
if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device is visible to PyTorch here, so there is nothing to measure."
    echo "gpu_check: the fused Triton kernel is verified for exactness on CPU by Triton's interpreter"
    echo "gpu_check: (tests/test_triton_kernel.py, part of the normal test suite); run this script on a CUDA machine."
    exit 0
fi
if ! "$PYTHON" -c 'import triton' 2>/dev/null; then
    echo "gpu_check: CUDA is available but Triton is not installed (pip install triton, or PyTorch's CUDA wheel)." >&2
    exit 1
fi
"$PYTHON" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
exec "$PYTHON" benchmarks/gpu_check.py "$@"
