#!/usr/bin/env bash
# Every GPU check and measurement in one run, for a session that is lent a CUDA GPU (minutes are
# scarce: run this once, keep its output). From the repository root, with the venv active:
#     bash benchmarks/gpu.sh > gpu.log 2>&1
set -u
export CHARLM_DATA="${CHARLM_DATA:-../shared/data}"
step() { echo; echo "== $*"; }

step "what charlm finds and chooses"
python -m charlm info
step "the tests that need a GPU (equivalence to the CPU reference, bf16 autocast, sampling)"
python -m pytest -q -m gpu -p no:cacheprovider tests
step "speed on the GPU (docs/benchmarks.md gets a section for this kind)"
python -m benchmarks --device cuda --repeats 3
step "quality: shakespeare-gpu, then its exact validation loss"
charlm train --recipe shakespeare-gpu --out runs/gpu-shakespeare --sample-every 0
charlm evaluate runs/gpu-shakespeare --which best --split val --device cuda
