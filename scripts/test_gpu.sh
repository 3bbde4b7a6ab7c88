#!/usr/bin/env bash
# Run the GPU-only tests (marker gpu) on a machine with CUDA; scripts/test.sh and CI skip them,
# and without CUDA they are skipped here too (reported by -ra). Needs a prepared .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -m gpu "$@"
